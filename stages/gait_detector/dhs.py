"""Double Helical Signature (GADER sec. 3.1.1): the knee row of a silhouette sequence over time.

Silhouettes after OpenGait pretreatment span the body from the top row (head) to the bottom row
(feet), so the knee sits at a fixed row: about a quarter of the body height above the feet. Taking
that row from every frame gives a ``W x T`` image: straight bands while a person stands, a braided
(double helical) pattern while they walk, and a thick smear when the body is cut, because the
row then no longer lands on the knees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DHSConfig:
    """Where the signature is read.

    knee_height: height of the knee row above the feet, as a fraction of the body height (0.25 in
    the paper).
    band_rows: rows averaged around the knee row; an odd number >= 1. A thin band makes the
    signature robust to a one-row jitter of the feet in noisy masks.
    """

    knee_height: float = 0.25
    band_rows: int = 3

    def __post_init__(self) -> None:
        if not 0.0 < self.knee_height < 1.0:
            raise ValueError(f"knee_height must be in (0, 1), got {self.knee_height}")
        if self.band_rows < 1 or self.band_rows % 2 == 0:
            raise ValueError(f"band_rows must be an odd number >= 1, got {self.band_rows}")

    def rows(self, height: int) -> slice:
        """Rows of a ``height``-row silhouette that make up the band."""
        centre = round((1.0 - self.knee_height) * (height - 1))
        half = self.band_rows // 2
        top, bottom = max(0, centre - half), min(height, centre + half + 1)
        return slice(top, bottom)


def extract_dhs(silhouettes: np.ndarray, config: DHSConfig = DHSConfig()) -> np.ndarray:
    """Silhouettes ``(T, H, W)`` (uint8 0..255, or 0/1, or float 0..1) -> DHS ``(W, T)`` float32 in [0, 1].

    Column ``t`` is the mean of the knee band of frame ``t``.
    """
    if silhouettes.ndim != 3:
        raise ValueError(f"silhouettes must be (T, H, W), got shape {silhouettes.shape}")
    band = silhouettes[:, config.rows(silhouettes.shape[1]), :]
    scale = 255.0 if silhouettes.dtype == np.uint8 and band.max(initial=0) > 1 else 1.0
    dhs = band.mean(axis=1, dtype=np.float32) / np.float32(scale)
    return np.ascontiguousarray(dhs.T)


def dhs_to_image(dhs: np.ndarray, segments: list[tuple[int, int]] = (), scale: int = 4) -> np.ndarray:
    """DHS ``(W, T)`` -> ``(H', W', 3)`` uint8 BGR picture for inspection, time running left to right.

    Frames inside ``segments`` (``[start, stop)`` pairs) are marked by a yellow bar under the signature.
    """
    w, t = dhs.shape
    gray = np.clip(dhs * 255.0, 0, 255).astype(np.uint8)
    bar = np.zeros((6, t), dtype=bool)
    for start, stop in segments:
        bar[:, max(0, start) : min(t, stop)] = True
    picture = np.zeros((w + 2 + bar.shape[0], t, 3), dtype=np.uint8)
    picture[:w] = gray[:, :, None]
    picture[w + 2 :][bar] = (0, 220, 255)
    return np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)
