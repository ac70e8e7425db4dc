"""Gait training pieces: frame sampling, P x K sampler, losses, a tiny training run with resume."""

import json

import numpy as np
import pytest
import torch

from training.losses import cross_entropy_loss, triplet_loss
from training.sequences import SequenceSet, TripletSampler, frame_positions

torch.set_num_threads(1)


def test_frame_positions():
    rng = np.random.default_rng(0)
    assert len(frame_positions(100, 30, "fixed_unordered", rng)) == 30
    assert len(set(frame_positions(100, 30, "fixed_unordered", rng))) == 30  # no repeats when long enough
    assert len(frame_positions(5, 30, "fixed_unordered", rng)) == 30  # short: with replacement
    ordered = frame_positions(100, 10, "fixed_ordered", rng)
    assert np.all(np.diff(ordered) == 1)
    assert list(frame_positions(7, 0, "all_ordered", rng)) == list(range(7))
    assert list(frame_positions(7, 0, "all_ordered", rng, max_frames=3)) == [0, 1, 2]


def test_triplet_sampler_p_by_k():
    labels = np.repeat(np.arange(6), [5, 5, 5, 5, 5, 1])
    batch = next(iter(TripletSampler(labels, identities_per_batch=4, sequences_per_identity=3, seed=1)))
    assert len(batch) == 12
    groups = labels[batch].reshape(4, 3)
    assert len(set(groups[:, 0])) == 4 and (groups == groups[:, :1]).all()


def test_triplet_sampler_spreads_an_identitys_sequences_over_its_views():
    # identity 0: five head-on walks and one side-on; identity 1: only head-on; identity 2: three groups
    labels = np.repeat(np.arange(3), 6)
    views = np.array([0, 0, 0, 0, 0, 2] + [0] * 6 + [0, 1, 2, 0, 1, 2])
    spread = iter(TripletSampler(labels, 3, 3, seed=0, view_groups=views))
    plain = iter(TripletSampler(labels, 3, 3, seed=0))
    plain_side = 0
    for _ in range(50):
        batch = next(spread)
        assert len(batch) == 9 and len(set(batch)) == 9  # no sequence twice while the identity has more
        for seqs in batch.reshape(3, 3):
            ident = labels[seqs[0]]
            assert (labels[seqs] == ident).all()
            want = {0: {0, 2}, 1: {0}, 2: {0, 1, 2}}[int(ident)]
            assert set(views[seqs]) == want
        plain_side += sum(2 in views[seqs] for seqs in next(plain).reshape(3, 3) if labels[seqs[0]] == 0)
    assert plain_side < 50  # drawn at random the side walk is often left out
    short = next(iter(TripletSampler(np.zeros(2, int), 1, 4, view_groups=np.array([0, 2]))))
    assert sorted(short) == [0, 0, 1, 1]  # fewer sequences than K: repeated, both views kept
    with pytest.raises(ValueError, match="view group"):
        TripletSampler(labels, 3, 3, view_groups=views[:5])
    clip = np.zeros((4, 64, 44), np.uint8)
    known = SequenceSet([clip] * 2, ["a", "b"], view_groups=[2, 0])
    both = SequenceSet.concat([SequenceSet([clip], ["c"]), known])
    assert list(both.view_groups) == [-1, 2, 0]  # a set without views gives unknown groups


def test_packed_sequence_set_unpacks_clips():
    full = (np.random.default_rng(0).random((9, 64, 64)) > 0.5).astype(np.uint8)
    s = SequenceSet([np.packbits(full, axis=-1)], ["007"], packed=True)
    clip = s.clip(0, 0, "all_ordered", np.random.default_rng(0))
    np.testing.assert_array_equal(clip.silhouettes, full[:, :, 10:54] * 255)
    assert clip.label == 0 and clip.ratios is None


def test_triplet_loss_zero_when_separated_and_positive_when_mixed():
    labels = torch.tensor([0, 0, 1, 1])
    sep = torch.tensor([[0.0], [0.01], [10.0], [10.01]]).repeat(1, 2).reshape(4, 2, 1)  # [n, p, c]
    loss, frac = triplet_loss(sep, labels)
    assert float(loss) == 0.0 and frac == 0.0
    mixed = torch.tensor([[0.0], [10.0], [0.05], [10.05]]).repeat(1, 2).reshape(4, 2, 1)
    loss, frac = triplet_loss(mixed, labels)
    assert float(loss) > 1.0 and frac == 1.0


def test_cross_entropy_loss_accuracy():
    logits = torch.zeros(2, 3, 4)
    logits[0, :, 1] = 1.0
    logits[1, :, 3] = 1.0
    loss, acc = cross_entropy_loss(logits, torch.tensor([1, 3]))
    wrong, wrong_acc = cross_entropy_loss(logits, torch.tensor([0, 0]))
    assert acc == 1.0 and wrong_acc == 0.0 and float(loss) < float(wrong) / 5


def _tiny_recipe(out_dir, total_iter: int) -> dict:
    """A training recipe small enough for a test: a 4-channel GAR with ratio attention, 2 x 2 batches."""
    return {
        "model": {"channels": [2, 4, 4, 4], "strides": [1, 2, 1, 1], "maxpool": True, "embed_dim": 4,
                  "ratio_attention": True},
        "data": {},
        "sampler": {"identities_per_batch": 2, "sequences_per_identity": 2, "frames": 4, "sample_type": "fixed_ordered"},
        "loss": {},
        "optim": {"optimizer": "adam", "lr": 0.01, "total_iter": total_iter},
        "train": {"threads": 1, "out_dir": str(out_dir)},
    }


def _four_identities(seed: int) -> SequenceSet:
    rng = np.random.default_rng(seed)
    seqs = [(rng.random((12, 64, 44)) > 0.5).astype(np.uint8) * 255 for _ in range(8)]
    return SequenceSet(seqs, list("aabbccdd"), ratios=[rng.uniform(1, 2, 12).astype(np.float32) for _ in seqs])


def test_extra_synthetic_sources_add_walkers_rendered_another_way(monkeypatch):
    from training import gait as train_gait
    from training import synthetic

    calls = []

    def fake_synthetic_set(n_identities, seqs_per_identity, frames, first_identity=0, **kwargs):
        calls.append({"n": n_identities, "first": first_identity, **kwargs})
        ids = range(first_identity, first_identity + n_identities)
        names = [synthetic.identity_name(i) for i in ids for _ in range(seqs_per_identity)]
        seqs = [np.zeros((frames, 64, 44), np.uint8) for _ in names]
        return SequenceSet(seqs, names, ratios=[np.ones(frames, np.float32) for _ in names],
                           view_groups=[0] * len(names))

    monkeypatch.setattr(synthetic, "synthetic_set", fake_synthetic_set)
    data = {"dataset": "synthetic", "identities": 3, "sequences_per_identity": 2, "frames": 5, "seed": 17,
            "segmenter": "pose_crop", "cameras": "site",
            "extra_sources": [{"segmenter": None, "cameras": "surveillance", "mask_noise": 1.0,
                               "first_identity": 3, "identities": 2},
                              {"mask_noise": 0.5, "identities": 1}]}
    train_set = train_gait.build_train_set(data)
    assert [(c["n"], c["first"], c["segmenter"], c["cameras"], c["mask_noise"], c["seed"]) for c in calls] == [
        (3, 0, "pose_crop", "site", 0.0, 17), (2, 3, None, "surveillance", 1.0, 17), (1, 0, "pose_crop", "site", 0.5, 17)]
    assert len(train_set) == 12
    # new first_identity: new people; the same range and seed: the same person, one label
    assert train_set.num_classes == 5
    assert list(train_set.identities[-2:]) == ["s00000", "s00000"]
    with pytest.raises(ValueError, match="unknown extra_sources keys"):
        train_gait.build_train_set({**data, "extra_sources": [{"segmentr": None}]})
    with pytest.raises(ValueError, match="list of mappings"):
        train_gait.build_train_set({**data, "extra_sources": {"segmenter": None}})


def test_tiny_training_run_checkpoints_and_resumes(tmp_path, monkeypatch):
    from stages.gait.weights import load_gait_model
    from training import gait as train_gait

    data = _four_identities(0)
    monkeypatch.setattr(train_gait, "build_train_set", lambda _: data)
    cfg = _tiny_recipe(tmp_path, total_iter=2)
    cfg["train"]["log_every"] = 1
    ckpt = train_gait.train(cfg, tmp_path, resume=False, command="test")
    assert [json.loads(line)["iteration"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    cfg["optim"]["total_iter"] = 3
    train_gait.train(cfg, tmp_path, resume=True, command="test")
    assert torch.load(ckpt, weights_only=True)["iteration"] == 3
    model, _ = load_gait_model(ckpt)
    assert model.config.ratio_attention and model.config.class_num == 4


def test_loader_workers_make_distinct_batches_and_train(tmp_path, monkeypatch):
    """Worker processes cut and augment batches (for feeding a GPU): each worker its own random stream,
    and a run through them trains and checkpoints as the in-process one does."""
    from training import gait as train_gait

    data = _four_identities(2)
    cfg = _tiny_recipe(tmp_path, total_iter=3)
    cfg["train"]["loader_workers"] = 2
    batches = train_gait.training_batches(data, cfg, 0, np.random.default_rng(0), use_ratios=True, use_rgb=False)
    first, second = next(batches), next(batches)  # one from each worker
    assert first.sils.dtype == torch.uint8 and first.sils.shape == (4, 4, 64, 44)
    assert not torch.equal(first.sils, second.sils)
    monkeypatch.setattr(train_gait, "build_train_set", lambda _: data)
    ckpt = train_gait.train(cfg, tmp_path, resume=False, command="test")
    assert torch.load(ckpt, weights_only=True)["iteration"] == 3


def test_in_process_batches_repeat_with_the_seed():
    from training import gait as train_gait

    data, cfg = _four_identities(3), _tiny_recipe("unused", total_iter=1)
    runs = [train_gait.training_batches(data, cfg, 5, np.random.default_rng(5), True, False) for _ in range(2)]
    for _ in range(3):
        a, b = next(runs[0]), next(runs[1])
        assert torch.equal(a.sils, b.sils) and torch.equal(a.labels, b.labels)


def test_unknown_mixed_precision_type_is_refused(tmp_path, monkeypatch):
    from training import gait as train_gait

    monkeypatch.setattr(train_gait, "build_train_set", lambda _: _four_identities(4))
    cfg = _tiny_recipe(tmp_path, total_iter=1)
    cfg["train"]["amp_dtype"] = "float8"
    with pytest.raises(ValueError, match="amp_dtype"):
        train_gait.train(cfg, tmp_path, resume=False, command="test")


def test_distillation_run_ships_the_silhouette_branch_only(tmp_path, monkeypatch):
    from stages.gait.weights import load_gait_model
    from training import gait as train_gait

    rng = np.random.default_rng(1)
    n = 8
    seqs = [(rng.random((6, 64, 44)) > 0.5).astype(np.uint8) * 255 for _ in range(n)]
    rgb = [rng.integers(0, 256, (6, 128, 64, 3), dtype=np.uint8) for _ in range(n)]
    ratios = [rng.uniform(1, 2, 6).astype(np.float32) for _ in range(n)]
    data = SequenceSet(seqs, list("aabbccdd"), ratios=ratios, rgb=rgb)
    monkeypatch.setattr(train_gait, "build_train_set", lambda _: data)
    cfg = _tiny_recipe(tmp_path, total_iter=1)
    cfg["loss"]["distill"] = True
    ckpt = train_gait.train(cfg, tmp_path, resume=False, command="test")
    state = torch.load(ckpt, weights_only=True)
    assert any(k.startswith("adapters.") for k in state["train_model"])
    assert not any(k.startswith(("adapters.", "rgb.")) for k in state["model"])
    model, _ = load_gait_model(ckpt)
    assert model.config.in_channels == 1


def test_shipped_gait_weights_name_the_recipe_that_made_them():
    """Each shipped GAR manifest names its file by sha256 and a recipe that, resolved (``_base_``
    included), is the recipe the training run recorded (a command of several runs: its last)."""
    import re
    from pathlib import Path

    from stages.checkpoints import sha256_of
    from training.gait import load_recipe

    root = Path(__file__).resolve().parents[1]
    manifests = sorted((root / "weights").glob("gar_*.json"))
    assert manifests
    for manifest_path in manifests:
        manifest = json.loads(manifest_path.read_text())
        assert sha256_of(manifest_path.with_name(manifest["file"])) == manifest["sha256"], manifest_path.name
        recipe = re.findall(r"--config (\S+)", manifest["command"])[-1]
        assert load_recipe(root / recipe) == manifest["config"]["recipe"], manifest_path.name


@pytest.mark.parametrize("gait_name, reranker_name", [("gar_lab", "cargait_lab"), ("gar_lab2", "cargait_lab2"),
                                                        ("gar_lab3_gpu", "cargait_lab3_gpu"),
                                                        ("gar_lab3", "cargait_lab3"),
                                                        ("gar_site_lab", "cargait_site_lab"),
                                                        ("gar_front_lab", "cargait_front_lab"),
                                                        ("gar_front_lab3", "cargait_front_lab3")])
def test_optional_gait_models_load_in_the_stage_with_their_own_reranker(gait_name, reranker_name):
    """The optional gait models (gar_lab.pt: CASIA-B only, longer schedule; gar_lab2.pt and gar_lab3[_gpu].pt:
    more cycles of it; gar_site_lab.pt: gar_lab.pt fine-tuned on synthetic walkers; gar_front_lab.pt and
    gar_front_lab3.pt: gar_site_lab.pt and gar_lab3.pt fine-tuned on BlazePose-segmented walkers) load as
    gait.weights; each CarGait re-ranker was trained on its own model's features, and the manifests say so."""
    from pathlib import Path

    from stages.gait.recognizer import GaitRecognizer
    from stages.rerank.weights import load_reranker

    weights = Path(__file__).resolve().parents[1] / "weights"
    manifest = json.loads((weights / f"{gait_name}.json").read_text())
    stage = GaitRecognizer(weights=str(weights / f"{gait_name}.pt"))
    assert stage.version == f"{gait_name}@{manifest['sha256'][:12]}"
    reranker_manifest = json.loads((weights / f"{reranker_name}.json").read_text())
    assert reranker_manifest["data"]["gait_model_version"] == stage.version
    assert load_reranker(weights / f"{reranker_name}.pt")[1].gait_model_version == stage.version
    clip = torch.rand(1, 12, 64, 44)
    with torch.no_grad():
        assert stage.model(clip).embeddings.shape == (1, stage.model.config.parts, stage.model.config.embed_dim)


@pytest.mark.parametrize("name", ["gar_xview_motion", "gar_xview_relay", "gar_xview_relay2", "gar_xview_noisy"])
def test_motion_profile_model_loads_with_a_trained_profile_and_its_report_cards(name):
    """The models with a motion profile trained on BlazePose-segmented walkers load as gait.weights, read frames
    in order (the stage resamples them to the profile's rate), have a trained profile (the output layer starts
    at zero), and their manifests carry the report cards on the three kinds of walker masks."""
    from pathlib import Path

    from stages.gait.recognizer import GaitRecognizer

    weights = Path(__file__).resolve().parents[1] / "weights"
    manifest = json.loads((weights / f"{name}.json").read_text())
    stage = GaitRecognizer(weights=str(weights / f"{name}.pt"))
    assert stage.version == f"{name}@{manifest['sha256'][:12]}"
    assert stage.reads_order and stage.model.config.motion_lags == manifest["config"]["recipe"]["model"]["motion_lags"]
    assert stage.model.MotionProfile.mlp[-1].weight.abs().sum() > 0
    cards = {card["walker_masks"]: card["cross_camera_synthetic"] for card in manifest["report"]}
    assert set(cards) == {"noise", "pose_crop", "exact"}
    assert all(0.0 <= card[key] <= 1.0 for card in cards.values() for key in ("same_outfit", "changed_outfit"))


def test_init_from_leaves_the_motion_profile_out_only_for_a_model_without_one(tmp_path):
    """A recipe can train a profile model's shared layers without the profile (training.gait.init_from drops it)
    and put a fresh one back; any other parameter the model lacks is still refused."""
    from stages.gait.model import GaitBase, GaitBaseConfig
    from training.gait import init_from

    small = dict(channels=[4, 8, 8, 8], layers=[1, 1, 1, 1], parts=4, embed_dim=8, class_num=3)
    source = GaitBase(GaitBaseConfig.from_dict({**small, "motion_lags": 6}))
    with torch.no_grad():
        for param in source.parameters():
            param.uniform_(-1, 1)
    path = tmp_path / "profile.pt"
    torch.save({"model": source.state_dict()}, path)

    plain = GaitBase(GaitBaseConfig.from_dict(small))
    copied = init_from(plain, path)
    assert copied == len(plain.state_dict())
    assert all(torch.equal(value, source.state_dict()[name]) for name, value in plain.state_dict().items())

    again = GaitBase(GaitBaseConfig.from_dict({**small, "motion_lags": 6}))
    init_from(again, path)
    assert torch.equal(again.MotionProfile.mlp[-1].weight, source.MotionProfile.mlp[-1].weight)

    torch.save({"model": {**source.state_dict(), "extra.weight": torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match="extra.weight"):
        init_from(plain, path)


def test_cpu_trained_third_cycle_is_the_same_network_as_its_gpu_twin():
    """gar_lab3.pt (the third cycle on CPUs) is the same network as gar_lab3_gpu.pt with its own weights (that it
    loads as gait.weights under its manifest's name is the optional-model test's)."""
    from pathlib import Path

    from stages.gait.recognizer import GaitRecognizer

    weights = Path(__file__).resolve().parents[1] / "weights"
    stage = GaitRecognizer(weights=str(weights / "gar_lab3.pt"))
    twin = GaitRecognizer(weights=str(weights / "gar_lab3_gpu.pt"))
    assert stage.model.config == twin.model.config
    clip = torch.rand(1, 12, 64, 44)
    with torch.no_grad():
        a, b = stage.model(clip).embeddings, twin.model(clip).embeddings
    assert a.shape == b.shape and not torch.allclose(a, b)
