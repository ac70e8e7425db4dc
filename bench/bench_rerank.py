"""Re-ranking latency per probe for the top-K = 10 list: CarGait next to k-reciprocal, same run.

    python bench/bench_rerank.py [--features ~/.cache/gaitscope/features/gar_casiab_test.npz]
                                 [--weights weights/cargait_robust.pt] [--threads 2]

Probes and gallery follow CASIA-B's test protocol (gallery nm-01..04 of all views, probes the other
sequences); without a feature file, random features of the shipped shape stand in. The initial
distances are computed once and not timed. CarGait is timed batched over probes, (a) projecting
probe and candidates on every call, and (b) with the gallery's attention projections computed once
at enrolment (what a persistent gallery can keep). k-reciprocal re-ranks the same probes against
the whole gallery (k1=20, k2=6, lambda=0.3), as it is defined; its time per probe is its total over
the probe batch divided by the number of probes. ``--gallery-size N`` replaces the data by random
features with an N-entry gallery, to show how each method's cost scales with the gallery.
Last, the gallery matcher's own CarGait path (``stages.gallery.search.Reranker``): 200 probes, each
against its top-K entries as pooled identities in one call, against the earlier way in the same
process (a call per identity, each de-duplicating its probe with ``np.unique(axis=0)``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from evaluation.kreciprocal import k_reciprocal_distances
from stages.gait.distance import part_distance
from stages.rerank.model import CarGait
from stages.rerank.weights import load_reranker
from training.casia_b import GALLERY_TYPES
from training.gait_features import FeatureSet


def best_of(fn, repeats: int) -> float:
    """Smallest wall time of ``repeats`` calls, in seconds (the machine is shared)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default="~/.cache/gaitscope/features/gar_casiab_test.npz")
    ap.add_argument("--weights", default=str(ROOT / "weights" / "cargait_robust.pt"))
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--probes", type=int, default=0, help="probes per timed batch (0: all probes of the protocol)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gallery-size", type=int, default=0, help="random gallery of this size instead of CASIA-B's")
    ap.add_argument("--parts", type=int, default=16, help="feature shape without a weights file")
    ap.add_argument("--channels", type=int, default=128, help="feature shape without a weights file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)

    weights = Path(args.weights).expanduser()
    if weights.is_file():
        model, info = load_reranker(weights)
        model_name = weights.name
        parts, channels = info.parts, info.channels
    else:
        parts, channels = args.parts, args.channels
        model = CarGait(parts, channels).eval()
        model_name = "untrained CarGait (no weights file)"
    path = Path(args.features).expanduser()
    if args.gallery_size:  # scaling run: k-reciprocal's cost grows with the gallery, CarGait's does not
        gallery = rng.normal(size=(args.gallery_size, parts, channels)).astype(np.float32)
        probes = rng.normal(size=(args.probes or 1000, parts, channels)).astype(np.float32)
        source = f"random features ({parts} x {channels}), {len(gallery)} gallery, {len(probes)} probes"
    elif path.is_file():
        fs = FeatureSet.load(path)
        gallery_mask = np.isin(fs.types, GALLERY_TYPES)
        gallery, probes = fs.features[gallery_mask], fs.features[~gallery_mask]
        source = f"{path.name}: {len(gallery)} gallery, {len(probes)} probes"
    else:  # CASIA-B test protocol sizes: 50 subjects x 4 nm x 11 views; 6 probe sequences per view
        gallery = rng.normal(size=(2200, parts, channels)).astype(np.float32)
        probes = rng.normal(size=(3300, parts, channels)).astype(np.float32)
        source = f"random features ({parts} x {channels}; no feature file), 2200 gallery, 3300 probes"
    if args.probes:
        probes = probes[rng.choice(len(probes), min(args.probes, len(probes)), replace=False)]
    print(f"{source}; {model_name}; K={args.k}; {args.threads} threads; batch of {len(probes)} probes")

    dist = part_distance(probes, gallery, "euc")
    top = np.argsort(dist, axis=1)[:, : args.k]
    fp = torch.as_tensor(probes)
    fg = torch.as_tensor(gallery)

    def cargait_cold() -> None:
        with torch.inference_mode():
            d = model.shortlist_distances(fp, fg[torch.as_tensor(top)])
        np.argsort(d.numpy(), axis=1)

    with torch.inference_mode():
        gallery_projected = model.project(fg)  # once, when the gallery is loaded

    def cargait_cached() -> None:
        with torch.inference_mode():
            cand = torch.as_tensor(top.reshape(-1))
            d = model.shortlist_distances(fp, fg[cand].view(len(probes), args.k, *fg.shape[1:]), gallery_projected.take(cand))
        np.argsort(d.numpy(), axis=1)

    g_g = part_distance(gallery, gallery, "euc")
    q_q = part_distance(probes, probes, "euc")

    def kreciprocal() -> None:
        k_reciprocal_distances(dist, q_q, g_g, 20, 6, 0.3)

    cold = best_of(cargait_cold, args.repeats) * 1000 / len(probes)
    cached = best_of(cargait_cached, args.repeats) * 1000 / len(probes)
    kr = best_of(kreciprocal, 1) * 1000 / len(probes)
    print(f"{'method':<34}{'ms/probe':>10}{'vs k-reciprocal':>18}")
    print(f"{'k-reciprocal (full gallery)':<34}{kr:>10.3f}{1.0:>17.1f}x")
    print(f"{'CarGait, projections per call':<34}{cold:>10.3f}{kr / cold:>17.1f}x")
    print(f"{'CarGait, gallery projections kept':<34}{cached:>10.3f}{kr / cached:>17.1f}x")
    one_call, per_identity = matcher_latency(model, probes, gallery, top, args.repeats)
    print(f"\nthe gallery matcher, one probe against its top {args.k} identities (pooled entries), ms/probe:")
    print(f"{'one call, probe projected once':<34}{one_call:>10.3f}")
    print(f"{'a call per identity, np.unique':<34}{per_identity:>10.3f}{per_identity / one_call:>17.1f}x slower")
    return 0


def matcher_latency(model: CarGait, probes: np.ndarray, gallery: np.ndarray, top: np.ndarray,
                    repeats: int, count: int = 200) -> tuple[float, float]:
    """ms per probe of the gallery's CarGait re-scoring (``stages.gallery.search.Reranker``) of one
    probe's shortlist in one call, and of the earlier way as the baseline: one call per identity,
    the probe de-duplicated with ``np.unique(axis=0)`` in each."""
    from stages.gallery.search import Reranker
    from stages.rerank.model import strip_euclidean

    reranker = Reranker(model, None, "cargait:bench")
    chosen = probes[:count]

    def one_call() -> None:
        for probe, shortlist in zip(chosen, top):
            reranker.pair_distances(np.repeat(probe[None], len(shortlist), axis=0), gallery[shortlist])

    def per_identity() -> None:
        for probe, shortlist in zip(chosen, top):
            for g in shortlist:
                pair = probe[None]
                with torch.inference_mode():
                    uniq, inverse = np.unique(pair.reshape(1, -1), axis=0, return_inverse=True)
                    pp = model.project(torch.as_tensor(uniq.reshape(-1, *pair.shape[1:]))).take(
                        torch.as_tensor(inverse.reshape(-1)))
                    ep, ec = model.condition(pp, model.project(torch.as_tensor(gallery[g][None])))
                    strip_euclidean(ep, ec)

    n = len(chosen)
    return best_of(one_call, repeats) * 1000 / n, best_of(per_identity, repeats) * 1000 / n


if __name__ == "__main__":
    raise SystemExit(main())
