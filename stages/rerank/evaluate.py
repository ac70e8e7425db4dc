"""CASIA-B evaluation of re-rankers: Rank-1, Rank-5 and mAP per probe condition (NM/BG/CL).

Protocol (OpenGait/GaitSet): gallery nm-01..04, probes nm-05..06 / bg-01..02 / cl-01..02; for each
probe view and each different gallery view, the probes of that view are ranked against the gallery
sequences of that view; metrics are averaged over the 110 (probe view, gallery view) pairs.
Every re-ranker sees the same initial distances, so the rows of one report compare like with like.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from stages.rerank.features import FeatureSet, pair_distance
from stages.rerank.kreciprocal import k_reciprocal_distances
from stages.rerank.model import CarGait, PairClassifier, Projected, strip_euclidean

GALLERY_TYPES = ("nm-01", "nm-02", "nm-03", "nm-04")
PROBE_TYPES = {"NM": ("nm-05", "nm-06"), "BG": ("bg-01", "bg-02"), "CL": ("cl-01", "cl-02")}

# (probe indices (Q,), gallery indices (G,) into the feature set, initial distances (Q, G))
#   -> gallery positions of each probe, best first (Q, G)
Reranker = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RankMetrics:
    """Percentages: Rank-1, Rank-5 accuracy and mean average precision."""

    rank1: float
    rank5: float
    mAP: float


def rank_metrics(order: np.ndarray, matches: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-probe hit@1, hit@5 and average precision.

    order: (Q, G) gallery positions best first; matches: (Q, G) bool, gallery g has the probe's
    identity. Probes without any match score 0 on the ranks and NaN on AP (left out of the mean).
    """
    hits = np.take_along_axis(matches, order, axis=1)
    hit1 = hits[:, :1].any(1)
    hit5 = hits[:, :5].any(1)
    cum = np.cumsum(hits, axis=1)
    precision = cum / np.arange(1, hits.shape[1] + 1)
    n_pos = hits.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (precision * hits).sum(1) / n_pos
    return hit1, hit5, np.where(n_pos > 0, ap, np.nan)


def rerank_top_k(order: np.ndarray, new_distances: np.ndarray) -> np.ndarray:
    """Re-order the first K columns of ``order`` (Q, G) by ``new_distances`` (Q, K); the rest stay."""
    k = new_distances.shape[1]
    perm = np.argsort(new_distances, axis=1, kind="stable")
    out = order.copy()
    out[:, :k] = np.take_along_axis(order[:, :k], perm, axis=1)
    return out


def initial_order(probe_idx: np.ndarray, gallery_idx: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """No re-ranking: gallery sorted by the frozen model's distance."""
    return np.argsort(dist, axis=1, kind="stable")


class CarGaitReranker:
    """Re-ranks each probe's top-K with CarGait; projections of every sequence computed once.

    features: (N, P, C) of the whole evaluated set, indexed by the probe and gallery indices.
    """

    def __init__(self, model: CarGait | PairClassifier, features: np.ndarray, k: int = 10, batch: int = 4096) -> None:
        self.model = model.eval()
        self.k = k
        self.batch = batch
        f = torch.as_tensor(features, dtype=torch.float32)
        with torch.inference_mode():
            if isinstance(model, CarGait):
                parts = [model.project(f[i : i + batch]) for i in range(0, len(f), batch)]
                self.projected: Projected | torch.Tensor = Projected(*(torch.cat(t) for t in zip(*parts)))
            else:
                self.projected = f

    def _pair_distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(a), self.batch):
                ia = torch.as_tensor(a[i : i + self.batch])
                ib = torch.as_tensor(b[i : i + self.batch])
                if isinstance(self.model, CarGait):
                    ea, eb = self.model.condition(self.projected.take(ia), self.projected.take(ib))
                    out.append(strip_euclidean(ea, eb))
                else:
                    out.append(-self.model(self.projected[ia], self.projected[ib]))
        return torch.cat(out).numpy()

    def __call__(self, probe_idx: np.ndarray, gallery_idx: np.ndarray, dist: np.ndarray) -> np.ndarray:
        order = np.argsort(dist, axis=1, kind="stable")
        k = min(self.k, order.shape[1])
        top = order[:, :k]
        new = self._pair_distances(np.repeat(probe_idx, k), gallery_idx[top].reshape(-1))
        return rerank_top_k(order, new.reshape(len(probe_idx), k))


class KReciprocalReranker:
    """k-reciprocal re-ranking of the whole gallery with the given parameters."""

    def __init__(self, features: np.ndarray, metric: str = "euc", k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> None:
        self.features = features
        self.metric = metric
        self.k1, self.k2, self.lambda_value = k1, k2, lambda_value

    def __call__(self, probe_idx: np.ndarray, gallery_idx: np.ndarray, dist: np.ndarray) -> np.ndarray:
        fq, fg = self.features[probe_idx], self.features[gallery_idx]
        final = k_reciprocal_distances(
            dist, pair_distance(fq, fq, self.metric), pair_distance(fg, fg, self.metric), self.k1, self.k2, self.lambda_value
        )
        return np.argsort(final, axis=1, kind="stable")


def evaluate_casia_b(
    test: FeatureSet, rerankers: dict[str, Reranker], metric: str = "euc"
) -> dict[str, dict[str, RankMetrics]]:
    """Metrics of each re-ranker per probe condition, averaged over (probe view, gallery view) pairs."""
    views = sorted(set(test.views.tolist()))
    results: dict[str, dict[str, RankMetrics]] = {}
    gallery_mask = np.isin(test.types, GALLERY_TYPES)
    for condition, probe_types in PROBE_TYPES.items():
        probe_mask = np.isin(test.types, probe_types)
        sums = {name: [] for name in rerankers}
        for pv in views:
            p_idx = np.flatnonzero(probe_mask & (test.views == pv))
            if len(p_idx) == 0:
                continue
            for gv in views:
                if gv == pv:
                    continue
                g_idx = np.flatnonzero(gallery_mask & (test.views == gv))
                if len(g_idx) == 0:
                    continue
                dist = pair_distance(test.features[p_idx], test.features[g_idx], metric)
                matches = test.subjects[p_idx][:, None] == test.subjects[g_idx][None, :]
                for name, rerank in rerankers.items():
                    h1, h5, ap = rank_metrics(rerank(p_idx, g_idx, dist), matches)
                    sums[name].append((h1.mean(), h5.mean(), np.nanmean(ap) if np.isfinite(ap).any() else 0.0))
        for name, rows in sums.items():
            r = np.asarray(rows).mean(0) * 100.0
            results.setdefault(name, {})[condition] = RankMetrics(round(float(r[0]), 2), round(float(r[1]), 2), round(float(r[2]), 2))
    return results


def format_table(results: dict[str, dict[str, RankMetrics]]) -> str:
    """Plain-text table: one row per re-ranker, Rank-1/Rank-5/mAP per condition."""
    conditions = list(PROBE_TYPES)
    head = f"{'method':<14}" + "".join(f"{c + ' R1':>9}{c + ' R5':>9}{c + ' mAP':>9}" for c in conditions)
    lines = [head]
    for name, per in results.items():
        lines.append(f"{name:<14}" + "".join(f"{per[c].rank1:>9.2f}{per[c].rank5:>9.2f}{per[c].mAP:>9.2f}" for c in conditions if c in per))
    return "\n".join(lines)


def as_dict(results: dict[str, dict[str, RankMetrics]]) -> dict[str, dict[str, dict[str, float]]]:
    return {name: {c: asdict(m) for c, m in per.items()} for name, per in results.items()}
