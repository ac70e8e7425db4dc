"""Pipeline stage: tag every gait segment with the 15 RA-GAR attributes (CLIP-GAR).

For each window routed to gait (``window.gait.route == "gait"``), the frames of its gait segments
are cut into clips of the checkpoint's length (30 frames; see :func:`segment_clips`), all clips of
all windows in the batch go through the model together, per-class scores are averaged over a
window's clips, and ``window.attributes`` gets one :class:`AttributePrediction` per attribute.

Scores are the per-class sigmoids the model was trained for (BCE, as in the paper); a prediction's
``probabilities`` are those scores normalised over the attribute's classes, ``label`` the arg-max.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from pipeline.messages import AttributePrediction, TrackWindow
from stages.attributes.checkpoint import load_checkpoint
from stages.attributes.table import ATTRIBUTES, CLASS_COUNTS, CLASS_OFFSETS, NUM_CLASSES_ALL

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def segment_clips(silhouettes: np.ndarray, clip_frames: int) -> np.ndarray:
    """Cut a segment (T, 64, 44) into (K, clip_frames, 64, 44) clips for the attribute models.

    Consecutive non-overlapping clips from the start, plus one clip ending at the last frame when
    frames are left over; a segment shorter than one clip is repeated cyclically to fill it (the
    encoder max-pools over time, so repeating a walk cycle adds nothing it had not seen).
    """
    t = len(silhouettes)
    if t == 0:
        raise ValueError("empty segment")
    if t < clip_frames:
        return silhouettes[np.arange(clip_frames) % t][None]
    starts = list(range(0, t - clip_frames + 1, clip_frames))
    if starts[-1] + clip_frames < t:
        starts.append(t - clip_frames)
    return np.stack([silhouettes[s : s + clip_frames] for s in starts])


@torch.no_grad()
def clip_scores(model: torch.nn.Module, clips: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """clips (N, T, 64, 44) uint8 0..255 -> per-class sigmoid scores (N, N_all) float32."""
    out = np.empty((len(clips), NUM_CLASSES_ALL), np.float32)
    for i in range(0, len(clips), batch_size):
        x = torch.from_numpy(clips[i : i + batch_size].astype(np.float32) / 255.0)
        out[i : i + batch_size] = torch.sigmoid(model(x)).numpy()
    return out


def segment_scores(
    model: torch.nn.Module, segments: list[np.ndarray], clip_frames: int, batch_size: int = 16
) -> np.ndarray:
    """Each segment (T_i, 64, 44) uint8 -> mean per-class scores over its clips: (S, N_all)."""
    if not segments:
        return np.empty((0, NUM_CLASSES_ALL), np.float32)
    cut = [segment_clips(s, clip_frames) for s in segments]
    scores = clip_scores(model, np.concatenate(cut), batch_size)
    bounds = np.cumsum([0] + [len(c) for c in cut])
    return np.stack([scores[a:b].mean(0) for a, b in itertools.pairwise(bounds)])


def to_predictions(scores: np.ndarray) -> dict[str, AttributePrediction]:
    """One clip's or segment's per-class scores (N_all,) -> {attribute name: AttributePrediction}."""
    out = {}
    for attr, o, n in zip(ATTRIBUTES, CLASS_OFFSETS, CLASS_COUNTS):
        s = np.asarray(scores[o : o + n], np.float64)
        p = s / s.sum() if s.sum() > 0 else np.full(n, 1.0 / n)
        k = int(p.argmax())
        out[attr.name] = AttributePrediction(
            label=attr.labels[k],
            probability=float(p[k]),
            probabilities={label: float(v) for label, v in zip(attr.labels, p)},
        )
    return out


class AttributeTagger:
    """CLIP-GAR attribute tagging of gait segments.

    weights: checkpoint written by ``training.attributes`` (a relative path is looked up from the
    working directory, then from the project root). The classification baseline's checkpoint loads too.
    batch_size: clips per forward pass, across windows.
    min_segment_frames: gait segments shorter than this are not tagged.
    """

    def __init__(
        self,
        weights: str = "weights/clip_gar.pt",
        batch_size: int = 16,
        min_segment_frames: int = 10,
    ) -> None:
        path = Path(weights)
        if not path.is_absolute() and not path.exists():
            path = PROJECT_ROOT / path
        self.model, meta = load_checkpoint(path)
        self.clip_frames = int(meta["clip_frames"])
        self.batch_size = batch_size
        self.min_segment_frames = min_segment_frames
        self.version = f"{'clip-gar' if meta['kind'] == 'clip_gar' else 'attr-baseline'}:{meta['sha256'][:12]}"

    def _segments(self, window: TrackWindow) -> list[np.ndarray]:
        if window.gait is None or window.gait.route != "gait":
            return []
        sil = window.sequence.silhouettes
        return [
            sil[s.start : s.stop]
            for s in window.gait.segments
            if s.stop - s.start >= self.min_segment_frames and s.stop <= len(sil)
        ]

    def process(self, batch: list[TrackWindow]) -> list[TrackWindow]:
        segs_per_window = [self._segments(w) for w in batch]
        flat = [s for segs in segs_per_window for s in segs]
        scores = segment_scores(self.model, flat, self.clip_frames, self.batch_size)
        # Weight each segment by its length when a window has several.
        i = 0
        for window, segs in zip(batch, segs_per_window):
            if not segs:
                continue
            lengths = np.array([len(s) for s in segs], np.float64)
            window.attributes = to_predictions((scores[i : i + len(segs)] * lengths[:, None]).sum(0) / lengths.sum())
            window.model_versions["attributes"] = self.version
            i += len(segs)
        return batch
