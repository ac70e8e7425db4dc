"""A camera's person size per image row, and blobs of several people cut into one box each."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import supervision as sv

from pipeline.messages import GROUP_PART
from stages.detect.classic import ClassicDetector
from stages.detect.person_size import PersonSizeModel, SizeLine, cover

LINE = SizeLine(slope=0.4, intercept=-10.0, width_ratio=0.42)


def _person_box(foot: float, centre: float, line: SizeLine = LINE) -> tuple[int, int, int, int]:
    height = float(line.height_at(foot))
    width = line.width_ratio * height
    return int(round(centre - width / 2)), int(round(foot - height)), int(round(centre + width / 2)), int(round(foot))


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_size_model_fits_the_single_people_and_ignores_groups_and_cut_boxes() -> None:
    rng = np.random.default_rng(0)
    model = PersonSizeModel(frame_height=360)
    boxes = []
    for _ in range(400):
        foot = rng.uniform(120, 350)
        x1, y1, x2, y2 = _person_box(foot, rng.uniform(50, 400))
        height = (y2 - y1) * rng.normal(1.0, 0.05)
        if rng.random() < 0.2:  # a group: one person behind another, a taller box
            height *= 1.8
        boxes.append((x1, y2 - height, x2, y2))
    model.observe(np.array(boxes[:100]), (360, 480))
    assert model.line() is None, "too few boxes to say yet"
    model.observe(np.array(boxes[100:]), (360, 480))
    # Boxes cut by the frame's border say nothing about a whole person's size.
    model.observe(np.array([[0, 10, 30, 200]] * 500), (360, 480))
    line = model.line()
    assert line is not None
    for foot in (150, 250, 340):
        assert line.height_at(foot) == pytest.approx(LINE.height_at(foot), rel=0.06)
    assert line.width_ratio == pytest.approx(0.42, abs=0.03)


def test_size_model_refuses_a_scene_without_a_ground_plane() -> None:
    model = PersonSizeModel(frame_height=360)
    rng = np.random.default_rng(1)
    feet = rng.uniform(100, 350, 300)
    model.observe(np.stack([np.full(300, 100.0), feet - 80, np.full(300, 140.0), feet], axis=1), (360, 480))
    assert model.line() is None, "equal heights everywhere: no slope, no size model"


def test_size_model_refuses_a_camera_whose_boxes_are_not_whole_people() -> None:
    # Close to the camera, boxes are heads, arms and halves of people: heights unrelated to the row.
    rng = np.random.default_rng(2)
    feet = rng.uniform(100, 350, 300)
    heights = feet * 0.4 * rng.uniform(0.3, 2.0, 300)
    model = PersonSizeModel(frame_height=360)
    model.observe(np.stack([np.full(300, 100.0), feet - heights, np.full(300, 140.0), feet], axis=1), (360, 480))
    assert model.line() is None


def _blob(boxes: list[tuple[int, int, int, int]], shape=(360, 480)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for x1, y1, x2, y2 in boxes:
        mask[y1:y2, x1:x2] = True
    return mask


def _cover(boxes):
    mask = _blob(boxes)
    ys, xs = np.nonzero(mask)
    y0, x0 = ys.min(), xs.min()
    return cover(mask[y0 : ys.max() + 1, x0 : xs.max() + 1], int(x0), int(y0), LINE)


def test_cover_separates_one_person_behind_another() -> None:
    near = _person_box(300, 200)
    far = _person_box(240, 225)  # further away, a little to the right: head and shoulders above the near one
    found = _cover([near, far])
    assert len(found) == 2
    assert max(_iou(found[0], near), _iou(found[1], near)) > 0.8
    assert max(_iou(found[0], far), _iou(found[1], far)) > 0.6


def test_cover_separates_people_side_by_side_and_leaves_one_person_whole() -> None:
    left, right = _person_box(300, 200), _person_box(300, 250)
    found = _cover([left, right])
    assert len(found) == 2
    assert sorted(round(_iou(f, t), 1) >= 0.7 for f in found for t in (left, right)).count(True) == 2
    # One person a fifth taller than the camera's usual person is still one box.
    x1, y1, x2, y2 = _person_box(300, 200)
    assert len(_cover([(x1, y1 - (y2 - y1) // 5, x2, y2)])) == 1


# A smooth, lightly textured ground (the ghost test compares outline edges with the background's).
BACKGROUND = cv2.resize(np.random.default_rng(7).integers(90, 150, (12, 16, 3), dtype=np.uint8), (480, 360),
                        interpolation=cv2.INTER_LINEAR)


def _frame(people: list[tuple[int, int, int, int]], colours: list[tuple[int, int, int]]) -> np.ndarray:
    image = BACKGROUND.copy()
    for (x1, y1, x2, y2), colour in zip(people, colours):
        image[y1:y2, x1:x2] = colour
    return image


def test_classic_detector_learns_the_size_and_splits_a_depth_group() -> None:
    colours = [(30, 30, 200), (200, 40, 40), (40, 200, 40)]

    def run(split_by_size: bool) -> sv.Detections:
        detector = ClassicDetector(warmup_frames=5, split_by_size=split_by_size)
        for i in range(5):
            detector.detect("cam", _frame([], []))
        # Three people walking apart at different distances: the camera's person size.
        for t in range(80):
            people = [_person_box(foot, 50 + 2 * t + 150 * k) for k, foot in enumerate((150, 250, 340))]
            detector.detect("cam", _frame(people, colours))
        for i in range(30):  # the scene empties, the background stays learnt
            detector.detect("cam", _frame([], []))
        # One walks in front of another further back.
        group = [_person_box(300, 200), _person_box(240, 228)]
        return detector.detect("cam", _frame(group, colours[:2]))

    whole = run(split_by_size=False)
    assert len(whole) == 1 and GROUP_PART not in whole.data
    parts = run(split_by_size=True)
    assert len(parts) == 2
    # Each part's box shows some of the other person: the appearance stage prefers other frames.
    assert parts.data[GROUP_PART].tolist() == [True, True]
