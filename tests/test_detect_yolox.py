"""YOLOX ONNX detector on real frames: people found, decoding checked independently, both runtimes agree,
bad model files fail in one line, detection every N-th frame with the tracker predicting in between."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from evaluation.front_end import box_iou
from pipeline.messages import STARTS_TRACK, Frame, FrameResult
from stages.detect.yolox import YoloxDetector, decode_yolox, letterbox, person_detections
from stages.model_files import ModelFileError
from stages.track import ByteTrackStage
from tests.helpers import PROJECT_ROOT, VIDEOS, video_frames

SHARED_MODELS = (PROJECT_ROOT / ".." / "shared" / "models").resolve()
YOLOX = SHARED_MODELS / "yolox_nano" / "yolox_nano.onnx"
CAMPUS = VIDEOS / "campus_road_480x360.mp4"


def _model() -> Path:
    if not YOLOX.is_file():
        pytest.skip(f"YOLOX-Nano model not found: {YOLOX} (tests read ../shared/models next to the project)")
    return YOLOX


def test_finds_the_walkers_in_a_campus_frame() -> None:
    # Frame 200 of the campus clip: eight people on the road and paths (checked by eye), none on the lawn.
    image = video_frames(CAMPUS, [200])[200]
    detector = YoloxDetector(model=str(_model()))
    (found,) = detector.detect([image])
    assert found.xyxy.dtype == np.float32 and np.all(found.class_id == 0) and found.mask is None
    assert np.all(found.confidence >= 0.3)
    starts = found.data[STARTS_TRACK]
    np.testing.assert_array_equal(starts, found.confidence >= 0.6)
    strong = found[starts]
    assert 7 <= len(strong) <= 9, "the confident boxes are the walkers"
    heights = strong.xyxy[:, 3] - strong.xyxy[:, 1]
    widths = strong.xyxy[:, 2] - strong.xyxy[:, 0]
    assert np.all(heights > 1.5 * widths) and np.all(heights < 6 * widths), "boxes are upright people"
    assert np.all(found.xyxy[:, 3] < 0.68 * image.shape[0]), "nobody stands on the lower lawn"


def _reference_decode(raw: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """YOLOX decoding written out cell by cell (row r of stride s is cell (r % n, r // n) of an n x n grid)."""
    boxes, scores, row = [], [], 0
    for stride in (8, 16, 32):
        cells = size // stride
        for cell in range(cells * cells):
            dx, dy, log_w, log_h, objectness = raw[row, :5]
            cx, cy = (dx + cell % cells) * stride, (dy + cell // cells) * stride
            w, h = np.exp(log_w) * stride, np.exp(log_h) * stride
            boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
            scores.append(objectness * raw[row, 5])
            row += 1
    return np.array(boxes, dtype=np.float32), np.array(scores, dtype=np.float32)


def test_decoding_matches_a_cell_by_cell_reference_on_real_output() -> None:
    image = video_frames(CAMPUS, [200])[200]
    detector = YoloxDetector(model=str(_model()), runtime="onnxruntime" if _has_onnxruntime() else "opencv")
    tensor, scale = letterbox(image, 416)
    raw = detector._net.forward(tensor[None])[0]
    boxes, scores = decode_yolox(raw, 416)
    ref_boxes, ref_scores = _reference_decode(raw, 416)
    np.testing.assert_allclose(boxes, ref_boxes, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-7)
    # Back to frame pixels: the top-left letterbox only scales (416 / 480 for a 480x360 frame).
    assert scale == pytest.approx(416 / 480)
    found = person_detections(raw, 416, scale, image.shape[:2], 0.5, 0.45)
    best = ref_boxes[np.argmax(ref_scores)] / scale
    assert np.abs(found.xyxy[np.argmax(found.confidence)] - best).max() < 0.5


def test_a_made_up_head_output_lands_where_the_letterbox_says() -> None:
    # One confident cell of stride 16 at grid (x 10, y 5) with a 2 x 4 cell box, on a 832x624 frame
    # (letterbox scale 0.5): centre ((10 + 0.5) * 16, (5 + 0.5) * 16) / 0.5 = (336, 176), size 64 x 128.
    raw = np.zeros((3549, 85), dtype=np.float32)
    row = 52 * 52 + 5 * 26 + 10
    raw[row, :6] = (0.5, 0.5, np.log(2), np.log(4), 0.9, 0.8)
    found = person_detections(raw, 416, 0.5, (624, 832), 0.5, 0.45)
    np.testing.assert_allclose(found.xyxy, [[304, 112, 368, 240]], atol=1e-3)
    np.testing.assert_allclose(found.confidence, [0.72], rtol=1e-6)


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def test_onnxruntime_and_opencv_give_the_same_people() -> None:
    if not _has_onnxruntime():
        pytest.skip("onnxruntime not installed")
    images = list(video_frames(CAMPUS, [50, 600]).values())
    ort = YoloxDetector(model=str(_model()), runtime="onnxruntime").detect(images)
    cv = YoloxDetector(model=str(_model()), runtime="opencv").detect(images)
    for a, b in zip(ort, cv):
        assert len(a) == len(b) and len(a) >= 4
        overlap = box_iou(a.xyxy, b.xyxy)
        assert np.all(overlap.max(axis=1) > 0.98)
        np.testing.assert_allclose(np.sort(a.confidence), np.sort(b.confidence), atol=0.01)


@pytest.mark.parametrize("runtime", ["onnxruntime", "opencv"])
def test_corrupt_or_missing_model_is_one_line_naming_the_file(tmp_path: Path, runtime: str) -> None:
    if runtime == "onnxruntime" and not _has_onnxruntime():
        pytest.skip("onnxruntime not installed")
    corrupt = tmp_path / "yolox_nano" / "yolox_nano.onnx"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\x08\x07not an onnx model" * 40)
    with pytest.raises(ModelFileError) as error:
        YoloxDetector(models_dir=str(tmp_path), runtime=runtime)
    message = str(error.value)
    assert "\n" not in message and str(corrupt) in message and "replace it" in message
    with pytest.raises(ModelFileError, match="absent.onnx: not found; put the YOLOX ONNX export there"):
        YoloxDetector(model=str(tmp_path / "absent.onnx"), runtime=runtime)


def test_wrong_input_size_says_which_size_the_model_takes() -> None:
    if not _has_onnxruntime():
        pytest.skip("onnxruntime not installed")
    with pytest.raises(
        ModelFileError, match=r"input shape \[1, 3, 416, 416\] is not \(1, 3, 320, 320\); set input_size: 416"
    ):
        YoloxDetector(model=str(_model()), input_size=320, runtime="onnxruntime")


def test_a_model_that_is_not_a_yolox_head_is_refused(tmp_path: Path) -> None:
    # Another real ONNX model (OSNet ReID, input 256x128): readable, but its output is no YOLOX head.
    osnet = SHARED_MODELS / "osnet_x0_25_msmt17" / "osnet_x0_25_msmt17.onnx"
    if not osnet.is_file():
        pytest.skip(f"OSNet model not found: {osnet}")
    with pytest.raises(ModelFileError) as error:
        YoloxDetector(model=str(osnet), runtime="opencv")
    assert "\n" not in str(error.value) and str(osnet) in str(error.value)


def _results(images: dict[int, np.ndarray]) -> list[FrameResult]:
    return [FrameResult(Frame("campus", i, i / 10, image), sv.Detections.empty()) for i, image in images.items()]


def test_every_second_frame_the_tracker_predicts_where_the_detector_would_find_them() -> None:
    images = video_frames(CAMPUS, range(180, 220))
    every_frame = YoloxDetector(model=str(_model())).process(_results(images))
    detector = YoloxDetector(model=str(_model()), detect_every=2)
    tracker = ByteTrackStage()
    tracked = []
    batch = _results(images)
    for start in range(0, len(batch), 8):  # runner-sized batches
        tracked += tracker.process(detector.process(batch[start : start + 8]))
    assert [r.frame.index for r in tracked] == list(images)
    skipped = tracked[1::2]
    assert all(not r.detected for r in detector.process(_results({0: images[180], 1: images[181]}))[1:])
    predicted_boxes = 0
    for position, result in enumerate(tracked):
        if position % 2 == 0 or position < 4:
            continue
        previous_ids = set(tracked[position - 1].detections.tracker_id.tolist())
        ids = result.detections.tracker_id.tolist()
        assert set(ids) <= previous_ids, "a skipped frame only continues tracks matched just before"
        assert result.detections.mask is None and np.all(result.detections.confidence > 0)
        if len(ids) == 0:
            continue
        truth = every_frame[position].detections.xyxy
        overlap = box_iou(result.detections.xyxy, truth).max(axis=1)
        assert np.median(overlap) > 0.7, "predicted boxes sit on the people the detector finds there"
        predicted_boxes += len(ids)
    assert predicted_boxes >= 5 * len(skipped[2:]), "most of the ~8 walkers keep a box on skipped frames"
    ids_on_detected = {t for r in tracked[::2] for t in r.detections.tracker_id.tolist()}
    assert len(ids_on_detected) <= 12, "tracks are not fragmented by the skipped frames"
