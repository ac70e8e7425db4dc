"""Synthetic walkers as gait training/evaluation sets (they have what CASIA-B lacks: resize ratios
and RGB crops, so ratio attention and RGB distillation can be trained).

Sets are generated with ``synth.dataset.generate_sequences`` (deterministic in the seed) and cached
as npz under ``~/.cache/gaitscope/synth`` because rendering costs ~0.3 s per 30-frame sequence.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from training.sequences import SequenceSet

CACHE = Path("~/.cache/gaitscope/synth").expanduser()


def synthetic_arrays(
    n_identities: int, seqs_per_identity: int, frames: int, seed: int, first_identity: int = 0
) -> dict[str, np.ndarray]:
    """Stacked walking sequences: silhouettes (N, T, 64, 44), ratios (N, T), crops (N, T, 128, 64, 3)
    BGR, identity (N,), condition (N,), view_deg (N,). Frames the pretreatment dropped are kept as
    empty silhouettes (the walkers stay in view in 'walk' sequences)."""
    args = {
        "n_identities": n_identities,
        "seqs_per_identity": seqs_per_identity,
        "frames": frames,
        "seed": seed,
        "first_identity": first_identity,
    }
    tag = hashlib.sha1(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
    path = CACHE / f"walkers_{tag}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    from synth.dataset import generate_sequences

    seqs = generate_sequences(behaviours=("walk",), crops=True, **args)
    arrays = {
        "silhouettes": np.stack([s.silhouettes for s in seqs]),
        "ratios": np.stack([s.ratios for s in seqs]).astype(np.float32),
        "crops": np.stack([s.crops for s in seqs]),
        "identity": np.array([s.identity for s in seqs]),
        "condition": np.array([s.condition for s in seqs]),
        "view_deg": np.array([s.view_deg for s in seqs], dtype=np.float32),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return arrays


def synthetic_set(
    n_identities: int, seqs_per_identity: int, frames: int, seed: int = 0, first_identity: int = 0
) -> SequenceSet:
    """A SequenceSet of synthetic walkers with ratios and RGB crops."""
    a = synthetic_arrays(n_identities, seqs_per_identity, frames, seed, first_identity)
    return SequenceSet(
        list(a["silhouettes"]), [str(i) for i in a["identity"]], ratios=list(a["ratios"]), rgb=list(a["crops"])
    )
