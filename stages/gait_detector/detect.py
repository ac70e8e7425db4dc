"""From a DHS to gait segments (GADER sec. 3.1.2, fig. 4): windows, classification, 1-D NMS, merging.

All frame ranges are half-open ``[start, stop)`` positions in the track's sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stages.gait_detector.model import FULL_WALKING, DHSClassifier


@dataclass(frozen=True)
class DetectorParams:
    """How a DHS is cut and how kept windows become segments.

    window_lengths: window durations in frames (each is clamped to the track length).
    stride_fraction: stride of each window grid as a fraction of its length.
    score_threshold: minimum P(full body walking) for a window to be kept.
    nms_iou: windows overlapping a better kept window by more than this IoU are suppressed.
    merge_gap: kept windows whose gap is at most this many frames are merged into one segment.
    """

    window_lengths: tuple[int, ...] = (20, 30, 45)
    stride_fraction: float = 0.25
    score_threshold: float = 0.5
    nms_iou: float = 0.5
    merge_gap: int = 4

    def __post_init__(self) -> None:
        if not self.window_lengths or min(self.window_lengths) < 1:
            raise ValueError(f"window_lengths must be positive, got {self.window_lengths}")
        if not 0.0 < self.stride_fraction <= 1.0:
            raise ValueError(f"stride_fraction must be in (0, 1], got {self.stride_fraction}")


@dataclass(frozen=True)
class Segments:
    """Frame ranges with scores: starts, stops (K,) int64; scores (K,) float32."""

    starts: np.ndarray
    stops: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def lengths(self) -> np.ndarray:
        return self.stops - self.starts

    def frame_mask(self, num_frames: int) -> np.ndarray:
        """(num_frames,) bool: True inside any segment."""
        mask = np.zeros(num_frames, dtype=bool)
        for s, e in zip(self.starts, self.stops):
            mask[s:e] = True
        return mask


def empty_segments() -> Segments:
    return Segments(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def window_grid(num_frames: int, lengths: tuple[int, ...], stride_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop (K,) int64 of windows of each length tiling ``[0, num_frames)``.

    Each grid's last window is aligned to the end so that no frame is left uncovered; lengths over
    the track length collapse to one window covering the whole track. Duplicates are removed.
    """
    pairs: set[tuple[int, int]] = set()
    for length in lengths:
        length = min(length, num_frames)
        stride = max(1, round(length * stride_fraction))
        starts = list(range(0, num_frames - length + 1, stride))
        if starts[-1] + length < num_frames:
            starts.append(num_frames - length)
        pairs.update((s, s + length) for s in starts)
    ordered = sorted(pairs)
    return np.array([p[0] for p in ordered], np.int64), np.array([p[1] for p in ordered], np.int64)


def nms_1d(segments: Segments, iou_threshold: float) -> Segments:
    """Greedy 1-D non-maximum suppression: keep the best window, drop those overlapping it by IoU > threshold."""
    order = np.argsort(-segments.scores, kind="stable")
    starts, stops = segments.starts, segments.stops
    keep: list[int] = []
    alive = np.ones(len(order), dtype=bool)
    for rank, i in enumerate(order):
        if not alive[rank]:
            continue
        keep.append(i)
        rest = order[rank + 1 :]
        inter = np.clip(np.minimum(stops[i], stops[rest]) - np.maximum(starts[i], starts[rest]), 0, None)
        union = (stops[i] - starts[i]) + (stops[rest] - starts[rest]) - inter
        alive[rank + 1 :] &= inter / union <= iou_threshold
    idx = np.array(sorted(keep), dtype=np.int64)
    return Segments(starts[idx], stops[idx], segments.scores[idx])


def merge_close(segments: Segments, max_gap: int) -> Segments:
    """Merge segments that overlap or are separated by at most ``max_gap`` frames.

    A merged segment's score is the length-weighted mean of its parts' scores.
    """
    if len(segments) == 0:
        return segments
    order = np.argsort(segments.starts, kind="stable")
    out_s: list[int] = []
    out_e: list[int] = []
    out_w: list[float] = []  # sum of score * length
    out_l: list[int] = []  # sum of lengths
    for i in order:
        s, e, score = int(segments.starts[i]), int(segments.stops[i]), float(segments.scores[i])
        if out_e and s - out_e[-1] <= max_gap:
            out_e[-1] = max(out_e[-1], e)
            out_w[-1] += score * (e - s)
            out_l[-1] += e - s
        else:
            out_s.append(s)
            out_e.append(e)
            out_w.append(score * (e - s))
            out_l.append(e - s)
    return Segments(
        np.array(out_s, np.int64), np.array(out_e, np.int64), (np.array(out_w) / np.array(out_l)).astype(np.float32)
    )


def pad_to(dhs: np.ndarray, min_frames: int) -> np.ndarray:
    """Repeat the last column of a DHS ``(W, T)`` so that it has at least ``min_frames`` columns."""
    if dhs.shape[1] >= min_frames:
        return dhs
    return np.concatenate([dhs, np.repeat(dhs[:, -1:], min_frames - dhs.shape[1], axis=1)], axis=1)


@torch.inference_mode()
def window_probabilities(
    model: DHSClassifier, dhs: np.ndarray, starts: np.ndarray, stops: np.ndarray
) -> np.ndarray:
    """Class probabilities (K, 4) of windows ``[starts, stops)`` of a DHS ``(W, T)``; one conv pass.

    Windows shorter than the receptive field are extended at their end (by the following frames,
    or by repeating the last frame at the end of the track).
    """
    rf = model.config.receptive_field
    padded = pad_to(dhs, rf)
    stops = np.maximum(stops, starts + rf)
    shift = np.maximum(stops - padded.shape[1], 0)  # windows pushed past the end slide back
    x = torch.from_numpy(np.ascontiguousarray(padded))[None, None]
    logits = model.classify_windows(x, torch.from_numpy(starts - shift), torch.from_numpy(stops - shift))
    return torch.softmax(logits, dim=-1).numpy()


@dataclass(frozen=True)
class Detection:
    """Result for one DHS of T frames.

    segments: full-body walking segments after NMS and merging.
    frame_scores: (T,) float32, per frame the highest P(full body walking) of the windows covering it.
    """

    segments: Segments
    frame_scores: np.ndarray


def detect_segments(model: DHSClassifier, dhs: np.ndarray, params: DetectorParams) -> Detection:
    """DHS ``(W, T)`` -> full-body walking segments after NMS and merging, and per-frame scores."""
    num_frames = dhs.shape[1]
    if num_frames == 0:
        return Detection(empty_segments(), np.zeros(0, np.float32))
    starts, stops = window_grid(num_frames, params.window_lengths, params.stride_fraction)
    probs = window_probabilities(model, dhs, starts, stops)
    walking = probs[:, FULL_WALKING].astype(np.float32)
    frame_scores = np.zeros(num_frames, np.float32)
    for s, e, p in zip(starts, stops, walking):
        np.maximum(frame_scores[s:e], p, out=frame_scores[s:e])
    keep = (probs.argmax(axis=1) == FULL_WALKING) & (walking >= params.score_threshold)
    kept = Segments(starts[keep], stops[keep], walking[keep])
    return Detection(merge_close(nms_1d(kept, params.nms_iou), params.merge_gap), frame_scores)


@torch.inference_mode()
def classify_whole(model: DHSClassifier, dhs: np.ndarray) -> np.ndarray:
    """Class probabilities (4,) of the whole DHS as one window (the paper's baseline without splitting)."""
    x = torch.from_numpy(np.ascontiguousarray(pad_to(dhs, model.config.receptive_field)))[None, None]
    return torch.softmax(model(x), dim=-1)[0].numpy()
