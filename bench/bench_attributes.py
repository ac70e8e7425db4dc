"""Inference cost of attribute tagging per gait segment on CPU, against baselines in the same process.

    python -m bench.bench_attributes [--weights weights/clip_gar.pt] [--segments 16] [--frames 30] [--threads 2]   (from the repository root)

Times, on the same random segments: the full CLIP-GAR stage path (clip cutting, visual encoder,
fusion block and heads, score averaging: ``segment_scores``), the visual encoder alone, and the
classification baseline (same encoder, linear heads). Prints ms per segment and the ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from stages.attributes.checkpoint import load_checkpoint
from stages.attributes.model import ClassifierBaseline
from stages.attributes.stage import segment_clips, segment_scores

ROOT = Path(__file__).resolve().parents[1]


def _best_of(fns: dict, repeats: int) -> dict:
    """Minimum wall time of each function; runs are interleaved so load drift hits all alike."""
    for fn in fns.values():
        fn()  # warm-up (allocator, oneDNN primitives)
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(ROOT / "weights" / "clip_gar.pt"))
    parser.add_argument("--segments", type=int, default=16, help="segments per batch")
    parser.add_argument("--frames", type=int, default=30, help="frames per segment")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per forward pass")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, meta = load_checkpoint(args.weights)
    clip_frames = int(meta["clip_frames"])
    kwargs = {k: (tuple(v) if k == "channels" else v) for k, v in meta["model"].items() if not k.startswith("fusion_")}
    baseline = ClassifierBaseline(**kwargs).eval()
    rng = np.random.default_rng(0)
    segments = [(rng.random((args.frames, 64, 44)) > 0.5).astype(np.uint8) * 255 for _ in range(args.segments)]
    clips = np.concatenate([segment_clips(s, clip_frames) for s in segments])

    def run(net):
        def go():
            with torch.no_grad():
                for i in range(0, len(clips), args.batch_size):
                    net(torch.from_numpy(clips[i : i + args.batch_size].astype(np.float32) / 255.0))

        return go

    best = _best_of(
        {
            "full": lambda: segment_scores(model, segments, clip_frames, args.batch_size),
            "encoder": run(model.encoder),
            "baseline": run(baseline),
        },
        args.repeats,
    )
    full, encoder, base = best["full"], best["encoder"], best["baseline"]
    per = lambda t: 1000.0 * t / args.segments
    print(
        f"{args.segments} segments x {args.frames} frames ({len(clips)} clips of {clip_frames}), "
        f"{args.threads} threads, checkpoint {Path(args.weights).name} ({meta['kind']})"
    )
    print(f"visual encoder alone      {per(encoder):8.2f} ms/segment")
    print(f"classification baseline   {per(base):8.2f} ms/segment   x{base / encoder:.2f} of encoder")
    print(
        f"CLIP-GAR (stage path)     {per(full):8.2f} ms/segment   x{full / encoder:.2f} of encoder, "
        f"x{full / base:.2f} of baseline"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
