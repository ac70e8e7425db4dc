"""Appearance ReID: model, pooling, stage routing, mini-MARS reader."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.messages import GaitDetection, SilhouetteSequence, TrackWindow
from stages.reid.model import AppearanceConfig, AppearanceNet, pool_track
from stages.reid.stage import AppearanceReID

torch.set_num_threads(1)
REID = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "reid"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    cfg = AppearanceConfig(widths=(4, 8, 8, 8), embed_dim=16, num_classes=3)
    net = AppearanceNet(cfg)
    net.eval()
    path = tmp_path_factory.mktemp("w") / "reid_tiny.pt"
    torch.save({"model": net.state_dict(), "config": cfg.to_dict()}, path)
    return path


def window(route, crops=True, t=6, seed=0):
    rng = np.random.default_rng(seed)
    seq = SilhouetteSequence(
        silhouettes=np.zeros((t, 64, 44), np.uint8),
        ratios=np.ones(t, np.float32),
        boxes=np.zeros((t, 4), np.float32),
        frame_indices=np.arange(t),
        pts_s=np.arange(t) / 10.0,
        frame_size=(360, 480),
        crops=rng.integers(0, 256, (t, 128, 64, 3), dtype=np.uint8) if crops else None,
    )
    return TrackWindow("cam", 1, 0, True, seq, gait=GaitDetection([], 0.0, route))


def test_pool_track_is_normalised_mean():
    e = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    np.testing.assert_allclose(pool_track(e), [2**-0.5, 2**-0.5], rtol=1e-6)


def test_stage_routes_and_normalises(weights):
    stage = AppearanceReID(weights=str(weights), routes="appearance")
    wins = [window("appearance"), window("gait"), window("appearance", crops=False)]
    stage.process(wins)
    emb = wins[0].appearance_embedding
    assert emb.shape == (16,) and emb.dtype == np.float32
    assert np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)
    assert wins[0].model_versions["reid"].startswith("reid_tiny@")
    assert wins[1].appearance_embedding is None and wins[2].appearance_embedding is None
    every = AppearanceReID(weights=str(weights))  # default: every window, gait-routed ones too
    gait_win = window("gait")
    every.process([gait_win])
    assert gait_win.appearance_embedding is not None


def test_same_crops_same_embedding_batched(weights):
    stage = AppearanceReID(weights=str(weights), max_frames=4)
    a, b = window("appearance", seed=1), window("appearance", seed=2, t=9)
    stage.process([a, b])
    a1 = window("appearance", seed=1)
    stage.process([a1])
    np.testing.assert_allclose(a.appearance_embedding, a1.appearance_embedding, rtol=1e-4, atol=1e-5)
    assert not np.allclose(a.appearance_embedding, b.appearance_embedding)


def test_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="appearance ReID weights not found"):
        AppearanceReID(weights=str(tmp_path / "none.pt"))


@pytest.mark.skipif(not (REID / "mini_mars").is_dir(), reason=f"mini-MARS not present at {REID}")
def test_mini_mars_reader():
    from training.reid_data import load_mars_split

    query = load_mars_split(REID / "mini_mars", "query", max_frames=2)
    assert len(query) == 32 and query[0].crops.shape == (2, 128, 64, 3) and query[0].crops.dtype == np.uint8


def test_shipped_weights_load_with_manifest():
    import hashlib
    import json

    from stages.reid.stage import DEFAULT_WEIGHTS

    manifest = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert hashlib.sha256(DEFAULT_WEIGHTS.read_bytes()).hexdigest() == manifest["sha256"]
    stage = AppearanceReID()
    win = window("appearance")
    stage.process([win])
    assert win.appearance_embedding.shape == (stage.model.config.embed_dim,)


def test_the_shipped_model_tells_rendered_walkers_apart_and_random_weights_do_not():
    from evaluation.reid import evaluate_rendered
    from stages.reid.stage import load_appearance_model

    shipped, _ = load_appearance_model()
    torch.manual_seed(0)
    untrained = AppearanceNet(AppearanceConfig.from_dict(shipped.config.to_dict())).eval()
    good, chance = evaluate_rendered(shipped, identities=12, frames=4), evaluate_rendered(untrained, identities=12, frames=4)
    assert good["queries"] == chance["queries"] == 36
    assert good["rank1"] >= 90 and good["map"] > chance["map"] + 20


def test_fine_tuning_copies_everything_but_the_classifier(weights):
    from training.reid import init_from

    torch.manual_seed(1)
    net = AppearanceNet(AppearanceConfig(widths=(4, 8, 8, 8), embed_dim=16, num_classes=7))
    before = net.classifier.weight.detach().clone()
    copied = init_from(net, weights)
    source = torch.load(weights, weights_only=True)["model"]
    assert copied == len([k for k in source if not k.startswith("classifier.")])
    for name, value in net.state_dict().items():
        if not name.startswith("classifier."):
            assert torch.equal(value, source[name]), name
    assert torch.equal(net.classifier.weight, before)  # another set of classes: starts afresh
    with pytest.raises(ValueError, match="does not fit"):
        init_from(AppearanceNet(AppearanceConfig(widths=(4, 8, 8, 16), embed_dim=16, num_classes=3)), weights)


def test_colour_jitter_changes_lighting_not_layout():
    from training.reid import augment

    crops = np.zeros((16, 128, 64, 3), np.uint8)
    crops[:, :64] = (40, 120, 200)  # upper half one colour, lower half black
    rng = np.random.default_rng(0)
    plain = augment(crops, rng, pad=0, erase_p=0.0)
    jittered = augment(crops, np.random.default_rng(0), pad=0, erase_p=0.0, jitter=0.25)
    unflipped = plain[:, :64].reshape(16, -1, 3).mean(1)
    shifted = jittered[:, :64].reshape(16, -1, 3).mean(1)
    assert np.abs(shifted - unflipped).max() > 5  # colours moved
    assert np.abs(shifted / np.maximum(unflipped, 1) - 1).max() <= 0.25 * 2.5  # by a bounded gain
    lower = jittered[:, 64:].reshape(16, -1, 3).mean(1)
    assert (shifted.sum(1) > lower.sum(1) + 100).all()  # the layout (bright upper, dark lower half) is kept


def test_the_clothes_protocol_separates_knowing_clothes_from_knowing_people():
    from evaluation.reid import clothes_protocol

    person = np.repeat(np.arange(5), 4)  # five people, four sightings each: two outfits x two
    clothes = np.tile([0, 0, 1, 1], 5)
    looks = np.random.default_rng(0).normal(size=(10, 64))
    looks /= np.linalg.norm(looks, axis=1, keepdims=True)
    sees_clothes = looks[person * 2 + clothes]  # one look per (person, clothes), unrelated to the others
    sees_people = np.eye(5)[person]
    by_clothes = clothes_protocol(sees_clothes, person, clothes)
    by_person = clothes_protocol(sees_people, person, clothes)
    assert by_clothes["same_clothes"]["queries"] == by_clothes["changed_clothes"]["queries"] == 20
    assert by_clothes["same_clothes"]["rank1"] == 100.0
    assert by_clothes["changed_clothes"]["rank1"] <= 40  # other clothes: nothing to go on
    assert by_person["same_clothes"]["rank1"] == by_person["changed_clothes"]["rank1"] == 100.0
    assert by_person["changed_clothes"]["map"] == 100.0


def test_rendered_walkers_in_two_outfits_each_query_both_protocols():
    from evaluation.reid import evaluate_rendered_clothes
    from stages.reid.stage import load_appearance_model

    shipped, _ = load_appearance_model()
    res = evaluate_rendered_clothes(shipped, identities=12, frames=4)
    # 72 sequences: every one has its person in other clothes; those that share clothes query both
    assert res["changed_clothes"]["queries"] == 72 and 0 < res["same_clothes"]["queries"] < 72
    assert res["same_clothes"]["rank1"] >= 90
    assert res["changed_clothes"]["rank1"] > 100 / 12  # above chance among twelve people


def test_synthetic_outfits_reach_the_walker_generator(monkeypatch):
    import synth.dataset
    from training import reid

    if not (REID / "mini_mars").is_dir():
        pytest.skip(f"mini-MARS not found under {REID}")
    asked = {}

    def fake_generate(**kwargs):
        asked.update(kwargs)
        return []

    monkeypatch.setattr(synth.dataset, "generate_sequences", fake_generate)
    reid.training_crops({"market": False, "synthetic_identities": 3, "synthetic_outfits": 2})
    assert asked["outfits"] == 2 and asked["n_identities"] == 3
    reid.training_crops({"market": False, "synthetic_identities": 3})
    assert asked["outfits"] == 1  # recipes without the key keep one set of clothes per walker


WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


def test_the_optional_appearance_model_matches_its_manifest():
    import json

    from pipeline.config import read_yaml
    from stages.checkpoints import sha256_of

    manifest = json.loads((WEIGHTS / "reid_clothes_long.json").read_text())
    assert sha256_of(WEIGHTS / manifest["file"]) == manifest["sha256"]
    recipe = Path(__file__).resolve().parents[1] / manifest["command"].split("--config ")[1]
    assert read_yaml(recipe) == manifest["config"]  # the recipe (with its _base_) is what produced the file
