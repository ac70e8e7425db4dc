"""The gait embedding's metric: how two per-part gait embeddings are compared.

Embeddings are ``(N, P, C)``. Distances are OpenGait's: ``euc`` is the Euclidean distance per part
averaged over parts (not L2 on the concatenation); ``cos`` is 1 - the cosine similarity per part
averaged over parts. The gallery's exact search, the re-ranker's initial ranking, calibration and
every CASIA-B evaluation use this one function.
"""

from __future__ import annotations

import numpy as np


def part_distance(probe: np.ndarray, gallery: np.ndarray, metric: str = "euc") -> np.ndarray:
    """(n, P, C) x (m, P, C) -> (n, m) distances (float64)."""
    x = np.asarray(probe, dtype=np.float64)
    y = np.asarray(gallery, dtype=np.float64)
    if x.ndim != 3 or y.ndim != 3 or x.shape[1:] != y.shape[1:]:
        raise ValueError(f"embeddings must be (N, P, C) with matching P, C; got {x.shape} and {y.shape}")
    if metric == "cos":
        x = x / np.maximum(np.linalg.norm(x, axis=2, keepdims=True), 1e-12)
        y = y / np.maximum(np.linalg.norm(y, axis=2, keepdims=True), 1e-12)
        return 1.0 - np.einsum("npc,mpc->nm", x, y) / x.shape[1]
    if metric != "euc":
        raise ValueError(f"unknown metric {metric!r}: use 'euc' or 'cos'")
    out = np.zeros((len(x), len(y)))
    for p in range(x.shape[1]):
        xp, yp = x[:, p], y[:, p]
        d2 = (xp**2).sum(1)[:, None] + (yp**2).sum(1)[None, :] - 2 * xp @ yp.T
        out += np.sqrt(np.maximum(d2, 0.0))
    return out / x.shape[1]
