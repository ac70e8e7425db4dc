"""Gait training augmentation, the segmentation-error model, the mixing sampler and flip-test."""

import numpy as np
import pytest
import torch

from training.augment import (
    CORRUPTION_LEVELS,
    AugmentConfig,
    CorruptionConfig,
    add_reflection,
    augment_clip,
    blob_holes,
    corrupt,
    corrupt_fixed,
    cut_at_edge,
    drop_frames,
    flip_sequence,
    join_neighbour,
    morph,
    pixel_noise,
    random_erasing,
    random_perspective,
    random_rotate,
)
from training.sequences import MixedTripletSampler

torch.set_num_threads(1)


def walker(t: int = 8) -> np.ndarray:
    """A crude asymmetric 'person' (T, 64, 44): torso, head to the right, a leg swinging over time."""
    clip = np.zeros((t, 64, 44), np.uint8)
    for i in range(t):
        clip[i, 12:40, 16:28] = 255  # torso
        clip[i, 2:12, 20:30] = 255  # head, off-centre: the flip must move it
        swing = (i % 4) * 2
        clip[i, 40:63, 17 + swing : 22 + swing] = 255
        clip[i, 40:63, 24 - swing : 28 - swing] = 255
    return clip


ALL_TRANSFORMS = {
    "flip": lambda c, r: flip_sequence(c),
    "erase": lambda c, r: random_erasing(c, r),
    "rotate": lambda c, r: random_rotate(c, r),
    "perspective": lambda c, r: random_perspective(c, r),
    "pixel_noise": lambda c, r: pixel_noise(c, r, 0.1, 0.01),
    "blob_holes": blob_holes,
    "morph": morph,
    "cut": lambda c, r: cut_at_edge(c, r, 0.25),
    "neighbour": lambda c, r: join_neighbour(c, r),
    "reflection": add_reflection,
    "drop": lambda c, r: drop_frames(c, r, 0.5),
    "corrupt": lambda c, r: corrupt(c, r, CorruptionConfig(p=1.0)),
    "augment": lambda c, r: augment_clip(c, r, AugmentConfig(), walker()[::-1]),
}


# these change the person's box and go through the pipeline's pretreatment again (cubic resize: grey edges)
REPRETREATED = {"cut", "neighbour", "reflection", "corrupt", "augment"}


@pytest.mark.parametrize("name", sorted(ALL_TRANSFORMS))
def test_shape_dtype_binary_and_deterministic(name):
    fn = ALL_TRANSFORMS[name]
    clip = walker()
    a = fn(clip, np.random.default_rng(3))
    b = fn(clip, np.random.default_rng(3))
    assert a.shape == clip.shape and a.dtype == np.uint8
    if name not in REPRETREATED:
        assert set(np.unique(a)) <= {0, 255}
    np.testing.assert_array_equal(a, b)
    assert clip.max() == 255 and clip.sum() == walker().sum()  # input untouched


def test_flip_mirrors_every_frame():
    clip = walker()
    flipped = flip_sequence(clip)
    np.testing.assert_array_equal(flipped[:, :, ::-1], clip)
    assert not np.array_equal(flipped, clip)
    np.testing.assert_array_equal(flip_sequence(flipped), clip)


def test_pixel_noise_rates_within_tolerance():
    clip = np.repeat(walker(), 8, axis=0)  # 64 frames
    fg = clip > 0
    out = pixel_noise(clip, np.random.default_rng(0), 0.12, 0.01) > 0
    assert abs((~out[fg]).mean() - 0.12) < 0.01
    assert abs(out[~fg].mean() - 0.01) < 0.002


def test_fixed_corruption_levels_are_seeded_and_ordered():
    clip = walker()
    a = corrupt_fixed(clip, "holes12_speckle1", seed=5)
    np.testing.assert_array_equal(a, corrupt_fixed(clip, "holes12_speckle1", seed=5))
    assert not np.array_equal(a, corrupt_fixed(clip, "holes12_speckle1", seed=6))
    changed = {name: (corrupt_fixed(clip, name, 1) != clip).mean() for name in CORRUPTION_LEVELS}
    assert changed["mild"] < changed["holes12_speckle1"] < changed["severe"]
    with pytest.raises(ValueError, match="unknown corruption level"):
        corrupt_fixed(clip, "nope", 0)


def test_cut_at_edge_removes_feet_and_rescales_to_full_height():
    clip = walker()
    out = cut_at_edge(clip, np.random.default_rng(0), 0.25)
    for f in out:
        rows = np.flatnonzero(f.any(axis=1))
        assert rows[0] <= 1 and rows[-1] >= 62  # the pretreatment scales what is left to 64 rows
    assert not np.array_equal(out, clip)


def test_drop_frames_repeats_kept_frames_only():
    clip = np.stack([np.full((64, 44), i, np.uint8) for i in range(20)])
    out = drop_frames(clip, np.random.default_rng(2), 0.5)
    assert out.shape == clip.shape
    kept = set(np.unique(out[:, 0, 0]))
    assert len(kept) < 20 and kept <= set(range(20))


def test_disabled_augmentation_is_identity_and_config_rejects_unknown_keys():
    clip = walker()
    assert augment_clip(clip, np.random.default_rng(0), AugmentConfig(enabled=False)) is clip
    cfg = AugmentConfig.from_dict({"flip": 1.0, "corruption": {"holes": 0.2}})
    assert cfg.flip == 1.0 and cfg.corruption.holes == 0.2 and cfg.erase == AugmentConfig().erase
    assert AugmentConfig.from_dict({"corruption": None}).corruption is None
    with pytest.raises(ValueError, match="unknown augment keys"):
        AugmentConfig.from_dict({"flipp": 0.5})
    with pytest.raises(ValueError, match="corruption keys"):
        AugmentConfig.from_dict({"corruption": {"hole": 0.1}})


def test_bad_clip_is_a_clear_error():
    with pytest.raises(ValueError, match="uint8 clip"):
        augment_clip(np.zeros((4, 64, 64), np.uint8), np.random.default_rng(0), AugmentConfig())


def test_mixed_sampler_takes_the_configured_share_of_identities():
    labels = np.repeat(np.arange(20), 3)
    second = labels >= 10
    sampler = iter(MixedTripletSampler(labels, second, 8, 2, second_fraction=0.25, seed=0))
    for _ in range(20):
        batch = next(sampler)
        assert len(batch) == 16
        ids = labels[batch].reshape(8, 2)
        assert (ids == ids[:, :1]).all() and len(set(ids[:, 0])) == 8
        assert second[batch].sum() == 4  # 2 of 8 identities x 2 sequences
    only_first = next(iter(MixedTripletSampler(labels, second, 4, 2, second_fraction=0.0)))
    assert not second[only_first].any()
    with pytest.raises(ValueError):
        MixedTripletSampler(labels, second, 4, 2, second_fraction=1.5)


def test_flip_test_combines_a_sequence_and_its_mirror():
    from stages.gait.embedding import embed_sequences
    from stages.gait.model import GaitBase, GaitBaseConfig

    torch.manual_seed(0)
    model = GaitBase(GaitBaseConfig(channels=(2, 4, 4, 4), strides=(1, 2, 1, 1), maxpool=True, embed_dim=4))
    clip = walker()
    plain = embed_sequences(model, [(clip, None)])
    mirrored = embed_sequences(model, [(flip_sequence(clip), None)])
    mean = embed_sequences(model, [(clip, None), (flip_sequence(clip), None)], flip_test="mean")
    np.testing.assert_allclose(mean[0], (plain[0] + mirrored[0]) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean[0], mean[1], rtol=1e-5, atol=1e-6)  # direction no longer matters
    most = embed_sequences(model, [(clip, None)], flip_test="max")
    np.testing.assert_allclose(most[0], np.maximum(plain[0], mirrored[0]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="flip_test"):
        embed_sequences(model, [(clip, None)], flip_test="sum")


def test_training_run_with_augmentation_and_init_weights(tmp_path, monkeypatch):
    from stages.gait.weights import load_gait_model
    from training import gait as train_gait
    from training.sequences import SequenceSet

    names = ["001", "001", "002", "002", "s00000", "s00000", "s00001", "s00001"]
    data = SequenceSet([walker(12) for _ in range(8)], names)
    monkeypatch.setattr(train_gait, "build_train_set", lambda _: data)
    cfg = {
        "model": {"channels": [2, 4, 4, 4], "strides": [1, 2, 1, 1], "maxpool": True, "embed_dim": 4},
        "data": {"dataset": "mixed", "synthetic_ratio": 0.5},
        "augment": {"flip": 1.0, "corruption": {"p": 1.0}},
        "sampler": {"identities_per_batch": 2, "sequences_per_identity": 2, "frames": 4},
        "loss": {},
        "optim": {"optimizer": "adam", "lr": 0.01, "total_iter": 1},
        "train": {"threads": 1, "out_dir": str(tmp_path / "a")},
    }
    first = train_gait.train(cfg, tmp_path / "a", resume=False, command="test")
    # fine-tune from it with more classes: the shared classifier rows are kept
    bigger = SequenceSet.concat([data, SequenceSet([walker(12)] * 2, ["s00002"] * 2)])
    monkeypatch.setattr(train_gait, "build_train_set", lambda _: bigger)
    cfg["train"] = {"threads": 1, "out_dir": str(tmp_path / "b"), "init_weights": str(first)}
    cfg["optim"]["lr"] = 0.0  # nothing moves: the copied rows must come out unchanged
    second = train_gait.train(cfg, tmp_path / "b", resume=False, command="test")
    a, _ = load_gait_model(first)
    b, _ = load_gait_model(second)
    assert b.config.class_num == 5
    torch.testing.assert_close(b.BNNecks.fc_bin[:, :, :4], a.BNNecks.fc_bin)
    torch.testing.assert_close(b.FCs.fc_bin, a.FCs.fc_bin)


def test_interpolation_of_checkpoints():
    from training.export_gait import interpolate

    a = {"model": {"w": torch.ones(2, 3), "BNNecks.fc_bin": torch.ones(1, 2, 5), "n": torch.tensor(7)}, "config": {}}
    b = {"model": {"w": torch.zeros(2, 3), "BNNecks.fc_bin": torch.zeros(1, 2, 3), "n": torch.tensor(1)}}
    mixed = interpolate(a, b, 0.25)["model"]
    torch.testing.assert_close(mixed["w"], torch.full((2, 3), 0.25))
    torch.testing.assert_close(mixed["BNNecks.fc_bin"][:, :, :3], torch.full((1, 2, 3), 0.25))
    torch.testing.assert_close(mixed["BNNecks.fc_bin"][:, :, 3:], torch.ones(1, 2, 2))  # extra classes kept
    assert int(mixed["n"]) == 7
    with pytest.raises(ValueError, match="alpha"):
        interpolate(a, b, 1.5)


def test_interpolating_with_a_model_without_a_motion_profile_scales_the_profile():
    """A model without a profile counts as one whose profile's output layer is zero: alpha 0 embeds like that
    model, alpha 1 like the profile model, and in between the profile's offset is scaled by alpha."""
    from stages.gait.model import GaitBase, GaitBaseConfig
    from training.export_gait import interpolate

    small = dict(channels=(4, 8, 8, 8), layers=(1, 1, 1, 1), parts=4, embed_dim=8, class_num=3)
    torch.manual_seed(0)
    profiled = GaitBase(GaitBaseConfig(**small, motion_lags=6)).eval()
    with torch.no_grad():
        for param in profiled.MotionProfile.parameters():
            param.uniform_(-1, 1)
    plain = GaitBase(GaitBaseConfig(**small)).eval()
    ckpt = {"model": profiled.state_dict(), "config": profiled.config.to_dict()}
    other = {"model": plain.state_dict()}
    sils = torch.rand(2, 12, 64, 44)

    def blended(alpha):
        net = GaitBase(profiled.config).eval()
        net.load_state_dict(interpolate(ckpt, other, alpha)["model"])
        return net

    with torch.no_grad():
        assert not torch.allclose(plain(sils).embeddings, profiled(sils).embeddings)
        torch.testing.assert_close(blended(0.0)(sils).embeddings, plain(sils).embeddings)
        torch.testing.assert_close(blended(1.0)(sils).embeddings, profiled(sils).embeddings)
        torch.testing.assert_close(blended(0.5).MotionProfile(sils), 0.5 * profiled.MotionProfile(sils))


def test_cutting_the_classifier_keeps_an_identical_embedding(tmp_path):
    from stages.gait.model import GaitBase, GaitBaseConfig
    from stages.gait.weights import load_gait_model
    from training.export_gait import keep_classes

    cfg = GaitBaseConfig(channels=(4, 8, 8, 8), layers=(1, 1, 1, 1), parts=4, embed_dim=8, class_num=30)
    net = GaitBase(cfg).eval()
    cut = keep_classes({"model": net.state_dict(), "config": cfg.to_dict()}, 5)
    assert cut["model"]["BNNecks.fc_bin"].shape[2] == 5 and cut["config"]["class_num"] == 5
    torch.save(cut, tmp_path / "cut.pt")
    small, _ = load_gait_model(tmp_path / "cut.pt")
    sils = torch.rand(2, 8, 64, 44)
    with torch.no_grad():
        torch.testing.assert_close(small(sils).embeddings, net(sils).embeddings)
    with pytest.raises(ValueError, match="classes"):
        keep_classes(cut, 6)


def test_half_precision_export_loads_as_float32_with_a_close_embedding(tmp_path):
    from stages.gait.model import GaitBase, GaitBaseConfig
    from stages.gait.weights import load_gait_model
    from training.export_gait import half_precision

    cfg = GaitBaseConfig(channels=(4, 8, 8, 8), layers=(1, 1, 1, 1), parts=4, embed_dim=8, class_num=6)
    net = GaitBase(cfg).eval()
    half = half_precision({"model": net.state_dict(), "config": cfg.to_dict()})
    assert {v.dtype for v in half["model"].values() if v.is_floating_point()} == {torch.float16}
    assert half["model"]["Backbone.forward_block.bn1.num_batches_tracked"].dtype == torch.int64
    torch.save(half, tmp_path / "half.pt")
    loaded, _ = load_gait_model(tmp_path / "half.pt")
    assert next(loaded.parameters()).dtype == torch.float32
    sils = torch.rand(2, 8, 64, 44)
    with torch.no_grad():
        a, b = net(sils).embeddings, loaded(sils).embeddings
    assert not torch.equal(a, b)  # rounded ...
    torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)  # ... to float16's precision


def test_robust_weights_match_their_manifest_and_load_in_the_stage():
    import hashlib
    import json
    from pathlib import Path

    from stages.gait.recognizer import GaitRecognizer
    from stages.gait.weights import DEFAULT_WEIGHTS

    path = Path(DEFAULT_WEIGHTS).with_name("gar_robust.pt")
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest["sha256"]
    assert manifest["interpolation"]["alpha"] == 0.5
    # the default, fine-tuned from it for surveillance views, records its start and its report card
    site = json.loads(Path(DEFAULT_WEIGHTS).with_name("gar_site.json").read_text())
    assert site["interpolation"] == {"with": "weights/gar_robust.pt", "alpha": 0.7} and site["classifier_classes_kept"] == 74
    assert site["report"][0]["cross_camera_synthetic"]["identities"] == 100
    stage = GaitRecognizer(weights=str(path), flip_test="mean")
    assert stage.model.config.embed_dim == 128 and stage.model.config.ratio_attention is False
    with pytest.raises(ValueError, match="flip_test"):
        GaitRecognizer(weights=str(path), flip_test="both")
