"""Segmenter speed per person crop on real frames: BlazePose crops (LiteRT, OpenCV dnn), BlazePose with the
mask refiner, PP-HumanSeg.

Every segmenter gets the same frames (campus clip, frames 200..; six walkers of 43-65 px per frame,
tracked boxes) through its ``process``, so the time includes cutting crops, the model and pasting
masks back. The baseline, measured in the same process, is the detector-mask segmenter on boxes
that already carry masks (cutting masks to boxes only): the ratio says what a learned segmenter
costs on top of the cheapest stage.

    GAITSCOPE_MODELS=../shared/models python -m bench.bench_segment [--frames 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import supervision as sv

from pipeline.messages import Frame, FrameResult

CLIP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "videos" / "campus_road_480x360.mp4"
BOXES = np.array(
    [
        [384.9, 164.7, 406.3, 229.1],
        [439.4, 159.4, 463.7, 222.3],
        [137.9, 117.7, 155.4, 167.1],
        [50.3, 94.2, 66.6, 137.0],
        [423.6, 61.7, 437.7, 96.0],
        [304.0, 90.9, 323.8, 137.4],
    ],
    dtype=np.float32,
)


def frames(count: int) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(CLIP)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= 200:
                out.append(frame.to_ndarray(format="bgr24"))
            if len(out) == count:
                break
    return out


def batch_of(images: list[np.ndarray], with_masks: bool) -> list[FrameResult]:
    items = []
    for i, image in enumerate(images):
        mask = None
        if with_masks:
            mask = np.zeros((len(BOXES), *image.shape[:2]), dtype=bool)
            mask[:, 50:250, 30:470] = True
        detections = sv.Detections(xyxy=BOXES.copy(), mask=mask, tracker_id=np.arange(len(BOXES)))
        items.append(FrameResult(Frame("campus", 200 + i, i / 10.0, image), detections))
    return items


def ms_per_crop(stage, images: list[np.ndarray], frames_per_call: int, with_masks: bool = False) -> tuple[float, float]:
    """(wall ms, process CPU ms) per crop. On a shared, overloaded machine the CPU time is the
    steadier of the two (it leaves out the time spent waiting for a core)."""
    stage.process(batch_of(images[:1], with_masks))  # warm-up (allocations, first-call set-up)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(images), frames_per_call):
        stage.process(batch_of(images[i : i + frames_per_call], with_masks))
    crops = len(images) * len(BOXES)
    return 1000.0 * (time.perf_counter() - wall) / crops, 1000.0 * (time.process_time() - cpu) / crops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import cv2

    cv2.setNumThreads(args.threads)
    from stages.segment.detector import DetectorMasks

    images = frames(args.frames)
    base_wall, base_cpu = ms_per_crop(DetectorMasks(fallback="drop"), images, 8, with_masks=True)
    print(f"{len(images)} frames x {len(BOXES)} walkers, {args.threads} thread(s)")
    print(f"{'segmenter':<36} {'wall ms/crop':>12} {'CPU ms/crop':>12} {'CPU x baseline':>15}")
    print(f"{'detector masks (baseline)':<36} {base_wall:12.2f} {base_cpu:12.2f} {1.0:15.1f}")
    runs = []
    from stages.segment.pose_crop import PoseCropSegmenter

    for runtime in ("litert", "opencv"):
        for batch in (1, 8):
            runs.append(
                (
                    f"pose_crop {runtime} batch {batch}",
                    lambda r=runtime, b=batch: PoseCropSegmenter(
                        runtime=r, threads=args.threads, max_batch=b, min_height=30
                    ),
                    8,
                )
            )
    import torch

    from stages.segment.refine import RefinedPoseSegmenter

    torch.set_num_threads(args.threads)
    runs.append(
        (
            "pose_refine litert batch 8",
            lambda: RefinedPoseSegmenter(runtime="litert", threads=args.threads, max_batch=8, min_height=30),
            8,
        )
    )
    from stages.segment.paddleseg import PaddleSegSegmenter

    runs.append(
        (
            "paddleseg PP-HumanSeg-Lite batch 16",
            lambda: PaddleSegSegmenter(model_dir="pp_humanseg_v1_lite_192", cpu_threads=args.threads),
            8,
        )
    )
    for name, make, frames_per_call in runs:
        try:
            stage = make()
        except (ImportError, FileNotFoundError, RuntimeError) as error:
            print(f"{name:<36} skipped: {error}")
            continue
        wall, cpu = ms_per_crop(stage, images, frames_per_call)
        print(f"{name:<36} {wall:12.2f} {cpu:12.2f} {cpu / base_cpu:15.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
