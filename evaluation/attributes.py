"""Evaluate attribute checkpoints: held-out synthetic identities and CASIA-B consistency.

    python -m evaluation.attributes --config configs/train/clip_gar.yaml \
        [--weights weights/clip_gar.pt] [--baseline weights/clip_gar_baseline.pt] [--out metrics.json]

Synthetic: mA, instance accuracy / precision / recall / F1 (threshold 0.5) and arg-max label
accuracy, overall, per attribute and per walking condition, for CLIP-GAR (Fusion stage), its Align
stage alone (softmax over each attribute's similarities) and the classification baseline.

CASIA-B (real people, no attribute labels): each test subject's sequences (NM, BG, CL at a few
views) are tagged like the pipeline tags a gait segment (30-frame clips, scores averaged). Per
attribute: ``consistency`` = share of a subject's sequences that agree with the subject's majority
label (averaged over subjects); ``bg_cl_vs_nm`` = share of BG and CL sequences whose label equals
the subject's NM majority; ``labels_used`` = how many classes the subjects' majorities cover (a model
that always says the same is consistent and useless).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from evaluation.attributes_metrics import evaluate
from stages.attributes.checkpoint import load_checkpoint
from stages.attributes.model import ClipGar, align_probabilities
from stages.attributes.stage import clip_scores, segment_scores, to_predictions
from stages.attributes.table import ATTRIBUTE_NAMES, one_hot
from training.attributes_data import ClipSet, load_clip_set
from training.attributes_recipe import TrainConfig, load_config, project_path


@torch.no_grad()
def _align_scores(model: ClipGar, clips: np.ndarray, batch: int = 16) -> np.ndarray:
    out = []
    for i in range(0, len(clips), batch):
        x = torch.from_numpy(clips[i : i + batch].astype(np.float32) / 255.0)
        out.append(align_probabilities(model.align_logits(x)).numpy())
    return np.concatenate(out)


def _with_conditions(scores: np.ndarray, test: ClipSet) -> dict:
    truth = one_hot(test.labels)
    result = evaluate(scores, truth)
    result["per_condition"] = {
        c: evaluate(scores[test.conditions == c], truth[test.conditions == c])["overall"]
        for c in sorted(set(test.conditions.tolist()))
    }
    return result


def synthetic_metrics(weights: Path, baseline: Path | None, test: ClipSet, clip_frames: int) -> dict:
    clips = test.clips[:, :clip_frames]
    model, _ = load_checkpoint(weights)
    out = {"clips": len(test), "identities": len(set(test.identities.tolist()))}
    out["clip_gar"] = _with_conditions(clip_scores(model, clips), test)
    out["align_only"] = _with_conditions(_align_scores(model, clips), test)
    if baseline is not None:
        base, _ = load_checkpoint(baseline)
        out["baseline"] = _with_conditions(clip_scores(base, clips), test)
    return out


def casia_consistency(weights: Path, subjects: tuple[str, ...], views: tuple[str, ...]) -> dict:
    """Per-attribute agreement of the labels of one subject's CASIA-B sequences (see module doc)."""
    from training.casia_b import CasiaB

    reader = CasiaB(min_frames=10)
    keys = reader.keys(subjects=subjects, views=views)
    model, meta = load_checkpoint(weights)
    sequences = list(reader.iter_sequences(keys))
    scores = segment_scores(model, [s.silhouettes for s in sequences], int(meta["clip_frames"]))
    labels = [{k: p.label for k, p in to_predictions(s).items()} for s in scores]
    by_subject: dict[str, list[tuple[str, dict]]] = {}
    for seq, lab in zip(sequences, labels):
        by_subject.setdefault(seq.key.subject, []).append((seq.key.type[:2], lab))
    per_attr = {}
    for name in ATTRIBUTE_NAMES:
        consistency, cross, majorities = [], [], []
        for items in by_subject.values():
            values = [lab[name] for _, lab in items]
            majority = Counter(values).most_common(1)[0][0]
            majorities.append(majority)
            consistency.append(np.mean([v == majority for v in values]))
            nm = [lab[name] for typ, lab in items if typ == "nm"]
            if nm:
                nm_major = Counter(nm).most_common(1)[0][0]
                cross.extend(lab[name] == nm_major for typ, lab in items if typ != "nm")
        per_attr[name] = {
            "consistency": round(100 * float(np.mean(consistency)), 1),
            "bg_cl_vs_nm": round(100 * float(np.mean(cross)), 1) if cross else None,
            "labels_used": len(set(majorities)),
            "majority_labels": dict(Counter(majorities)),
        }
    return {
        "subjects": list(subjects),
        "views": list(views),
        "sequences": len(sequences),
        "mean_consistency": round(float(np.mean([v["consistency"] for v in per_attr.values()])), 1),
        "mean_bg_cl_vs_nm": round(
            float(np.mean([v["bg_cl_vs_nm"] for v in per_attr.values() if v["bg_cl_vs_nm"] is not None])), 1
        ),
        "per_attribute": per_attr,
    }


def evaluate_all(cfg: TrainConfig, weights: Path, baseline: Path | None, test: ClipSet | None = None) -> dict:
    """Everything the manifest records: synthetic metrics and, when CASIA-B is present, consistency."""
    from training.casia_b import DEFAULT_ROOT

    test = load_clip_set(cfg.test_data) if test is None else test
    out = {"synthetic_test": synthetic_metrics(weights, baseline, test, cfg.clip_frames)}
    if DEFAULT_ROOT.is_dir():
        out["casia_b_consistency"] = {"clip_gar": casia_consistency(weights, cfg.casia_subjects, cfg.casia_views)}
        if baseline is not None:
            out["casia_b_consistency"]["baseline"] = casia_consistency(baseline, cfg.casia_subjects, cfg.casia_views)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.attributes", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the training recipe (held-out data, CASIA-B subjects)")
    parser.add_argument("--weights", default=None, help="CLIP-GAR checkpoint (default: the recipe's output)")
    parser.add_argument("--baseline", default=None, help="baseline checkpoint (default: the recipe's baseline_output)")
    parser.add_argument("--out", default=None, help="also write the metrics JSON here")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    torch.set_num_threads(args.threads)
    weights = Path(args.weights) if args.weights else project_path(cfg.output)
    baseline = Path(args.baseline) if args.baseline else project_path(cfg.baseline_output)
    metrics = evaluate_all(cfg, weights, baseline if baseline.is_file() else None)
    text = json.dumps(metrics, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
