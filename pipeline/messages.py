"""Typed messages that flow between stages.

Frame-level messages (`Frame`, `FrameResult`) carry one decoded image and what was found in it;
track-level messages (`TrackWindow`) carry one window of one person's track and are enriched in
place by the track-level stages (gait detector, gait recognition, ReID, retrieval, attributes).

Array conventions: images are ``(H, W, 3) uint8`` in BGR order (OpenCV's), boxes are ``xyxy``
float32 pixels of the original frame, silhouettes are ``(T, 64, 44) uint8`` with values 0..255.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # supervision is imported by the stages that build detections
    import supervision as sv

# ``FrameResult.detections.data[STARTS_TRACK]``: (N,) bool, set by detectors whose weak boxes should only
# continue a track, never start one (a learned detector's low scores); absent means every box may.
STARTS_TRACK = "starts_track"
# ``data[GROUP_PART]``: (N,) bool, True for a box cut out of one box or blob around several people (by
# the tracker, ``stages.track_groups``, or the classic detector): its crop shows the others too. Absent
# means no such box.
GROUP_PART = "group_part"

SILHOUETTE_HEIGHT = 64
SILHOUETTE_WIDTH = 44
CROP_SIZE = (128, 64)  # (height, width) of the RGB appearance crops kept per frame


@dataclass(frozen=True)
class Frame:
    """One decoded video frame.

    image: (H, W, 3) uint8, BGR.
    pts_s: presentation time in seconds from the start of the source (wall-clock based for live
    streams, so gaps after a reconnect show up as jumps).
    """

    source_id: str
    index: int
    pts_s: float
    image: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass
class FrameResult:
    """A frame and the people found in it.

    detections: ``sv.Detections`` with ``xyxy`` (N, 4) float32, ``confidence`` (N,), ``class_id``
    (N,), ``mask`` (N, H, W) bool or None, and ``tracker_id`` (N,) int once tracked.
    ended_track_ids: tracks the tracker dropped at this frame (their tracklets are closed).
    detected: False when the detector skipped this frame (detection every N-th frame): the tracker
    then gives the boxes its tracks predict.
    """

    frame: Frame
    detections: sv.Detections
    ended_track_ids: tuple[int, ...] = ()
    detected: bool = True


@dataclass(frozen=True)
class SilhouetteSequence:
    """A person's normalised silhouettes over time, with what normalisation threw away.

    silhouettes: (T, 64, 44) uint8 0..255, OpenGait pretreatment.
    ratios: (T,) float32, original box height / 64 (GADER's resize ratio).
    boxes: (T, 4) float32 xyxy in pixels of the original frame.
    frame_indices: (T,) int64 index of each frame in its source.
    pts_s: (T,) float64 presentation time of each frame in seconds.
    frame_size: (height, width) of the source frames.
    crops: (T, 128, 64, 3) uint8 BGR appearance crops of the box, or None when not kept.
    group_parts: (T,) bool, frames whose box was cut out of a box around several people
    (``GROUP_PART``), or None when no box was.
    """

    silhouettes: np.ndarray
    ratios: np.ndarray
    boxes: np.ndarray
    frame_indices: np.ndarray
    pts_s: np.ndarray
    frame_size: tuple[int, int]
    crops: np.ndarray | None = None
    group_parts: np.ndarray | None = None

    def __post_init__(self) -> None:
        t = len(self.silhouettes)
        if self.silhouettes.shape[1:] != (SILHOUETTE_HEIGHT, SILHOUETTE_WIDTH):
            raise ValueError(f"silhouettes must be (T, 64, 44), got {self.silhouettes.shape}")
        for name in ("ratios", "boxes", "frame_indices", "pts_s"):
            if len(getattr(self, name)) != t:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {t} frames")
        if self.crops is not None and len(self.crops) != t:
            raise ValueError(f"crops has {len(self.crops)} entries for {t} frames")
        if self.group_parts is not None and len(self.group_parts) != t:
            raise ValueError(f"group_parts has {len(self.group_parts)} entries for {t} frames")

    def __len__(self) -> int:
        return len(self.silhouettes)

    def slice(self, start: int, stop: int) -> SilhouetteSequence:
        """Frames ``[start, stop)`` of this sequence (positions, not source frame indices)."""
        return SilhouetteSequence(
            silhouettes=self.silhouettes[start:stop],
            ratios=self.ratios[start:stop],
            boxes=self.boxes[start:stop],
            frame_indices=self.frame_indices[start:stop],
            pts_s=self.pts_s[start:stop],
            frame_size=self.frame_size,
            crops=None if self.crops is None else self.crops[start:stop],
            group_parts=None if self.group_parts is None else self.group_parts[start:stop],
        )


@dataclass(frozen=True)
class GaitSegment:
    """A stretch of a sequence where a full body walks: positions ``[start, stop)`` in the sequence."""

    start: int
    stop: int
    score: float


Route = Literal["gait", "appearance", "none"]


@dataclass
class GaitDetection:
    """Output of the gait detector for one window.

    segments: full-body walking stretches after NMS and merging.
    walking_fraction: frames inside segments / frames in the window.
    route: "gait" when a segment is long enough for gait recognition, "appearance" when only
    ReID can be used, "none" when the window is too short for either.
    appearance_segments: the other stretches (standing, partial body, walking too briefly), which
    go to appearance ReID; score = confidence that the stretch is not full-body walking.
    """

    segments: list[GaitSegment]
    walking_fraction: float
    route: Route
    appearance_segments: list[GaitSegment] = field(default_factory=list)


@dataclass(frozen=True)
class RankedCandidate:
    """One gallery identity in a shortlist. initial_rank is its rank before re-ranking (0-based).

    distance: of its nearest entry in the primary modality (gait when scored, else appearance).
    score: fused same-person log-odds (None where the gallery ranks by distance alone).
    """

    identity: str
    distance: float
    initial_rank: int
    entry_id: int
    score: float | None = None


@dataclass
class IdentityMatch:
    """The track's identity as of this window (track-level: the evidence of all its windows so far).

    identity: the matched identity name, or None for "unknown" (open set).
    modality: "fused", "gait" or "appearance": which evidence decided.
    distance: of the best candidate's nearest entry in the primary modality (inf: nothing to compare).
    confidence: 0..1, P(same person) of the best candidate from the calibrated fused score.
    candidates: the shortlist after re-ranking (best first), each with its initial rank.
    enrolled: True when this window created a new identity (auto-enrol mode).
    scores: the best candidate's per-modality log-likelihood ratios ("gait", "appearance", where
        present) and their fusion ("fused"); empty when there was no candidate.
    windows: how many windows of the track the decision rests on.
    merged: identities merged into ``identity`` because this track linked them.
    mixed: the track's windows look like more than one person (the tracker switched people): it is
        identified, but its embeddings are not enrolled.
    group: the track's boxes hold several people (too large for one person where they stand): it is
        identified, but its embeddings are not enrolled.
    """

    identity: str | None
    modality: Literal["fused", "gait", "appearance"]
    distance: float
    confidence: float
    candidates: list[RankedCandidate] = field(default_factory=list)
    enrolled: bool = False
    scores: dict[str, float] = field(default_factory=dict)
    windows: int = 1
    merged: list[str] = field(default_factory=list)
    mixed: bool = False
    group: bool = False


@dataclass(frozen=True)
class AttributePrediction:
    """One gait attribute: the predicted class label and its probability; probs over all classes."""

    label: str
    probability: float
    probabilities: dict[str, float]


@dataclass
class TrackWindow:
    """One window of one track: the unit of work for all track-level stages.

    A tracklet emits a window every N new frames while the person is in view (``is_final`` False)
    and one last window when the track ends (``is_final`` True). Each window covers the track's
    recent frames (at most the assembler's maximum length), so memory stays bounded.
    Track-level stages fill in the optional fields below; ``model_versions`` records which model
    produced each field (stage name -> version string).
    group_share: of the track's boxes so far (not only this window's) judged by their size, the share
    that hold several people (``stages.tracklets``); None until the camera's person size is known.
    """

    source_id: str
    track_id: int
    window_index: int
    is_final: bool
    sequence: SilhouetteSequence
    gait: GaitDetection | None = None
    gait_embedding: np.ndarray | None = None  # (P, C) float32, per-part, not normalised
    appearance_embedding: np.ndarray | None = None  # (D,) float32, L2-normalised
    identity: IdentityMatch | None = None
    attributes: dict[str, AttributePrediction] | None = None
    model_versions: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    group_share: float | None = None


@dataclass(frozen=True)
class SourceEvent:
    """Something that happened to a source: opened, reconnecting, gap, error, ended.

    kind: "opened" | "gap" | "reconnected" | "error" | "ended".
    message: one line for the user (credentials masked).
    """

    source_id: str
    kind: Literal["opened", "gap", "reconnected", "error", "ended"]
    message: str
    pts_s: float | None = None


def merged_names(merges: Iterable[dict]) -> dict[str, str]:
    """absorbed -> the identity it lives on in now, following chains of recorded merges (oldest first)."""
    parent = {m["absorbed"]: m["kept"] for m in merges}
    out = {}
    for name in parent:
        final, seen = name, set()
        while final in parent and final not in seen:
            seen.add(final)
            final = parent[final]
        out[name] = final
    return out
