"""Tracking stages (ByteTrack and BoT-SORT association): stable ids, independent sources, ended tracks, masks kept with their boxes."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from pipeline.messages import STARTS_TRACK, Frame, FrameResult
from stages.track import BoTSORTStage, ByteTrackStage

SIZE = (120, 200)  # (height, width) of the made-up frames


@pytest.fixture(params=[ByteTrackStage, BoTSORTStage], ids=["bytetrack", "botsort"])
def stage_class(request: pytest.FixtureRequest) -> type[ByteTrackStage]:
    return request.param


def _frame(source: str, index: int, boxes: list[tuple[float, float, float, float]]) -> FrameResult:
    xyxy = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    masks = np.zeros((len(xyxy), *SIZE), dtype=bool)
    for mask, (x1, y1, x2, y2) in zip(masks, xyxy.astype(int)):
        mask[y1:y2, x1:x2] = True  # each mask fills its own box, so alignment can be checked
    detections = sv.Detections(
        xyxy=xyxy,
        mask=masks,
        confidence=np.full(len(xyxy), 0.9, dtype=np.float32),
        class_id=np.zeros(len(xyxy), dtype=int),
    )
    return FrameResult(Frame(source, index, index / 10, np.zeros((*SIZE, 3), np.uint8)), detections)


def _walker(index: int, x0: float, y0: float = 20.0) -> tuple[float, float, float, float]:
    x = x0 + 3 * index
    return (x, y0, x + 20, y0 + 60)


def _assert_masks_match_boxes(result: FrameResult) -> None:
    for box, mask in zip(result.detections.xyxy.astype(int), result.detections.mask):
        x1, y1, x2, y2 = box
        assert mask[y1:y2, x1:x2].all() and mask.sum() == (x2 - x1) * (y2 - y1)


def test_ids_stay_stable_for_moving_boxes(stage_class: type[ByteTrackStage]) -> None:
    tracker = stage_class(minimum_consecutive_frames=2)
    ids_per_frame = []
    for i in range(20):
        (result,) = tracker.process([_frame("cam", i, [_walker(i, 10), _walker(i, 120)])])
        _assert_masks_match_boxes(result)
        assert result.detections.tracker_id.dtype == np.int64
        ids_per_frame.append(dict(zip(result.detections.xyxy[:, 0].round().astype(int), result.detections.tracker_id)))
    assert ids_per_frame[0] == {}, "a track needs two matched frames before it gets an id"
    left = {frame[10 + 3 * i] for i, frame in enumerate(ids_per_frame) if i > 0}
    right = {frame[120 + 3 * i] for i, frame in enumerate(ids_per_frame) if i > 0}
    assert len(left) == 1 and len(right) == 1 and left != right


def test_interleaved_sources_are_tracked_independently(stage_class: type[ByteTrackStage]) -> None:
    tracker = stage_class()
    seen: dict[str, set[int]] = {"a": set(), "b": set()}
    for i in range(15):
        # Same positions in both sources: a shared tracker would merge them into one track.
        batch = [_frame("a", i, [_walker(i, 10)]), _frame("b", i, [_walker(i, 10)])]
        for result in tracker.process(batch):
            seen[result.frame.source_id].update(result.detections.tracker_id.tolist())
            if i > 0:
                assert len(result.detections) == 1
    assert len(seen["a"]) == 1 and len(seen["b"]) == 1
    assert tracker.finish("a") == tuple(seen["a"])
    assert tracker.finish("a") == ()
    assert tracker.finish("b") == tuple(seen["b"])


def test_track_ends_after_lost_buffer_and_is_reported_once(stage_class: type[ByteTrackStage]) -> None:
    buffer = 4
    tracker = stage_class(lost_track_buffer=buffer)
    track_id = None
    for i in range(6):
        (result,) = tracker.process([_frame("cam", i, [_walker(i, 10)])])
        if len(result.detections):
            track_id = int(result.detections.tracker_id[0])
    assert track_id is not None
    ended_at = []
    for i in range(6, 6 + buffer + 4):
        (result,) = tracker.process([_frame("cam", i, [])])
        assert len(result.detections) == 0 and result.detections.mask.shape == (0, *SIZE)
        if result.ended_track_ids:
            ended_at.append((i, result.ended_track_ids))
    # Unmatched on frames 6.. ; ends once it has been missing for more than `buffer` frames.
    assert ended_at == [(6 + buffer, (track_id,))]
    assert tracker.finish("cam") == ()


def test_finish_reports_open_tracks(stage_class: type[ByteTrackStage]) -> None:
    tracker = stage_class()
    for i in range(5):
        tracker.process([_frame("cam", i, [_walker(i, 10), _walker(i, 120)])])
    open_ids = tracker.finish("cam")
    assert len(open_ids) == 2 and open_ids == tuple(sorted(open_ids))


def test_end_source_forgets_the_tracker(stage_class: type[ByteTrackStage]) -> None:
    tracker = stage_class()
    first_ids = set()
    for i in range(5):
        (result,) = tracker.process([_frame("clip", i, [_walker(i, 120)])])
        first_ids.update(result.detections.tracker_id.tolist())
    assert tracker.end_source("clip") == []
    assert tracker.finish("clip") == ()
    # A new source reusing the name starts from a fresh tracker: ids are allocated anew.
    later_ids = set()
    for i in range(5):
        (result,) = tracker.process([_frame("clip", i, [_walker(i, 10)])])
        later_ids.update(result.detections.tracker_id.tolist())
    assert later_ids == first_ids


def _skipped(source: str, index: int) -> FrameResult:
    return FrameResult(Frame(source, index, index / 10, np.zeros((*SIZE, 3), np.uint8)), sv.Detections.empty(),
                       detected=False)


def test_frames_without_detection_get_the_predicted_boxes_of_their_tracks(stage_class: type[ByteTrackStage]) -> None:
    # Two walkers at 3 px/frame, detected on even frames only: odd frames carry the Kalman predictions.
    tracker = stage_class(minimum_consecutive_frames=2)
    outputs = []
    for index in range(20):
        if index % 2:
            outputs.append(tracker.track(_skipped("cam", index)))
        else:
            outputs.append(tracker.track(_frame("cam", index, [_walker(index, 10), _walker(index, 110)])))
    ids = {tuple(sorted(r.detections.tracker_id.tolist())) for r in outputs[4:]}
    assert ids == {(0, 1)}, "the same two confirmed tracks throughout, skipped frames included"
    for index in range(5, 20, 2):
        predicted = outputs[index].detections
        assert predicted.mask is None and np.allclose(predicted.confidence, 0.9)
        order = np.argsort(predicted.xyxy[:, 0])
        truth = np.array([_walker(index, 10), _walker(index, 110)], dtype=np.float32)
        assert np.abs(predicted.xyxy[order] - truth).max() < 1.5, f"frame {index}: prediction off the walkers"
    assert all(r.ended_track_ids == () for r in outputs)


def test_skipped_frames_keep_the_lost_track_buffer_in_video_frames(stage_class: type[ByteTrackStage]) -> None:
    # Buffer 6 frames, detection every 2nd frame: a walker who vanishes ends within ~6 frames of video.
    tracker = stage_class(lost_track_buffer=6, minimum_consecutive_frames=1)
    ended_at = None
    for index in range(40):
        if index % 2:
            result = tracker.track(_skipped("cam", index))
        else:
            result = tracker.track(_frame("cam", index, [_walker(index, 10)] if index < 10 else []))
        if result.ended_track_ids:
            ended_at = index
            break
    assert ended_at is not None and 14 <= ended_at <= 20


def test_boxes_marked_weak_by_their_detector_continue_tracks_but_never_start_one(stage_class: type[ByteTrackStage]) -> None:
    # A steady, confident "person-like sign" marked weak never becomes a track; a walker whose boxes turn
    # weak (half hidden) after its track started stays tracked.
    tracker = stage_class(minimum_consecutive_frames=2)
    seen = set()
    for index in range(12):
        result = _frame("cam", index, [_walker(index, 10), (150, 20, 170, 80)])
        result.detections.confidence[:] = 0.95
        result.detections.data[STARTS_TRACK] = np.array([index < 4, False])
        tracked = tracker.track(result)
        seen.update(zip(tracked.detections.tracker_id.tolist(), tracked.detections.xyxy[:, 0].tolist()))
    assert {track_id for track_id, _ in seen} == {0}
    assert all(x1 < 150 for _, x1 in seen), "only the walker is tracked"
    assert len(tracked.detections) == 1 and tracked.detections.confidence[0] == np.float32(0.95)
