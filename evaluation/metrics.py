"""Retrieval metrics over a distance matrix, following OpenGait's evaluator: CMC, mAP, mINP and
verification TPR at FPR. Gait distances come from :func:`stages.gait.distance.part_distance`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RankResult:
    """cmc[k-1]: fraction of queries with a match in the top k; map/minp over queries with a match."""

    cmc: np.ndarray
    map: float
    minp: float

    def rank(self, k: int) -> float:
        return float(self.cmc[min(k, len(self.cmc)) - 1])


def rank_metrics(
    dist: np.ndarray, q_labels: np.ndarray, g_labels: np.ndarray, valid: np.ndarray | None = None
) -> RankResult:
    """CMC, mAP and mINP (OpenGait's ``evaluate_rank``). ``valid`` (n, m) bool masks out gallery
    entries per query (e.g. identical-view cases). Queries without any match are skipped."""
    n, m = dist.shape
    q_labels, g_labels = np.asarray(q_labels), np.asarray(g_labels)
    cmc_sum = np.zeros(m)
    aps, inps = [], []
    for i in range(n):
        keep = np.ones(m, bool) if valid is None else valid[i]
        order = np.argsort(dist[i][keep], kind="stable")
        matches = (g_labels[keep][order] == q_labels[i]).astype(np.float64)
        if not matches.any():
            continue
        cmc = np.minimum(matches.cumsum(), 1.0)
        cmc_sum[: len(cmc)] += cmc
        cmc_sum[len(cmc) :] += 1.0
        hits = np.flatnonzero(matches)
        inps.append(matches.sum() / (hits[-1] + 1.0))
        precision = matches.cumsum() / np.arange(1, len(matches) + 1)
        aps.append(float((precision * matches).sum() / matches.sum()))
    count = len(aps)
    if count == 0:
        raise ValueError("no query has a matching gallery entry")
    return RankResult(cmc_sum / count, float(np.mean(aps)), float(np.mean(inps)))


def tpr_at_fpr(
    dist: np.ndarray,
    q_labels: np.ndarray,
    g_labels: np.ndarray,
    fprs: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
    valid: np.ndarray | None = None,
) -> dict[float, float]:
    """Verification: over all (query, gallery) pairs, the genuine acceptance rate at the distance
    threshold where the impostor acceptance rate equals each FPR."""
    same = np.asarray(q_labels)[:, None] == np.asarray(g_labels)[None, :]
    keep = np.ones_like(same) if valid is None else valid
    genuine = np.sort(dist[same & keep])
    impostor = np.sort(dist[~same & keep])
    out = {}
    for f in fprs:
        k = int(np.floor(f * len(impostor)))  # accept the k closest impostor pairs
        threshold = impostor[k - 1] if k >= 1 else -np.inf
        out[float(f)] = float(np.searchsorted(genuine, threshold, side="right") / max(1, len(genuine)))
    return out
