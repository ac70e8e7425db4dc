"""Ground-truth helpers: run-length masks and reading a scene's ``groundtruth.json``.

A mask is stored as ``{"roi": [x1, y1, x2, y2], "counts": [...]}``: alternating run lengths of
background and foreground pixels over the roi in row-major order, starting with background.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def encode_mask(mask: np.ndarray, roi: tuple[int, int, int, int]) -> dict:
    """(h, w) bool mask of the window roi = (x1, y1, x2, y2) -> JSON-ready run lengths."""
    flat = np.asarray(mask, dtype=bool).ravel()
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"roi": [int(v) for v in roi], "counts": [int(c) for c in counts]}


def decode_mask(rle: dict, frame_size: tuple[int, int] | None = None) -> np.ndarray:
    """Run lengths -> bool mask of the roi, or of the whole frame (height, width) when given."""
    x1, y1, x2, y2 = rle["roi"]
    values = np.zeros(len(rle["counts"]), dtype=bool)
    values[1::2] = True
    mask = np.repeat(values, rle["counts"]).reshape(y2 - y1, x2 - x1)
    if frame_size is None:
        return mask
    full = np.zeros(frame_size, dtype=bool)
    full[y1:y2, x1:x2] = mask
    return full


def load_groundtruth(path: str | Path) -> dict:
    """The ground-truth JSON of a rendered scene (see synth.scene)."""
    data = json.loads(Path(path).read_text())
    if data.get("format") != "gaitscope-synth-groundtruth/1":
        raise ValueError(f"{path} is not a gaitscope synthetic ground-truth file")
    return data
