"""Sequence embedding: many silhouette sequences through a gait model, packed along time.

Sequences are concatenated frame-wise into n=1 batches with their lengths (OpenGait's seqL), so
one forward pass serves many short sequences without padding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from stages.gait.model import GaitBase


def spread_positions(length: int, max_frames: int | None) -> np.ndarray:
    """Frame positions to embed: all frames, or ``max_frames`` spread evenly over the sequence
    (temporal max-pooling ignores order, so even spacing keeps every phase of the gait cycle)."""
    if max_frames is None or length <= max_frames:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, max_frames).round().astype(np.int64))


def steady_rate_positions(pts_s: np.ndarray, rate: float, max_frames: int | None) -> np.ndarray:
    """Frame positions for a model that reads frames in order at ``rate`` fps (the motion profile): the frame
    nearest each tick of a ``rate`` clock from the first frame's time on, so that a 30 fps source, a strided
    decode or a dropped frame still gives the profile steps of 1 / ``rate`` seconds. Ticks inside a gap
    repeat the frame nearest them. At most ``max_frames`` consecutive ticks, centred (spreading them out
    would change the time step). pts_s: (T,) increasing presentation times; when they are not
    (missing or broken timestamps) the frames are taken as already at ``rate``."""
    n = len(pts_s)
    times = np.asarray(pts_s, np.float64)
    if n < 2 or not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        positions = np.arange(n)
    else:
        ticks = times[0] + np.arange(int(np.floor((times[-1] - times[0]) * rate + 1e-6)) + 1) / rate
        right = np.searchsorted(times, ticks).clip(1, n - 1)
        positions = np.where(ticks - times[right - 1] <= times[right] - ticks, right - 1, right)
    if max_frames is not None and len(positions) > max_frames:
        start = (len(positions) - max_frames) // 2
        positions = positions[start:start + max_frames]
    return positions.astype(np.int64)


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
