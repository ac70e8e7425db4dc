"""Segmentation backends: full-frame boolean masks inside each detection's box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from pipeline.messages import Frame, FrameResult
from stages.segment.detector import DetectorMasks
from stages.segment.foreground import ForegroundSegmenter
from stages.segment.paddleseg import ExportedModel

SIZE = (120, 160)  # (height, width)
PERSON = (30, 60)  # (width, height) of the dark rectangle that plays a walker


def _background() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(150, 200, (*SIZE, 3), dtype=np.uint8)


def _scene(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame with the walker at an index-dependent place, its true mask and a padded box."""
    image = _background()
    x, y = 20 + 4 * index, 30
    truth = np.zeros(SIZE, dtype=bool)
    truth[y : y + PERSON[1], x : x + PERSON[0]] = True
    image[truth] = (30, 30, 30)
    box = np.array([x - 5, y - 5, x + PERSON[0] + 5, y + PERSON[1] + 5], dtype=np.float32)
    return image, truth, box


def _result(source: str, index: int, image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None) -> FrameResult:
    detections = sv.Detections(
        xyxy=boxes.reshape(-1, 4).astype(np.float32),
        mask=masks,
        confidence=np.full(len(boxes), 0.9, dtype=np.float32),
        class_id=np.zeros(len(boxes), dtype=int),
        tracker_id=np.arange(len(boxes)),
    )
    return FrameResult(Frame(source, index, index / 10, image), detections)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _assert_inside(result: FrameResult) -> None:
    det = result.detections
    assert det.mask.dtype == bool and det.mask.shape == (len(det), *result.frame.size)
    for box, mask in zip(det.xyxy.astype(int), det.mask):
        outside = mask.copy()
        outside[box[1] : box[3], box[0] : box[2]] = False
        assert not outside.any()


def _warm_up(stage: object, source: str, frames: int = 10) -> None:
    for i in range(frames):
        stage.process([_result(source, i, _background(), np.zeros((0, 4)), None)])


def test_foreground_segmenter_finds_the_walker_inside_its_box() -> None:
    stage = ForegroundSegmenter(work_width=640)
    _warm_up(stage, "cam")
    for i in range(10, 16):
        image, truth, box = _scene(i - 10)
        (result,) = stage.process([_result("cam", i, image, box[None], None)])
        _assert_inside(result)
        assert _iou(result.detections.mask[0], truth) > 0.8
        assert result.detections.tracker_id.tolist() == [0]


def test_detector_masks_are_cut_to_boxes_and_missing_ones_filled() -> None:
    stage = DetectorMasks(fallback="foreground")
    image, truth, box = _scene(0)
    spilling = np.ones((1, *SIZE), dtype=bool)  # a detector mask spilling over the whole frame
    (result,) = stage.process([_result("seg", 0, image, box[None], spilling)])
    _assert_inside(result)
    x1, y1, x2, y2 = box.astype(int)
    assert result.detections.mask[0, y1:y2, x1:x2].all()
    # A box-only detector: the fallback learns the scene from the first frame that needs it.
    _warm_up(stage, "boxes")
    stage.process([_result("boxes", 10, _background(), box[None], None)])  # starts the fallback
    _warm_up(stage, "boxes")
    image, truth, box = _scene(3)
    (result,) = stage.process([_result("boxes", 30, image, box[None], None)])
    _assert_inside(result)
    assert _iou(result.detections.mask[0], truth) > 0.8


def test_detector_masks_drop_fallback_removes_maskless_detections() -> None:
    stage = DetectorMasks(fallback="drop")
    image, truth, box = _scene(0)
    boxes = np.stack([box, box + np.float32([60, 0, 60, 0])])
    masks = np.zeros((2, *SIZE), dtype=bool)
    masks[0] = truth
    (result,) = stage.process([_result("cam", 0, image, boxes, masks)])
    assert len(result.detections) == 1 and result.detections.tracker_id.tolist() == [0]
    assert np.array_equal(result.detections.mask[0], truth)
    with pytest.raises(ValueError, match="fallback"):
        DetectorMasks(fallback="box")


def test_paddleseg_missing_model_directory_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        ExportedModel.find(tmp_path / "absent", (192, 192))
    assert "\n" not in str(error.value) and "absent" in str(error.value)
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "model.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.pdiparams"):
        ExportedModel.find(tmp_path / "partial", (192, 192))


def test_end_source_forgets_the_background_model() -> None:
    stage = ForegroundSegmenter()
    _warm_up(stage, "clip")
    image, truth, box = _scene(0)
    (before,) = stage.process([_result("clip", 10, image, box[None], None)])
    assert _iou(before.detections.mask[0], truth) > 0.8
    assert stage.end_source("clip") == []
    (after,) = stage.process([_result("clip", 0, image, box[None], None)])
    assert not after.detections.mask.any(), "a fresh model has no background to compare with yet"
    assert DetectorMasks().end_source("clip") == []
