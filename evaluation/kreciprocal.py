"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), the classic re-ranking baseline.

Follows the published algorithm: k-reciprocal neighbour sets with the 1/2-k1 expansion rule,
Gaussian-weighted neighbour vectors, local query expansion over k2 neighbours, Jaccard distance,
and final distance = (1 - lambda) * Jaccard + lambda * original (squared, column-normalised).
"""

from __future__ import annotations

import numpy as np


def _reciprocal(initial_rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """Indices j among i's k nearest whose own k nearest contain i."""
    forward = initial_rank[i, : k + 1]
    backward = initial_rank[forward, : k + 1]
    return forward[np.any(backward == i, axis=1)]


def k_reciprocal_distances(
    q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> np.ndarray:
    """Re-ranked probe-to-gallery distances.

    q_g: (Q, G), q_q: (Q, Q), g_g: (G, G) original distances (Euclidean-like, >= 0).
    Returns (Q, G) float32 distances; smaller = more alike.
    """
    nq = q_g.shape[0]
    original = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32) ** 2
    original = (original / np.maximum(original.max(axis=0), 1e-12)).T
    n = original.shape[0]
    initial_rank = np.argsort(original, axis=1).astype(np.int32)
    half = int(np.around(k1 / 2.0))
    weights = np.zeros_like(original)
    for i in range(n):
        reciprocal = _reciprocal(initial_rank, i, k1)
        expansion = [reciprocal]
        for candidate in reciprocal:
            candidate_reciprocal = _reciprocal(initial_rank, int(candidate), half)
            overlap = np.intersect1d(candidate_reciprocal, reciprocal).size
            if overlap > 2.0 / 3.0 * candidate_reciprocal.size:
                expansion.append(candidate_reciprocal)
        expanded = np.unique(np.concatenate(expansion))
        w = np.exp(-original[i, expanded])
        weights[i, expanded] = w / w.sum()
    if k2 != 1:
        weights = weights[initial_rank[:, :k2]].mean(axis=1)
    # Jaccard distance of each probe's neighbour vector to every vector (probes and gallery).
    jaccard = np.empty((nq, n), dtype=np.float32)
    for i in range(nq):
        nonzero = np.flatnonzero(weights[i])
        shared = np.minimum(weights[i, nonzero][None, :], weights[:, nonzero]).sum(axis=1)
        jaccard[i] = 1.0 - shared / (2.0 - shared)
    final = jaccard * (1.0 - lambda_value) + original[:nq] * lambda_value
    return final[:, nq:]
