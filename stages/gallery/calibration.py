"""Open-set calibration: the distance threshold for "same identity" and a distance -> confidence map.

Fitted on labelled distances (genuine = same identity, impostor = different): the threshold keeps
the impostor acceptance rate at ``target_far``; confidence is a 1-D logistic regression
P(genuine | distance) fitted on the same distances.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """threshold: accept a match when distance < threshold. slope, intercept: confidence =
    sigmoid(intercept + slope * distance). far/frr: measured rates at the threshold. scorer: the
    distance it was fitted on (e.g. "euc", "cos", "cargait:<sha256 prefix>"). model_version: the
    embedding model. source: the data it was fitted on."""

    threshold: float
    slope: float
    intercept: float
    far: float
    frr: float
    scorer: str
    model_version: str
    source: str
    genuine: int
    impostor: int

    def confidence(self, distance: np.ndarray | float) -> np.ndarray:
        z = np.clip(self.intercept + self.slope * np.asarray(distance, dtype=np.float64), -60, 60)
        return 1.0 / (1.0 + np.exp(-z))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        return cls(**json.loads(text))


def _fit_logistic(x: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Newton's method for P(y=1|x) = sigmoid(a + b x), classes weighted equally."""
    mu, sd = x.mean(), x.std() + 1e-12
    xs = (x - mu) / sd
    w = np.where(y == 1, 0.5 / max(1, y.sum()), 0.5 / max(1, (1 - y).sum()))
    a = b = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(a + b * xs, -60, 60)))
        g = np.array([np.sum(w * (p - y)), np.sum(w * (p - y) * xs)])
        s = w * p * (1 - p)
        h = np.array([[s.sum(), (s * xs).sum()], [(s * xs).sum(), (s * xs * xs).sum()]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    # back to raw distances: a + b (d - mu) / sd
    return float(b / sd), float(a - b * mu / sd)


def calibrate(
    genuine: np.ndarray,
    impostor: np.ndarray,
    scorer: str,
    model_version: str,
    source: str,
    target_far: float = 0.01,
) -> Calibration:
    """Threshold at ``target_far`` impostor acceptance and the logistic confidence map."""
    genuine = np.asarray(genuine, dtype=np.float64)
    impostor = np.asarray(impostor, dtype=np.float64)
    if len(genuine) == 0 or len(impostor) == 0:
        raise ValueError("calibration needs both genuine and impostor distances")
    threshold = float(np.quantile(impostor, target_far))
    far = float(np.mean(impostor < threshold))
    frr = float(np.mean(genuine >= threshold))
    x = np.concatenate([genuine, impostor])
    y = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostor))])
    slope, intercept = _fit_logistic(x, y)
    return Calibration(threshold, slope, intercept, far, frr, scorer, model_version, source, len(genuine), len(impostor))


def calibration_distances(
    features: np.ndarray,
    subjects: np.ndarray,
    probe_mask: np.ndarray,
    metric: str,
    pair_distances: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    top_k: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Per probe, the distance of its nearest genuine and of its nearest impostor gallery entry.

    features: (N, P, C); probes are ``probe_mask``, the rest is the gallery. With ``pair_distances``
    (a re-ranker: (M, P, C) x (M, P, C) -> (M,)), each probe's top-K under ``metric`` is re-scored
    first, as the matcher does, and only those K entries count.
    """
    from stages.gait.distance import part_distance

    p_idx, g_idx = np.flatnonzero(probe_mask), np.flatnonzero(~probe_mask)
    dist = part_distance(features[p_idx], features[g_idx], metric)
    same = subjects[p_idx][:, None] == subjects[g_idx][None, :]
    if pair_distances is not None:
        top = np.argsort(dist, axis=1, kind="stable")[:, :top_k]
        dist = pair_distances(np.repeat(features[p_idx], top.shape[1], axis=0), features[g_idx[top.reshape(-1)]]).reshape(top.shape)
        same = np.take_along_axis(same, top, axis=1)
    genuine = np.where(same, dist, np.inf).min(1)
    impostor = np.where(~same, dist, np.inf).min(1)
    return genuine[np.isfinite(genuine)], impostor[np.isfinite(impostor)]
