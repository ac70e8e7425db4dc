"""BlazePose crop segmenter on real campus frames with the published model from ../shared/models.

The boxes are people in frame 200 of the campus clip (found by a YOLOX-Nano detector, checked by
eye). Skipped where the clip or the model is absent.
"""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from pipeline.messages import Frame, FrameResult
from stages.model_files import ModelFileError
from stages.segment.crops import cut_region, region_around, region_map_in_box
from stages.segment.pose_crop import PoseCropSegmenter
from tests.helpers import VIDEOS, require_model, video_frames

POSE = "mediapipe_pose/pose_landmark_full.tflite"
CAMPUS = VIDEOS / "campus_road_480x360.mp4"
# Six walkers in frame 200, 43 to 64 pixels tall.
BOXES = np.array(
    [
        [384.9, 164.7, 406.3, 229.1],
        [439.4, 159.4, 463.7, 222.3],
        [137.9, 117.7, 155.4, 167.1],
        [50.3, 94.2, 66.6, 137.0],
        [423.6, 61.7, 437.7, 96.0],
        [304.0, 90.9, 323.8, 137.4],
    ],
    dtype=np.float32,
)


def _runtimes() -> list[str]:
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        return ["opencv"]
    return ["litert", "opencv"]


@pytest.fixture(scope="module")
def campus_frame() -> np.ndarray:
    return video_frames(CAMPUS, [200])[200]


def _tracked(image: np.ndarray, boxes: np.ndarray, ids: list[int] | None = None) -> FrameResult:
    ids = list(range(len(boxes))) if ids is None else ids
    return FrameResult(Frame("campus", 200, 8.0, image), sv.Detections(xyxy=boxes, tracker_id=np.array(ids)))


def _segment(image: np.ndarray, **options) -> np.ndarray:
    stage = PoseCropSegmenter(model=str(require_model(POSE)), min_height=30, **options)
    (result,) = stage.process([_tracked(image, BOXES)])
    return result.detections.mask


@pytest.mark.parametrize("runtime", _runtimes())
def test_masks_cover_each_walker_and_stay_in_the_box(campus_frame: np.ndarray, runtime: str) -> None:
    masks = _segment(campus_frame, runtime=runtime)
    assert masks.shape == (len(BOXES), *campus_frame.shape[:2]) and masks.dtype == bool
    for box, mask in zip(BOXES, masks):
        x1, y1, x2, y2 = int(np.floor(box[0])), int(np.floor(box[1])), int(np.ceil(box[2])), int(np.ceil(box[3]))
        inside = mask[y1:y2, x1:x2]
        assert mask.sum() == inside.sum(), "mask pixels outside the box"
        # A walker fills a good part of the box but not all of it (the box has background at the sides)
        assert 0.3 < inside.mean() < 0.85
        # ... and reaches from the head (top rows) to the feet (bottom rows).
        rows = np.flatnonzero(inside.any(axis=1))
        assert rows[0] <= 0.1 * (y2 - y1) and rows[-1] >= 0.9 * (y2 - y1)
        # The torso's middle column is person.
        assert inside[int(0.3 * (y2 - y1)) : int(0.6 * (y2 - y1)), (x2 - x1) // 2].mean() > 0.8


def test_litert_and_opencv_agree_and_batching_changes_nothing(campus_frame: np.ndarray) -> None:
    if "litert" not in _runtimes():
        pytest.skip("ai-edge-litert is not installed")
    one_by_one = _segment(campus_frame, runtime="litert", max_batch=1)
    batched = _segment(campus_frame, runtime="litert", max_batch=4)
    opencv = _segment(campus_frame, runtime="opencv", max_batch=6)
    for a, b, c in zip(one_by_one, batched, opencv):
        assert (a != b).sum() <= 0.01 * a.sum()
        assert (a & c).sum() / (a | c).sum() > 0.95


def test_agrees_with_pp_humanseg(campus_frame: np.ndarray) -> None:
    """Two different published segmenters on the same walkers: the real PP-HumanSeg-Lite model,
    crops batched four at a time, against BlazePose."""
    pytest.importorskip("paddle")
    from stages.segment.paddleseg import PaddleSegSegmenter

    paddle = PaddleSegSegmenter(model_dir=str(require_model("pp_humanseg_v1_lite_192")), max_batch=4)
    (other,) = paddle.process([_tracked(campus_frame, BOXES)])
    for a, b in zip(_segment(campus_frame), other.detections.mask):
        assert (a & b).sum() / (a | b).sum() > 0.6


def test_untracked_and_small_people_keep_the_detector_mask(campus_frame: np.ndarray) -> None:
    stage = PoseCropSegmenter(model=str(require_model(POSE)), min_height=55)
    detector_masks = np.zeros((3, *campus_frame.shape[:2]), dtype=bool)
    detector_masks[:, 50:300, 100:470] = True  # spills out of every box: must be cut to it
    boxes = BOXES[[0, 2, 4]]  # 65 px tall (segmented), 51 px (too small), 35 px (untracked)
    detections = sv.Detections(xyxy=boxes, mask=detector_masks.copy(), tracker_id=np.array([1, 2, -1]))
    (result,) = stage.process([FrameResult(Frame("campus", 200, 8.0, campus_frame), detections)])
    masks = result.detections.mask
    for box, mask in zip(boxes.astype(int), masks):
        outside = mask.copy()
        outside[box[1] : box[3] + 1, box[0] : box[2] + 1] = False
        assert not outside.any()
    small, untracked = boxes[1].astype(int), boxes[2].astype(int)
    assert masks[1][small[1] + 1 : small[3], small[0] + 1 : small[2]].all()  # the detector's mask, cut
    assert masks[2][untracked[1] + 1 : untracked[3], untracked[0] + 1 : untracked[2]].all()
    assert 0.3 < masks[0].sum() / ((boxes[0, 2] - boxes[0, 0]) * (boxes[0, 3] - boxes[0, 1])) < 0.85


def test_a_box_at_the_frame_edge_is_cut_and_pasted_back_in_place() -> None:
    image = np.zeros((100, 120, 3), dtype=np.uint8)
    image[20:90, 100:120] = 200
    region = region_around(np.array([100.0, 20.0, 130.0, 90.0]), 1.3, (256, 256))
    crop = cut_region(image, region, (256, 256))
    assert crop.shape == (256, 256, 3)
    # The square region spans frame x 69.5..160.5: the bright columns 100..120 land on crop u 86..142 and
    # what lies beyond the frame's right edge is black.
    assert crop[128, 90:138].min() == 200 and crop[128, 146:].max() == 0 and crop[128, :82].max() == 0
    # Logits painted from the crop itself map back exactly onto the bright pixels.
    logits = np.where(crop[..., 0] > 100, 5.0, -5.0).astype(np.float32)
    back = region_map_in_box(logits, region, (100, 20, 120, 90)) > 0
    assert back.shape == (70, 20) and back[1:-1, 1:-1].all()


def test_missing_corrupt_and_wrong_models_are_one_line_each(tmp_path) -> None:
    with pytest.raises(ModelFileError) as missing:
        PoseCropSegmenter(model=str(tmp_path / "absent.tflite"))
    corrupt = tmp_path / "pose_landmark_full.tflite"
    corrupt.write_bytes(b"not a flatbuffer" * 64)
    errors = [missing.value]
    for runtime in _runtimes():
        with pytest.raises(ModelFileError) as error:
            PoseCropSegmenter(model=str(corrupt), runtime=runtime)
        errors.append(error.value)
        # The selfie segmentation model takes the same input but has no pose segmentation output.
        with pytest.raises(ModelFileError, match="Identity_2") as error:
            PoseCropSegmenter(model=str(require_model("mediapipe_pose/selfie_segmentation.tflite")), runtime=runtime)
        errors.append(error.value)
    for error in errors:
        assert "\n" not in str(error) and ".tflite" in str(error)


def test_box_masks_are_the_stage_masks_and_segment_rendered_walkers() -> None:
    """``box_masks`` (what the synthetic gait walkers are segmented with) gives the stage's own
    masks, and on rendered walkers the pipeline's size it finds the rendered person."""
    from synth.dataset import generate_sequences

    stage = PoseCropSegmenter(model=str(require_model(POSE)), min_height=30)
    kw = {"seed": 4, "views": (90.0,), "conditions": ("nm",), "crops": False, "frame_size": (360, 480), "masks": True}
    (walker,) = generate_sequences(1, 1, 4, **kw)
    ious = []
    for t in np.flatnonzero(walker.visible):
        truth = walker.masks[t]
        frame = np.full((360, 480, 3), 90, np.uint8)  # a plain wall, the walker painted in one colour
        frame[truth] = (40, 60, 200)
        (from_stage,) = stage.process([_tracked(frame, walker.boxes[t : t + 1])])
        (mask,) = stage.box_masks([(frame, walker.boxes[t])])
        bx1, by1 = int(np.floor(walker.boxes[t, 0])), int(np.floor(walker.boxes[t, 1]))
        pasted = np.zeros(truth.shape, bool)
        pasted[by1 : by1 + mask.shape[0], bx1 : bx1 + mask.shape[1]] = mask
        np.testing.assert_array_equal(pasted, from_stage.detections.mask[0])
        ious.append((pasted & truth).sum() / (pasted | truth).sum())
    assert ious and np.mean(ious) > 0.8, ious
