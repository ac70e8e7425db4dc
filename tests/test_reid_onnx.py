"""ONNX appearance ReID (OSNet x0.25 MSMT17 from ../shared/models) on real campus crops.

Five walkers in frames 200 and 203 of the campus clip (boxes from a YOLOX-Nano detector, checked by
eye): each crop's nearest crop three frames later must be the same walker. Skipped where the clip or
the model is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.messages import GaitDetection, SilhouetteSequence, TrackWindow
from stages.model_files import ModelFileError
from stages.reid.onnx import OnnxReID
from stages.silhouette import crop_box
from tests.helpers import VIDEOS, require_model, video_frames

OSNET = "osnet_x0_25_msmt17/osnet_x0_25_msmt17.onnx"
# The same five walkers, in the same order, in frames 200 and 203.
WALKERS = {
    200: [
        [384.9, 164.7, 406.3, 229.1],
        [439.4, 159.4, 463.7, 222.3],
        [137.9, 117.7, 155.4, 167.1],
        [50.3, 94.2, 66.6, 137.0],
        [304.0, 90.9, 323.8, 137.4],
    ],
    203: [
        [394.6, 171.2, 423.9, 236.1],
        [448.0, 161.6, 472.6, 225.8],
        [122.0, 117.2, 143.2, 163.5],
        [43.2, 95.2, 59.1, 134.8],
        [293.3, 92.8, 309.2, 141.9],
    ],
}


def _runtimes() -> list[str]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return ["opencv"]
    return ["onnxruntime", "opencv"]


@pytest.fixture(scope="module")
def crops() -> dict[int, np.ndarray]:
    frames = video_frames(VIDEOS / "campus_road_480x360.mp4", list(WALKERS))
    return {i: np.stack([crop_box(frames[i], np.array(b, np.float32)) for b in boxes]) for i, boxes in WALKERS.items()}


@pytest.mark.parametrize("runtime", _runtimes())
def test_same_walker_is_nearer_than_anyone_else(crops: dict[int, np.ndarray], runtime: str) -> None:
    reid = OnnxReID(model=str(require_model(OSNET)), runtime=runtime)
    before, after = reid.embed_crops(crops[200]), reid.embed_crops(crops[203])
    assert before.shape == (5, 512) and np.allclose(np.linalg.norm(before, axis=1), 1.0, atol=1e-5)
    similarity = before @ after.T
    assert (similarity.argmax(axis=1) == np.arange(5)).all()
    same = np.diag(similarity)
    different = similarity[~np.eye(5, dtype=bool)]
    assert same.mean() > different.mean() + 0.2


def test_runtimes_agree(crops: dict[int, np.ndarray]) -> None:
    if "onnxruntime" not in _runtimes():
        pytest.skip("onnxruntime is not installed")
    path = str(require_model(OSNET))
    a = OnnxReID(model=path, runtime="onnxruntime", batch=3).embed_crops(crops[200])
    b = OnnxReID(model=path, runtime="opencv").embed_crops(crops[200])
    assert np.abs(a - b).max() < 1e-3


def _window(crops: np.ndarray, route: str) -> TrackWindow:
    t = len(crops)
    sequence = SilhouetteSequence(
        silhouettes=np.zeros((t, 64, 44), np.uint8),
        ratios=np.ones(t, np.float32),
        boxes=np.zeros((t, 4), np.float32),
        frame_indices=np.arange(t),
        pts_s=np.arange(t) / 10.0,
        frame_size=(360, 480),
        crops=crops,
    )
    return TrackWindow("campus", 1, 0, True, sequence, gait=GaitDetection([], 0.0, route))


def test_window_embedding_is_the_normalised_mean_of_its_crops(crops: dict[int, np.ndarray]) -> None:
    reid = OnnxReID(model=str(require_model(OSNET)), routes="appearance")
    walker = np.stack([crops[200][0], crops[203][0]])
    gait, appearance = _window(walker, "gait"), _window(walker, "appearance")
    reid.process([gait, appearance])
    assert gait.appearance_embedding is None  # routes="appearance": gait-routed windows are left to gait
    frames = reid.embed_crops(walker)
    expected = frames.mean(0) / np.linalg.norm(frames.mean(0))
    assert np.allclose(appearance.appearance_embedding, expected, atol=1e-5)
    assert appearance.model_versions["reid"].startswith("osnet_x0_25_msmt17@")


def test_missing_corrupt_and_wrong_models_are_one_line_each(tmp_path) -> None:
    corrupt = tmp_path / "osnet.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    detector = str(require_model("yolox_nano/yolox_nano.onnx"))  # a 416x416 detector, not a ReID model
    cases = [(str(tmp_path / "absent.onnx"), "auto")]
    cases += [(str(corrupt), runtime) for runtime in _runtimes()]
    cases += [(detector, runtime) for runtime in _runtimes()]
    for path, runtime in cases:
        with pytest.raises(ModelFileError) as error:
            OnnxReID(model=path, runtime=runtime)
        assert "\n" not in str(error.value) and path in str(error.value)
