"""The shipped GADER weights on held-out data: real CASIA-B test subjects and unseen synthetic walkers."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.messages import SilhouetteSequence, TrackWindow
from stages.gait_detector.checkpoint import DEFAULT_WEIGHTS

CASIA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "casia-b"

torch.set_num_threads(1)
pytestmark = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason=f"no shipped weights at {DEFAULT_WEIGHTS}")


@pytest.fixture(scope="module")
def stage():
    from stages.gait_detector.stage import GaitDetectorStage

    return GaitDetectorStage()


def window_of(silhouettes: np.ndarray) -> TrackWindow:
    t = len(silhouettes)
    sequence = SilhouetteSequence(
        silhouettes=np.ascontiguousarray(silhouettes),
        ratios=np.full(t, 2.0, np.float32),
        boxes=np.zeros((t, 4), np.float32),
        frame_indices=np.arange(t),
        pts_s=np.arange(t) / 25.0,
        frame_size=(240, 320),
    )
    return TrackWindow("test", 0, 0, True, sequence)


@pytest.mark.skipif(not (CASIA / "index.json").is_file(), reason=f"CASIA-B not found at {CASIA}")
def test_real_walking_goes_to_gait_and_a_held_frame_to_appearance(stage):
    from training.casia_b import CasiaB, SequenceKey

    walking = CasiaB(CASIA).load(SequenceKey("101", "nm-05", "090")).silhouettes
    assert len(walking) >= 40
    walked, stood = stage.process([window_of(walking), window_of(np.repeat(walking[len(walking) // 2][None], 60, axis=0))])
    assert walked.gait.route == "gait" and walked.gait.walking_fraction > 0.6
    assert stood.gait.route == "appearance" and stood.gait.segments == []
    assert walked.model_versions["gait_detector"].startswith("gader_dhs@")


def test_unseen_synthetic_walker_and_stander_are_routed_apart(stage):
    from synth.dataset import generate_sequences

    def one(behaviour: str, identity: int):
        return generate_sequences(
            1, 1, 60, seed=11, behaviours=(behaviour,), crops=False, frame_size=(360, 480), first_identity=identity
        )[0]

    walk, stand = one("walk", 900000), one("stand", 900010)
    assert (walk.walking & walk.full_body).all() and not stand.walking.any()  # ground truth of these two
    walked, stood = stage.process(
        [TrackWindow("s", 1, 0, True, walk.to_message()), TrackWindow("s", 2, 0, True, stand.to_message())]
    )
    assert walked.gait.route == "gait" and walked.gait.walking_fraction > 0.5
    assert stood.gait.route == "appearance" and stood.gait.walking_fraction == 0.0
