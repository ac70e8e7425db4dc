"""Detection every N-th frame: which frames of each source get a detector pass.

The frames in between are marked ``detected=False`` and the tracker predicts their boxes
(`stages.track`), which trades some box accuracy on fast movers for detector time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import supervision as sv

from pipeline.messages import Frame, FrameResult


class DetectionSchedule:
    """Every ``every``-th frame of each source is due, counted per source from its first frame."""

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ValueError(f"detect_every must be >= 1 frame, got {every}")
        self.every = every
        self._seen: dict[str, int] = {}

    def due(self, frame: Frame) -> bool:
        """Whether to run the detector on this frame (call once per frame, in order)."""
        seen = self._seen.get(frame.source_id, 0)
        self._seen[frame.source_id] = seen + 1
        return seen % self.every == 0

    def end_source(self, source_id: str) -> None:
        self._seen.pop(source_id, None)

    def run(
        self, batch: list[FrameResult], detect: Callable[[Sequence[np.ndarray]], list[sv.Detections]]
    ) -> list[FrameResult]:
        """``detect(images)`` (one call, batched) on the due frames; the others come back ``detected=False``."""
        due = [i for i, item in enumerate(batch) if self.due(item.frame)]
        found = dict(zip(due, detect([batch[i].frame.image for i in due]) if due else []))
        return [
            FrameResult(item.frame, found[i], item.ended_track_ids)
            if i in found
            else FrameResult(item.frame, sv.Detections.empty(), item.ended_track_ids, detected=False)
            for i, item in enumerate(batch)
        ]
