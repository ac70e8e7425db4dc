"""A learned linear map of a gait model's per-part embeddings for matching: discriminant projection.

The gait model's ``(P, C)`` embedding mixes who walks with how the camera sees them (view, distance,
segmentation errors). A projection fitted on labelled walks seen by many cameras (``training.
gait_projection``: linear discriminant analysis of walkers rendered as surveillance cameras see them)
keeps the directions along which identities differ more than one identity's walks do. Matching then
compares the projected vectors::

    z = normalise(W^T (flatten(normalise_parts(e)) - mean))        e: (P, C) -> z: (D,)
    distance(a, b) = ||z_a - z_b||                                  in [0, 2]

The gallery uses it as a gait re-scorer (in the place of CarGait: the identities nearest by the
plain metric get its distance, calibrated under its own name ``proj:<sha256[:12]>``). Files are
``.npz`` without pickles; they name the gait model whose embeddings they map and are refused for
another one, like CarGait checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "gaitscope-gait-projection-1"


def flatten_parts(features: np.ndarray) -> np.ndarray:
    """(N, P, C) -> (N, P*C) float64, each part scaled to unit length first (parts count equally)."""
    x = np.asarray(features, np.float64)
    if x.ndim != 3:
        raise ValueError(f"gait embeddings must be (N, P, C), got shape {x.shape}")
    x = x / np.maximum(np.linalg.norm(x, axis=2, keepdims=True), 1e-12)
    return x.reshape(len(x), -1)


@dataclass(frozen=True)
class GaitProjection:
    """mean: (P*C,), matrix: (P*C, D); parts, channels: the embedding shape it maps;
    gait_model_version: the gait model whose embeddings it was fitted on; scorer: "proj:<sha256[:12]>"
    (the name its calibrations are stored under)."""

    mean: np.ndarray
    matrix: np.ndarray
    parts: int
    channels: int
    gait_model_version: str
    scorer: str = "proj:unsaved"
    metric: str = ""  # re-scores the shortlist of any plain metric (CarGait names the one it was trained on)

    def project(self, features: np.ndarray) -> np.ndarray:
        """(N, P, C) -> (N, D) float32 unit vectors."""
        x = np.asarray(features)
        if x.shape[1:] != (self.parts, self.channels):
            raise ValueError(f"this projection maps ({self.parts}, {self.channels}) gait embeddings, got {x.shape[1:]}")
        z = (flatten_parts(x) - self.mean) @ self.matrix
        return (z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def pair_distances(self, probes: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Distances of pairs: probes (N, P, C), candidates (N, P, C) -> (N,) in [0, 2]."""
        if len(probes) == 0:
            return np.zeros(0, np.float32)
        return np.linalg.norm(self.project(probes) - self.project(candidates), axis=1)

    def save(self, path: str | Path, provenance: dict | None = None) -> str:
        """Write the projection (atomically); returns the file's sha256."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, format=np.asarray(FORMAT), mean=self.mean.astype(np.float32), matrix=self.matrix.astype(np.float32),
                 shape=np.asarray([self.parts, self.channels]), gait_model_version=np.asarray(self.gait_model_version),
                 provenance=np.asarray(json.dumps(provenance or {}, sort_keys=True)))
        os.replace(tmp, path)
        return hashlib.sha256(path.read_bytes()).hexdigest()

    @classmethod
    def load(cls, path: str | Path) -> GaitProjection:
        """A saved projection; a one-line error for a missing or foreign file."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"gait projection not found: {path} (fit one: python -m training.gait_projection --config "
                                    "configs/train/gait_projection_site.yaml)")
        try:
            with np.load(path, allow_pickle=False) as z:
                if "format" not in z.files or str(z["format"]) != FORMAT:
                    raise ValueError("no projection format tag")
                mean, matrix = z["mean"].astype(np.float64), z["matrix"].astype(np.float64)
                parts, channels = (int(v) for v in z["shape"])
                version = str(z["gait_model_version"])
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:  # all mean "not one of ours"
            raise ValueError(f"{path} is not a gait projection (expected format {FORMAT!r}): {exc}") from None
        if mean.shape != (parts * channels,) or matrix.ndim != 2 or matrix.shape[0] != parts * channels:
            raise ValueError(f"{path}: projection shapes {mean.shape} / {matrix.shape} do not match ({parts}, {channels})")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        return cls(mean, matrix, parts, channels, version, scorer=f"proj:{digest}")
