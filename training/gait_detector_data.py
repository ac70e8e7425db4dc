"""Training and evaluation data for the GADER DHS classifier: labelled DHS tracks, window sampling,
recipes and the track cache.

A :class:`LabeledDHS` is a DHS ``(W, T)`` with one class label per frame (see ``model.CLASSES``).
Two sources produce them:

* real CASIA-B walking sequences (every frame a full body walking) turned into mixed tracks by
  honest augmentation: *partial* stretches re-run OpenGait's pretreatment on silhouettes cut at the
  bottom (legs out of view), at the top (head out of view) or at one side (frame edge); *standing*
  stretches hold one frame (a person who stops) while mask noise keeps going; the frame rate is
  varied by taking every 1st..3rd frame, since real cameras run at 10-30 fps and CASIA-B at 25.
  DHS columns depend on their own frame only, so composing tracks column by column is the same as
  composing the silhouette sequences and extracting the DHS afterwards.
* synthetic walkers (``synth``), whose ground truth says per frame walking/standing, full/partial.

Mask noise (the knee band drifting a pixel, edges growing or shrinking by a pixel) is applied to
every frame of a composed track alike, so it cannot hint at the class.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from pipeline.messages import SILHOUETTE_HEIGHT, SILHOUETTE_WIDTH
from stages.gait_detector import dhs as dhs_module
from stages.gait_detector.dhs import DHSConfig, extract_dhs
from stages.gait_detector.model import CLASSES, FULL_WALKING, class_index
from stages.silhouette import cut_sides, opengait_pretreat

_PAD = (SILHOUETTE_HEIGHT - SILHOUETTE_WIDTH) // 2  # 64x44 -> 64x64 canvas
CACHE = Path.home() / ".cache" / "gaitscope" / "gader"


@dataclass(frozen=True)
class LabeledDHS:
    """dhs: (W, T) float32 in [0, 1]; labels: (T,) int64 class index per frame; name: provenance."""

    dhs: np.ndarray
    labels: np.ndarray
    name: str

    def __post_init__(self) -> None:
        if self.dhs.shape[1] != len(self.labels):
            raise ValueError(f"{self.name}: DHS has {self.dhs.shape[1]} frames, labels {len(self.labels)}")

    def __len__(self) -> int:
        return len(self.labels)


# --- partial bodies -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cut:
    """A cut of the body as if part of it left the view. side: "bottom" | "top" | "left" | "right";
    fraction: share of the body's height (bottom/top) or width (left/right) that is removed."""

    side: str
    fraction: float


def random_cut(rng: np.random.Generator) -> Cut:
    side = str(rng.choice(["bottom", "bottom", "top", "left", "right"]))
    fraction = float(rng.uniform(0.2, 0.55) if side in ("bottom", "top") else rng.uniform(0.3, 0.6))
    return Cut(side, fraction)


def cut_silhouettes(silhouettes: np.ndarray, cut: Cut) -> np.ndarray:
    """Silhouettes (T, 64, 44) uint8 -> the same body cut by ``cut`` and normalised again (T, 64, 44).

    The cut is made on the 64x64 canvas and OpenGait's pretreatment is re-run, as the pipeline does
    on a mask of a person whose body leaves the frame. Frames that the pretreatment drops (too
    little left) repeat the previous kept frame, as a tracklet would skip them.
    """
    out = np.zeros_like(silhouettes)
    previous = np.zeros(silhouettes.shape[1:], dtype=silhouettes.dtype)
    for t, frame in enumerate(silhouettes):
        canvas = np.pad(frame, ((0, 0), (_PAD, _PAD)))
        rows = np.flatnonzero(canvas.any(axis=1))
        cols = np.flatnonzero(canvas.any(axis=0))
        if len(rows) == 0:
            out[t] = previous
            continue
        height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        if cut.side == "bottom":
            canvas[rows[-1] + 1 - round(cut.fraction * height) :] = 0
        elif cut.side == "top":
            canvas[: rows[0] + round(cut.fraction * height)] = 0
        elif cut.side == "left":
            canvas[:, : cols[0] + round(cut.fraction * width)] = 0
        else:
            canvas[:, cols[-1] + 1 - round(cut.fraction * width) :] = 0
        normalised = opengait_pretreat(canvas)
        if normalised is not None:
            previous = cut_sides(normalised)
        out[t] = previous
    return out


# --- mask noise -----------------------------------------------------------------------------------


def mask_noise(dhs: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """DHS (W, T) with per-frame segmentation noise: a slow +-2 px horizontal drift of the centring
    and, with probability 0.3 * strength per frame, the band's edges grown or shrunk by one pixel."""
    t = dhs.shape[1]
    steps = rng.choice([-1, 0, 0, 0, 1], size=t) if strength > 0 else np.zeros(t, np.int64)
    drift = np.clip(np.cumsum(steps), -2, 2)
    out = np.empty_like(dhs)
    for shift in np.unique(drift):
        cols = drift == shift
        out[:, cols] = np.roll(dhs[:, cols], int(shift), axis=0)
    grow = rng.random(t) < 0.15 * strength
    shrink = rng.random(t) < 0.15 * strength
    up, down = np.roll(out, 1, axis=0), np.roll(out, -1, axis=0)
    dilated = np.maximum(out, np.maximum(up, down))
    eroded = np.minimum(out, np.minimum(up, down))
    out[:, grow] = dilated[:, grow]
    out[:, shrink & ~grow] = eroded[:, shrink & ~grow]
    return out


# --- CASIA-B walking -> mixed tracks ------------------------------------------------------------


@dataclass(frozen=True)
class WalkingSource:
    """One real walking sequence as DHS, full body and cut: full, partial (W, T) float32."""

    full: np.ndarray
    partial: np.ndarray
    name: str


def walking_source(
    silhouettes: np.ndarray, name: str, rng: np.random.Generator, dhs_config: DHSConfig
) -> WalkingSource:
    """A full-body walking sequence (T, 64, 44) at a random frame step 1..3, with one random cut."""
    step = int(rng.integers(1, 4))
    if len(silhouettes) // step < 8:
        step = 1
    sil = silhouettes[::step]
    cut = random_cut(rng)
    return WalkingSource(
        full=extract_dhs(sil, dhs_config),
        partial=extract_dhs(cut_silhouettes(sil, cut), dhs_config),
        name=f"{name}@step{step}/{cut.side}{cut.fraction:.2f}",
    )


def compose_track(
    source: WalkingSource,
    rng: np.random.Generator,
    num_frames: int,
    piece_frames: tuple[int, int] = (8, 60),
    class_weights: Iterable[float] = (0.4, 0.2, 0.2, 0.2),
    noise: float = 1.0,
) -> LabeledDHS:
    """A mixed track of ``num_frames`` frames from one walking source.

    Pieces of random class and length (``piece_frames`` [min, max]) follow each other. Walking
    pieces advance through the source (back and forth at its ends); standing pieces hold the
    current frame; partial pieces read the cut version of the same frames.
    """
    weights = np.asarray(list(class_weights), dtype=np.float64)
    weights /= weights.sum()
    total = source.full.shape[1]
    columns: list[int] = []
    variants: list[bool] = []  # True = partial
    labels: list[int] = []
    position, direction = int(rng.integers(0, total)), 1
    while len(labels) < num_frames:
        cls = int(rng.choice(len(CLASSES), p=weights))
        full_body = cls in (0, 1)
        walking = cls in (0, 2)
        length = int(rng.integers(piece_frames[0], piece_frames[1] + 1))
        for _ in range(length):
            if walking and total > 1:
                nxt = position + direction
                if not 0 <= nxt < total:
                    direction = -direction
                    nxt = position + direction
                position = nxt
            columns.append(position)
            variants.append(not full_body)
            labels.append(class_index(full_body, walking))
    columns_a = np.array(columns[:num_frames])
    partial_a = np.array(variants[:num_frames])
    dhs = np.where(partial_a[None, :], source.partial[:, columns_a], source.full[:, columns_a])
    return LabeledDHS(mask_noise(dhs.astype(np.float32), rng, noise), np.array(labels[:num_frames], np.int64), source.name)


def casia_walking_sources(
    subjects: Iterable[str],
    sequences_per_subject: int,
    rng: np.random.Generator,
    dhs_config: DHSConfig,
    root: str | None = None,
    min_frames: int = 20,
) -> list[WalkingSource]:
    """Random CASIA-B sequences of ``subjects`` (all types and views), each as a walking source."""
    from training.casia_b import DEFAULT_ROOT, CasiaB

    reader = CasiaB(root or DEFAULT_ROOT, min_frames=min_frames)
    chosen = []
    for subject in subjects:
        keys = reader.keys(subjects=[subject])
        if not keys:
            continue
        picks = rng.choice(len(keys), size=min(sequences_per_subject, len(keys)), replace=False)
        chosen += [keys[i] for i in picks]
    return [walking_source(seq.silhouettes, seq.key.name, rng, dhs_config) for seq in reader.iter_sequences(chosen)]


# --- windows ----------------------------------------------------------------------------------------


def window_label(labels: np.ndarray, walking_purity: float) -> int:
    """Training label of a window from its frames' labels.

    Full-body walking only when at least ``walking_purity`` of the frames are; otherwise the most
    frequent of the other classes, so that windows reaching into standing or partial stretches
    teach the classifier to refuse them and kept windows stay inside the walking stretches.
    """
    counts = np.bincount(labels, minlength=len(CLASSES))
    if counts[FULL_WALKING] >= walking_purity * len(labels):
        return FULL_WALKING
    counts[FULL_WALKING] = -1
    return int(counts.argmax())


def sample_windows(
    tracks: list[LabeledDHS],
    rng: np.random.Generator,
    count: int,
    length: int,
    walking_purity: float = 0.9,
    single_class: bool = False,
    max_tries: int = 500,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` windows of ``length`` frames at random tracks and starts: (count, W, length) float32
    and (count,) int64 labels (see :func:`window_label`). single_class: only windows whose frames
    all have one class (for evaluation)."""
    eligible = [t for t in tracks if len(t) >= length]
    if not eligible:
        raise ValueError(f"no track has {length} frames")
    windows = np.empty((count, eligible[0].dhs.shape[0], length), np.float32)
    labels = np.empty(count, np.int64)
    for i in range(count):
        for _ in range(max_tries):
            track = eligible[int(rng.integers(0, len(eligible)))]
            start = int(rng.integers(0, len(track) - length + 1))
            frame_labels = track.labels[start : start + length]
            if not single_class or (frame_labels == frame_labels[0]).all():
                break
        else:
            raise ValueError(f"no single-class window of {length} frames found in {max_tries} draws")
        windows[i] = track.dhs[:, start : start + length]
        labels[i] = window_label(frame_labels, walking_purity)
    return windows, labels


# --- recipes -----------------------------------------------------------------------------------------


def read_config(path: str | Path) -> dict:
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if not isinstance(cfg, dict):
        raise TypeError(f"{path}: expected a mapping at the top level")
    return cfg


def subject_range(bounds: list[int]) -> list[str]:
    return [f"{i:03d}" for i in range(bounds[0], bounds[1] + 1)]


def casia_tracks(
    cfg: dict, dhs_config: DHSConfig, rng: np.random.Generator, subjects: list[str], per_subject: int, frames: int
) -> list[LabeledDHS]:
    c = cfg["data"]["casia"]
    sources = casia_walking_sources(subjects, per_subject, rng, dhs_config)
    return [
        compose_track(s, rng, frames, tuple(c["piece_frames"]), c["class_weights"])
        for s in sources
        for _ in range(c["tracks_per_sequence"])
    ]


def cached_tracks(what: dict, build: Callable[[], list[LabeledDHS]]) -> list[LabeledDHS]:
    """``build()`` once per recipe section and data code version; later runs read ~/.cache/gaitscope/gader."""
    here = Path(__file__)
    sources = [p.read_bytes() for p in (here, here.with_name("gait_detector_synth.py"), Path(dhs_module.__file__))]
    key = hashlib.sha256(json.dumps(what, sort_keys=True).encode() + b"".join(sources)).hexdigest()[:20]
    path = CACHE / f"{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:  # each z[key] reads the array again: read once
            dhs, labels, lengths, names = z["dhs"], z["labels"], z["lengths"], z["names"]
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        return [
            LabeledDHS(np.ascontiguousarray(dhs[:, a:b]), labels[a:b], str(name))
            for a, b, name in zip(bounds[:-1], bounds[1:], names)
        ]
    tracks = build()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        dhs=np.concatenate([t.dhs for t in tracks], axis=1),
        labels=np.concatenate([t.labels for t in tracks]),
        lengths=np.array([len(t) for t in tracks]),
        names=np.array([t.name for t in tracks]),
    )
    tmp.replace(path)
    return tracks
