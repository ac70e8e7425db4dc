"""CASIA-B evaluation protocol (OpenGait's) and the GEI+PCA baseline.

Protocol: test subjects 075-124; gallery nm-01..04; probes NM (nm-05..06), BG (bg-01..02),
CL (cl-01..02). Rank-1 is computed per (probe view, gallery view) pair with the gallery restricted
to that view, identical views excluded, averaged over views (OpenGait's
``single_view_gallery_evaluation``). Rank-5/10, mAP and mINP rank the whole gallery with same-id
same-view entries removed (OpenGait's ``compute_ACC_mAP``); verification pairs are all
probe x gallery pairs under the same mask.

The gait model's evaluation command is :mod:`evaluation.gait`.
"""

from __future__ import annotations

import numpy as np

from evaluation.metrics import rank_metrics, tpr_at_fpr
from stages.gait.distance import part_distance
from training.casia_b import GALLERY_TYPES, PROBE_TYPES, TEST_SUBJECTS, TRAIN_SUBJECTS, CasiaB

FPRS = (1e-4, 1e-3, 1e-2, 1e-1)


def evaluate_casia_b(
    embeddings: np.ndarray, labels: np.ndarray, types: np.ndarray, views: np.ndarray, metric: str = "euc"
) -> dict:
    """Metrics per probe condition ({"NM": {...}, "BG": ..., "CL": ...}), percentages.

    Each condition has ``rank1`` (mean over probe views, identical views excluded),
    ``rank1_per_view`` (per probe view), ``rank5``, ``rank10``, ``map``, ``minp`` and
    ``tpr_at_fpr`` ({fpr: tpr}).
    """
    labels, types, views = np.asarray(labels), np.asarray(types), np.asarray(views)
    view_list = sorted(np.unique(views))
    g_mask = np.isin(types, GALLERY_TYPES)
    g_x, g_y, g_v = embeddings[g_mask], labels[g_mask], views[g_mask]
    out = {}
    for cond, probe_types in PROBE_TYPES.items():
        p_mask = np.isin(types, probe_types)
        if not p_mask.any():
            continue
        p_x, p_y, p_v = embeddings[p_mask], labels[p_mask], views[p_mask]
        dist = part_distance(p_x, g_x, metric)
        acc = np.full((len(view_list), len(view_list)), np.nan)
        for i, pv in enumerate(view_list):
            rows = p_v == pv
            for j, gv in enumerate(view_list):
                cols = g_v == gv
                if rows.any() and cols.any():
                    nearest = np.argmin(dist[np.ix_(rows, cols)], axis=1)
                    acc[i, j] = 100.0 * np.mean(g_y[cols][nearest] == p_y[rows])
        off = ~np.eye(len(view_list), dtype=bool)
        per_view = np.array([np.nanmean(acc[i][off[i]]) for i in range(len(view_list))])
        valid = (p_v[:, None] != g_v[None, :]) | (p_y[:, None] != g_y[None, :])
        ranks = rank_metrics(dist, p_y, g_y, valid)
        tprs = tpr_at_fpr(dist, p_y, g_y, FPRS, valid)
        out[cond] = {
            "rank1": round(float(np.mean(per_view)), 2),
            "rank1_per_view": {str(v): round(float(a), 2) for v, a in zip(view_list, per_view)},
            "rank5": round(100 * ranks.rank(5), 2),
            "rank10": round(100 * ranks.rank(10), 2),
            "map": round(100 * ranks.map, 2),
            "minp": round(100 * ranks.minp, 2),
            "tpr_at_fpr": {f"{f:g}": round(100 * t, 2) for f, t in tprs.items()},
        }
    return out


def gei_baseline(reader: CasiaB, max_train: int | None = 3000, dims: int = 128, metric: str = "euc") -> dict:
    """GEI + PCA (fitted on training subjects) nearest neighbour, evaluated like the gait model."""
    from evaluation.gei import GEIPCA, geis_of

    rng = np.random.default_rng(0)
    train_keys = reader.keys(subjects=TRAIN_SUBJECTS)
    if max_train is not None and len(train_keys) > max_train:
        train_keys = sorted(rng.choice(np.array(train_keys, dtype=object), max_train, replace=False).tolist())
    pca = GEIPCA(dims).fit(geis_of(s.silhouettes for s in reader.iter_sequences(train_keys)))
    test_keys = reader.keys(subjects=TEST_SUBJECTS)
    seqs = list(reader.iter_sequences(test_keys))
    emb = pca.transform(geis_of(s.silhouettes for s in seqs))
    return evaluate_casia_b(
        emb,
        np.array([s.key.subject for s in seqs]),
        np.array([s.key.type for s in seqs]),
        np.array([s.key.view for s in seqs]),
        metric,
    )


def summary_line(name: str, result: dict) -> str:
    return f"{name}: " + "  ".join(f"{c} R1 {r['rank1']:.2f} mAP {r['map']:.2f}" for c, r in result.items())
