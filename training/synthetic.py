"""Synthetic walkers as gait training/evaluation sets (they have what CASIA-B lacks: resize ratios,
RGB crops, every view in both walking directions, surveillance camera heights and outfit changes).

Sets are generated with ``synth.dataset.generate_sequences`` (deterministic in the seed) and cached
as npz under ``~/.cache/gaitscope/synth`` (rendering costs ~0.06 s per 30-frame sequence without
crops, ~0.1 s with them, ~1 s with silhouettes from the pipeline's BlazePose segmenter on one core).
Identities are named ``s00000``, ... so that they sort after CASIA-B's ``001``..``124`` when both
are mixed in one set.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from training.sequences import SequenceSet, view_group_index

CACHE = Path("~/.cache/gaitscope/synth").expanduser()
VIEW_DEFAULTS = {"segmenter": None, "cameras": "surveillance", "frame_size": [480, 640]}


def synthetic_arrays(
    n_identities: int,
    seqs_per_identity: int,
    frames: int,
    seed: int,
    first_identity: int = 0,
    crops: bool = True,
    outfits: int = 1,
    mask_noise: float = 0.0,
    segmenter: str | None = None,
    cameras: str = "surveillance",
    frame_size: tuple[int, int] = (480, 640),
) -> dict[str, np.ndarray]:
    """Stacked walking sequences: silhouettes (N, T, 64, 44), ratios (N, T), crops (N, T, 128, 64, 3)
    BGR (only with ``crops``), identity (N,), condition (N,), outfit (N,), view_deg (N,). Frames the
    pretreatment dropped are kept as empty silhouettes (the walkers stay in view in 'walk' sequences).

    segmenter: None (silhouettes from the rendered masks, with ``mask_noise``), ``pose_crop`` (the
    pipeline's BlazePose crop segmenter on the rendered frames, model from the models directory) or
    ``pose_refine`` (the same with the mask refiner, ``stages.segment.refine``).
    cameras: a ``synth.dataset.CAMERA_RANGES`` name; frame_size: (height, width) of the cameras.
    """
    args = {
        "n_identities": n_identities,
        "seqs_per_identity": seqs_per_identity,
        "frames": frames,
        "seed": seed,
        "first_identity": first_identity,
    }
    from synth.dataset import CAMERA_RANGES, SEGMENTERS, make_segmenter

    if segmenter is not None and segmenter not in SEGMENTERS:
        raise ValueError(f"unknown segmenter {segmenter!r}; choose from {SEGMENTERS} or none")
    if cameras not in CAMERA_RANGES:
        raise ValueError(f"unknown cameras {cameras!r}; choose from {sorted(CAMERA_RANGES)}")
    extra = {"crops": crops, "outfits": outfits, "mask_noise": mask_noise}
    # Caches made before these options existed are keyed without them: they join the key when set.
    view = {"segmenter": segmenter, "cameras": cameras, "frame_size": list(frame_size)}
    extra.update({k: v for k, v in view.items() if v != VIEW_DEFAULTS[k]})
    # The oldest caches were keyed on ``args`` alone (crops on, one outfit, exact masks).
    key = args if extra == {"crops": True, "outfits": 1, "mask_noise": 0.0} else {**args, **extra}
    tag = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = CACHE / f"walkers_{tag}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    from synth.dataset import generate_sequences

    seqs = generate_sequences(behaviours=("walk",), **args, crops=crops, outfits=outfits, mask_noise=mask_noise,
                              segmenter=make_segmenter(segmenter), cameras=CAMERA_RANGES[cameras],
                              frame_size=tuple(frame_size))
    arrays = {
        "silhouettes": np.stack([s.silhouettes for s in seqs]),
        "ratios": np.stack([s.ratios for s in seqs]).astype(np.float32),
        "identity": np.array([s.identity for s in seqs]),
        "condition": np.array([s.condition for s in seqs]),
        "outfit": np.array([s.outfit for s in seqs]),
        "view_deg": np.array([s.view_deg for s in seqs], dtype=np.float32),
    }
    if crops:
        arrays["crops"] = np.stack([s.crops for s in seqs])
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return arrays


def _cache_chunk(args: tuple) -> None:
    synthetic_arrays(*args)


def identity_name(identity: int) -> str:
    return f"s{int(identity):05d}"


def synthetic_set(
    n_identities: int,
    seqs_per_identity: int,
    frames: int,
    seed: int = 0,
    first_identity: int = 0,
    crops: bool = True,
    outfits: int = 1,
    mask_noise: float = 0.0,
    segmenter: str | None = None,
    cameras: str = "surveillance",
    frame_size: tuple[int, int] = (480, 640),
    chunk: int = 250,
    workers: int = 1,
) -> SequenceSet:
    """A SequenceSet of synthetic walkers with ratios (and RGB crops when ``crops``), generated and
    cached ``chunk`` identities at a time (identity i depends only on (seed, i), so chunks compose;
    ``workers`` processes render the chunks that are not cached yet)."""
    chunks = [
        (min(chunk, first_identity + n_identities - start), seqs_per_identity, frames, seed, start, crops, outfits,
         mask_noise, segmenter, cameras, tuple(frame_size))
        for start in range(first_identity, first_identity + n_identities, chunk)
    ]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(min(workers, len(chunks))) as pool:
            list(pool.map(_cache_chunk, chunks))
    sils, names, ratios, rgb, views = [], [], [], [], []
    for args in chunks:
        a = synthetic_arrays(*args)
        sils += list(a["silhouettes"])
        views += [view_group_index(float(v)) for v in a["view_deg"]]
        names += [identity_name(i) for i in a["identity"]]
        ratios += list(a["ratios"])
        if crops:
            rgb += list(a["crops"])
    return SequenceSet(sils, names, ratios=ratios, rgb=rgb if crops else None, view_groups=views)
