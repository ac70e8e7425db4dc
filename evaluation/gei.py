"""GEI + PCA nearest-neighbour baseline (gait energy image: the mean silhouette over time)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def gait_energy_image(silhouettes: np.ndarray) -> np.ndarray:
    """(T, 64, 44) uint8 0..255 -> (64, 44) float32 in 0..1."""
    return silhouettes.astype(np.float32).mean(0) / 255.0


class GEIPCA:
    """PCA fitted on training GEIs; embeddings are the projections, shaped (N, 1, d) so that the
    per-part metrics of :mod:`evaluation.metrics` apply with one part."""

    def __init__(self, dims: int = 128) -> None:
        self.dims = dims
        self.mean: np.ndarray | None = None
        self.components: np.ndarray | None = None  # (d, 64*44)

    def fit(self, geis: np.ndarray) -> GEIPCA:
        x = geis.reshape(len(geis), -1).astype(np.float64)
        self.mean = x.mean(0)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.components = vt[: self.dims]
        return self

    def transform(self, geis: np.ndarray) -> np.ndarray:
        if self.components is None:
            raise RuntimeError("GEIPCA.transform before fit")
        x = geis.reshape(len(geis), -1).astype(np.float64) - self.mean
        return (x @ self.components.T).astype(np.float32)[:, None, :]


def geis_of(sequences: Iterable[np.ndarray]) -> np.ndarray:
    return np.stack([gait_energy_image(s) for s in sequences])
