"""GaitRecognizer stage: routing, segments, batching, weights errors."""

import numpy as np
import pytest
import torch

from pipeline.messages import GaitDetection, GaitSegment, SilhouetteSequence, TrackWindow
from stages.gait.embedding import steady_rate_positions
from stages.gait.model import GaitBase, GaitBaseConfig
from stages.gait.recognizer import GaitRecognizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    cfg = GaitBaseConfig(
        channels=(4, 8, 8, 8), strides=(1, 2, 1, 1), maxpool=True, embed_dim=6, class_num=3, ratio_attention=True
    )
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    torch.save({"model": GaitBase(cfg).state_dict(), "config": cfg.to_dict()}, path)
    return path


def window(t, route, segments, seed=0, track_id=1, fps=10.0):
    rng = np.random.default_rng(seed)
    seq = SilhouetteSequence(
        silhouettes=(rng.random((t, 64, 44)) > 0.5).astype(np.uint8) * 255,
        ratios=rng.uniform(1, 3, t).astype(np.float32),
        boxes=np.zeros((t, 4), np.float32),
        frame_indices=np.arange(t),
        pts_s=np.arange(t) / fps,
        frame_size=(360, 480),
    )
    gait = GaitDetection([GaitSegment(a, b, 1.0) for a, b in segments], 0.5, route)
    return TrackWindow("cam", track_id, 0, False, seq, gait=gait)


def test_embeds_only_gait_routed_windows(weights):
    stage = GaitRecognizer(weights=str(weights))
    wins = [window(30, "gait", [(0, 12), (18, 30)]), window(30, "appearance", [(0, 30)]), window(30, "gait", [(0, 3)])]
    out = stage.process(wins)
    assert out is wins
    assert out[0].gait_embedding.shape == (16, 6) and out[0].gait_embedding.dtype == np.float32
    assert out[0].model_versions["gait"].startswith("tiny@")
    assert out[1].gait_embedding is None and "gait" not in out[1].model_versions
    assert out[2].gait_embedding is None  # 3 gait frames < min_frames


def test_batched_equals_one_by_one_and_uses_segment_frames(weights):
    stage = GaitRecognizer(weights=str(weights))
    a, b = window(30, "gait", [(5, 25)], seed=1, track_id=1), window(40, "gait", [(0, 40)], seed=2, track_id=2)
    stage.process([a, b])
    a1 = window(30, "gait", [(5, 25)], seed=1)
    stage.process([a1])
    np.testing.assert_allclose(a.gait_embedding, a1.gait_embedding, rtol=1e-5, atol=1e-5)
    # frames outside the segment do not matter
    a2 = window(30, "gait", [(5, 25)], seed=1)
    a2.sequence.silhouettes[:5] = 0
    stage.process([a2])
    np.testing.assert_allclose(a.gait_embedding, a2.gait_embedding, rtol=1e-5, atol=1e-5)


def test_steady_rate_positions_resample_by_time():
    assert steady_rate_positions(np.arange(10) / 25.0, 25.0, None).tolist() == list(range(10))
    # 50 fps: every other frame; 30 fps: the nearest frame to each 40 ms tick (a frame skipped every 5)
    assert steady_rate_positions(np.arange(10) / 50.0, 25.0, None).tolist() == [0, 2, 4, 6, 8]
    assert steady_rate_positions(np.arange(13) / 30.0, 25.0, None).tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12]
    # a decode at half the rate repeats frames; a gap repeats the frames on either side of it
    assert steady_rate_positions(np.arange(4) / 10.0, 25.0, None).tolist() == [0, 0, 1, 1, 2, 2, 2, 3]
    gap = np.array([0.0, 0.04, 0.08, 0.25, 0.29])
    assert steady_rate_positions(gap, 25.0, None).tolist() == [0, 1, 2, 2, 2, 3, 3, 4]
    # at most max_frames consecutive ticks, centred; timestamps that do not increase: taken as they come
    assert steady_rate_positions(np.arange(20) / 25.0, 25.0, 6).tolist() == [7, 8, 9, 10, 11, 12]
    assert steady_rate_positions(np.array([0.0, 0.04, 0.04, 0.1]), 25.0, None).tolist() == [0, 1, 2, 3]
    assert steady_rate_positions(np.array([0.0, np.nan, 0.1]), 25.0, 2).tolist() == [0, 1]


def walk_pair(seed):
    """A walk at 25 fps and the same walk decoded at 50 fps: an extra frame of noise between each pair."""
    at_25 = window(20, "gait", [(0, 20)], seed=seed, fps=25.0)
    at_50 = window(40, "gait", [(0, 40)], seed=seed + 1, fps=50.0)
    at_50.sequence.silhouettes[::2] = at_25.sequence.silhouettes
    at_50.sequence.ratios[::2] = at_25.sequence.ratios
    return at_25, at_50


def test_motion_model_sees_the_same_walk_at_any_frame_rate(tmp_path, weights):
    torch.manual_seed(0)
    cfg = GaitBaseConfig(channels=(4, 8, 8, 8), strides=(1, 2, 1, 1), maxpool=True, embed_dim=6, class_num=3,
                         motion_lags=8)
    model = GaitBase(cfg)
    torch.nn.init.normal_(model.MotionProfile.mlp[-1].weight)
    path = tmp_path / "motion.pt"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict()}, path)
    at_25, at_50 = walk_pair(seed=3)
    GaitRecognizer(weights=str(path), max_frames=0).process([at_25, at_50])
    np.testing.assert_allclose(at_50.gait_embedding, at_25.gait_embedding, rtol=1e-5, atol=1e-5)
    # a model without the profile takes every frame given, the extra ones included
    plain_25, plain_50 = walk_pair(seed=3)
    GaitRecognizer(weights=str(weights), max_frames=0).process([plain_25, plain_50])
    assert not np.allclose(plain_25.gait_embedding, plain_50.gait_embedding, atol=1e-3)


def test_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="gait weights not found"):
        GaitRecognizer(weights=str(tmp_path / "nope.pt"))


def test_shipped_weights_load_with_manifest():
    import hashlib
    import json
    from pathlib import Path

    from stages.gait.weights import DEFAULT_WEIGHTS

    manifest = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert hashlib.sha256(Path(DEFAULT_WEIGHTS).read_bytes()).hexdigest() == manifest["sha256"]
    stage = GaitRecognizer()
    win = window(40, "gait", [(0, 40)])
    stage.process([win])
    assert win.gait_embedding.shape == (stage.model.config.parts, stage.model.config.embed_dim)
    assert np.isfinite(win.gait_embedding).all()
