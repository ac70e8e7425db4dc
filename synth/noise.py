"""Segmentation-like errors on rendered masks: what a real segmenter or background subtraction does.

Rendered masks are exact; the masks a pipeline gets from YOLO-seg, PP-HumanSeg or background
subtraction (and CASIA-B's silhouettes) have ragged edges, swollen or eroded outlines, holes where
clothing matches the background and shadows joined to the feet. ``segmentation_noise`` adds these
to a visible mask so models trained on synthetic silhouettes see the same kind of input; the ground
truth (boxes, ratios, full-body labels) stays that of the exact mask. Deterministic from the rng.
"""

from __future__ import annotations

import cv2
import numpy as np


def segmentation_noise(mask: np.ndarray, roi: tuple[int, int, int, int], frame_size: tuple[int, int],
                       rng: np.random.Generator, strength: float = 1.0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Corrupt one visible mask.

    mask: (h, w) bool over roi = (x1, y1, x2, y2) of a frame of frame_size (height, width);
    strength: 0 leaves the mask as it is, 1 is a typical segmenter, larger is worse.
    Returns the corrupted mask and its roi (grown by a margin, clipped to the frame).
    """
    if strength <= 0 or not mask.any():
        return mask, roi
    rows = np.flatnonzero(mask.any(axis=1))
    body_h = float(rows[-1] - rows[0] + 1)
    x1, y1, x2, y2 = roi
    pad = int(np.ceil(0.1 * body_h)) + 2
    fh, fw = frame_size
    nx1, ny1, nx2, ny2 = max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, fw), min(y2 + pad, fh)
    m = np.zeros((ny2 - ny1, nx2 - nx1), np.float32)
    m[y1 - ny1:y2 - ny1, x1 - nx1:x2 - nx1] = mask
    h, w = m.shape

    # Ragged, slightly blobby outline: blur, then threshold against smooth random noise.
    sigma = 0.5 + 0.012 * body_h * strength
    m = cv2.GaussianBlur(m, (0, 0), sigma)
    cell = max(2.0, body_h / 12)  # noise correlated over about a twelfth of the body height
    grid = (max(2, round(h / cell)), max(2, round(w / cell)))
    field = cv2.resize(rng.standard_normal(grid).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    # Only the blurred band along the outline moves: no blobs appear far from the body.
    band = (m > 0.02) & (m < 0.98)
    out = (m + 0.25 * strength * field * band) > 0.5
    # Swollen or eroded outline.
    if rng.random() < 0.5 * min(strength, 1.0):
        k = round(rng.uniform(0.5, 0.5 + 0.015 * body_h * strength))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        op = cv2.dilate if rng.random() < 0.5 else cv2.erode
        if k > 0:
            out = op(out.astype(np.uint8), kernel).astype(bool)
    out_u8 = out.astype(np.uint8)
    top = rows[0] + y1 - ny1
    bottom = rows[-1] + y1 - ny1
    cols = np.flatnonzero(mask.any(axis=0)) + x1 - nx1
    cx = int((cols[0] + cols[-1]) / 2)
    # Holes where clothing matches the background (in the torso and thighs).
    if rng.random() < 0.15 * strength:
        for _ in range(int(rng.integers(1, 3))):
            cy = int(top + rng.uniform(0.25, 0.65) * body_h)
            hx = int(cx + rng.uniform(-0.08, 0.08) * body_h)
            axes = (max(1, int(rng.uniform(0.012, 0.035) * body_h)), max(1, int(rng.uniform(0.015, 0.04) * body_h)))
            cv2.ellipse(out_u8, (hx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 0, -1)
    # A cast shadow joined to the feet.
    if rng.random() < 0.2 * strength:
        axes = (max(1, int(rng.uniform(0.1, 0.25) * body_h)), max(1, int(rng.uniform(0.01, 0.03) * body_h)))
        centre = (int(cx + rng.choice([-1, 1]) * rng.uniform(0.05, 0.25) * body_h), int(bottom))
        cv2.ellipse(out_u8, centre, axes, 0.0, 0, 360, 1, -1)
    return out_u8.astype(bool), (nx1, ny1, nx2, ny2)
