"""CPU cost of the GADER gait detector per 100 frames of a track, against baselines in the same process.

    python -m bench.bench_gait_detector [--frames 100] [--threads 1] [--repeat 200] [--weights PT]   (from the repository root)

Rows (milliseconds per 100 frames, median of ``--repeat`` runs):

* ``dhs``: DHS extraction alone (the baseline the ratios divide by);
* ``whole``: DHS + classifying the whole track as one window (the paper's baseline detector);
* ``windows_per_crop``: DHS + every window cut out and classified on its own (one batched forward
  per window length), then NMS, merge and routing;
* ``stage``: what ``GaitDetectorStage.process`` does: DHS + one convolution pass shared by all
  windows, batched MLP, NMS, merge and routing.

Target: ``stage`` under 2 ms per 100 frames on one CPU thread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from pipeline.messages import TrackWindow
from stages.gait_detector.detect import (
    Segments,
    classify_whole,
    merge_close,
    nms_1d,
    window_grid,
)
from stages.gait_detector.dhs import extract_dhs
from stages.gait_detector.model import FULL_WALKING
from stages.gait_detector.stage import GaitDetectorStage
from synth.dataset import generate_sequences


def median_ms(fn, repeat: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--weights", default=None, help="checkpoint (default: the shipped weights)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    walker = generate_sequences(1, 1, args.frames, seed=3, behaviours=("mixed",), crops=False, frame_size=(360, 480))[0]
    sequence = walker.to_message()
    stage = GaitDetectorStage(weights=args.weights)
    model, params, dhs_config = stage.model, stage.params, stage.dhs_config
    window = TrackWindow("bench", 1, 0, False, sequence)

    def dhs_only() -> None:
        extract_dhs(sequence.silhouettes, dhs_config)

    def whole() -> None:
        classify_whole(model, extract_dhs(sequence.silhouettes, dhs_config))

    @torch.inference_mode()
    def windows_per_crop() -> None:
        dhs = extract_dhs(sequence.silhouettes, dhs_config)
        starts, stops = window_grid(dhs.shape[1], params.window_lengths, params.stride_fraction)
        probs = np.empty((len(starts), 4), np.float32)
        for length in np.unique(stops - starts):
            rows = np.flatnonzero(stops - starts == length)
            batch = np.stack([dhs[:, starts[i] : stops[i]] for i in rows])[:, None]
            probs[rows] = torch.softmax(model(torch.from_numpy(batch)), dim=-1).numpy()
        keep = probs.argmax(1) == FULL_WALKING
        merge_close(nms_1d(Segments(starts[keep], stops[keep], probs[keep, 0]), params.nms_iou), params.merge_gap)

    def full_stage() -> None:
        window.gait = None
        stage.process([window])

    scale = 100.0 / args.frames
    rows = {
        "dhs": median_ms(dhs_only, args.repeat) * scale,
        "whole": median_ms(whole, args.repeat) * scale,
        "windows_per_crop": median_ms(windows_per_crop, args.repeat) * scale,
        "stage": median_ms(full_stage, args.repeat) * scale,
    }
    n_windows = len(window_grid(args.frames, params.window_lengths, params.stride_fraction)[0])
    print(f"track of {args.frames} frames, {n_windows} windows {params.window_lengths}, torch threads {args.threads}")
    print(f"{'':18s} {'ms/100 frames':>14s} {'x dhs':>8s}")
    for name, ms in rows.items():
        print(f"{name:18s} {ms:14.3f} {ms / rows['dhs']:8.1f}")
    print(f"stage vs windows_per_crop: {rows['windows_per_crop'] / rows['stage']:.2f}x faster; "
          f"target < 2 ms per 100 frames: {'met' if rows['stage'] < 2.0 else 'NOT met'}")
    print(f"route of this track: {window.gait.route}, walking fraction {window.gait.walking_fraction:.2f}")


if __name__ == "__main__":
    main()
