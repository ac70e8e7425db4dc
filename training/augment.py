"""Silhouette-sequence augmentation for gait training, and a model of what real segmenters get wrong.

Everything works on one clip ``(T, 64, 44) uint8`` (0/255, OpenGait's pretreated layout) and an
``np.random.Generator``, and returns a new ``(T, 64, 44) uint8`` array; results depend only on the
input and the generator state (deterministic with a seeded generator).

- :class:`AugmentConfig`: OpenGait-style transforms, applied per sequence (the same transform for
  every frame, so the gait stays coherent): horizontal flip of the whole sequence (walking
  direction), random erasing of a rectangle, small rotation, perspective (a tilted camera), plus
  the corruption model below.
- :class:`CorruptionConfig`: segmentation errors seen from background subtraction and learned
  segmenters: pixel holes (textured clothes matching the background), blob holes, speckle
  (isolated false-positive pixels), a thinner or swollen outline (erosion / dilation), feet or head
  cut at the frame edge, a neighbour's blob joined to the person, a floor reflection below the feet,
  and missing frames. Geometric errors (cut, neighbour, reflection) change the person's box, so the
  frame goes through the pipeline's own pretreatment again (``stages.silhouette``), as it would in
  the pipeline.
- :func:`corrupt_fixed`: the fixed evaluation protocol (i.i.d. pixel holes + speckle), see
  ``CORRUPTION_LEVELS``.

Config keys (``augment:`` section of a training recipe) map one-to-one onto these dataclasses;
``corruption:`` is nested.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from stages.silhouette import silhouette_from_mask

HEIGHT, WIDTH = 64, 44

# Evaluation protocol: name -> (fraction of foreground pixels cleared, fraction of background
# pixels set), independently per pixel and frame, seeded per sequence.
CORRUPTION_LEVELS: dict[str, tuple[float, float]] = {
    "mild": (0.06, 0.005),
    "holes12_speckle1": (0.12, 0.01),
    "severe": (0.20, 0.02),
}


@dataclass(frozen=True)
class CorruptionConfig:
    """Probabilities (per sequence unless said otherwise) and sizes of each segmentation error.

    p: probability that a clip is corrupted at all. holes: up to this fraction of the foreground
    pixels cleared (amount uniform in [0, holes] per clip). speckle: up to this fraction of the
    background pixels set. blob_holes: probability of 1-3 elliptic holes in torso / thighs.
    morph: probability of a 3x3 erosion or dilation (half each). cut_edge: probability of the feet
    (or, one time in four, the head) cut by the frame edge, cutting up to ``cut_max`` of the body
    height. neighbour: probability of another person's blob joined at the side. reflection:
    probability of a faded mirror image of the legs below the feet. missing_frames: probability
    of losing up to ``missing_max`` of the frames (replaced by their nearest kept neighbour, as a
    fixed-length clip would resample them).
    """

    p: float = 0.6
    holes: float = 0.15
    speckle: float = 0.015
    blob_holes: float = 0.2
    morph: float = 0.3
    cut_edge: float = 0.15
    cut_max: float = 0.25
    neighbour: float = 0.1
    reflection: float = 0.1
    missing_frames: float = 0.15
    missing_max: float = 0.3


@dataclass(frozen=True)
class AugmentConfig:
    """Per-sequence augmentation of training clips (``augment:`` in a recipe).

    flip: probability of mirroring the whole sequence left-right. erase: probability of erasing one
    rectangle (``erase_area`` min/max fraction of the frame, aspect 0.3-3.3) in every frame.
    rotate: probability of a rotation by up to ``rotate_deg`` degrees. perspective: probability of a
    perspective warp moving the top corners inwards / outwards by up to ``perspective_shift`` of
    the width. corruption: the segmentation-error model (None disables it).
    """

    enabled: bool = True
    flip: float = 0.5
    erase: float = 0.3
    erase_area: tuple[float, float] = (0.02, 0.12)
    rotate: float = 0.3
    rotate_deg: float = 10.0
    perspective: float = 0.2
    perspective_shift: float = 0.15
    corruption: CorruptionConfig | None = field(default_factory=CorruptionConfig)

    @classmethod
    def from_dict(cls, d: dict | None) -> AugmentConfig:
        """From a recipe's ``augment:`` section; unknown keys are an error. None/absent: defaults."""
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown augment keys: {sorted(unknown)}")
        corr = d.pop("corruption", {})
        if corr is not None:
            bad = set(corr) - set(CorruptionConfig.__dataclass_fields__)
            if bad:
                raise ValueError(f"unknown augment.corruption keys: {sorted(bad)}")
            corr = CorruptionConfig(**corr)
        if "erase_area" in d:
            d["erase_area"] = tuple(d["erase_area"])
        return cls(**d, corruption=corr)

    def to_dict(self) -> dict:
        return asdict(self)


def _check(clip: np.ndarray) -> None:
    if clip.ndim != 3 or clip.shape[1:] != (HEIGHT, WIDTH) or clip.dtype != np.uint8:
        raise ValueError(f"expected a (T, {HEIGHT}, {WIDTH}) uint8 clip, got {clip.shape} {clip.dtype}")


def flip_sequence(clip: np.ndarray) -> np.ndarray:
    """Mirror every frame left-right (the person walks the other way)."""
    return np.ascontiguousarray(clip[:, :, ::-1])


def random_erasing(clip: np.ndarray, rng: np.random.Generator, area: tuple[float, float] = (0.02, 0.12)) -> np.ndarray:
    """Clear one random rectangle (same place in every frame), OpenGait's RandomErasing."""
    t, h, w = clip.shape
    target = rng.uniform(*area) * h * w
    aspect = np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3)))
    eh = int(min(h, max(1, round(np.sqrt(target * aspect)))))
    ew = int(min(w, max(1, round(np.sqrt(target / aspect)))))
    y = int(rng.integers(0, h - eh + 1))
    x = int(rng.integers(0, w - ew + 1))
    out = clip.copy()
    out[:, y : y + eh, x : x + ew] = 0
    return out


def _warp(clip: np.ndarray, matrix: np.ndarray, perspective: bool) -> np.ndarray:
    h, w = clip.shape[1:]
    fn = cv2.warpPerspective if perspective else cv2.warpAffine
    frames = [fn(f, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0) for f in clip]
    return np.where(np.stack(frames) >= 128, 255, 0).astype(np.uint8)


def random_rotate(clip: np.ndarray, rng: np.random.Generator, max_deg: float = 10.0) -> np.ndarray:
    """Rotate every frame by the same angle in [-max_deg, max_deg] around the frame centre."""
    h, w = clip.shape[1:]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-max_deg, max_deg)), 1.0)
    return _warp(clip, m, perspective=False)


def random_perspective(clip: np.ndarray, rng: np.random.Generator, max_shift: float = 0.15) -> np.ndarray:
    """Move the top (or bottom) corners horizontally, as a camera tilted up or down would."""
    h, w = clip.shape[1:]
    src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
    d = rng.uniform(-max_shift, max_shift) * w
    dst = src.copy()
    if rng.random() < 0.5:
        dst[0, 0] += d
        dst[1, 0] -= d
    else:
        dst[3, 0] += d
        dst[2, 0] -= d
    return _warp(clip, cv2.getPerspectiveTransform(src, dst), perspective=True)


def pixel_noise(clip: np.ndarray, rng: np.random.Generator, holes: float, speckle: float) -> np.ndarray:
    """Clear each foreground pixel with probability ``holes`` and set each background pixel with
    probability ``speckle``, independently per pixel and frame."""
    fg = clip > 0
    u = rng.random(clip.shape)
    out = np.where(fg, u >= holes, u < speckle)
    return out.astype(np.uint8) * np.uint8(255)


def corrupt_fixed(clip: np.ndarray, level: str, seed: int) -> np.ndarray:
    """The evaluation protocol: :func:`pixel_noise` at ``CORRUPTION_LEVELS[level]``, seeded."""
    if level not in CORRUPTION_LEVELS:
        raise ValueError(f"unknown corruption level {level!r}: use one of {sorted(CORRUPTION_LEVELS)}")
    holes, speckle = CORRUPTION_LEVELS[level]
    return pixel_noise(clip, np.random.default_rng(seed), holes, speckle)


def _repretreat(canvas: np.ndarray) -> np.ndarray:
    """A frame-sized mask after a geometric error -> the silhouette the pipeline would make of it."""
    sil = silhouette_from_mask(canvas)
    return np.zeros((HEIGHT, WIDTH), np.uint8) if sil is None else sil


def _body_rows(frame: np.ndarray) -> tuple[int, int] | None:
    rows = np.flatnonzero(frame.any(axis=1))
    return None if len(rows) < 4 else (int(rows[0]), int(rows[-1]))


def cut_at_edge(clip: np.ndarray, rng: np.random.Generator, max_fraction: float) -> np.ndarray:
    """Feet (3 times in 4) or head cut by the frame edge: the same world line cuts every frame."""
    fraction = rng.uniform(0.05, max_fraction)
    feet = rng.random() < 0.75
    out = np.zeros_like(clip)
    for i, f in enumerate(clip):
        rows = _body_rows(f)
        if rows is None:
            continue
        top, bottom = rows
        cut = int(round(fraction * (bottom - top + 1)))
        g = f.copy()
        if feet:
            g[bottom - cut + 1 :] = 0
        else:
            g[: top + cut] = 0
        out[i] = _repretreat(g)
    return out


def join_neighbour(clip: np.ndarray, rng: np.random.Generator, other: np.ndarray | None = None) -> np.ndarray:
    """Another person's blob (``other``'s frames, else this clip's own, shifted in time) joined to
    the side of the person, partly overlapping; the pretreatment then sees one wider blob."""
    t = len(clip)
    src = clip if other is None else other
    offset = int(rng.integers(0, len(src)))
    scale = rng.uniform(0.7, 1.1)
    side = 1 if rng.random() < 0.5 else -1
    overlap = rng.uniform(0.0, 0.4)
    pad = WIDTH
    out = np.zeros_like(clip)
    nh, nw = int(round(HEIGHT * scale)), int(round(WIDTH * scale))
    ch = max(HEIGHT, nh)  # both stand on the canvas' bottom row
    x0 = pad + int(round(side * WIDTH * (1.0 - overlap) * 0.6)) + (WIDTH - nw) // 2
    x0 = int(np.clip(x0, 0, WIDTH + 2 * pad - nw))
    for i in range(t):
        canvas = np.zeros((ch, WIDTH + 2 * pad), np.uint8)
        canvas[ch - HEIGHT :, pad : pad + WIDTH] = clip[i]
        nb = cv2.resize(src[(i + offset) % len(src)], (nw, nh), interpolation=cv2.INTER_NEAREST)
        canvas[ch - nh :, x0 : x0 + nw] |= nb
        out[i] = _repretreat(canvas)
    return out


def add_reflection(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A faded mirror image of the lower legs below the feet (shiny floors, wet ground)."""
    depth = rng.uniform(0.1, 0.3)
    density = rng.uniform(0.3, 0.8)
    out = np.zeros_like(clip)
    for i, f in enumerate(clip):
        rows = _body_rows(f)
        if rows is None:
            continue
        top, bottom = rows
        k = max(1, int(round(depth * (bottom - top + 1))))
        canvas = np.zeros((HEIGHT + k, WIDTH), np.uint8)
        canvas[:HEIGHT] = f
        mirror = f[bottom - k + 1 : bottom + 1][::-1]
        keep = rng.random(mirror.shape) < density
        canvas[bottom + 1 : bottom + 1 + k] |= np.where(keep, mirror, 0).astype(np.uint8)
        out[i] = _repretreat(canvas)
    return out


def blob_holes(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1-3 elliptic holes in the torso / thighs, fixed relative to the body across frames."""
    out = clip.copy()
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cy = int(rng.uniform(0.25, 0.7) * HEIGHT)
        cx = int(rng.uniform(0.35, 0.65) * WIDTH)
        axes = (int(rng.integers(2, 6)), int(rng.integers(2, 7)))
        cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    out[:, mask > 0] = 0
    return out


def morph(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Erode or dilate every frame by a 3x3 cross (outline one pixel thinner or fatter)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    op = cv2.erode if rng.random() < 0.5 else cv2.dilate
    return np.stack([op(f, kernel) for f in clip])


def drop_frames(clip: np.ndarray, rng: np.random.Generator, max_fraction: float) -> np.ndarray:
    """Lose a random subset of frames (a segmenter's misses); the clip keeps its length by taking
    each lost frame's nearest kept frame, as resampling a shorter sequence would."""
    t = len(clip)
    lost = rng.random(t) < rng.uniform(0.0, max_fraction)
    if lost.all() or not lost.any():
        return clip
    kept = np.flatnonzero(~lost)
    nearest = kept[np.abs(np.arange(t)[:, None] - kept[None, :]).argmin(axis=1)]
    return clip[nearest]


def corrupt(
    clip: np.ndarray, rng: np.random.Generator, cfg: CorruptionConfig, other: np.ndarray | None = None
) -> np.ndarray:
    """Apply the segmentation-error model to one clip (each error with its own probability)."""
    _check(clip)
    if rng.random() >= cfg.p:
        return clip
    out = clip
    if rng.random() < cfg.missing_frames:
        out = drop_frames(out, rng, cfg.missing_max)
    if rng.random() < cfg.cut_edge:
        out = cut_at_edge(out, rng, cfg.cut_max)
    if rng.random() < cfg.neighbour:
        out = join_neighbour(out, rng, other)
    if rng.random() < cfg.reflection:
        out = add_reflection(out, rng)
    if rng.random() < cfg.morph:
        out = morph(out, rng)
    if rng.random() < cfg.blob_holes:
        out = blob_holes(out, rng)
    holes = rng.uniform(0.0, cfg.holes)
    speckle = rng.uniform(0.0, cfg.speckle)
    if holes > 0 or speckle > 0:
        out = pixel_noise(out, rng, holes, speckle)
    return out


def augment_clip(
    clip: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig, other: np.ndarray | None = None
) -> np.ndarray:
    """One training clip through the configured transforms (``other``: a different clip of the
    batch, the source of a neighbour's blob)."""
    _check(clip)
    if not cfg.enabled:
        return clip
    out = clip
    if cfg.corruption is not None:
        out = corrupt(out, rng, cfg.corruption, other)
    if rng.random() < cfg.perspective:
        out = random_perspective(out, rng, cfg.perspective_shift)
    if rng.random() < cfg.rotate:
        out = random_rotate(out, rng, cfg.rotate_deg)
    if rng.random() < cfg.erase:
        out = random_erasing(out, rng, cfg.erase_area)
    if rng.random() < cfg.flip:
        out = flip_sequence(out)
    return out


def contact_sheet(clip: np.ndarray, seed: int = 0, frames: int = 6, scale: int = 2) -> np.ndarray:
    """A (H, W) uint8 image: one row per augmentation / corruption, ``frames`` frames of ``clip``
    each, labelled; the last rows are the evaluation corruption levels. Used to eyeball the model."""
    _check(clip)
    rng = np.random.default_rng(seed)
    pos = np.linspace(0, len(clip) - 1, frames).round().astype(int)
    base = clip[pos]
    rows: list[tuple[str, np.ndarray]] = [
        ("original", base),
        ("flip", flip_sequence(base)),
        ("erasing", random_erasing(base, rng, (0.06, 0.12))),
        ("rotate", random_rotate(base, rng, 10.0)),
        ("perspective", random_perspective(base, rng, 0.15)),
        ("pixel holes+speckle", pixel_noise(base, rng, 0.15, 0.015)),
        ("blob holes", blob_holes(base, rng)),
        ("erode/dilate", morph(base, rng)),
        ("feet cut", cut_at_edge(base, np.random.default_rng(seed + 1), 0.25)),
        ("neighbour", join_neighbour(base, rng)),
        ("reflection", add_reflection(base, rng)),
        ("missing frames", drop_frames(base, rng, 0.5)),
    ]
    rows += [(f"training draw {i + 1}", augment_clip(base, rng, AugmentConfig(), base[::-1])) for i in range(3)]
    rows += [(f"eval: {name}", corrupt_fixed(base, name, seed)) for name in CORRUPTION_LEVELS]
    label_w = 170
    cell_h, cell_w = HEIGHT * scale, WIDTH * scale
    sheet = np.full((len(rows) * (cell_h + 4), label_w + frames * (cell_w + 4)), 96, np.uint8)
    for r, (name, seq) in enumerate(rows):
        y = r * (cell_h + 4)
        cv2.putText(sheet, name, (4, y + cell_h // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.42, 255, 1, cv2.LINE_AA)
        for c, f in enumerate(seq[:frames]):
            x = label_w + c * (cell_w + 4)
            sheet[y : y + cell_h, x : x + cell_w] = cv2.resize(f, (cell_w, cell_h), interpolation=cv2.INTER_NEAREST)
    return sheet


def main() -> None:
    import argparse

    from training.casia_b import CasiaB, SequenceKey

    ap = argparse.ArgumentParser(description="Contact sheet of the gait augmentation and corruption model")
    ap.add_argument("--out", default="docs/images/gait_augmentation.png")
    ap.add_argument("--sequence", default="001/nm-01/090", help="CASIA-B sequence SID/TYPE/VIEW")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    clip = CasiaB().load(SequenceKey.parse(args.sequence)).silhouettes
    cv2.imwrite(args.out, contact_sheet(clip, args.seed))
    print(args.out)


if __name__ == "__main__":
    main()
