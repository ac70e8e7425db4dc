"""Cross-camera gait-only Rank-1 on rendered walkers, split by same / changed outfit.

Held-out synthetic identities (``seed`` 2026, never used for training) each walk past five
cameras, every one placed at random as a surveillance camera (2-5 m high, 5-14 m away, 50-75
degrees field of view) with a random walking direction, and their masks get segmenter-like errors
(``synth.noise``, strength 1). The silhouettes are made the way the pipeline makes them
(``stages.silhouette`` pretreatment of the full-frame mask, with resize ratios).

- sequence 0: usual clothes (outfit 0), nothing carried -> the gallery (one per identity);
- sequences 1-2: the same clothes, other cameras -> "same outfit" probes;
- sequences 3-4: other clothes (outfit 1) with a coat (3) or a bag (4), other cameras ->
  "changed outfit" probes (for silhouettes the coat and the bag are what changes the shape).

Rank-1: the nearest gallery sequence (OpenGait's per-part Euclidean distance) has the probe's
identity; chance is 1 / identities.

Direction handling (``direction_handling``): the same Rank-1 with each sequence embedded as it is,
averaged with its mirror image (the gait stage's ``flip_test: mean``), or mirrored first when its
walker moves right to left so that everyone walks the same way ("normalised"; the pipeline would
read the direction off the track's box motion, here the renderer's view angle tells it exactly, so
this is the best that normalising can do).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.gait.distance import part_distance

CACHE = Path("~/.cache/gaitscope/synth").expanduser()
SITE_SEED = 2026
# (condition, outfit) of the five sequences of an identity; the first is the gallery.
SEQUENCE_PLAN: tuple[tuple[str, int], ...] = (("nm", 0), ("nm", 0), ("nm", 0), ("cl", 1), ("bg", 1))


@dataclass(frozen=True)
class SiteWalks:
    """silhouettes: list of (T, 64, 44) uint8; ratios: list of (T,) float32; identity, outfit,
    condition, view_deg: (N,) per sequence; gallery: (N,) bool."""

    silhouettes: list[np.ndarray]
    ratios: list[np.ndarray]
    identity: np.ndarray
    outfit: np.ndarray
    condition: np.ndarray
    view_deg: np.ndarray
    gallery: np.ndarray


def render_site_walks(
    identities: int = 100, frames: int = 40, seed: int = SITE_SEED, mask_noise: float = 1.0
) -> SiteWalks:
    """Render (or read from the cache) the benchmark's walks."""
    key = {"identities": identities, "frames": frames, "seed": seed, "mask_noise": mask_noise, "plan": SEQUENCE_PLAN}
    tag = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = CACHE / f"sites_{tag}.npz"
    if not path.is_file():
        from synth.dataset import generate_identities, render_sequence

        sils, ratios, ident, outfit, cond, view = [], [], [], [], [], []
        for person in generate_identities(identities, seed):
            for k, (condition, dress) in enumerate(SEQUENCE_PLAN):
                rng = np.random.default_rng([seed, person.identity, k + 1])
                s = render_sequence(
                    person, k, condition, float(rng.uniform(0, 360)), "walk", frames, rng,
                    crops=False, mask_noise=mask_noise, outfit=dress,
                )
                sils.append(s.silhouettes)
                ratios.append(s.ratios.astype(np.float32))
                ident.append(person.identity)
                outfit.append(dress)
                cond.append(condition)
                view.append(s.view_deg)
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, silhouettes=np.stack(sils), ratios=np.stack(ratios), identity=np.array(ident),
                 outfit=np.array(outfit), condition=np.array(cond), view_deg=np.array(view, np.float32))
        tmp.replace(path)
    with np.load(path) as z:
        n_plan = len(SEQUENCE_PLAN)
        return SiteWalks(
            silhouettes=list(z["silhouettes"]),
            ratios=list(z["ratios"]),
            identity=z["identity"],
            outfit=z["outfit"],
            condition=z["condition"],
            view_deg=z["view_deg"],
            gallery=np.arange(len(z["identity"])) % n_plan == 0,
        )


def cross_camera_rank1(embeddings: np.ndarray, walks: SiteWalks, rerank: Callable | None = None) -> dict:
    """{"same_outfit": rank1, "changed_outfit": rank1, "probes": {...}, "identities": n} (fractions).
    rerank: a shortlist re-ranker over ``embeddings`` (``evaluation.rerank.ShortlistReranker``)."""
    g = walks.gallery
    dist = part_distance(embeddings[~g], embeddings[g])
    if rerank is not None:
        dist = rerank(np.flatnonzero(~g), np.flatnonzero(g), dist, np.ones(dist.shape, bool))
    predicted = walks.identity[g][np.argmin(dist, axis=1)]
    correct = predicted == walks.identity[~g]
    changed = walks.outfit[~g] != walks.outfit[g][0]  # the gallery wears outfit 0
    return {
        "same_outfit": round(float(correct[~changed].mean()), 4),
        "changed_outfit": round(float(correct[changed].mean()), 4),
        "probes": {"same_outfit": int((~changed).sum()), "changed_outfit": int(changed.sum())},
        "identities": int(g.sum()),
        "chance": round(1.0 / int(g.sum()), 4),
    }


def moves_right_to_left(walks: SiteWalks) -> np.ndarray:
    """(N,) bool: the walker crosses the image right to left (view angle in (180, 360); 90 is left
    to right, 0 and 180 straight towards and away from the camera)."""
    view = walks.view_deg % 360.0
    return (view > 180.0) & (view < 360.0)


def direction_variants(plain: np.ndarray, mirrored: np.ndarray, right_to_left: np.ndarray) -> dict[str, np.ndarray]:
    """Embeddings (N, P, C) of the three ways to handle the walking direction, from each sequence's
    embedding as it is and of its mirror image."""
    return {
        "plain": plain,
        "flip_mean": (plain + mirrored) / 2,
        "normalised": np.where(right_to_left[:, None, None], mirrored, plain),
    }


def direction_handling(model, walks: SiteWalks, plain: np.ndarray | None = None) -> dict[str, dict]:
    """Cross-camera Rank-1 (``cross_camera_rank1``) per way of handling the walking direction;
    ``plain``: the walks' embeddings as they are, when already computed."""
    from stages.gait.embedding import embed_sequences

    sequences = list(zip(walks.silhouettes, walks.ratios))
    if plain is None:
        plain = embed_sequences(model, sequences)
    mirrored = embed_sequences(model, [(np.ascontiguousarray(s[:, :, ::-1]), r) for s, r in sequences])
    variants = direction_variants(plain, mirrored, moves_right_to_left(walks))
    return {name: cross_camera_rank1(emb, walks) for name, emb in variants.items()}
