"""Rendering speed of the synthetic walker generator at 640x480 with 5 walkers, one core.

Two paths are timed on the same 5 walkers over the same frames:
- silhouettes only: label image, visible masks and boxes, OpenGait pretreatment of every mask
  (what a silhouette dataset export does per frame); target >= 100 frames/s;
- RGB video: the above plus RGB composition (background, colours, noise) and H.264 encoding with
  PyAV; target >= 25 frames/s.
Baselines run in the same process: the pretreatment alone on the same masks, and H.264 encoding of
the already rendered frames alone; ratios show what the renderer adds on top of them.

    python -m bench.bench_synth [--frames 250]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np

from synth.appearance import make_appearance
from synth.background import make_background
from synth.camera import Camera
from synth.dataset import generate_identities, pretreat_person
from synth.render import FrameRenderer, PersonDraw, project_volumes
from synth.video import VideoWriter
from synth.walker import follow_path, world_volumes


def scene(frames: int):
    cam = Camera.looking_at(640, 480, 500.0, (0.0, -12.0, 4.0), (0.0, 0.0, 0.8))
    identities = generate_identities(5, seed=1)
    rng = np.random.default_rng(0)
    people = []
    for i, ident in enumerate(identities):
        a = np.array([rng.uniform(-6, -3), rng.uniform(-4, 4)])
        b = np.array([rng.uniform(3, 6), rng.uniform(-4, 4)])
        path = np.array([a, b, a, b]) if i % 2 == 0 else np.array([b, a, b, a])
        track = follow_path(ident, ident.gait, path, {1: 1.5} if i == 2 else {}, 25.0, frames)
        vol = world_volumes(ident, ident.gait, track)
        people.append((project_volumes(cam, vol), make_appearance(ident.appearance_seed), len(track)))
    return cam, people


def draws_at(people, t):
    return [PersonDraw(k, p, min(t, n - 1), app) for k, (p, app, n) in enumerate(people)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=250)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    n = args.frames
    cam, people = scene(n)
    renderer = FrameRenderer(cam, make_background(cam, 3), noise_sigma=2.5, lighting=(0.05, 8.0))

    # Silhouettes only.
    masks = []
    visible = 0
    start = time.perf_counter()
    for t in range(n):
        d = draws_at(people, t)
        renderer.draw_labels(d)
        for pf in renderer.person_frames(d):
            if pf.box is not None:
                pretreat_person(pf, cam.width)
                visible += 1
                if t < 50:
                    masks.append(pf)
    sil_fps = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for pf in masks:
        pretreat_person(pf, cam.width)
    pretreat_per_frame = (time.perf_counter() - start) / 50

    # RGB video.
    images = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with VideoWriter(Path(tmp) / "bench.mp4", 25.0, (480, 640)) as writer:
            for t in range(n):
                d = draws_at(people, t)
                renderer.draw_labels(d)
                frames = renderer.person_frames(d)
                for pf in frames:
                    if pf.box is not None:
                        pretreat_person(pf, cam.width)
                image = renderer.compose_rgb(d, frames, t)
                writer.write(image)
                if t < 100:
                    images.append(image)
        rgb_fps = n / (time.perf_counter() - start)
        start = time.perf_counter()
        with VideoWriter(Path(tmp) / "encode_only.mp4", 25.0, (480, 640)) as writer:
            for image in images:
                writer.write(image)
        encode_fps = len(images) / (time.perf_counter() - start)

    print(f"frames: {n} at 640x480, 5 walkers ({visible / n:.2f} visible per frame on average), 1 thread")
    print(f"silhouettes only : {sil_fps:7.1f} frames/s  (target 100: x{sil_fps / 100:.2f}; "
          f"pretreatment alone {1 / pretreat_per_frame:7.1f} frames/s, "
          f"rendering adds {1000 / sil_fps - 1000 * pretreat_per_frame:.2f} ms/frame)")
    print(f"RGB video (H.264): {rgb_fps:7.1f} frames/s  (target 25: x{rgb_fps / 25:.2f}; "
          f"encode alone {encode_fps:7.1f} frames/s, ratio {rgb_fps / encode_fps:.2f})")


if __name__ == "__main__":
    main()
