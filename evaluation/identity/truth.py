"""Which ground-truth person each pipeline track follows: box IoU over the track's frames.

A track's boxes (all its windows, each frame once) are compared, frame by frame, with the visible
ground-truth boxes of its camera (``synth.scene`` ground truth). A frame votes for the person whose
box overlaps it best, when that IoU reaches ``min_iou``; the track belongs to the visit with most
votes when those cover at least ``min_share`` of its frames, otherwise to nobody (clutter, or a
track that swapped between people for most of its length).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.front_end import box_iou as pairwise_box_iou
from pipeline.messages import TrackWindow

TrackKey = tuple[str, int]  # (source id, track id)


@dataclass(frozen=True)
class TrackTruth:
    """A pipeline track and the person it follows.

    camera: camera name (the video's stem). identity / visit: ground truth, None when unmatched.
    clothes: (outfit index, wears a coat) of the visit: what changes a person's look between visits.
    frames: frames of the track; matched: frames whose best IoU with the chosen visit >= min_iou.
    """

    source: str
    track_id: int
    camera: str
    identity: int | None
    visit: int | None
    clothes: tuple[int, bool] | None
    frames: int
    matched: int

    @property
    def key(self) -> TrackKey:
        return (self.source, self.track_id)

    @property
    def purity(self) -> float:
        """Share of the track's frames whose box is on its person (``matched``: IoU with the person's box
        at least the matching's ``min_iou``); 0 for a track that follows no one."""
        return self.matched / self.frames if self.frames and self.identity is not None else 0.0


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box a (4,) against boxes b (N, 4), xyxy -> (N,)."""
    return pairwise_box_iou(a, b)[0]


def track_boxes(windows: Iterable[TrackWindow]) -> dict[TrackKey, dict[int, np.ndarray]]:
    """Per track, frame index -> box, over all its windows (windows overlap; each frame once)."""
    out: dict[TrackKey, dict[int, np.ndarray]] = {}
    for w in windows:
        boxes = out.setdefault((w.source_id, int(w.track_id)), {})
        for index, box in zip(w.sequence.frame_indices, w.sequence.boxes):
            boxes.setdefault(int(index), np.asarray(box, np.float64))
    return out


def camera_name(source_id: str) -> str:
    return Path(source_id.split("?")[0]).stem


def clothes_of(visit: dict) -> tuple[int, bool]:
    """What a visit wears: its outfit index and whether it is the coat condition ("cl")."""
    return (int(visit["outfit"]), visit["condition"] == "cl")


def match_track(boxes: dict[int, np.ndarray], truth_frames: list[list[dict]], min_iou: float = 0.5,
                min_share: float = 0.5) -> tuple[int | None, int]:
    """(visit, matched frames) of one track's boxes against one camera's ground-truth frames."""
    votes: Counter[int] = Counter()
    for index, box in boxes.items():
        people = truth_frames[index] if 0 <= index < len(truth_frames) else []
        if not people:
            continue
        iou = box_iou(box, np.array([p["box"] for p in people]))
        best = int(np.argmax(iou))
        if iou[best] >= min_iou:
            votes[int(people[best]["visit"])] += 1
    if not votes:
        return None, 0
    visit, count = votes.most_common(1)[0]
    return (visit if count >= min_share * len(boxes) else None), count


def match_tracks(windows: Iterable[TrackWindow], truth: dict, min_iou: float = 0.5,
                 min_share: float = 0.5) -> dict[TrackKey, TrackTruth]:
    """Every track of a run against the site's ground truth (``groundtruth.json`` as a dict)."""
    visits = {int(v["visit"]): v for v in truth["visits"]}
    out: dict[TrackKey, TrackTruth] = {}
    for (source, track_id), boxes in track_boxes(windows).items():
        camera = camera_name(source)
        frames = truth["frames"].get(camera)
        if frames is None:
            raise ValueError(f"source {source!r}: no camera {camera!r} in the ground truth")
        visit, matched = match_track(boxes, frames, min_iou, min_share)
        v = visits.get(visit) if visit is not None else None
        out[(source, track_id)] = TrackTruth(source, track_id, camera, None if v is None else int(v["identity"]),
                                             visit, None if v is None else clothes_of(v), len(boxes), matched)
    return out


def tracking_quality(tracks: Iterable[TrackTruth]) -> dict[str, float | None]:
    """How well the tracks that follow a person follow them: ``purity``, the share of their frames on
    that person (IoU >= min_iou with the person's box); ``tracks_per_visit``, how many of them cover one
    visit of a person to a camera (1.0: one track per visit). None where no track follows anyone."""
    followed = [t for t in tracks if t.visit is not None]
    frames = sum(t.frames for t in followed)
    visits = {(t.camera, t.visit) for t in followed}
    return {"purity": round(sum(t.matched for t in followed) / frames, 4) if frames else None,
            "tracks_per_visit": round(len(followed) / len(visits), 3) if visits else None}


def people_seen(truth: dict) -> set[int]:
    """Identities visible in at least one frame of one camera."""
    return {int(p["identity"]) for frames in truth["frames"].values() for people in frames for p in people}
