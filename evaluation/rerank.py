"""CASIA-B evaluation of re-rankers, on the protocol of ``evaluation.casia_b`` and its metrics.

Rank-1: per (probe view, gallery view) pair with the gallery restricted to that view, identical
views excluded, averaged over probe views; each view-pair ranking is re-ranked on its own. Rank-5
and mAP: the whole gallery with same-identity same-view entries masked (OpenGait's
``compute_ACC_mAP``), re-ranked once per probe. A re-ranker returns scores (lower = better) that
only have to order the gallery; every re-ranker sees the same initial distances.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from evaluation.kreciprocal import k_reciprocal_distances
from evaluation.metrics import rank_metrics
from stages.gait.distance import part_distance
from stages.rerank.model import CarGait, PairClassifier, Projected, strip_euclidean
from training.casia_b import GALLERY_TYPES, PROBE_TYPES
from training.gait_features import FeatureSet

# (probe indices (Q,), gallery indices (G,) into the feature set, initial distances (Q, G),
#  valid (Q, G) bool: entries allowed in the ranking) -> scores (Q, G), lower ranks first
Reranker = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RankMetrics:
    """Percentages: Rank-1, Rank-5 accuracy and mean average precision."""

    rank1: float
    rank5: float
    mAP: float


def rerank_scores(dist: np.ndarray, valid: np.ndarray, k: int, new_distances: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Scores that put each row's top-``k`` valid entries first, in the order of their new distances,
    and keep the initial order after them. ``new_distances(top)`` maps (Q, k) gallery positions to
    (Q, k) re-ranked distances."""
    masked = np.where(valid, dist, np.inf)
    k = min(k, dist.shape[1])
    top = np.argsort(masked, axis=1, kind="stable")[:, :k]
    new = new_distances(top)
    perm = np.argsort(new, axis=1, kind="stable")
    scores = dist - dist.min() + float(k) + 1.0  # everything after the top-k: initial order, above k
    rows = np.arange(len(dist))[:, None]
    scores[rows, np.take_along_axis(top, perm, axis=1)] = np.arange(k)[None, :]
    return scores


def initial_scores(probe_idx: np.ndarray, gallery_idx: np.ndarray, dist: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """No re-ranking: the frozen model's distance."""
    return dist


class ShortlistReranker:
    """Re-ranks each probe's top-K with a pair model (CarGait, or the pair-classifier baseline).

    features: (N, P, C) of the whole evaluated set; CarGait projections are computed once per sequence.
    """

    def __init__(self, model: CarGait | PairClassifier, features: np.ndarray, k: int = 10, batch: int = 512) -> None:
        if tuple(features.shape[1:]) != (model.parts, model.channels):
            raise ValueError(f"features are {tuple(features.shape[1:])} per sequence, the re-ranker takes "
                             f"{(model.parts, model.channels)}: it belongs to another gait model")
        self.model = model.eval()
        self.k = k
        self.batch = batch
        f = torch.as_tensor(features, dtype=torch.float32)
        with torch.inference_mode():
            if isinstance(model, CarGait):
                parts = [model.project(f[i : i + 4096]) for i in range(0, len(f), 4096)]
                self.projected: Projected | torch.Tensor = Projected(*(torch.cat(t) for t in zip(*parts)))
            else:
                self.projected = f

    def pair_distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Re-ranked distance of pairs (a[i], b[i]) of feature-set indices."""
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
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)

    def __call__(self, probe_idx: np.ndarray, gallery_idx: np.ndarray, dist: np.ndarray, valid: np.ndarray) -> np.ndarray:
        def new(top: np.ndarray) -> np.ndarray:
            pairs = self.pair_distances(np.repeat(probe_idx, top.shape[1]), gallery_idx[top].reshape(-1))
            return pairs.reshape(top.shape)

        return rerank_scores(dist, valid, self.k, new)


class KReciprocalReranker:
    """k-reciprocal re-ranking of the whole gallery (Zhong et al.; k1, k2, lambda as published)."""

    def __init__(self, features: np.ndarray, metric: str = "euc", k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> None:
        self.features = features
        self.metric = metric
        self.k1, self.k2, self.lambda_value = k1, k2, lambda_value

    def __call__(self, probe_idx: np.ndarray, gallery_idx: np.ndarray, dist: np.ndarray, valid: np.ndarray) -> np.ndarray:
        fq, fg = self.features[probe_idx], self.features[gallery_idx]
        q_q = part_distance(fq, fq, self.metric)
        g_g = part_distance(fg, fg, self.metric)
        return k_reciprocal_distances(dist, q_q, g_g, self.k1, self.k2, self.lambda_value)


def evaluate_casia_b(test: FeatureSet, rerankers: dict[str, Reranker], metric: str = "euc") -> dict[str, dict[str, RankMetrics]]:
    """Rank-1/Rank-5/mAP of each re-ranker per probe condition (NM/BG/CL), in percent."""
    views = sorted(set(test.views.tolist()))
    g_idx = np.flatnonzero(np.isin(test.types, GALLERY_TYPES))
    g_y, g_v = test.subjects[g_idx], test.views[g_idx]
    results: dict[str, dict[str, RankMetrics]] = {name: {} for name in rerankers}
    for condition, probe_types in PROBE_TYPES.items():
        p_idx = np.flatnonzero(np.isin(test.types, probe_types))
        if len(p_idx) == 0:
            continue
        p_y, p_v = test.subjects[p_idx], test.views[p_idx]
        dist = part_distance(test.features[p_idx], test.features[g_idx], metric)
        valid = (p_v[:, None] != g_v[None, :]) | (p_y[:, None] != g_y[None, :])
        for name, rerank in rerankers.items():
            acc = np.full((len(views), len(views)), np.nan)
            for i, pv in enumerate(views):
                rows = np.flatnonzero(p_v == pv)
                for j, gv in enumerate(views):
                    cols = np.flatnonzero(g_v == gv)
                    if i == j or len(rows) == 0 or len(cols) == 0:
                        continue
                    block = dist[np.ix_(rows, cols)]
                    scores = rerank(p_idx[rows], g_idx[cols], block, np.ones_like(block, dtype=bool))
                    acc[i, j] = 100.0 * np.mean(g_y[cols][np.argmin(scores, axis=1)] == p_y[rows])
            rank1 = float(np.nanmean(np.nanmean(acc, axis=1)))
            ranks = rank_metrics(rerank(p_idx, g_idx, dist, valid), p_y, g_y, valid)
            results[name][condition] = RankMetrics(round(rank1, 2), round(100 * ranks.rank(5), 2), round(100 * ranks.map, 2))
    return results


def format_table(results: dict[str, dict[str, RankMetrics]]) -> str:
    """Plain-text table: one row per re-ranker, Rank-1/Rank-5/mAP per condition."""
    conditions = [c for c in PROBE_TYPES if any(c in per for per in results.values())]
    lines = [f"{'method':<16}" + "".join(f"{c + ' R1':>9}{c + ' R5':>9}{c + ' mAP':>9}" for c in conditions)]
    for name, per in results.items():
        lines.append(f"{name:<16}" + "".join(f"{per[c].rank1:>9.2f}{per[c].rank5:>9.2f}{per[c].mAP:>9.2f}" for c in conditions))
    return "\n".join(lines)


def as_dict(results: dict[str, dict[str, RankMetrics]]) -> dict[str, dict[str, dict[str, float]]]:
    return {name: {c: asdict(m) for c, m in per.items()} for name, per in results.items()}


def main(argv: list[str] | None = None) -> int:
    """``python -m evaluation.rerank --features TEST.npz [--weights CARGAIT.pt] [--kreciprocal]``"""
    import argparse
    import json
    from pathlib import Path

    from stages.rerank.weights import load_reranker

    ap = argparse.ArgumentParser(
        prog="python -m evaluation.rerank", description="CASIA-B Rank-1/Rank-5/mAP before and after re-ranking"
    )
    ap.add_argument("--features", required=True, help="test features .npz (evaluation.gait extract --split test)")
    ap.add_argument("--weights", default=None, help="CarGait checkpoint to evaluate")
    ap.add_argument("--kreciprocal", action="store_true", help="also k-reciprocal (k1=20, k2=6, lambda=0.3)")
    ap.add_argument("--k", type=int, default=10, help="re-ranked list length")
    ap.add_argument("--metric", choices=["euc", "cos"], default="euc")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSON file for the metrics")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    test = FeatureSet.load(args.features)
    rerankers: dict[str, Reranker] = {"initial": initial_scores}
    if args.weights:
        model, _ = load_reranker(args.weights)
        rerankers["cargait"] = ShortlistReranker(model, test.features, args.k)
    if args.kreciprocal:
        rerankers["k_reciprocal"] = KReciprocalReranker(test.features, args.metric)
    results = evaluate_casia_b(test, rerankers, args.metric)
    print(format_table(results))
    if args.out:
        Path(args.out).expanduser().write_text(json.dumps(as_dict(results), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
