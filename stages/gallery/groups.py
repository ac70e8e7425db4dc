"""Tracks whose boxes hold several people.

Background subtraction returns one blob around people who walk side by side or cross in a crowd, and
the tracker follows that blob: its windows show a group, not a person. Such a track may still be
identified, but enrolled it would start an identity of nobody or add a crowd's look to a person's.
Whether a box is one person's is judged by its size where it stands: each camera's person height at
each foot row is learnt from the boxes the gallery sees (`stages.detect.person_size`, the same model
the classic detector uses to cut groups), and a box more than ``height`` times taller or ``width``
times wider than one person there holds several.
"""

from __future__ import annotations

import numpy as np

from pipeline.messages import TrackWindow
from stages.detect.person_size import PersonSizeModel

# As the classic detector's group test (stages.detect.classic, group_height / group_width).
GROUP_HEIGHT = 1.2
GROUP_WIDTH = 1.4


class GroupBoxes:
    """Per camera, the person size at each foot row; per track, its boxes, one per frame."""

    def __init__(self, height: float = GROUP_HEIGHT, width: float = GROUP_WIDTH) -> None:
        self.height = float(height)
        self.width = float(width)
        self._sizes: dict[str, PersonSizeModel] = {}
        self._frame_sizes: dict[str, tuple[int, int]] = {}
        self._boxes: dict[tuple[str, int], dict[int, np.ndarray]] = {}

    def observe(self, window: TrackWindow) -> None:
        """Take the window's boxes of frames not seen before for its track (windows overlap)."""
        sequence = window.sequence
        frame_size = (int(sequence.frame_size[0]), int(sequence.frame_size[1]))
        size = self._sizes.get(window.source_id)
        if size is None or self._frame_sizes[window.source_id] != frame_size:
            size = self._sizes[window.source_id] = PersonSizeModel(frame_size[0])
            self._frame_sizes[window.source_id] = frame_size
        boxes = self._boxes.setdefault((window.source_id, int(window.track_id)), {})
        new = []
        for index, box in zip(sequence.frame_indices, sequence.boxes):
            if int(index) not in boxes:
                boxes[int(index)] = np.asarray(box, np.float64)
                new.append(boxes[int(index)])
        if new:
            size.observe(np.stack(new), frame_size)

    def share(self, source_id: str, track_id: int) -> float | None:
        """Share of the track's boxes inside the frame that hold several people; None until the camera's
        person size is known (`PersonSizeModel.line`) or when every box touches the frame's edge."""
        size = self._sizes.get(source_id)
        boxes = self._boxes.get((source_id, int(track_id)))
        line = None if size is None else size.line()
        if line is None or not boxes:
            return None
        height, width = self._frame_sizes[source_id]
        b = np.stack(list(boxes.values()))
        # a body cut by the frame's edge is judged by what is left of it: not at all
        inside = (b[:, 0] > 0) & (b[:, 1] > 0) & (b[:, 2] < width) & (b[:, 3] < height)
        if not inside.any():
            return None
        b = b[inside]
        expected = line.height_at(b[:, 3])
        several = (b[:, 3] - b[:, 1] > self.height * expected) | (b[:, 2] - b[:, 0] > self.width * line.width_ratio * expected)
        return float(several.mean())

    def forget(self, source_id: str, track_id: int) -> None:
        """A finished track's boxes (its camera's person size stays)."""
        self._boxes.pop((source_id, int(track_id)), None)
