"""Attribute recognition metrics of RA-GAR / pedestrian attribute recognition, on the flat class axis.

Every class of every attribute is one binary label (N_all = 45 of them); a clip's prediction is the
set of classes whose score passes ``threshold``.

- mA (attribute-based): mean over labels of (TPR + TNR) / 2.
- Instance-based: per clip, accuracy = |pred & truth| / |pred | truth|, precision = |pred & truth| /
  |pred|, recall = |pred & truth| / |truth|, each averaged over clips; F1 = 2 P R / (P + R) of the
  averages (the convention of the pedestrian attribute literature that RA-GAR follows).
- Label accuracy: fraction of clips whose arg-max class is right, per attribute (what a tagger that
  outputs one label per attribute gets right).
Labels with no positive (or no negative) clip contribute only the defined half of mA.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from stages.attributes.table import ATTRIBUTES, CLASS_COUNTS, CLASS_OFFSETS, NUM_CLASSES_ALL


@dataclass(frozen=True)
class Scores:
    """Metrics in percent."""

    mA: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    label_accuracy: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in asdict(self).items()}


def _balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per label (TPR + TNR) / 2 over clips; pred, truth (N, L) bool -> (L,)."""
    pos, neg = truth.sum(0), (~truth).sum(0)
    tpr = np.where(pos > 0, (pred & truth).sum(0) / np.maximum(pos, 1), np.nan)
    tnr = np.where(neg > 0, (~pred & ~truth).sum(0) / np.maximum(neg, 1), np.nan)
    return np.nanmean(np.stack([tpr, tnr]), axis=0)


def _instance(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float, float]:
    inter = (pred & truth).sum(1)
    union = (pred | truth).sum(1)
    eps = 1e-12
    acc = float(np.mean(inter / np.maximum(union, eps)))
    prec = float(np.mean(np.where(pred.sum(1) > 0, inter / np.maximum(pred.sum(1), eps), 0.0)))
    rec = float(np.mean(inter / np.maximum(truth.sum(1), eps)))
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return acc, prec, rec, f1


def _label_accuracy(scores: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(scores.argmax(1) == truth.argmax(1)))


def compute_scores(scores: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> Scores:
    """scores: (N, L) per-class scores in [0, 1]; truth: (N, L) 0/1, one positive per attribute block."""
    scores, truth = np.asarray(scores, np.float64), np.asarray(truth) > 0.5
    if scores.shape != truth.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and truth {truth.shape} must be equal (N, L)")
    pred = scores >= threshold
    acc, prec, rec, f1 = _instance(pred, truth)
    if scores.shape[1] == NUM_CLASSES_ALL:
        label_acc = float(
            np.mean(
                [
                    _label_accuracy(scores[:, o : o + n], truth[:, o : o + n])
                    for o, n in zip(CLASS_OFFSETS, CLASS_COUNTS)
                ]
            )
        )
    else:
        label_acc = _label_accuracy(scores, truth)
    return Scores(
        mA=100 * float(np.nanmean(_balanced_accuracy(pred, truth))),
        accuracy=100 * acc,
        precision=100 * prec,
        recall=100 * rec,
        f1=100 * f1,
        label_accuracy=100 * label_acc,
    )


def evaluate(scores: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> dict:
    """Overall and per-attribute metrics: {"overall": {...}, "per_attribute": {name: {...}}}."""
    if scores.shape[1] != NUM_CLASSES_ALL:
        raise ValueError(f"expected {NUM_CLASSES_ALL} class scores per clip, got {scores.shape[1]}")
    per = {
        a.name: compute_scores(scores[:, o : o + n], truth[:, o : o + n], threshold).as_dict()
        for a, o, n in zip(ATTRIBUTES, CLASS_OFFSETS, CLASS_COUNTS)
    }
    return {"overall": compute_scores(scores, truth, threshold).as_dict(), "per_attribute": per}
