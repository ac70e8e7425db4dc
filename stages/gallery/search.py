"""CarGait re-ranking of gait shortlists: a loaded checkpoint and the name of the distance it produces.

The gallery (stages.gallery.matching) re-scores the gait distances of the identities nearest by the
plain metric with CarGait; calibrations are per distance name (``scorer``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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

    def pair_distances(self, probes: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """CarGait distances of pairs: probes (N, P, C), candidates (N, P, C) -> (N,)."""
        if len(probes) == 0:
            return np.zeros(0, np.float32)
        with torch.inference_mode():
            uniq, inverse = np.unique(probes.reshape(len(probes), -1), axis=0, return_inverse=True)
            pp = self.model.project(torch.as_tensor(uniq.reshape(-1, *probes.shape[1:]))).take(torch.as_tensor(inverse.reshape(-1)))
            pc = self.model.project(torch.as_tensor(candidates))
            ep, ec = self.model.condition(pp, pc)
            return strip_euclidean(ep, ec).numpy()
