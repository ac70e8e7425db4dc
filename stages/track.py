"""Tracking stage: ByteTrack (Roboflow ``trackers``) per source, on ``sv.Detections``.

One tracker per source, fed that source's frames in order (the batch may interleave sources).
Only detections that belong to a confirmed track are kept; their masks stay aligned with their
boxes because ``sv.Detections`` indexing slices every field together. A track ends when it has not
been matched for more than ``lost_track_buffer`` frames; it is reported once, in the
``ended_track_ids`` of the frame where that happens, or by ``finish`` when the source ends.
"""

from __future__ import annotations

import numpy as np
import supervision as sv
from trackers import ByteTrackTracker

from pipeline.domains import NonNegativeInt, PositiveInt, UnitFloat
from pipeline.messages import FrameResult

# trackers expresses the lost-track buffer in 30 FPS frames and scales it by the frame rate it is
# given; passing 30 makes the buffer a plain frame count, whatever the source's rate.
_BUFFER_REFERENCE_FPS = 30.0
_ROW = "source_row"  # detection row number carried through the tracker


class ByteTrackStage:
    """Assigns stable per-source track ids to detections.

    lost_track_buffer: frames a track may go unmatched before it ends.
    track_activation_threshold: least detection confidence that may start a new track.
    high_confidence_threshold: detections at or above this are matched first (ByteTrack's first
    stage); lower ones can only continue existing tracks.
    minimum_matching_iou: least box IoU between a track's prediction and a detection to match.
    minimum_consecutive_frames: matched frames in a row before a new track gets an id.
    """

    def __init__(
        self,
        *,
        lost_track_buffer: NonNegativeInt = 30,
        track_activation_threshold: UnitFloat = 0.5,
        high_confidence_threshold: UnitFloat = 0.5,
        minimum_matching_iou: UnitFloat = 0.1,
        minimum_consecutive_frames: PositiveInt = 2,
    ) -> None:
        self._options = {
            "lost_track_buffer": lost_track_buffer,
            "frame_rate": _BUFFER_REFERENCE_FPS,
            "track_activation_threshold": track_activation_threshold,
            "high_conf_det_threshold": high_confidence_threshold,
            "minimum_iou_threshold": minimum_matching_iou,
            "minimum_consecutive_frames": minimum_consecutive_frames,
        }
        self._trackers: dict[str, ByteTrackTracker] = {}

    def process(self, batch: list[FrameResult]) -> list[FrameResult]:
        return [self.track(item) for item in batch]

    def track(self, item: FrameResult) -> FrameResult:
        """Track one frame of its source; returns the tracked detections and the tracks that ended."""
        source_id = item.frame.source_id
        tracker = self._trackers.get(source_id)
        if tracker is None:
            tracker = self._trackers[source_id] = ByteTrackTracker(**self._options)
        detections = item.detections
        open_before = _confirmed_ids(tracker)
        # The tracker sees boxes only; masks (N, H, W) are sliced once, below, by row number.
        boxes = sv.Detections(
            xyxy=detections.xyxy,
            confidence=detections.confidence,
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
        kept.tracker_id = ids
        ended = tuple(sorted(open_before - open_after))
        return FrameResult(item.frame, kept, item.ended_track_ids + ended)

    def finish(self, source_id: str) -> tuple[int, ...]:
        """Close a source: returns the ids of its tracks still open, and forgets its tracker."""
        tracker = self._trackers.pop(source_id, None)
        if tracker is None:
            return ()
        return tuple(sorted(_confirmed_ids(tracker)))

    def end_source(self, source_id: str) -> list[FrameResult]:
        """The runner's end-of-source hook: forgets the tracker (the assembler closes the tracks)."""
        self.finish(source_id)
        return []


def _confirmed_ids(tracker: ByteTrackTracker) -> set[int]:
    return {int(t.tracker_id) for t in tracker.tracks if t.tracker_id >= 0}
