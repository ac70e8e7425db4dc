"""CarGait model, loss, training loop, k-reciprocal and the re-ranking evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.casia_b import evaluate_casia_b as reference_evaluation
from evaluation.kreciprocal import k_reciprocal_distances
from evaluation.rerank import (
    KReciprocalReranker,
    ShortlistReranker,
    evaluate_casia_b,
    initial_scores,
    rerank_scores,
)
from stages.gallery.search import Reranker, distinct_rows
from stages.rerank.model import CarGait, PairClassifier, ranking_loss, strip_euclidean
from stages.rerank.weights import load_reranker, save_reranker
from training.gait_features import FeatureSet
from training.rerank import TrainConfig, build_shortlists, split_validation, train_cargait

torch.set_num_threads(1)


def synthetic_casia(n_ids: int = 12, parts: int = 4, channels: int = 16, seed: int = 0) -> FeatureSet:
    """CASIA-B-shaped features: identity prototype + view offset + condition offset + noise."""
    rng = np.random.default_rng(seed)
    views = [f"{v:03d}" for v in range(0, 181, 36)]
    types = ["nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02"]
    proto = rng.normal(scale=0.35, size=(n_ids, parts, channels))
    view_off = {v: rng.normal(scale=0.6, size=(parts, channels)) for v in views}
    cond_off = {t: rng.normal(scale=0.8 if t[:2] != "nm" else 0.0, size=(parts, channels)) for t in types}
    feats, subj, typ, vw = [], [], [], []
    for i in range(n_ids):
        for t in types:
            for v in views:
                feats.append(proto[i] + view_off[v] + cond_off[t] + rng.normal(scale=0.5, size=(parts, channels)))
                subj.append(f"{i + 1:03d}")
                typ.append(t)
                vw.append(v)
    return FeatureSet(np.asarray(feats, np.float32), np.array(subj), np.array(typ), np.array(vw), "synthetic@0")


def small_model(num_classes: int = 0, seed: int = 0) -> CarGait:
    torch.manual_seed(seed)
    return CarGait(parts=4, channels=16, num_classes=num_classes, hidden=32, heads=4, classifier_hidden=16)


def test_untrained_cargait_is_the_frozen_metric():
    """Zero-initialised output projection: E = F, so the distance is the model's per-strip Euclidean."""
    m = small_model()
    fp, fc = torch.randn(5, 4, 16), torch.randn(5, 4, 16)
    ep, ec, d = m(fp, fc)
    assert torch.equal(ep, fp) and torch.equal(ec, fc)
    expected = torch.linalg.vector_norm(fp - fc, dim=-1).mean(-1)
    assert torch.allclose(d, expected, atol=1e-5)


def test_cross_attention_is_applied_both_ways_and_shortlist_matches_pairs():
    m = small_model()
    for p in m.cross.out.parameters():
        torch.nn.init.normal_(p, std=0.2)
    fp, fc = torch.randn(3, 4, 16), torch.randn(3, 6, 4, 16)
    batched = m.shortlist_distances(fp, fc)
    single = torch.stack([m(fp[i : i + 1].expand(6, -1, -1), fc[i])[2] for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-5)
    # the probe's conditioned map depends on the candidate (cross-attention), and symmetrically
    ep1, _, _ = m(fp[:1], fc[0, :1])
    ep2, _, _ = m(fp[:1], fc[0, 1:2])
    assert not torch.allclose(ep1, ep2)
    _, _, d_ab = m(fp[:1], fc[0, :1])
    _, _, d_ba = m(fc[0, :1], fp[:1])
    assert torch.allclose(d_ab, d_ba, atol=1e-5)


def test_distinct_rows_in_order_of_first_appearance():
    x = np.array([[[1.0, 2.0]], [[3.0, 4.0]], [[1.0, 2.0]], [[5.0, 6.0]], [[3.0, 4.0]]], np.float32)
    first, inverse = distinct_rows(x)
    assert first.tolist() == [0, 1, 3] and inverse.tolist() == [0, 1, 0, 2, 1]
    assert np.array_equal(x[first][inverse], x)
    first, inverse = distinct_rows(x[:1])
    assert first.tolist() == [0] and inverse.tolist() == [0]


def test_the_gallerys_pair_distances_are_cargaits_on_each_pair():
    """One probe against a shortlist (projected once) and mixed probes give the model's own pair distances."""
    m = small_model()
    for p in m.cross.out.parameters():
        torch.nn.init.normal_(p, std=0.2)
    reranker = Reranker(m.eval(), None, "cargait:test")
    rng = np.random.default_rng(1)
    probes = rng.normal(size=(3, 4, 16)).astype(np.float32)
    candidates = rng.normal(size=(7, 4, 16)).astype(np.float32)
    mixed = probes[[0, 1, 0, 2, 2, 0, 1]]
    for queries in (np.repeat(probes[:1], 7, axis=0), mixed):
        got = reranker.pair_distances(queries, candidates)
        with torch.no_grad():
            expected = m(torch.as_tensor(queries), torch.as_tensor(candidates))[2].numpy()
        assert got.shape == (7,) and np.allclose(got, expected, atol=1e-5)


def test_ranking_loss_damps_correctly_ranked_triplets():
    d_pos = torch.tensor([1.0, 3.0])
    d_neg = torch.tensor([2.0, 1.0])  # first triplet ranked right, second wrong
    l_right = -torch.nn.functional.logsigmoid(torch.tensor(1.0))
    l_wrong = -torch.nn.functional.logsigmoid(torch.tensor(-2.0))
    assert torch.isclose(ranking_loss(d_pos, d_neg, beta=0.1), 0.1 * l_right + l_wrong)
    assert torch.isclose(ranking_loss(d_pos, d_neg, beta=1.0), l_right + l_wrong)


def test_training_lowers_validation_ranking_loss():
    fs = synthetic_casia(n_ids=12)
    train, val = split_validation(fs, 0.25)
    assert set(val.subjects) == {"010", "011", "012"}  # the last identities validate
    cfg = TrainConfig(train_features="", hidden=32, heads=4, classifier_hidden=16, lr=3e-3, iterations=30,
                      val_every=10, batch_probes=16, triplets_per_probe=2, top_v=10)
    _, info = train_cargait(cfg, train, val, log=lambda s: None)
    history = info["history"]
    assert history[0]["iteration"] == 0
    assert info["best_val_ranking_loss"] < history[0]["val_ranking_loss"]
    assert info["best_val_ranking_loss"] == min(h["val_ranking_loss"] for h in history)


def test_shortlists_hold_top_v_positives_and_negatives():
    fs = synthetic_casia(n_ids=6)
    d = build_shortlists(fs, top_v=8, metric="euc")
    for p, pos, neg in zip(d.probes, d.positives, d.negatives):
        assert len(pos) + len(neg) == 8 and p not in pos and p not in neg
        assert (fs.subjects[pos] == fs.subjects[p]).all() and (fs.subjects[neg] != fs.subjects[p]).all()


def _reference_k_reciprocal(q_g, q_q, g_g, k1, k2, lam):
    """The published loop-based algorithm, transcribed literally."""
    original = np.concatenate([np.concatenate([q_q, q_g], 1), np.concatenate([q_g.T, g_g], 1)], 0)
    original = np.power(original, 2).astype(np.float32)
    original = np.transpose(original / np.max(original, axis=0))
    V = np.zeros_like(original)
    initial_rank = np.argsort(original).astype(np.int32)
    nq, n = q_g.shape[0], original.shape[0]
    for i in range(n):
        fwd = initial_rank[i, : k1 + 1]
        bwd = initial_rank[fwd, : k1 + 1]
        recip = fwd[np.where(bwd == i)[0]]
        expansion = recip
        for cand in recip:
            cf = initial_rank[cand, : int(np.around(k1 / 2.0)) + 1]
            cb = initial_rank[cf, : int(np.around(k1 / 2.0)) + 1]
            crecip = cf[np.where(cb == cand)[0]]
            if len(np.intersect1d(crecip, recip)) > 2.0 / 3 * len(crecip):
                expansion = np.append(expansion, crecip)
        expansion = np.unique(expansion)
        w = np.exp(-original[i, expansion])
        V[i, expansion] = w / np.sum(w)
    original = original[:nq]
    if k2 != 1:
        V = np.stack([np.mean(V[initial_rank[i, :k2]], axis=0) for i in range(n)])
    inv = [np.where(V[:, i] != 0)[0] for i in range(n)]
    jaccard = np.zeros_like(original)
    for i in range(nq):
        temp = np.zeros((1, n), np.float32)
        nz = np.where(V[i] != 0)[0]
        for j in nz:
            temp[0, inv[j]] += np.minimum(V[i, j], V[inv[j], j])
        jaccard[i] = 1 - temp / (2.0 - temp)
    return (jaccard * (1 - lam) + original * lam)[:, nq:]


def test_k_reciprocal_matches_the_published_algorithm():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 8))
    q, g = x[:15], x[15:]
    dist = lambda a, b: np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    ours = k_reciprocal_distances(dist(q, g), dist(q, q), dist(g, g), k1=8, k2=3, lambda_value=0.3)
    ref = _reference_k_reciprocal(dist(q, g), dist(q, q), dist(g, g), 8, 3, 0.3)
    assert np.allclose(ours, ref, atol=1e-5)


def test_rerank_scores_reorder_only_the_top_k():
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    valid = np.array([[True, False, True, True, True]])
    scores = rerank_scores(dist, valid, 3, lambda top: np.array([[3.0, 1.0, 2.0]]))  # top = [0, 2, 3]
    assert list(np.argsort(scores[0])[[0, 1, 2]]) == [2, 3, 0]
    assert scores[0, 4] > scores[0, 0]


def test_initial_evaluation_equals_the_project_protocol():
    fs = synthetic_casia(n_ids=8, seed=1)
    ours = evaluate_casia_b(fs, {"initial": initial_scores})["initial"]
    ref = reference_evaluation(fs.features, fs.subjects, fs.types, fs.views)
    for cond in ("NM", "BG", "CL"):
        assert ours[cond].rank1 == pytest.approx(ref[cond]["rank1"], abs=0.01)
        assert ours[cond].rank5 == pytest.approx(ref[cond]["rank5"], abs=0.01)
        assert ours[cond].mAP == pytest.approx(ref[cond]["map"], abs=0.01)


def test_rerankers_run_in_the_same_evaluation():
    fs = synthetic_casia(n_ids=6, seed=2)
    m = small_model()
    pair = PairClassifier(4, 16, 8)
    res = evaluate_casia_b(fs, {
        "initial": initial_scores,
        "cargait": ShortlistReranker(m, fs.features, k=5),
        "pair": ShortlistReranker(pair, fs.features, k=5),
        "kr": KReciprocalReranker(fs.features, k1=5, k2=2),
    })
    assert res["cargait"] == res["initial"]  # untrained CarGait keeps the initial order
    for per in res.values():
        assert set(per) == {"NM", "BG", "CL"}
        assert all(0 <= v <= 100 for m in per.values() for v in (m.rank1, m.rank5, m.mAP))


def test_checkpoint_round_trip_and_foreign_file(tmp_path):
    m = small_model(num_classes=3)
    for p in m.cross.parameters():
        torch.nn.init.normal_(p, std=0.1)
    path = tmp_path / "cg.pt"
    save_reranker(m, path, gait_model_version="gar@abc", metric="euc", rerank_k=10)
    loaded, info = load_reranker(path)
    assert info.gait_model_version == "gar@abc" and (info.parts, info.channels) == (4, 16)
    fp, fc = torch.randn(2, 4, 16), torch.randn(2, 4, 16)
    assert torch.allclose(loaded(fp, fc)[2], m(fp, fc)[2], atol=1e-6)
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a CarGait checkpoint"):
        load_reranker(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="training.rerank"):
        load_reranker(tmp_path / "missing.pt")


def test_strip_euclidean_is_mean_over_strips():
    a = torch.zeros(1, 2, 3)
    b = torch.tensor([[[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]]])
    assert torch.isclose(strip_euclidean(a, b), torch.tensor([3.0]))


def _set(prefix: str, ids: int, version: str = "g@1") -> FeatureSet:
    n = ids * 3
    return FeatureSet(np.random.default_rng(0).normal(size=(n, 2, 4)).astype(np.float32),
                      np.array([f"{prefix}{i // 3:03d}" for i in range(n)]), np.array(["nm-01"] * n),
                      np.array(["090"] * n), version)


def test_rendered_walkers_join_both_training_and_validation(monkeypatch):
    import training.rerank as rerank

    calls = {}

    def fake_walkers(model, version, identities, seed, frames=40, mask_noise=1.0, segmenter=None):
        calls.update(identities=identities, seed=seed)
        return _set("w", identities, version), None

    monkeypatch.setattr(rerank, "walker_features", fake_walkers)
    monkeypatch.setattr(rerank, "load_gait_model", lambda path: (None, "g@1"))
    casia = _set("", 20)
    train, val = rerank.training_sets(TrainConfig(train_features="x", val_fraction=0.1), casia)
    assert not any(s.startswith("w") for s in train.subjects) and len(set(val.subjects)) == 2
    cfg = TrainConfig(train_features="x", val_fraction=0.1, walkers={"identities": 30, "seed": 31})
    train, val = rerank.training_sets(cfg, casia)
    assert calls == {"identities": 30, "seed": 31}
    assert {s[0] == "w" for s in val.subjects} == {True, False}  # both sources validate
    assert len(set(train.subjects)) == 18 + 27 and len(set(val.subjects)) == 2 + 3
    assert not set(train.subjects) & set(val.subjects)
    with pytest.raises(SystemExit, match="held-out"):
        rerank.training_sets(TrainConfig(train_features="x", walkers={"seed": 2026}), casia)
    with pytest.raises(SystemExit, match="unknown walkers keys"):
        rerank.training_sets(TrainConfig(train_features="x", walkers={"people": 3}), casia)


def test_feature_sets_of_two_gait_models_are_not_joined():
    joined = FeatureSet.concatenate([_set("a", 2), _set("b", 3)])
    assert len(joined) == 15 and joined.model_version == "g@1"
    with pytest.raises(ValueError, match="different gait models"):
        FeatureSet.concatenate([_set("a", 2), _set("b", 3, "h@2")])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_a_gpu_recipe_is_refused_clearly_without_a_gpu(capsys):
    from training.rerank import main

    with pytest.raises(SystemExit) as exc:
        main(["--config", "configs/train/cargait_base.yaml"])
    assert exc.value.code == 2
    assert "no CUDA GPU" in capsys.readouterr().err
