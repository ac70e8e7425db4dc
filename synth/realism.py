"""Realism check: silhouette statistics that matter to gait models, synthetic vs CASIA-B.

Per sequence, on OpenGait-pretreated 64x64 silhouettes (both sets go through the same pretreatment):

- aspect ratio: width / height of the foreground bounding box, median over frames;
- leg swing: horizontal extent of the knee row (row 48, a quarter of the height above the feet),
  90th minus 10th percentile over frames, in pixels of the 64-high frame;
- gait period: lag in frames (25 fps) of the autocorrelation maximum of the knee-row extent
  between 18 and 45 frames (one stride; the extent repeats every step, and the stride peak is the
  stronger one when the two steps differ).

Views are grouped by how much of the side is seen (CASIA-B's 0-180 and the synthetic 0-360 fold
onto the same groups): frontal/back (0, 18, 162, 180), oblique (36, 54, 126, 144), side (72, 90, 108).
"""

from __future__ import annotations

import io
import lzma
from pathlib import Path

import numpy as np

from synth.dataset import CASIA_LIKE, SURVEILLANCE, CameraRange, generate_sequences

KNEE_ROW = 48
VIEW_GROUPS = {"front/back": (0, 18, 162, 180), "oblique": (36, 54, 126, 144), "side": (72, 90, 108)}
_PERIOD_LAGS = (18, 45)


def default_casia_dir() -> Path:
    return Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "casia-b"


def load_casia_subject(folder: Path, sid: str) -> dict[str, np.ndarray]:
    """{"nm-01/090": (T, 64, 64) uint8 0/255} of one CASIA-B subject from its SID.npz.xz."""
    path = folder / f"{sid}.npz.xz"
    if not path.is_file():
        raise FileNotFoundError(f"CASIA-B subject file {path} not found")
    with lzma.open(path) as f:
        packed = np.load(io.BytesIO(f.read()))
        return {k: np.unpackbits(packed[k], axis=-1) * np.uint8(255) for k in packed.files}


def knee_extent(sils: np.ndarray, row: int = KNEE_ROW) -> np.ndarray:
    """(T,) horizontal extent in pixels of the foreground in one row of each frame (0 if empty)."""
    fg = sils[:, row, :] > 0
    cols = np.arange(fg.shape[1])
    first = np.where(fg, cols, fg.shape[1]).min(axis=1)
    last = np.where(fg, cols, -1).max(axis=1)
    return np.maximum(last - first + 1, 0).astype(np.float64)


def sequence_stats(sils: np.ndarray) -> dict[str, float] | None:
    """Statistics of one (T, 64, 64) sequence, or None when it is too short (< 50 frames)."""
    sils = sils[(sils > 0).reshape(len(sils), -1).any(axis=1)]
    if len(sils) < 50:
        return None
    fg = sils > 0
    rows, cols = fg.any(axis=2), fg.any(axis=1)
    heights = rows.shape[1] - rows[:, ::-1].argmax(axis=1) - rows.argmax(axis=1)
    widths = cols.shape[1] - cols[:, ::-1].argmax(axis=1) - cols.argmax(axis=1)
    ext = knee_extent(sils)
    x = ext - ext.mean()
    denom = max(float((x * x).sum()), 1e-9)
    lags = np.arange(_PERIOD_LAGS[0], min(_PERIOD_LAGS[1], len(x) - 10) + 1)
    corr = np.array([(x[:-k] * x[k:]).sum() / denom * len(x) / (len(x) - k) for k in lags])
    return {
        "aspect": float(np.median(widths / heights)),
        "leg_swing": float(np.percentile(ext, 90) - np.percentile(ext, 10)),
        "period": float(lags[corr.argmax()]),
        "period_strength": float(corr.max()),
    }


def view_group(view_deg: float) -> str:
    """The ``VIEW_GROUPS`` name nearest to a viewing angle (either convention: front and back, left
    and right fold together)."""
    v = view_deg % 360.0
    v = 360.0 - v if v > 180 else v
    return min(VIEW_GROUPS, key=lambda g: min(abs(v - c) for c in VIEW_GROUPS[g]))


def _summary(stats: list[tuple[str, dict[str, float]]]) -> dict:
    out = {}
    for group in list(VIEW_GROUPS) + ["all"]:
        chosen = [s for g, s in stats if group in ("all", g)]
        if not chosen:
            continue
        out[group] = {"sequences": len(chosen)}
        for key in ("aspect", "leg_swing", "period"):
            vals = np.array([s[key] for s in chosen])
            out[group][key] = {"median": float(np.median(vals)), "p10": float(np.percentile(vals, 10)),
                               "p90": float(np.percentile(vals, 90))}
    return out


def casia_stats(folder: Path, n_subjects: int = 10, condition: str = "nm-01") -> dict:
    stats = []
    for i in range(1, n_subjects + 1):
        for key, sils in load_casia_subject(folder, f"{i:03d}").items():
            typ, view = key.split("/")
            if typ != condition:
                continue
            s = sequence_stats(sils)
            if s is not None:
                stats.append((view_group(float(view)), s))
    return _summary(stats)


def synth_stats(n_identities: int = 20, frames: int = 75, seed: int = 0, cameras: CameraRange = CASIA_LIKE) -> dict:
    views = tuple(float(v) for v in range(0, 181, 18))
    seqs = generate_sequences(n_identities, len(views), frames, seed=seed, conditions=("nm",), views=views,
                              crops=False, cameras=cameras)
    stats = []
    for seq in seqs:
        s = sequence_stats(seq.silhouettes64)
        if s is not None:
            stats.append((view_group(seq.view_deg), s))
    return _summary(stats)


def compare(casia_dir: Path, n_subjects: int = 10, n_identities: int = 20) -> dict:
    """Summaries per view group and overall: CASIA-B, synthetic with CASIA-B's camera placement, and
    synthetic with the default surveillance placement (higher, farther)."""
    if not casia_dir.is_dir():
        raise FileNotFoundError(f"CASIA-B folder {casia_dir} not found (expected ../shared/data/casia-b)")
    return {"casia-b": casia_stats(casia_dir, n_subjects),
            "synthetic": synth_stats(n_identities, cameras=CASIA_LIKE),
            "synthetic-surveillance": synth_stats(n_identities, cameras=SURVEILLANCE)}


def format_table(stats: dict) -> str:
    """Markdown table: median [p10, p90] of each statistic per view group for each set."""
    sources = [k for k in ("casia-b", "synthetic", "synthetic-surveillance") if k in stats]
    heads = {"casia-b": "CASIA-B nm-01", "synthetic": "synthetic, CASIA-like camera",
             "synthetic-surveillance": "synthetic, surveillance camera"}
    lines = ["| view group | statistic | " + " | ".join(heads[s] for s in sources) + " |",
             "|---|---|" + "---|" * len(sources)]
    names = {"aspect": "aspect ratio (w/h)", "leg_swing": "knee-row leg swing (px of 64)",
             "period": "gait period (frames @25 fps)"}
    for group in list(VIEW_GROUPS) + ["all"]:
        for key, name in names.items():
            cells = []
            for src in sources:
                g = stats[src].get(group)
                cells.append("-" if g is None else
                             f"{g[key]['median']:.2f} [{g[key]['p10']:.2f}, {g[key]['p90']:.2f}] (n={g['sequences']})")
            lines.append(f"| {group} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _gei(sils: np.ndarray) -> np.ndarray:
    """(T, 64, W) -> (64, 44) float32 gait energy image of the 64x44 cut."""
    from stages.silhouette import cut_sides

    s = sils if sils.shape[-1] == 44 else cut_sides(sils)
    return (s.astype(np.float32) / 255.0).mean(axis=0)


def view_transfer(casia_dir: Path, n_identities: int = 20, n_subjects: int = 50, seed: int = 0) -> dict:
    """Sim-to-real check: view classification of real CASIA-B GEIs by a nearest-centroid classifier
    whose 11 centroids are mean GEIs of synthetic walkers only (CASIA-like camera).

    CASIA-B's view c is labelled with the synthetic view 180 - c: CASIA-B measures the angle from
    the back (0 = walking away from the camera), the synthetic convention from the front; 90 is the
    same (walking left to right). Measured both ways; the mapping is what the data chose.
    Test set: subjects 075 onwards, nm-01 and nm-02, all 11 views.
    """
    import cv2

    views = tuple(float(v) for v in range(0, 181, 18))
    seqs = generate_sequences(n_identities, len(views), 30, seed=seed, conditions=("nm",), views=views,
                              crops=False, cameras=CASIA_LIKE)

    def feature(gei: np.ndarray) -> np.ndarray:
        return cv2.resize(gei, (22, 32), interpolation=cv2.INTER_AREA).ravel()

    fx = np.stack([feature(_gei(s.silhouettes)) for s in seqs])
    fy = np.array([views.index(s.view_deg) for s in seqs])
    centroids = np.stack([fx[fy == v].mean(axis=0) for v in range(len(views))])
    real_x, real_y = [], []
    for i in range(75, 75 + n_subjects):
        try:
            subject = load_casia_subject(casia_dir, f"{i:03d}")
        except FileNotFoundError:
            continue
        for key, sils in subject.items():
            typ, view = key.split("/")
            if typ in ("nm-01", "nm-02") and len(sils) >= 10:
                real_x.append(feature(_gei(sils)))
                real_y.append(views.index(float(view)))
    if not real_x:
        raise FileNotFoundError(f"no CASIA-B test subjects (075+) under {casia_dir}")
    rx, ry = np.stack(real_x), np.array(real_y)
    pred = ((rx[:, None] - centroids[None]) ** 2).sum(-1).argmin(axis=1)

    def scores(target: np.ndarray) -> dict:
        return {"accuracy": float((pred == target).mean()), "within_18_deg": float((np.abs(pred - target) <= 1).mean())}

    n = len(views)
    return {"samples": len(ry), "synthetic_sequences": len(seqs),
            "casia_view_as_180_minus": scores(n - 1 - ry), "casia_view_as_is": scores(ry),
            "chance": {"accuracy": 1.0 / n, "within_18_deg": (3 * n - 2) / n**2}}
