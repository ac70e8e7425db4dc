"""Gait embedding throughput on CPU (sequences/s), with baselines run in the same process.

    python bench/bench_gait_embedding.py [--weights weights/gar_casiab.pt] [--sequences 64] [--frames 30]

Compares the shipped model packed across sequences (how GaitRecognizer runs) with the same model
one sequence at a time, and with an OpenGait-size GaitBase (64/128/256/512, no max-pool) packed.
Input: real CASIA-B test silhouettes when present, random blobs otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from stages.gait.embedding import embed_sequences
from stages.gait.model import GaitBase, GaitBaseConfig
from stages.gait.weights import DEFAULT_WEIGHTS, load_gait_model


def inputs(n: int, frames: int) -> list[tuple[np.ndarray, None]]:
    try:
        from training.casia_b import TEST_SUBJECTS, CasiaB

        reader = CasiaB(min_frames=frames)
        keys = reader.keys(subjects=TEST_SUBJECTS[:2])[:n]
        seqs = [s.silhouettes[:frames] for s in reader.iter_sequences(keys)]
    except FileNotFoundError:
        seqs = []
    rng = np.random.default_rng(0)
    while len(seqs) < n:
        seqs.append((rng.random((frames, 64, 44)) > 0.5).astype(np.uint8) * 255)
    return [(s, None) for s in seqs[:n]]


def rate(model: GaitBase, seqs: list, batch_frames: int) -> float:
    embed_sequences(model, seqs[:2], batch_frames)  # warm-up
    t = time.perf_counter()
    embed_sequences(model, seqs, batch_frames)
    return len(seqs) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    ap.add_argument("--sequences", type=int, default=64)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seqs = inputs(args.sequences, args.frames)
    model, version = load_gait_model(args.weights)
    packed = rate(model, seqs, 1024)
    single = rate(model, seqs, 1)
    full = GaitBase(GaitBaseConfig()).eval()
    full_packed = rate(full, seqs[: max(4, args.sequences // 8)], 1024)
    print(
        f"shipped {version}: {packed:.1f} seq/s packed ({packed * args.frames:.0f} frames/s), "
        f"{single:.1f} seq/s one by one"
    )
    print(f"OpenGait-size GaitBase: {full_packed:.2f} seq/s packed")
    print(f"ratio packed/one-by-one: {packed / single:.2f}x; shipped/OpenGait-size: {packed / full_packed:.1f}x")


if __name__ == "__main__":
    main()
