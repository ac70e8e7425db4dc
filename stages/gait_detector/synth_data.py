"""Labelled DHS tracks from the synthetic walkers (``synth``): per-frame walking/standing and full/partial truth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stages.gait_detector.data import LabeledDHS
from stages.gait_detector.dhs import DHSConfig, extract_dhs
from stages.gait_detector.model import class_index

ALL_BEHAVIOURS = ("walk", "stand", "walk_stand", "partial_walk", "partial_stand", "mixed")
MIXED_BEHAVIOURS = ("mixed", "walk_stand", "partial_walk")


def synthetic_tracks(
    first_identity: int,
    identities: int,
    seqs_per_identity: int,
    frames: int,
    seed: int,
    dhs_config: DHSConfig,
    fps: Sequence[float] = (10.0, 25.0),
    behaviours: Sequence[str] = ALL_BEHAVIOURS,
    frame_size: tuple[int, int] = (360, 480),
) -> list[LabeledDHS]:
    """Render identities ``first_identity ..`` (split evenly across the frame rates ``fps``) and
    turn each sequence into a labelled DHS track.

    Frames the pretreatment dropped (``visible`` False) are left out, as the tracklet assembler
    leaves them out of real tracks.
    """
    from synth.dataset import generate_sequences

    tracks = []
    groups = np.array_split(np.arange(first_identity, first_identity + identities), len(fps))
    for rate, ids in zip(fps, groups):
        if len(ids) == 0:
            continue
        sequences = generate_sequences(
            len(ids), seqs_per_identity, frames, seed,
            behaviours=tuple(behaviours), frame_size=frame_size, fps=float(rate), crops=False,
            first_identity=int(ids[0]),
        )
        for s in sequences:
            keep = np.asarray(s.visible, dtype=bool)
            if keep.sum() < 2:
                continue
            labels = np.array([class_index(bool(f), bool(w)) for f, w in zip(s.full_body[keep], s.walking[keep])])
            tracks.append(
                LabeledDHS(
                    extract_dhs(s.silhouettes[keep], dhs_config),
                    labels.astype(np.int64),
                    f"synth/{s.identity}/{s.sequence}/{s.behaviour}@{rate:g}fps",
                )
            )
    return tracks
