"""Splitting a track where the tracker jumped from one person to another.

A box tracker follows boxes, not people: where people cross or walk close together, a track can
move from one person to the next and carry on with the wrong one. Every later stage then mixes two
people in one track (on the identity benchmark's quick site 11 of the tracker's 79 tracks follow one
person for less than half their frames; docs/detect.md). The appearance of the person inside a
track's box changes little while one person is followed and
abruptly at a switch, so each track keeps a reference appearance embedding (a running mean of the
embeddings of its box crops) and, when ``frames`` consecutive checks in a row are further than
``distance`` (cosine) from it, the track is split: the tracker's track carries on under a new id
from that frame, and the old id ends there. A few checks in a row, not one, so that a passing
occluder does not cut a track.

Where two people cross, their boxes overlap or merge into one box around both, and the crops of those
frames show both people. Given a mask of such crowded boxes (``stages.crowding``; the tracker's
``split_skip_crowded``), their checks neither move the reference nor count for or against a switch, so
the reference still describes the person from before the crossing when the people come apart.

A track the tracker lost for a few frames and matched again is where most switches happen: the
box it comes back to is often someone else's (the lost track's predicted box drifts onto whoever
walks there). Given which boxes are such returns (``returning``), the splitter holds their first
check to a stricter distance, ``recheck_distance``, and that one check alone splits the track: a
person coming back looks like their reference, and the switch is cut where it happened instead of
``frames`` checks later.

Where two people's boxes touch and the tracker carries on with the other one, the crops of the crossing
drift from one look to the other, and a running reference drifts with them. With ``crossing_distance``
set, the splitter also compares the track's recent appearance with its appearance from before, across
a short gap: when the mean of the last ``CROSSING_AFTER`` checks lies further than ``crossing_distance``
from the mean of the ``CROSSING_BEFORE`` checks before the gap, and a box of the track was crowded (shared
with another person, ``stages.crowding``) at the end of that stretch or in the gap, the track is split
there and then. Means of several checks are steadier than one check, so the bar can be far lower than
the ordinary rule's; the crowding gate keeps one person who turns round, or walks into shade, in one
track (most of the changes of one person's look away from others are not at a crossing, docs/detect.md).

The first part of a track keeps the tracker's id; later parts get ids from ``SPLIT_ID_BASE`` up, per
source, far above any id a tracker hands out, so ids stay unique within a source.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLIT_ID_BASE = 1_000_000_000

# The rule measured on the identity benchmark (docs/detect.md): a switch is 5 checks in a row further
# than 0.7 (cosine) from the track's reference, one check every 2nd frame; eager settings cut
# one-person tracks too. The distance is that appearance model's: the split keeps the model it was
# measured with.
SPLIT_DISTANCE = 0.7
SPLIT_CHECKS = 5
SPLIT_EVERY = 2
# A track back from being lost: one check further than this from its reference splits it. Of the
# returns after 4+ frames lost on five rendered sites with YOLOX-Nano, 94 of 445 came back on someone
# else; this distance cuts 61% of those and 9% of the right ones (docs/detect.md).
SPLIT_RECHECK_DISTANCE = 0.35
# The crossing rule (docs/detect.md, "Splitting at crossings"): checks before the gap, in it, and after it.
CROSSING_BEFORE = 10
CROSSING_GAP = 4
CROSSING_AFTER = 6
SPLIT_CROSSING_DISTANCE = 0.35
SPLIT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "reid_synth.pt"


@dataclass
class _TrackAppearance:
    output_id: int
    reference: np.ndarray | None = None
    references: int = 0  # embeddings averaged into the reference so far (up to the warm-up)
    off: list[np.ndarray] = field(default_factory=list)  # consecutive embeddings far from the reference
    returned: bool = False  # back from being lost: the next check uses the stricter distance
    # The part's latest checks for the crossing rule: (embedding, a box crowded since the check before).
    recent: deque[tuple[np.ndarray, bool]] = field(
        default_factory=lambda: deque(maxlen=CROSSING_BEFORE + CROSSING_GAP + CROSSING_AFTER))
    crowded: bool = False  # a crowded box since the last check


class AppearanceSplitter:
    """Renames tracks at appearance switches (see the module docstring).

    embed: (N, 128, 64, 3) uint8 BGR crops -> (N, D) L2-normalised embeddings.
    crop: (image, box xyxy) -> one (128, 64, 3) crop.
    distance: cosine distance from a track's reference beyond which a check counts as "someone else".
    frames: consecutive such checks that split the track.
    every: check every this many frames of a source (the embedding costs a forward pass per person).
    smoothing: how fast the reference follows the person's slowly changing look (0: fixed after warm-up).
    warmup: checks averaged into a new track's (or part's) reference before it is compared.
    recheck_distance: the distance for the first check of a track back from being lost (see the
        module docstring); None: such checks are like any other.
    crossing_distance: the distance between the mean appearances before and after a crossing that splits
        the track (see the module docstring); None: no crossing rule.
    skip_crowded: crowded boxes (``update``'s ``crowded``) are not checked, so they neither move the
        reference nor count for or against a switch; False: they are checked, and their flags serve the
        crossing rule alone.
    """

    def __init__(self, embed: Callable[[np.ndarray], np.ndarray], crop: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 distance: float = SPLIT_DISTANCE, frames: int = SPLIT_CHECKS, every: int = SPLIT_EVERY,
                 smoothing: float = 0.15, warmup: int = 3, recheck_distance: float | None = None,
                 crossing_distance: float | None = None, skip_crowded: bool = True) -> None:
        self.embed = embed
        self.crop = crop
        self.distance = float(distance)
        self.frames = int(frames)
        self.every = int(every)
        self.smoothing = float(smoothing)
        self.warmup = int(warmup)
        self.recheck_distance = None if recheck_distance is None else float(recheck_distance)
        self.crossing_distance = None if crossing_distance is None else float(crossing_distance)
        self.skip_crowded = bool(skip_crowded)
        self._tracks: dict[tuple[str, int], _TrackAppearance] = {}
        self._next_id: dict[str, int] = {}

    def output_ids(self, source_id: str, tracker_ids: np.ndarray) -> np.ndarray:
        """The ids the tracker's ids currently go by (a track not seen before keeps its own)."""
        return np.asarray([self._state(source_id, int(t)).output_id for t in tracker_ids], dtype=np.int64)

    def update(self, source_id: str, frame_index: int, image: np.ndarray, tracker_ids: np.ndarray,
               boxes: np.ndarray, crowded: np.ndarray | None = None,
               returning: np.ndarray | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
        """Check this frame's tracked people: (their output ids, output ids that ended here by a split).
        ``crowded``: (N,) bool, boxes that show other people too; not checked when ``skip_crowded``.
        ``returning``: (N,) bool, tracks matched again after being lost; their next check is a recheck."""
        ended: list[int] = []
        if returning is not None and self.recheck_distance is not None:
            for track_id in np.asarray(tracker_ids)[np.asarray(returning, bool)]:
                self._state(source_id, int(track_id)).returned = True
        flags = np.zeros(len(tracker_ids), bool) if crowded is None else np.asarray(crowded, bool)
        for track_id in np.asarray(tracker_ids)[flags]:
            self._state(source_id, int(track_id)).crowded = True
        checked = ~flags if self.skip_crowded else np.ones(len(tracker_ids), bool)
        if checked.any() and frame_index % self.every == 0:
            crops = np.stack([self.crop(image, np.asarray(b, np.float32)) for b in np.asarray(boxes)[checked]])
            for track_id, embedding in zip(np.asarray(tracker_ids)[checked], self.embed(crops)):
                state = self._state(source_id, int(track_id))
                new_person = self._observe(state, np.asarray(embedding, np.float32))
                if new_person is not None:
                    ended.append(state.output_id)
                    state.output_id = self._fresh_id(source_id)
                    state.reference, state.references = _unit(np.mean(new_person, axis=0)), len(new_person)
                    state.off = []
                    state.recent.clear()
        return self.output_ids(source_id, tracker_ids), tuple(ended)

    def end(self, source_id: str, tracker_ids: tuple[int, ...]) -> tuple[int, ...]:
        """The tracker ended these tracks: their output ids, forgotten from now on."""
        return tuple(self._tracks.pop((source_id, int(t)), _TrackAppearance(int(t))).output_id for t in tracker_ids)

    def end_source(self, source_id: str) -> None:
        self._tracks = {key: s for key, s in self._tracks.items() if key[0] != source_id}
        self._next_id.pop(source_id, None)

    def _state(self, source_id: str, track_id: int) -> _TrackAppearance:
        key = (source_id, track_id)
        if key not in self._tracks:
            self._tracks[key] = _TrackAppearance(track_id)
        return self._tracks[key]

    def _fresh_id(self, source_id: str) -> int:
        n = self._next_id.get(source_id, 0)
        self._next_id[source_id] = n + 1
        return SPLIT_ID_BASE + n

    def _observe(self, state: _TrackAppearance, embedding: np.ndarray) -> list[np.ndarray] | None:
        """Take one check into the track's state; at a switch, the checks that show the new person."""
        state.recent.append((embedding, state.crowded))
        state.crowded = False
        if state.references < self.warmup:
            n = state.references
            state.reference = embedding if state.reference is None else (state.reference * n + embedding) / (n + 1)
            state.references = n + 1
            return None
        distance = 1.0 - float(embedding @ _unit(state.reference))
        if state.returned:
            state.returned = False
            if distance > self.recheck_distance:
                state.off.append(embedding)
                return state.off
        if distance > self.distance:
            state.off.append(embedding)
            return state.off if len(state.off) >= self.frames else self._crossed(state)
        state.off = []
        state.reference = state.reference + self.smoothing * (embedding - state.reference)
        return self._crossed(state)

    def _crossed(self, state: _TrackAppearance) -> list[np.ndarray] | None:
        """The crossing rule (module docstring): the checks after the gap when they show someone else."""
        if self.crossing_distance is None or len(state.recent) < state.recent.maxlen:
            return None
        checks = list(state.recent)
        before, gap, after = (checks[:CROSSING_BEFORE], checks[CROSSING_BEFORE : CROSSING_BEFORE + CROSSING_GAP],
                              checks[CROSSING_BEFORE + CROSSING_GAP :])
        if not any(crowded for _, crowded in (*before[-2:], *gap)):
            return None
        before_mean = _unit(np.mean([e for e, _ in before], axis=0))
        after_mean = _unit(np.mean([e for e, _ in after], axis=0))
        if 1.0 - float(before_mean @ after_mean) <= self.crossing_distance:
            return None
        return [e for e, _ in after]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), 1e-12)
