"""Gait re-scorers of shortlists: CarGait checkpoints and discriminant projections, and the name of
the distance each produces.

The gallery (stages.gallery.matching) re-scores the gait distances of the identities nearest by the
plain metric with one of them; calibrations are per distance name (``scorer``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from stages.gait.projection import GaitProjection
from stages.rerank.model import CarGait, strip_euclidean
from stages.rerank.weights import RerankerInfo, load_reranker


@dataclass(frozen=True)
class Reranker:
    """A loaded CarGait checkpoint and the name of the distance it produces ("cargait:<sha256[:12]>")."""

    model: CarGait
    info: RerankerInfo
    scorer: str

    @classmethod
    def load(cls, path: str | Path) -> Reranker:
        path = Path(path).expanduser()
        model, info = load_reranker(path)
        return cls(model, info, f"cargait:{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}")

    @property
    def gait_model_version(self) -> str:
        return self.info.gait_model_version

    @property
    def metric(self) -> str:
        """The plain gait metric whose shortlists CarGait was trained to re-rank."""
        return self.info.metric

    def pair_distances(self, probes: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """CarGait distances of pairs: probes (N, P, C), candidates (N, P, C) -> (N,)."""
        if len(probes) == 0:
            return np.zeros(0, np.float32)
        with torch.inference_mode():
            first, inverse = distinct_rows(probes)  # one probe against many candidates: projected once
            pp = self.model.project(torch.as_tensor(probes[first])).take(torch.as_tensor(inverse))
            pc = self.model.project(torch.as_tensor(candidates))
            ep, ec = self.model.condition(pp, pc)
            return strip_euclidean(ep, ec).numpy()


def distinct_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, inverse): the position of the first of each distinct row of ``x`` (N, ...) in order of
    appearance, and for each row which of them it equals, so ``x[first][inverse]`` is ``x``. Rows are
    compared by their bytes (``np.unique(axis=0)`` builds a structured type with a field per column,
    milliseconds for a single row of a gait embedding)."""
    flat = np.ascontiguousarray(x).reshape(len(x), -1)
    seen: dict[bytes, int] = {}
    first: list[int] = []
    inverse = np.empty(len(flat), np.int64)
    for i, row in enumerate(flat):
        j = seen.setdefault(row.tobytes(), len(first))
        if j == len(first):
            first.append(i)
        inverse[i] = j
    return np.asarray(first, np.int64), inverse


class GaitRescorer(Protocol):
    """What the gallery needs of a gait re-scorer: the distance's name, the gait model whose embeddings
    it compares, the plain metric it re-ranks ("" any) and distances of (probe, candidate) pairs."""

    scorer: str

    @property
    def gait_model_version(self) -> str: ...

    @property
    def metric(self) -> str: ...

    def pair_distances(self, probes: np.ndarray, candidates: np.ndarray) -> np.ndarray: ...


def load_gait_rescorer(path: str | Path) -> GaitRescorer:
    """A discriminant projection (``.npz``) or a CarGait checkpoint (anything else)."""
    path = Path(path).expanduser()
    if path.suffix == ".npz":
        return GaitProjection.load(path)
    return Reranker.load(path)
