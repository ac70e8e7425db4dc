"""Mask refiner: region resampling, its inputs, checkpoints, and the shipped weights on real walkers.

The real-frame test uses frame 200 of the campus clip and BlazePose from ../shared/models (skipped where
absent): the refiner was trained on rendered people only, so on real people it must still give masks
that cover each walker and agree with BlazePose's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch

from pipeline.config import read_yaml
from pipeline.messages import Frame, FrameResult
from stages.checkpoints import sha256_of
from stages.segment.crops import Region, region_around, region_map_in_box, region_map_onto
from stages.segment.refine import (
    CHANNELS,
    DEFAULT_WEIGHTS,
    REFINE_SCALE,
    REFINE_SIZE,
    MaskRefiner,
    RefinedPoseSegmenter,
    RefinerConfig,
    load_refiner,
    refiner_input,
    save_refiner,
)
from stages.segment.pose_crop import PoseCropSegmenter
from tests.helpers import PROJECT_ROOT, VIDEOS, require_model, video_frames
from tests.test_segment_pose_crop import BOXES, POSE, _tracked
from training.mask_refiner import augment, box_iou


def test_a_frame_mask_cut_to_a_region_goes_back_onto_its_box() -> None:
    mask = np.zeros((120, 160), np.float32)
    mask[30:90, 40:60] = 1.0
    box = np.array([40.0, 30.0, 60.0, 90.0])
    region = region_around(box, REFINE_SCALE, REFINE_SIZE)
    cut = region_map_onto(mask, Region(0.0, 0.0, 160.0, 120.0), region, REFINE_SIZE, outside=0.0)
    assert cut.shape == REFINE_SIZE
    # The box fills 1 / REFINE_SCALE of the region's height, centred.
    rows = np.flatnonzero(cut.max(axis=1) > 0.5)
    assert abs(len(rows) / REFINE_SIZE[0] - 1 / REFINE_SCALE) < 0.03
    back = region_map_in_box(cut, region, (40, 30, 60, 90)) > 0.5
    assert back.mean() > 0.97


def test_inputs_carry_the_crop_pose_logits_detector_mask_and_box() -> None:
    image = np.full((120, 160, 3), 40, np.uint8)
    image[30:90, 40:60] = (0, 0, 255)  # a red person, BGR
    box = np.array([40.0, 30.0, 60.0, 90.0])
    pose_region = Region(0.0, 0.0, 160.0, 120.0)
    pose_logits = np.full((120, 160), -8.0, np.float32)
    pose_logits[30:90, 40:50] = 8.0  # BlazePose found the left half only
    detected = np.zeros((120, 160), bool)
    detected[30:90, 40:60] = True
    x, region = refiner_input(image, box, pose_logits, pose_region, detected)
    assert x.shape == (CHANNELS, *REFINE_SIZE) and x.dtype == np.float32
    centre = (REFINE_SIZE[0] // 2, REFINE_SIZE[1] // 2)
    assert x[0][centre] > 0.4 and x[2][centre] < -0.3  # R high, B low at the person
    left, right = (centre[0], centre[1] - 4), (centre[0], centre[1] + 4)
    assert x[3][left] == pytest.approx(2.0) and x[3][right] == pytest.approx(-2.0)
    assert x[4][centre] == pytest.approx(1.0) and x[4][0, 0] == 0.0
    assert x[5][centre] == pytest.approx(1.0) and x[5][0, 0] == 0.0
    without, _ = refiner_input(image, box, pose_logits, pose_region, None)
    assert not without[4].any() and np.array_equal(without[[0, 1, 2, 3, 5]], x[[0, 1, 2, 3, 5]])


def test_checkpoint_round_trip_and_refusals(tmp_path: Path) -> None:
    model = MaskRefiner(RefinerConfig((8, 16)))
    path = tmp_path / "refiner.pt"
    sha = save_refiner(path, model)
    loaded, version = load_refiner(path)
    assert version == f"mask_refiner@{sha[:12]}" and loaded.config.widths == (8, 16)
    x = torch.randn(2, CHANNELS, *REFINE_SIZE)
    model.eval()
    with torch.inference_mode():
        assert torch.allclose(model(x), loaded(x))
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a gaitscope mask refiner"):
        load_refiner(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="training.mask_refiner"):
        load_refiner(tmp_path / "missing.pt")


def test_augmentation_moves_inputs_and_targets_together() -> None:
    rng = np.random.default_rng(0)
    x = torch.zeros(64, CHANNELS, *REFINE_SIZE)
    x[:, 4, 20:70, 10:25] = 1.0  # detector mask on the left ...
    y = x[:, 4].clone()  # ... and the target the same
    moved, target = augment(x, y, rng, drop_detector=0.25)
    kept = moved[:, 4].flatten(1).any(1)
    assert 0 < int((~kept).sum()) < 40  # about a quarter blanked
    assert torch.equal(moved[kept, 4], target[kept])  # flipped together
    flipped = target[:, 50, 50] > 0
    assert 10 < int(flipped.sum()) < 54


def test_box_iou_counts_only_inside_the_box() -> None:
    pred = np.zeros((1, 10, 10), bool)
    target = np.zeros((1, 10, 10), bool)
    box = np.zeros((1, 10, 10), bool)
    box[0, 2:8, 2:8] = True
    pred[0, 2:5, 2:8] = True
    target[0, 2:8, 2:8] = True
    pred[0, 0, 0] = True  # outside the box: ignored
    assert box_iou(pred, target, box)[0] == pytest.approx(0.5)


def test_shipped_weights_match_their_manifest_and_recipe() -> None:
    manifest = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert manifest["sha256"] == sha256_of(DEFAULT_WEIGHTS)
    assert manifest["config"] == read_yaml(PROJECT_ROOT / "configs" / "train" / "mask_refiner.yaml")
    kept = manifest["metrics"]["kept"]
    assert kept["iou_refined"] > kept["iou_pose"]  # what it was shipped for, on held-out sites
    model, version = load_refiner(DEFAULT_WEIGHTS)
    assert version.startswith("mask_refiner@")


@pytest.fixture(scope="module")
def campus_frame() -> np.ndarray:
    return video_frames(VIDEOS / "campus_road_480x360.mp4", [200])[200]


def test_refined_masks_cover_real_walkers_and_agree_with_blazepose(campus_frame: np.ndarray) -> None:
    model = str(require_model(POSE))
    refined = RefinedPoseSegmenter(model=model, min_height=30)
    (result,) = refined.process([_tracked(campus_frame, BOXES)])
    (plain,) = PoseCropSegmenter(model=model, min_height=30).process([_tracked(campus_frame, BOXES)])
    for box, mask, pose in zip(BOXES, result.detections.mask, plain.detections.mask):
        x1, y1, x2, y2 = int(np.floor(box[0])), int(np.floor(box[1])), int(np.ceil(box[2])), int(np.ceil(box[3]))
        inside = mask[y1:y2, x1:x2]
        assert mask.sum() == inside.sum(), "mask pixels outside the box"
        assert 0.3 < inside.mean() < 0.9
        rows = np.flatnonzero(inside.any(axis=1))
        assert rows[0] <= 0.1 * (y2 - y1) and rows[-1] >= 0.9 * (y2 - y1)
        assert (mask & pose).sum() / (mask | pose).sum() > 0.6


def test_people_with_a_detector_mask_and_without_one_both_get_masks(campus_frame: np.ndarray) -> None:
    refined = RefinedPoseSegmenter(model=str(require_model(POSE)), min_height=30)
    detector_masks = np.zeros((2, *campus_frame.shape[:2]), bool)
    for i, box in enumerate(BOXES[:2].astype(int)):
        detector_masks[i, box[1] : box[3], box[0] : box[2]] = True
    frame = Frame("campus", 200, 8.0, campus_frame)
    with_detector = sv.Detections(xyxy=BOXES[:2], mask=detector_masks, tracker_id=np.array([1, 2]))
    (a,) = refined.process([FrameResult(frame, with_detector)])
    (b,) = refined.process([_tracked(campus_frame, BOXES[:2])])
    for mask_a, mask_b in zip(a.detections.mask, b.detections.mask):
        assert mask_a.sum() > 100 and mask_b.sum() > 100
