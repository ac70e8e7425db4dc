"""A detection holding several tracked people is split into one box per track; lone boxes stay as they are."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from pipeline.messages import GROUP_PART, STARTS_TRACK, Frame, FrameResult, SilhouetteSequence, TrackWindow
from stages.reid.stage import embed_windows
from stages.tracklets import TrackletAssembler
from stages.track import ByteTrackStage
from stages.track_groups import GroupSplitter

SIZE = (120, 240)


def _detections(boxes, masks=None) -> sv.Detections:
    xyxy = np.asarray(boxes, np.float32).reshape(-1, 4)
    return sv.Detections(xyxy=xyxy, confidence=np.full(len(xyxy), 0.8, np.float32),
                         class_id=np.zeros(len(xyxy), int), mask=masks)


def _mask(*boxes) -> np.ndarray:
    mask = np.zeros(SIZE, bool)
    for x1, y1, x2, y2 in boxes:
        mask[y1:y2, x1:x2] = True
    return mask


def test_a_box_around_two_tracked_people_becomes_their_two_boxes_tightened_to_the_foreground() -> None:
    # Two people 20 px wide, their blobs touching: the detector's box spans both.
    merged = _detections([(40, 20, 82, 82)], _mask((40, 22, 60, 82), (62, 20, 82, 80))[None])
    predicted = np.array([(38, 21, 59, 81), (63, 19, 84, 81)], float)
    out = GroupSplitter().split(merged, predicted)
    assert len(out) == 2
    np.testing.assert_allclose(out.xyxy, [(40, 22, 59, 81), (63, 20, 82, 80)])
    assert out.mask.shape == (2, *SIZE)
    assert out.mask[0, 50, 45] and not out.mask[0, 50, 70] and out.mask[1, 50, 70] and not out.mask[1, 50, 45]
    assert out.data[STARTS_TRACK].tolist() == [False, False]  # a part only continues a track
    assert out.data[GROUP_PART].tolist() == [True, True]
    np.testing.assert_allclose(out.confidence, [0.8, 0.8])


def test_a_lone_walker_and_a_box_with_one_track_in_it_are_left_alone() -> None:
    detections = _detections([(10, 20, 30, 80), (100, 20, 140, 80)])
    predicted = np.array([(11, 21, 31, 81), (102, 20, 122, 80)], float)  # one track in each box
    out = GroupSplitter().split(detections, predicted)
    assert out is detections


def test_a_track_on_a_fragment_of_the_body_does_not_split_the_box() -> None:
    detections = _detections([(40, 20, 60, 80)])
    predicted = np.array([(40, 20, 60, 80), (40, 60, 60, 80)], float)  # the whole person and just the legs
    assert len(GroupSplitter(min_height=0.5).split(detections, predicted)) == 1
    assert len(GroupSplitter(min_height=0.3).split(detections, predicted)) == 2


def test_a_predicted_box_belongs_to_the_one_detection_holding_most_of_it() -> None:
    # The middle person's predicted box is 73% inside the left box and 93% inside the right one.
    groups = GroupSplitter().groups(np.array([(0, 0, 50, 100), (30, 0, 130, 100)], float),
                                    np.array([(0, 5, 30, 95), (28, 5, 58, 95), (90, 5, 120, 95)], float))
    assert [g.tolist() for g in groups] == [[], [1, 2]]


def test_settings_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="min_inside"):
        GroupSplitter(min_inside=0.0)


def _frame(index: int, boxes) -> FrameResult:
    return FrameResult(Frame("cam", index, index / 25, np.zeros((*SIZE, 3), np.uint8)), _detections(boxes))


def _walk_past_each_other(stage: ByteTrackStage) -> list[dict[int, float]]:
    """Two people walk towards each other; while they overlap the detector gives one box around both.
    Per frame after the first (tracks are confirmed on their second frame): track id -> box centre x."""
    out = []
    for index in range(40):
        a = np.array([20 + 3 * index, 20, 40 + 3 * index, 80])
        b = np.array([200 - 3 * index, 22, 220 - 3 * index, 82])
        boxes = [(min(a[0], b[0]), 20, max(a[2], b[2]), 82)] if abs(a[0] - b[0]) < 26 else [a, b]
        tracked = stage.track(_frame(index, boxes)).detections
        if index:
            out.append({int(t): float(x1 + x2) / 2 for t, (x1, _, x2, _) in zip(tracked.tracker_id, tracked.xyxy)})
    return out


def test_two_people_merged_by_the_detector_keep_their_own_tracks_through_the_merge() -> None:
    frames = _walk_past_each_other(ByteTrackStage(minimum_consecutive_frames=1, split_groups=True))
    assert all(len(f) == 2 for f in frames)  # both people tracked in every frame, merged or not
    first = min(frames[0], key=frames[0].get)  # the track on the person walking right
    for index, frame in enumerate(frames, start=1):
        assert frame[first] == pytest.approx(30 + 3 * index, abs=4)  # it stays on that person


def test_without_group_splitting_the_merged_box_takes_one_of_the_tracks() -> None:
    frames = _walk_past_each_other(ByteTrackStage(minimum_consecutive_frames=1))
    assert any(len(f) == 1 for f in frames)


def _tracked(index: int, part: bool | None) -> FrameResult:
    detections = _detections([(40, 20, 60, 80)], _mask((40, 20, 60, 80))[None])
    detections.tracker_id = np.array([3])
    if part is not None:
        detections.data[GROUP_PART] = np.array([part])
    return FrameResult(Frame("cam", index, index / 25, np.zeros((*SIZE, 3), np.uint8)), detections)


def test_a_tracks_window_says_which_of_its_frames_were_cut_from_a_group_box() -> None:
    assembler = TrackletAssembler(window_every=100, max_length=50, min_length=2)
    for index, part in enumerate([None, False, True, True, False]):
        assembler.process([_tracked(index, part)])
    (window,) = assembler.end_source("cam")
    assert window.sequence.group_parts.tolist() == [False, False, True, True, False]
    assert window.sequence.slice(1, 3).group_parts.tolist() == [False, True]
    assembler = TrackletAssembler(window_every=100, max_length=50, min_length=2)
    for index in range(4):
        assembler.process([_tracked(index, None)])
    assert assembler.end_source("cam")[0].sequence.group_parts is None  # nothing split: no flags


def _window(colours: list[int], parts: list[bool] | None) -> TrackWindow:
    t = len(colours)
    crops = np.stack([np.full((128, 64, 3), c, np.uint8) for c in colours])
    sequence = SilhouetteSequence(np.zeros((t, 64, 44), np.uint8), np.ones(t, np.float32), np.zeros((t, 4), np.float32),
                                  np.arange(t), np.arange(t) / 25, SIZE, crops,
                                  None if parts is None else np.array(parts))
    return TrackWindow("cam", 1, 0, True, sequence)


def _embed(crops: np.ndarray) -> np.ndarray:
    """Stand-in model: a crop's grey level as a direction, so that a mean says which crops went in."""
    level = crops.reshape(len(crops), -1).mean(1) / 255.0
    x = np.stack([level, 1 - level], axis=1).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_appearance_leaves_out_the_crops_that_show_a_group_when_the_window_has_others() -> None:
    alone, group = 0, 255
    mixed, only_groups, unflagged = (_window([alone, group, group, alone], [False, True, True, False]),
                                     _window([group, group], [True, True]), _window([alone, group], None))
    embed_windows([mixed, only_groups, unflagged], "all", None, _embed, "test")
    np.testing.assert_allclose(mixed.appearance_embedding, _embed(np.zeros((1, 128, 64, 3), np.uint8))[0], atol=1e-6)
    np.testing.assert_allclose(only_groups.appearance_embedding, _embed(np.full((1, 128, 64, 3), 255, np.uint8))[0],
                               atol=1e-6)
    assert 0.1 < unflagged.appearance_embedding[0] < 0.9  # both crops averaged
