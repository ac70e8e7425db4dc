"""Labelled DHS tracks from the synthetic walkers (``synth``): per-frame walking/standing and full/partial truth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stages.gait_detector.dhs import DHSConfig, extract_dhs
from stages.gait_detector.model import class_index
from training.gait_detector_data import LabeledDHS

ALL_BEHAVIOURS = ("walk", "stand", "walk_stand", "partial_walk", "partial_stand", "mixed")
MIXED_BEHAVIOURS = ("mixed", "walk_stand", "partial_walk")


def synthetic_tracks(
    first_identity: int,
    identities: int,
    seqs_per_identity: int,
    frames: int,
    seed: int,
    dhs_config: DHSConfig,
    fps: float = 25.0,
    frame_steps: Sequence[int] = (1, 2, 3),
    behaviours: Sequence[str] = ALL_BEHAVIOURS,
    frame_size: tuple[int, int] = (360, 480),
) -> list[LabeledDHS]:
    """Render identities ``first_identity ..`` and turn each sequence into a labelled DHS track.

    Each sequence keeps every n-th frame, n drawn from ``frame_steps`` (rendered at 25 fps: 25,
    12.5 and 8.3 fps), which covers the frame rates of surveillance cameras at the rendering cost
    of short walks. Frames the pretreatment dropped (``visible`` False) are left out, as the
    tracklet assembler leaves them out of real tracks.
    """
    from synth.dataset import generate_sequences

    tracks = []
    sequences = generate_sequences(
        identities, seqs_per_identity, frames, seed,
        behaviours=tuple(behaviours), frame_size=frame_size, fps=fps, crops=False, first_identity=first_identity,
    )
    for s in sequences:
        step = int(np.random.default_rng([seed, s.identity, s.sequence]).choice(frame_steps))
        keep = np.zeros(len(s), dtype=bool)
        keep[::step] = True
        keep &= np.asarray(s.visible, dtype=bool)
        if keep.sum() < 2:
            continue
        labels = np.array([class_index(bool(f), bool(w)) for f, w in zip(s.full_body[keep], s.walking[keep])])
        tracks.append(
            LabeledDHS(
                extract_dhs(s.silhouettes[keep], dhs_config),
                labels.astype(np.int64),
                f"synth/{s.identity}/{s.sequence}/{s.behaviour}@{fps / step:.3g}fps",
            )
        )
    return tracks


def synth_tracks(cfg: dict, dhs_config: DHSConfig, held_out: bool, behaviours: tuple[str, ...]) -> list[LabeledDHS]:
    """Synthetic walker tracks; held-out identities are a disjoint block of generator ids."""
    s = cfg["data"]["synth"]
    return synthetic_tracks(
        s["test_first_identity"] if held_out else 0,
        s["test_identities"] if held_out else s["train_identities"],
        seqs_per_identity=s["seqs_per_identity"],
        frames=cfg["evaluation"]["mixed_track_frames"] if held_out else s["frames"],
        seed=cfg["evaluation"]["seed"] if held_out else cfg["seed"],
        dhs_config=dhs_config,
        fps=float(s["fps"]),
        frame_steps=tuple(s["frame_steps"]),
        behaviours=behaviours,
        frame_size=tuple(s["frame_size"]),
    )
