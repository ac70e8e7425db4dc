"""Tracked boxes that show other people too.

Where people cross or walk close together, their boxes overlap, or the detector returns one box around
several of them, and a box's crop shows more than its track's person. Such *crowded* boxes are bad
evidence of a switch from one person to another (the appearance splitter, ``stages.track_split``, can
leave them unchecked, so they neither move a track's reference appearance nor count towards a split),
and they mark where a switch can happen at all (its crossing rule splits a track only across one).
"""

from __future__ import annotations

import numpy as np

from stages.track_groups import inside_fraction

# Another box covering a fifth of a box, or a box half as large again as its track's recent ones (two
# people merged into one box); chosen, not tuned: measured with these values in docs/detect.md.
CROWDED_OVERLAP = 0.2
CROWDED_GROWTH = 1.5


class CrowdedBoxes:
    """Flags each frame's crowded tracked boxes, per source and track.

    overlap: a box that another box of the frame covers by more than this share of its area is crowded
        (1: never).
    growth: a box whose area exceeds this multiple of its track's running box area is crowded (0:
        never); the running area follows the track's uncrowded boxes, so a person walking towards
        the camera is followed and a box that suddenly takes in a second person is not.
    smoothing: how fast the running area follows (share of the difference per frame).
    """

    def __init__(self, overlap: float = CROWDED_OVERLAP, growth: float = CROWDED_GROWTH, smoothing: float = 0.15) -> None:
        self.overlap = float(overlap)
        self.growth = float(growth)
        self.smoothing = float(smoothing)
        self._areas: dict[tuple[str, int], float] = {}

    def update(self, source_id: str, tracker_ids: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N,) bool for one frame's tracked boxes (N, 4) xyxy with their tracker ids: which are crowded."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        crowded = covered_share(boxes) > self.overlap
        for i, track_id in enumerate(tracker_ids):
            key = (source_id, int(track_id))
            running = self._areas.get(key)
            if self.growth > 0 and running is not None and areas[i] > self.growth * running:
                crowded[i] = True
            if not crowded[i]:
                self._areas[key] = float(areas[i]) if running is None else running + self.smoothing * (areas[i] - running)
        return crowded

    def end(self, source_id: str, tracker_ids: tuple[int, ...]) -> None:
        for track_id in tracker_ids:
            self._areas.pop((source_id, int(track_id)), None)

    def end_source(self, source_id: str) -> None:
        self._areas = {key: a for key, a in self._areas.items() if key[0] != source_id}


def covered_share(boxes: np.ndarray) -> np.ndarray:
    """(N,) for (N, 4) xyxy boxes: the largest share of each box's area that one other box covers."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    shares = np.zeros(len(boxes))
    for j, other in enumerate(boxes):
        inside = inside_fraction(boxes, other)
        inside[j] = 0.0
        shares = np.maximum(shares, inside)
    return shares
