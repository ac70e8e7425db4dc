"""Tracking stages: ByteTrack or BoT-SORT (Roboflow ``trackers``) per source, on ``sv.Detections``.

One tracker per source, fed that source's frames in order (the batch may interleave sources).
Only detections that belong to a confirmed track are kept; their masks stay aligned with their
boxes because ``sv.Detections`` indexing slices every field together. A track ends when it has not
been matched for more than ``lost_track_buffer`` frames; it is reported once, in the
``ended_track_ids`` of the frame where that happens, or by ``finish`` when the source ends.

Frames the detector skipped (``detected`` False: detection every N-th frame) move every track's
Kalman filter one frame on and give the boxes of the tracks matched at the last detected frame,
without counting a miss; the lost-track buffer then counts detected frames, scaled by the gap
between them so that it still spans ``lost_track_buffer`` frames of video.
"""

from __future__ import annotations

import numpy as np
import supervision as sv
from trackers import BoTSORTTracker, ByteTrackTracker
from trackers.utils.state_representations import XYXYStateEstimator

from pipeline.domains import NonNegativeInt, PositiveInt, UnitFloat
from pipeline.messages import STARTS_TRACK, FrameResult
from stages.crowding import CrowdedBoxes
from stages.track_groups import GroupSplitter
from stages.track_split import (SPLIT_CHECKS, SPLIT_CROSSING_DISTANCE, SPLIT_DISTANCE, SPLIT_EVERY,
                                SPLIT_RECHECK_DISTANCE, SPLIT_WEIGHTS, AppearanceSplitter)

# trackers expresses the lost-track buffer in 30 FPS frames and scales it by the frame rate it is
# given; passing 30 makes the buffer a plain frame count, whatever the source's rate.
_BUFFER_REFERENCE_FPS = 30.0
_ROW = "source_row"  # detection row number carried through the tracker


class ByteTrackStage:
    """Assigns stable per-source track ids to detections.

    lost_track_buffer: frames a track may go unmatched before it ends.
    track_activation_threshold: least detection confidence that may start a new track (detections
    marked ``data[STARTS_TRACK] == False`` by their detector never start one, whatever their confidence).
    high_confidence_threshold: detections at or above this are matched first (ByteTrack's first
    stage); lower ones can only continue existing tracks.
    minimum_matching_iou: least box IoU between a track's prediction and a detection to match. 0.3
        rather than the tracker's own 0.1: where two people cross, a low bar lets a track jump to the
        other person (on the identity benchmark's quick site the gallery flagged 8 of 58 tracks as
        following several people at 0.1, 3 of 79 at 0.3; 0.5 splits people into 133 tracks).
    minimum_consecutive_frames: matched frames in a row before a new track gets an id.
    split_on_appearance: split a track where the person in its box changes (``stages.track_split``):
        the rest of the track gets a new id. Costs one appearance embedding per tracked person every
        ``split_every`` frames.
    split_weights: the appearance model for it (a ReID checkpoint; default weights/reid_synth.pt, the
        model the split rule was measured with).
    split_distance: cosine distance from the track's reference appearance that counts as someone else.
    split_checks: that many checks in a row split the track.
    split_every: check every this many frames of a source.
    split_recheck_after: a track matched again after at least this many frames without a box is
        checked at once against ``split_recheck_distance``, and one check beyond it splits the track
        (``stages.track_split``: where a lost track comes back, it has often come back on someone
        else). 0: off.
    split_recheck_distance: the cosine distance for that check.
    split_at_crossings: also split a track whose mean appearance after a crossing (a crowded box) lies
        ``split_crossing_distance`` from its mean appearance before it (``stages.track_split``: where
        two people's boxes touch, the crops drift from one to the other and the running reference
        with them).
    split_crossing_distance: the cosine distance between those two means.
    split_skip_crowded: the splitter does not check crowded boxes (``stages.crowding``: covered by
        another box, or much larger than the track's recent boxes), so the frames of a crossing do
        not move a track's reference. Off by default: purer tracks, fewer links (docs/detect.md).
    split_groups: split a detection that holds the predicted boxes of several tracks matched at the
        last detected frame into one box per track (``stages.track_groups``): people who overlap in
        the image and come out of the detector as one box keep their own tracks.
    group_min_inside: least share of a track's predicted box inside a detection for the track to be in it.
    group_min_height: least height of that predicted box as a share of the detection's height.
    """

    def __init__(
        self,
        *,
        lost_track_buffer: NonNegativeInt = 30,
        track_activation_threshold: UnitFloat = 0.5,
        high_confidence_threshold: UnitFloat = 0.5,
        minimum_matching_iou: UnitFloat = 0.3,
        minimum_consecutive_frames: PositiveInt = 2,
        split_on_appearance: bool = False,
        split_weights: str = "",
        split_distance: UnitFloat = SPLIT_DISTANCE,
        split_checks: PositiveInt = SPLIT_CHECKS,
        split_every: PositiveInt = SPLIT_EVERY,
        split_recheck_after: NonNegativeInt = 0,
        split_recheck_distance: UnitFloat = SPLIT_RECHECK_DISTANCE,
        split_at_crossings: bool = False,
        split_crossing_distance: UnitFloat = SPLIT_CROSSING_DISTANCE,
        split_skip_crowded: bool = False,
        split_groups: bool = False,
        group_min_inside: UnitFloat = 0.7,
        group_min_height: UnitFloat = 0.5,
    ) -> None:
        self._options = {
            "lost_track_buffer": lost_track_buffer,
            "frame_rate": _BUFFER_REFERENCE_FPS,
            "track_activation_threshold": track_activation_threshold,
            "high_conf_det_threshold": high_confidence_threshold,
            "minimum_iou_threshold": minimum_matching_iou,
            "minimum_consecutive_frames": minimum_consecutive_frames,
        }
        self.lost_track_buffer = lost_track_buffer
        self._trackers: dict[str, ByteTrackTracker | BoTSORTTracker] = {}
        self._skipped: dict[str, int] = {}  # per source: frames skipped by the detector since its last pass
        self._confidence: dict[tuple[str, int], float] = {}  # (source, track id): last matched confidence
        self._splitter = _appearance_splitter(split_weights, split_distance, split_checks, split_every,
                                              split_recheck_distance if split_recheck_after else None,
                                              split_crossing_distance if split_at_crossings else None,
                                              split_skip_crowded) \
            if split_on_appearance else None
        self._recheck_after = split_recheck_after
        self._groups = GroupSplitter(group_min_inside, group_min_height) if split_groups else None
        self._crowding = CrowdedBoxes() if split_skip_crowded or split_at_crossings else None

    def process(self, batch: list[FrameResult]) -> list[FrameResult]:
        return [self.track(item) for item in batch]

    def track(self, item: FrameResult) -> FrameResult:
        """Track one frame of its source; returns the tracked detections and the tracks that ended."""
        source_id = item.frame.source_id
        tracker = self._trackers.get(source_id)
        if tracker is None:
            tracker = self._trackers[source_id] = self._new_tracker()
        if not item.detected:
            return self._predict(item, tracker)
        gap = self._skipped.pop(source_id, 0) + 1
        if gap > 1:  # the buffer counts updates: keep it lost_track_buffer frames of video long
            tracker.maximum_frames_without_update = max(1, -(-self.lost_track_buffer // gap))
        detections = item.detections
        if self._groups is not None:
            detections = self._groups.split(detections, _predicted_boxes(tracker))
        open_before = _confirmed_ids(tracker)
        lost_for = _updates_missed(tracker) if self._splitter is not None and self._recheck_after else {}
        # The tracker sees boxes only; masks (N, H, W) are sliced once, below, by row number.
        boxes = sv.Detections(
            xyxy=detections.xyxy,
            confidence=self._tracker_confidence(detections),
            data={_ROW: np.arange(len(detections))},
        )
        tracked = tracker.update(boxes)
        open_after = _confirmed_ids(tracker)
        if tracked.tracker_id is None or len(tracked) == 0:
            rows = np.zeros(0, dtype=np.int64)
            ids = np.zeros(0, dtype=np.int64)
        else:
            confirmed = tracked.tracker_id >= 0
            rows = np.asarray(tracked.data[_ROW])[confirmed]
            ids = tracked.tracker_id[confirmed].astype(np.int64)
        kept = detections[rows]
        ended = tuple(sorted(open_before - open_after))
        for track_id in ended:
            self._confidence.pop((source_id, track_id), None)
        if kept.confidence is not None:
            self._confidence.update({(source_id, int(t)): float(c) for t, c in zip(ids, kept.confidence)})
        if self._splitter is not None:
            crowded = None
            if self._crowding is not None:
                self._crowding.end(source_id, ended)
                crowded = self._crowding.update(source_id, ids, kept.xyxy)
            ended = self._splitter.end(source_id, ended)
            returning = np.array([lost_for.get(int(t), 0) * gap >= self._recheck_after for t in ids], bool) \
                if lost_for else None
            ids, split_ended = self._splitter.update(source_id, item.frame.index, item.frame.image, ids, kept.xyxy,
                                                     crowded, returning)
            ended += split_ended
        kept.tracker_id = ids
        return FrameResult(item.frame, kept, item.ended_track_ids + ended)

    def _new_tracker(self) -> ByteTrackTracker | BoTSORTTracker:
        return ByteTrackTracker(**self._options)

    def _tracker_confidence(self, detections: sv.Detections) -> np.ndarray | None:
        """Confidences as the tracker sees them: boxes that may not start a track stay below activation."""
        confidence = detections.confidence
        starts = detections.data.get(STARTS_TRACK)
        if confidence is None or starts is None:
            return confidence
        below = np.nextafter(np.float32(self._options["track_activation_threshold"]), np.float32(0))
        return np.where(np.asarray(starts, dtype=bool), confidence, np.minimum(confidence, below)).astype(np.float32)

    def _predict(self, item: FrameResult, tracker: ByteTrackTracker | BoTSORTTracker) -> FrameResult:
        """A frame without detector pass: the confirmed tracks matched last time, where their motion puts them.

        Each Kalman filter moves one frame on (the next update predicts the last one); miss counters are
        left alone, so a skipped frame neither ages a track nor breaks its run of consecutive matches.
        """
        source_id = item.frame.source_id
        self._skipped[source_id] = self._skipped.get(source_id, 0) + 1
        boxes, ids = [], []
        for track in tracker.tracks:
            track.state_estimator.predict()
            if track.tracker_id >= 0 and track.time_since_update == 0:
                boxes.append(track.get_state_bbox())
                ids.append(int(track.tracker_id))
        height, width = item.frame.size
        xyxy = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
        visible = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        ids_array = np.asarray(ids, dtype=np.int64)[visible]
        predicted = sv.Detections(
            xyxy=xyxy[visible],
            confidence=np.array([self._confidence.get((source_id, t), 0.0) for t in ids_array], dtype=np.float32),
            class_id=np.zeros(len(ids_array), dtype=int),
            tracker_id=ids_array if self._splitter is None else self._splitter.output_ids(source_id, ids_array),
        )
        return FrameResult(item.frame, predicted, item.ended_track_ids)

    def finish(self, source_id: str) -> tuple[int, ...]:
        """Close a source: returns the ids of its tracks still open, and forgets its tracker."""
        tracker = self._trackers.pop(source_id, None)
        self._skipped.pop(source_id, None)
        self._confidence = {key: c for key, c in self._confidence.items() if key[0] != source_id}
        if self._crowding is not None:
            self._crowding.end_source(source_id)
        if tracker is None:
            return ()
        open_ids = tuple(sorted(_confirmed_ids(tracker)))
        if self._splitter is not None:
            open_ids = tuple(sorted(self._splitter.end(source_id, open_ids)))
            self._splitter.end_source(source_id)
        return open_ids

    def end_source(self, source_id: str) -> list[FrameResult]:
        """The runner's end-of-source hook: forgets the tracker (the assembler closes the tracks)."""
        self.finish(source_id)
        return []


class BoTSORTStage(ByteTrackStage):
    """The tracking stage with BoT-SORT's association in place of ByteTrack's (its motion and IoU parts;
    no appearance features, no camera motion compensation: the cameras are fixed).

    ByteTrack matches new detections to every track at once, young and lost ones included, on plain
    IoU. BoT-SORT matches confirmed and lost tracks first, on IoU weighted by the detection's
    confidence, then low-confidence detections to the tracks matched a frame ago, and only then the
    young tracks. Where two walkers pass each other, fewer tracks move onto the other person: on the
    identity benchmark's quick site with YOLOX-Nano, frame purity 0.863 -> 0.917 with fewer tracks per
    person and camera (1.89 -> 1.83), before any appearance split (docs/detect.md).

    minimum_first_match: least IoU x confidence to continue a confirmed or lost track (first stage).
    minimum_second_match: least IoU for a low-confidence detection to continue a track matched a frame ago.
    minimum_young_match: least IoU x confidence to continue a track that has no id yet.
    The other arguments are ByteTrackStage's.
    """

    def __init__(
        self,
        *,
        lost_track_buffer: NonNegativeInt = 30,
        track_activation_threshold: UnitFloat = 0.5,
        high_confidence_threshold: UnitFloat = 0.5,
        minimum_first_match: UnitFloat = 0.2,
        minimum_second_match: UnitFloat = 0.5,
        minimum_young_match: UnitFloat = 0.3,
        minimum_consecutive_frames: PositiveInt = 2,
        split_on_appearance: bool = False,
        split_weights: str = "",
        split_distance: UnitFloat = SPLIT_DISTANCE,
        split_checks: PositiveInt = SPLIT_CHECKS,
        split_every: PositiveInt = SPLIT_EVERY,
        split_recheck_after: NonNegativeInt = 0,
        split_recheck_distance: UnitFloat = SPLIT_RECHECK_DISTANCE,
        split_at_crossings: bool = False,
        split_crossing_distance: UnitFloat = SPLIT_CROSSING_DISTANCE,
        split_skip_crowded: bool = False,
        split_groups: bool = False,
        group_min_inside: UnitFloat = 0.7,
        group_min_height: UnitFloat = 0.5,
    ) -> None:
        super().__init__(
            lost_track_buffer=lost_track_buffer,
            track_activation_threshold=track_activation_threshold,
            high_confidence_threshold=high_confidence_threshold,
            minimum_consecutive_frames=minimum_consecutive_frames,
            split_on_appearance=split_on_appearance,
            split_weights=split_weights,
            split_distance=split_distance,
            split_checks=split_checks,
            split_every=split_every,
            split_recheck_after=split_recheck_after,
            split_recheck_distance=split_recheck_distance,
            split_at_crossings=split_at_crossings,
            split_crossing_distance=split_crossing_distance,
            split_skip_crowded=split_skip_crowded,
            split_groups=split_groups,
            group_min_inside=group_min_inside,
            group_min_height=group_min_height,
        )
        # ByteTrack's options less its one IoU bar, plus BoT-SORT's three
        self._options = {key: value for key, value in self._options.items() if key != "minimum_iou_threshold"}
        self._options.update(minimum_iou_threshold_first_assoc=minimum_first_match,
                             minimum_iou_threshold_second_assoc=minimum_second_match,
                             minimum_iou_threshold_unconfirmed_assoc=minimum_young_match)

    def _new_tracker(self) -> BoTSORTTracker:
        # Corner state like ByteTrack's, which _predicted_boxes reads; a track's first frame gets no id
        # (as every later one), so one-frame false alarms never become tracks.
        return BoTSORTTracker(**self._options, enable_cmc=False, instant_first_frame_activation=False,
                              state_estimator_class=XYXYStateEstimator)


def _appearance_splitter(weights: str, distance: float, checks: int, every: int, recheck_distance: float | None,
                         crossing_distance: float | None, skip_crowded: bool) -> AppearanceSplitter:
    from stages.reid.stage import load_appearance_model
    from stages.silhouette import crop_box

    model, _ = load_appearance_model(weights or SPLIT_WEIGHTS)
    return AppearanceSplitter(model.embed_crops, crop_box, distance=distance, frames=checks, every=every,
                              recheck_distance=recheck_distance, crossing_distance=crossing_distance,
                              skip_crowded=skip_crowded)


def _predicted_boxes(tracker: ByteTrackTracker | BoTSORTTracker) -> np.ndarray:
    """(K, 4) xyxy: where the confirmed tracks matched at the last detected frame will be at the next
    update (the constant-velocity step of the tracker's own corner Kalman filter, state
    [x1, y1, x2, y2, vx1, vy1, vx2, vy2]), without moving any filter."""
    boxes = [np.asarray(t.state_estimator.kf.state, np.float64).reshape(-1)[:8]
             for t in tracker.tracks if t.tracker_id >= 0 and t.time_since_update == 0]
    if not boxes:
        return np.zeros((0, 4))
    state = np.stack(boxes)
    return state[:, :4] + state[:, 4:8]


def _updates_missed(tracker: ByteTrackTracker | BoTSORTTracker) -> dict[int, int]:
    """Confirmed tracks not matched at the last detector pass: id -> passes missed since their last match."""
    return {int(t.tracker_id): int(t.time_since_update) for t in tracker.tracks
            if t.tracker_id >= 0 and t.time_since_update > 0}


def _confirmed_ids(tracker: ByteTrackTracker | BoTSORTTracker) -> set[int]:
    return {int(t.tracker_id) for t in tracker.tracks if t.tracker_id >= 0}
