"""Embedding extraction: many sequences through a gait model, packed along time.

Sequences are concatenated frame-wise into n=1 batches with their lengths (OpenGait's seqL), so
one forward pass serves many short sequences without padding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from stages.gait.model import GaitBase
from training.casia_b import CasiaB, SequenceKey

FEATURES_DIR = Path("~/.cache/gaitscope/features").expanduser()


def spread_positions(length: int, max_frames: int | None) -> np.ndarray:
    """Frame positions to embed: all frames, or ``max_frames`` spread evenly over the sequence
    (temporal max-pooling ignores order, so even spacing keeps every phase of the gait cycle)."""
    if max_frames is None or length <= max_frames:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, max_frames).round().astype(np.int64))


def sequence_seed(name: str) -> int:
    """A stable per-sequence seed (the corruption protocol draws the same noise for every model)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def _packs(
    items: Iterable[tuple[np.ndarray, np.ndarray | None]], batch_frames: int
) -> Iterator[list[tuple[np.ndarray, np.ndarray | None]]]:
    pack, frames = [], 0
    for item in items:
        if pack and frames + len(item[0]) > batch_frames:
            yield pack
            pack, frames = [], 0
        pack.append(item)
        frames += len(item[0])
    if pack:
        yield pack


FLIP_COMBINE = ("mean", "max")


@torch.inference_mode()
def embed_sequences(
    model: GaitBase,
    sequences: Iterable[tuple[np.ndarray, np.ndarray | None]],
    batch_frames: int = 1024,
    flip_test: str | None = None,
) -> np.ndarray:
    """Per-part embeddings (N, P, C) float32 for (silhouettes (T, 64, 44) uint8 0..255, ratios (T,)
    or None) pairs. A pack uses ratios only when every sequence in it has them.

    flip_test: also embed every sequence mirrored left-right (the same walk in the other
    direction) and combine the two embeddings element-wise by ``"mean"`` or ``"max"``, so that
    the embedding does not depend on the walking direction (twice the compute). None: no mirror.
    """
    if flip_test is not None and flip_test not in FLIP_COMBINE:
        raise ValueError(f"flip_test must be one of {FLIP_COMBINE} or None, got {flip_test!r}")
    model.eval()
    device = next(model.parameters()).device
    out = []
    for pack in _packs(sequences, batch_frames):
        sils = torch.from_numpy(np.concatenate([s for s, _ in pack])).to(device).float().div_(255.0).unsqueeze(0)
        ratios = None
        if all(r is not None for _, r in pack):
            ratios = torch.from_numpy(np.concatenate([r for _, r in pack]).astype(np.float32)).to(device).unsqueeze(0)
        lengths = [len(s) for s, _ in pack]
        emb = model(sils, ratios, seq_lengths=lengths).embeddings.float()
        if flip_test is not None:
            mirrored = model(sils.flip(-1), ratios, seq_lengths=lengths).embeddings.float()
            emb = (emb + mirrored) / 2 if flip_test == "mean" else torch.maximum(emb, mirrored)
        out.append(emb.cpu().numpy())
    if not out:
        return np.zeros((0, model.config.parts, model.config.embed_dim), np.float32)
    return np.concatenate(out).astype(np.float32)


def extract_casia_features(
    model: GaitBase,
    reader: CasiaB,
    keys: list[SequenceKey],
    max_frames: int | None,
    out_path: Path | None = None,
    batch_frames: int = 1024,
    progress: bool = True,
    corruption: str | None = None,
    flip_test: str | None = None,
) -> dict[str, np.ndarray]:
    """Embeddings of CASIA-B sequences: {"embeddings" (N, P, C), "labels", "types", "views"}
    (string arrays), saved as npz at ``out_path`` when given.

    corruption: a level of ``training.augment.CORRUPTION_LEVELS`` applied to the frames that are
    embedded, seeded per sequence (the same noise for every model). flip_test: see embed_sequences.
    """
    from training.augment import corrupt_fixed
    from tqdm import tqdm

    done: list[SequenceKey] = []

    def frames() -> Iterator[tuple[np.ndarray, None]]:
        for seq in tqdm(
            reader.iter_sequences(keys), total=len(keys), desc="embed", mininterval=10, disable=not progress
        ):
            done.append(seq.key)
            sils = seq.silhouettes[spread_positions(len(seq), max_frames)]
            if corruption is not None:
                sils = corrupt_fixed(sils, corruption, seed=sequence_seed(seq.key.name))
            yield sils, None

    emb = embed_sequences(model, frames(), batch_frames, flip_test)
    result = {
        "embeddings": emb,
        "labels": np.array([k.subject for k in done]),
        "types": np.array([k.type for k in done]),
        "views": np.array([k.view for k in done]),
    }
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(out_path.name + ".tmp.npz")
        np.savez(tmp, **result)
        tmp.replace(out_path)
    return result
