"""Evaluate a gait model on CASIA-B (OpenGait's protocol, :mod:`evaluation.casia_b`) and extract its
embeddings.

Commands::

    # metrics of a checkpoint (+ the GEI+PCA baseline in the same run), features cached
    python -m evaluation.gait evaluate --weights weights/gar_casiab.pt --max-frames 30 \
        --features ~/.cache/gaitscope/features/gar_casiab_test.npz --gei --out /tmp/casia_eval.json
    # embeddings of the training subjects (e.g. to train a re-ranker on a frozen model)
    python -m evaluation.gait extract --weights weights/gar_casiab.pt --split train \
        --max-frames 30 --features ~/.cache/gaitscope/features/gar_casiab_train.npz
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from evaluation.casia_b import evaluate_casia_b, gei_baseline, summary_line
from stages.gait.weights import DEFAULT_WEIGHTS, load_gait_model
from training.casia_b import TEST_SUBJECTS, TRAIN_SUBJECTS, CasiaB
from training.gait_features import FEATURES_DIR, extract_casia_features


def main(argv: list[str] | None = None) -> None:
    import torch

    ap = argparse.ArgumentParser(
        prog="python -m evaluation.gait", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("action", choices=["evaluate", "extract"])
    ap.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    ap.add_argument("--root", default=None, help="CASIA-B compact copy (default ../shared/data/casia-b)")
    ap.add_argument("--split", choices=["train", "test"], default="test")
    ap.add_argument(
        "--max-frames", type=int, default=None, help="embed at most this many frames per sequence, spread evenly"
    )
    ap.add_argument("--metric", choices=["euc", "cos"], default="euc")
    ap.add_argument("--features", default=None, help="npz to write the embeddings to")
    ap.add_argument("--gei", action="store_true", help="also evaluate the GEI+PCA baseline")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="JSON file for the metrics")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    reader = CasiaB(args.root) if args.root else CasiaB()
    model, version = load_gait_model(args.weights)
    subjects = TRAIN_SUBJECTS if args.split == "train" else TEST_SUBJECTS
    keys = reader.keys(subjects=subjects)
    features = (
        Path(args.features).expanduser()
        if args.features
        else FEATURES_DIR / f"{Path(args.weights).stem}_{args.split}.npz"
    )
    t0 = time.time()
    feats = extract_casia_features(model, reader, keys, args.max_frames, features)
    seconds = time.time() - t0
    print(
        f"{len(keys)} sequences embedded in {seconds:.0f}s ({len(keys) / seconds:.1f} seq/s) -> {features}", flush=True
    )
    if args.action == "extract":
        return
    report = {
        "weights": args.weights,
        "version": version,
        "max_frames": args.max_frames,
        "metric": args.metric,
        "features": str(features),
        "gait": evaluate_casia_b(feats["embeddings"], feats["labels"], feats["types"], feats["views"], args.metric),
    }
    print(summary_line("gait", report["gait"]), flush=True)
    if args.gei:
        report["gei_pca"] = gei_baseline(reader, metric=args.metric)
        print(summary_line("GEI+PCA", report["gei_pca"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
