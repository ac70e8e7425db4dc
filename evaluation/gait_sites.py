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
identity; chance is 1 / identities. ``by_views`` splits it by the views of the probe and of its
identity's gallery walk (``synth.realism.VIEW_GROUPS``: front/back, oblique, side), because a walk
seen head-on shows little of the legs' swing.

Walker masks: ``noise`` (above), or from cameras like the identity benchmark's sites (3-4.5 m high,
people 45-100 px tall in 360x480 frames) either ``exact`` (the rendered visible masks, no errors) or
segmented the pipeline's way (``pose_crop``, ``pose_refine``). The site-camera sets show the same
walks from the same cameras, so they differ only in their masks.

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
EXACT_MASKS = "exact"  # render_site_walks' segmenter for the site cameras' rendered masks


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
    identities: int = 100,
    frames: int = 40,
    seed: int = SITE_SEED,
    mask_noise: float = 1.0,
    segmenter: str | None = None,
) -> SiteWalks:
    """Render (or read from the cache) the benchmark's walks. segmenter: None, noisy rendered masks
    from surveillance cameras; else cameras like the identity benchmark's sites
    (``synth.dataset.SITE``, 360x480 frames) with ``exact`` rendered masks or the silhouettes of a
    ``synth.dataset.SEGMENTERS`` segmenter (``pose_crop``: the pipeline's BlazePose crop segmenter)."""
    key = {"identities": identities, "frames": frames, "seed": seed, "mask_noise": mask_noise, "plan": SEQUENCE_PLAN}
    if segmenter is not None:
        key = {**key, "mask_noise": 0.0, "segmenter": segmenter, "cameras": "site"}
    tag = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = CACHE / f"sites_{tag}.npz"
    if not path.is_file():
        from synth.dataset import (
            SITE, SITE_FRAME_SIZE, SURVEILLANCE, generate_identities, make_segmenter, render_sequence,
        )

        if segmenter is None:
            render = {"cameras": SURVEILLANCE, "mask_noise": mask_noise}
        else:
            segment = None if segmenter == EXACT_MASKS else make_segmenter(segmenter)
            render = {"cameras": SITE, "frame_size": SITE_FRAME_SIZE, "segmenter": segment}
        sils, ratios, ident, outfit, cond, view = [], [], [], [], [], []
        for person in generate_identities(identities, seed):
            for k, (condition, dress) in enumerate(SEQUENCE_PLAN):
                rng = np.random.default_rng([seed, person.identity, k + 1])
                s = render_sequence(
                    person, k, condition, float(rng.uniform(0, 360)), "walk", frames, rng,
                    crops=False, outfit=dress, **render,
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
        "by_views": _rank1_by_views(walks, correct, changed),
    }


def _rank1_by_views(walks: SiteWalks, correct: np.ndarray, changed: np.ndarray) -> dict[str, dict]:
    """Rank-1 per pair of view groups (gallery walk, probe; unordered), same and changed outfit."""
    from synth.realism import VIEW_GROUPS, view_group

    order = list(VIEW_GROUPS)
    group = np.array([view_group(float(v)) for v in walks.view_deg])
    gallery_group = dict(zip(walks.identity[walks.gallery], group[walks.gallery]))
    pairs = np.array([" + ".join(sorted((gallery_group[i], p), key=order.index))
                      for i, p in zip(walks.identity[~walks.gallery], group[~walks.gallery])])
    out = {}
    for pair in sorted(set(pairs), key=lambda x: [order.index(v) for v in x.split(" + ")]):
        here = pairs == pair
        out[pair] = {"same_outfit": _share(correct[here & ~changed]), "changed_outfit": _share(correct[here & changed]),
                     "probes": {"same_outfit": int((here & ~changed).sum()), "changed_outfit": int((here & changed).sum())}}
    return out


def _share(hits: np.ndarray) -> float | None:
    return round(float(hits.mean()), 4) if hits.size else None


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


@dataclass(frozen=True)
class SiteTrackWalks:
    """The walks of a rendered benchmark site as ground truth shows them: per camera and visit, the
    frames where the walker is walking with the whole body in view, silhouettes made from the
    visible masks. silhouettes / ratios: lists of (T, 64, 44) uint8 / (T,) float32; identity,
    clothes ((outfit, wears a coat), as the identity benchmark), camera: per walk."""

    silhouettes: list[np.ndarray]
    ratios: list[np.ndarray]
    identity: np.ndarray
    clothes: list[tuple[int, bool]]
    camera: np.ndarray


def site_track_walks(truth: dict, mask_noise: float = 0.0, min_frames: int = 30, seed: int = 0) -> SiteTrackWalks:
    """Walks of a site's ``groundtruth.json`` (as a dict, rendered with masks). mask_noise: strength of
    the training segmentation-error model (``synth.noise``) applied to every mask; 0 keeps them exact."""
    from evaluation.identity.truth import clothes_of
    from stages.silhouette import cut_sides, resize_ratio
    from synth.dataset import pretreat_mask
    from synth.groundtruth import decode_mask
    from synth.noise import segmentation_noise

    rng = np.random.default_rng(seed)
    visits = {int(v["visit"]): v for v in truth["visits"]}
    frames: dict[tuple[str, int], list[tuple[np.ndarray, float]]] = {}
    for camera in truth["cameras"]:
        name, size = camera["name"], (camera["height"], camera["width"])
        for people in truth["frames"][name]:
            for person in people:
                if "mask" not in person or person["state"] != "walking" or not person["full_body"]:
                    continue
                mask, roi = decode_mask(person["mask"]), tuple(person["mask"]["roi"])
                if mask_noise > 0:
                    mask, roi = segmentation_noise(mask, roi, size, rng, mask_noise)
                silhouette = pretreat_mask(mask, roi, camera["width"])
                if silhouette is not None:
                    frames.setdefault((name, int(person["visit"])), []).append(
                        (cut_sides(silhouette), resize_ratio(person["box"])))
    keys = [k for k in sorted(frames) if len(frames[k]) >= min_frames]
    return SiteTrackWalks(
        silhouettes=[np.stack([s for s, _ in frames[k]]) for k in keys],
        ratios=[np.array([r for _, r in frames[k]], np.float32) for k in keys],
        identity=np.array([visits[v]["identity"] for _, v in keys]),
        clothes=[clothes_of(visits[v]) for _, v in keys],
        camera=np.array([c for c, _ in keys]),
    )


def pipeline_windows(length: int, every: int = 30, longest: int = 120, final: bool = False) -> list[slice]:
    """The frames of the windows the tracklet assembler emits for a track of ``length`` frames: every
    ``every`` frames, the last ``longest`` of them (``stages.tracklets``). final: also the window it
    emits when the track ends between two of those."""
    ends = list(range(every, length + 1, every))
    if final and length > 0 and (not ends or ends[-1] < length):
        ends.append(length)
    return [slice(max(0, end - longest), end) for end in ends]


def leave_out_rank1(embeddings: np.ndarray, identity: np.ndarray, clothes: list[tuple[int, bool]],
                    camera: np.ndarray) -> dict:
    """Cross-camera Rank-1 of every walk against the walks of the other cameras, split like the
    identity benchmark: "same" leaves out the person's walks in other clothes, "changed" those in the
    probe's clothes (only a look-independent cue can find the person then). A probe counts when its
    person has a walk of that kind on another camera."""
    dist = part_distance(embeddings, embeddings)
    same_clothes = np.array([[a == b for b in clothes] for a in clothes])
    hits: dict[str, list[bool]] = {"same_outfit": [], "changed_outfit": []}
    for p in range(len(identity)):
        other = camera != camera[p]
        mate = identity == identity[p]
        for kind, left_out in (("same_outfit", ~same_clothes[p]), ("changed_outfit", same_clothes[p])):
            candidates = other & ~(mate & left_out)
            if (mate & candidates).any():
                hits[kind].append(bool(identity[np.flatnonzero(candidates)[np.argmin(dist[p, candidates])]] == identity[p]))
    return {**{k: round(float(np.mean(v)), 4) if v else None for k, v in hits.items()},
            "probes": {k: len(v) for k, v in hits.items()}}


def site_gait_rank1(model, walks: SiteTrackWalks) -> dict[str, dict]:
    """``leave_out_rank1`` with each walk embedded whole, and as the pipeline sees a track: windows
    (``pipeline_windows``) embedded one by one and pooled by their mean, as the gallery pools a
    track's windows."""
    from stages.gait.embedding import embed_sequences

    whole = embed_sequences(model, list(zip(walks.silhouettes, walks.ratios)))
    pieces, owner = [], []
    for i, (sils, ratios) in enumerate(zip(walks.silhouettes, walks.ratios)):
        for window in pipeline_windows(len(sils)):
            pieces.append((sils[window], ratios[window]))
            owner.append(i)
    windows = embed_sequences(model, pieces)
    owner_array = np.array(owner)
    pooled = np.stack([windows[owner_array == i].mean(0) for i in range(len(walks.identity))])
    scores = {name: leave_out_rank1(emb, walks.identity, walks.clothes, walks.camera)
              for name, emb in (("whole_walk", whole), ("windows_mean", pooled))}
    return {**scores, "walks": len(walks.identity), "identities": int(len(np.unique(walks.identity)))}
