"""Routing: which frames of a track window go to gait recognition and which to appearance ReID."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.messages import GaitDetection, GaitSegment
from stages.gait_detector.detect import Detection


@dataclass(frozen=True)
class RoutingParams:
    """Thresholds of the routing decision.

    min_gait_frames: a walking segment needs at least this many frames for gait recognition;
    shorter ones go to appearance ReID with the rest of the window.
    min_walking_fraction: the window goes to gait only when its gait segments cover at least this
    fraction of it (GADER's walking-ratio test); otherwise all of it goes to appearance.
    min_appearance_frames: shorter leftover stretches are not worth an appearance embedding.
    """

    min_gait_frames: int = 20
    min_walking_fraction: float = 0.0
    min_appearance_frames: int = 1


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal ``[start, stop)`` runs of True in a (T,) bool mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def route(detection: Detection, num_frames: int, params: RoutingParams) -> GaitDetection:
    """Split a window of ``num_frames`` frames into gait segments and appearance segments."""
    segs = detection.segments
    long_enough = segs.lengths >= params.min_gait_frames
    gait = [
        GaitSegment(int(s), int(e), float(score))
        for s, e, score in zip(segs.starts[long_enough], segs.stops[long_enough], segs.scores[long_enough])
    ]
    covered = sum(g.stop - g.start for g in gait)
    fraction = covered / num_frames if num_frames else 0.0
    if gait and fraction < params.min_walking_fraction:
        gait, covered, fraction = [], 0, 0.0
    gait_mask = np.zeros(num_frames, dtype=bool)
    for g in gait:
        gait_mask[g.start : g.stop] = True
    appearance = [
        GaitSegment(s, e, float(1.0 - detection.frame_scores[s:e].mean()))
        for s, e in _runs(~gait_mask)
        if e - s >= params.min_appearance_frames
    ]
    decision = "gait" if gait else ("appearance" if appearance else "none")
    return GaitDetection(segments=gait, walking_fraction=float(fraction), route=decision, appearance_segments=appearance)
