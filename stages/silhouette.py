"""Where a person's mask becomes a normalised 64x44 silhouette.

`opengait_pretreat` reproduces OpenGait's dataset pretreatment (``datasets/pretreatment.py``) step by
step, including its quirks, so that OpenGait-trained checkpoints see what they were trained on:

1. drop near-empty frames (sum of 0/255 pixels <= 10000, i.e. fewer than ~40 foreground pixels);
2. keep the rows between the first and last foreground row;
3. resize to height 64 with cubic interpolation, keeping the aspect ratio (width truncated to int);
4. the centre column is the first one where the cumulative column mass exceeds half the total
   (a centre of 0 counts as "no centre" and the frame is dropped, as in OpenGait);
5. cut 64 columns around it, padding 32 zero columns on both sides when the window leaves the image;
6. the data loader then cuts 10 columns from each side: 64x64 -> 64x44.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.messages import CROP_SIZE, SILHOUETTE_HEIGHT, SILHOUETTE_WIDTH

_MIN_MASS = 10000  # OpenGait's threshold on the 0/255 image sum
_SIDE_CUT = (64 - SILHOUETTE_WIDTH) // 2


def opengait_pretreat(mask: np.ndarray, size: int = SILHOUETTE_HEIGHT) -> np.ndarray | None:
    """OpenGait pretreatment of one binary mask.

    mask: (H, W) array, nonzero = person (bool, 0/1 or 0/255 all accepted).
    Returns (size, size) uint8 0..255, or None when OpenGait would drop the frame.
    """
    # Cropping to the foreground rows first is what OpenGait does next anyway; doing it before the
    # conversion keeps the cost proportional to the person, not the frame.
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return None
    img = (mask[rows[0] : rows[-1] + 1] > 0).astype(np.uint8) * np.uint8(255)
    if int(img.sum(dtype=np.int64)) <= _MIN_MASS:
        return None
    width = int(size * (img.shape[1] / img.shape[0]))
    if width < 1:
        return None
    img = cv2.resize(img, (width, size), interpolation=cv2.INTER_CUBIC)
    column_mass = img.sum(axis=0, dtype=np.int64).cumsum()
    above_half = np.flatnonzero(column_mass > img.sum(dtype=np.int64) / 2)
    if len(above_half) == 0 or above_half[0] == 0:
        return None
    centre = int(above_half[0])
    half = size // 2
    left, right = centre - half, centre + half
    if left <= 0 or right >= img.shape[1]:
        left += half
        right += half
        pad = np.zeros((img.shape[0], half), dtype=np.uint8)
        img = np.concatenate([pad, img, pad], axis=1)
    return np.ascontiguousarray(img[:, left:right], dtype=np.uint8)


def cut_sides(silhouette: np.ndarray) -> np.ndarray:
    """(..., 64, 64) -> (..., 64, 44): OpenGait's loader-side cut of 10 columns per side."""
    return silhouette[..., _SIDE_CUT : silhouette.shape[-1] - _SIDE_CUT]


def silhouette_from_mask(mask: np.ndarray) -> np.ndarray | None:
    """Mask of a person (any size) -> (64, 44) uint8 silhouette, or None for a near-empty mask."""
    full = opengait_pretreat(mask)
    return None if full is None else cut_sides(full)


def resize_ratio(box_xyxy: np.ndarray) -> float:
    """GADER's resize ratio: original box height in pixels / 64."""
    return float(box_xyxy[3] - box_xyxy[1]) / SILHOUETTE_HEIGHT


def crop_box(image: np.ndarray, box_xyxy: np.ndarray, size: tuple[int, int] = CROP_SIZE) -> np.ndarray:
    """The box's pixels resized to ``size`` (height, width); boxes are clipped to the image."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box_xyxy)
    x1, x2 = max(0, min(x1, w - 1)), max(1, min(x2, w))
    y1, y2 = max(0, min(y1, h - 1)), max(1, min(y2, h))
    patch = image[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)]
    return cv2.resize(patch, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
