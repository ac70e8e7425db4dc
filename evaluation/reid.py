"""Appearance ReID evaluation on the mini-MARS query/gallery split (tracklet to tracklet).

MARS protocol: gallery tracklets of the query's identity seen by the query's camera are ignored
(cross-camera retrieval); queries left without a true match are skipped. Distances are cosine
(1 - inner product of L2-normalised track embeddings). ``--rendered`` adds held-out rendered walkers
(``synth.dataset``, seed 500: people no training recipe or benchmark site draws), each seen on three
sequences from random surveillance cameras and directions; every sequence queries all the others.
``--rendered-clothes`` adds the clothes-changing protocol of long-term ReID on other held-out walkers
(seed 501), each seen on six sequences in two outfits, with or without a coat: every sequence queries
the others with the same clothes (same clothes) and, with those left out, the others of its person in
other clothes (changed clothes).

    python -m evaluation.reid --weights weights/reid_mars.pt [--max-frames 32] [--rendered] [--rendered-clothes]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from evaluation.metrics import rank_metrics
from stages.reid.model import AppearanceNet, pool_track
from training.reid_data import DEFAULT_REID_ROOT, Tracklet, load_mars_split


def track_embeddings(model: AppearanceNet, tracklets: list[Tracklet]) -> np.ndarray:
    return np.stack([pool_track(model.embed_crops(t.crops)) for t in tracklets])


def evaluate_mars(
    model: AppearanceNet, root: Path = DEFAULT_REID_ROOT / "mini_mars", max_frames: int | None = 32
) -> dict:
    """{"rank1", "rank5", "map", "minp"} in percent, and the number of queries."""
    query = load_mars_split(root, "query", max_frames)
    gallery = load_mars_split(root, "gallery", max_frames)
    q, g = track_embeddings(model, query), track_embeddings(model, gallery)
    dist = 1.0 - q @ g.T
    q_pid, g_pid = np.array([t.pid for t in query]), np.array([t.pid for t in gallery])
    q_cam, g_cam = np.array([t.camid for t in query]), np.array([t.camid for t in gallery])
    valid = ~((q_pid[:, None] == g_pid[None, :]) & (q_cam[:, None] == g_cam[None, :]))
    usable = int(((q_pid[:, None] == g_pid[None, :]) & valid).any(1).sum())
    r = rank_metrics(dist, q_pid, g_pid, valid)
    return {
        "rank1": round(100 * r.rank(1), 2),
        "rank5": round(100 * r.rank(5), 2),
        "map": round(100 * r.map, 2),
        "minp": round(100 * r.minp, 2),
        "queries": usable,
    }


def evaluate_rendered(model: AppearanceNet, identities: int = 150, sequences: int = 3, frames: int = 8,
                      seed: int = 500) -> dict:
    """Sequence-to-sequence retrieval among rendered walkers (nm and bg, one outfit each):
    {"rank1", "map"} in percent and the number of query sequences."""
    from synth.dataset import generate_sequences

    seqs = [s for s in generate_sequences(identities, sequences, frames, seed=seed, crops=True, conditions=("nm", "bg"),
                                          frame_size=(360, 480)) if s.visible.any()]
    emb = np.stack([pool_track(model.embed_crops(s.crops[s.visible])) for s in seqs])
    pid = np.array([s.identity for s in seqs])
    valid = ~np.eye(len(seqs), dtype=bool)
    r = rank_metrics(1.0 - emb @ emb.T, pid, pid, valid)
    return {"rank1": round(100 * r.rank(1), 2), "map": round(100 * r.map, 2), "queries": len(seqs)}


def evaluate_rendered_clothes(model: AppearanceNet, identities: int = 100, sequences: int = 6, frames: int = 8,
                              seed: int = 501) -> dict:
    """Rendered walkers in two outfits (conditions nm, bg, cl; a coat is a change of clothes), scored
    by ``clothes_protocol``."""
    from synth.dataset import generate_sequences

    seqs = [s for s in generate_sequences(identities, sequences, frames, seed=seed, crops=True,
                                          conditions=("nm", "bg", "cl"), frame_size=(360, 480), outfits=2)
            if s.visible.any()]
    emb = np.stack([pool_track(model.embed_crops(s.crops[s.visible])) for s in seqs])
    clothes = np.array([s.outfit * 2 + (s.condition == "cl") for s in seqs])
    return clothes_protocol(emb, np.array([s.identity for s in seqs]), clothes)


def clothes_protocol(embeddings: np.ndarray, person: np.ndarray, clothes: np.ndarray) -> dict:
    """{"same_clothes": {"rank1", "map", "queries"}, "changed_clothes": {...}} (percent) of unit
    embeddings (N, D), each one querying the others by cosine distance.

    Same clothes: against all others, where its person also wears its clothes elsewhere. Changed
    clothes: against all others except its person's in its own clothes, where its person also wears
    other clothes (the clothes-changing protocol of PRCC / LTCC).
    """
    same_person = person[:, None] == person[None, :]
    same_clothes = same_person & (clothes[:, None] == clothes[None, :])
    others = ~np.eye(len(person), dtype=bool)
    dist = 1.0 - embeddings @ embeddings.T
    out = {}
    for name, valid, has in (("same_clothes", others, (same_clothes & others).any(1)),
                             ("changed_clothes", others & ~same_clothes, (same_person & ~same_clothes).any(1))):
        r = rank_metrics(dist[has], person[has], person, valid[has])
        out[name] = {"rank1": round(100 * r.rank(1), 2), "map": round(100 * r.map, 2), "queries": int(has.sum())}
    return out


def main(argv: list[str] | None = None) -> None:
    import torch

    from stages.reid.stage import DEFAULT_WEIGHTS, load_appearance_model

    ap = argparse.ArgumentParser(
        prog="python -m evaluation.reid", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    ap.add_argument("--root", default=str(DEFAULT_REID_ROOT / "mini_mars"))
    ap.add_argument("--max-frames", type=int, default=32)
    ap.add_argument("--rendered", action="store_true", help="also held-out rendered walkers (about a minute)")
    ap.add_argument("--rendered-clothes", action="store_true",
                    help="also rendered walkers who change clothes (about two minutes)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    model, version = load_appearance_model(args.weights)
    res = {"version": version, **evaluate_mars(model, Path(args.root), args.max_frames)}
    if args.rendered:
        res["rendered_walkers"] = evaluate_rendered(model)
    if args.rendered_clothes:
        res["rendered_walkers_clothes"] = evaluate_rendered_clothes(model)
    print(json.dumps(res))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
