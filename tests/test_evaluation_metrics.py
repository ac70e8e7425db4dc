"""Retrieval metrics and the CASIA-B protocol on hand-made embeddings."""

import numpy as np
import pytest

from evaluation.casia_b import evaluate_casia_b
from evaluation.gei import GEIPCA, gait_energy_image
from evaluation.metrics import rank_metrics, tpr_at_fpr
from stages.gait.distance import part_distance


def test_part_distance_is_mean_of_per_part_euclidean_not_concatenated_l2():
    x = np.array([[[0.0, 0.0], [0.0, 0.0]]])
    y = np.array([[[3.0, 4.0], [0.0, 0.0]]])
    assert part_distance(x, y, "euc")[0, 0] == pytest.approx(2.5)  # (5 + 0) / 2, L2 would be 5
    c = part_distance(np.array([[[1.0, 0.0], [0.0, 2.0]]]), np.array([[[2.0, 0.0], [1.0, 0.0]]]), "cos")
    assert c[0, 0] == pytest.approx(1 - (1 + 0) / 2)


def test_rank_metrics_by_hand():
    # query 0: gallery order by distance -> labels [b, a, a]: first hit at rank 2
    dist = np.array([[0.2, 0.1, 0.3], [0.1, 0.5, 0.4]])
    g = np.array(["a", "b", "a"])
    r = rank_metrics(dist, np.array(["a", "a"]), g)
    # query 0 AP = (1/2 + 2/3) / 2; query 1 ranks a(0.1), a(0.4), b: AP = 1
    assert r.map == pytest.approx(((0.5 + 2 / 3) / 2 + 1.0) / 2)
    assert r.rank(1) == pytest.approx(0.5) and r.rank(2) == pytest.approx(1.0)
    # mINP: query 0 last hit at position 3 of 2 hits -> 2/3; query 1 -> 2/2
    assert r.minp == pytest.approx((2 / 3 + 1.0) / 2)
    masked = rank_metrics(dist, np.array(["a", "a"]), g, valid=np.array([[True, False, True], [True, True, True]]))
    assert masked.rank(1) == pytest.approx(1.0)


def test_tpr_at_fpr():
    q = np.array([0, 1])
    g = np.array([0, 1, 2, 3])
    dist = np.array([[0.1, 0.5, 0.6, 0.9], [0.4, 0.3, 0.8, 0.95]])
    # impostor distances sorted: 0.4 0.5 0.6 0.8 0.9 0.95; at FPR 1/6 the threshold is 0.4
    res = tpr_at_fpr(dist, q, g, fprs=(1 / 6, 0.5))
    assert res[1 / 6] == pytest.approx(1.0)  # both genuine (0.1, 0.3) <= 0.4
    assert tpr_at_fpr(dist * np.array([[1, 1, 1, 1], [1, 2, 1, 1]]), q, g, fprs=(1 / 6,))[1 / 6] == pytest.approx(0.5)


def test_casia_protocol_excludes_identical_views_and_splits_conditions():
    rng = np.random.default_rng(0)
    subjects = [f"{i:03d}" for i in range(75, 80)]
    views = ["000", "090", "180"]
    labels, types, vs, emb = [], [], [], []
    centres = {s: rng.normal(size=(2, 4)) * 5 for s in subjects}
    for s in subjects:
        for t in ["nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02"]:
            for v in views:
                noise = 0.01 if not t.startswith("cl") else 100.0  # CL probes are pure noise
                emb.append(centres[s] + rng.normal(size=(2, 4)) * noise)
                labels.append(s), types.append(t), vs.append(v)
    res = evaluate_casia_b(np.array(emb), np.array(labels), np.array(types), np.array(vs))
    assert res["NM"]["rank1"] == 100.0 and res["BG"]["rank1"] == 100.0
    assert res["CL"]["rank1"] < 60.0
    assert set(res["NM"]["rank1_per_view"]) == set(views)
    assert res["NM"]["map"] == 100.0 and res["NM"]["tpr_at_fpr"]["0.01"] == 100.0


def test_gei_pca_shapes():
    sils = (np.random.default_rng(0).random((20, 5, 64, 44)) > 0.5).astype(np.uint8) * 255
    geis = np.stack([gait_energy_image(s) for s in sils])
    assert geis.shape == (20, 64, 44) and 0 <= geis.min() and geis.max() <= 1
    emb = GEIPCA(8).fit(geis).transform(geis)
    assert emb.shape == (20, 1, 8)
