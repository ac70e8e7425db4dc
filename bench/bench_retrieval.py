"""Gallery retrieval: latency and recall@10 of FAISS IVF/HNSW against exact search, at 10k and 100k entries.

    python bench/bench_retrieval.py [--sizes 10000 100000] [--parts 16 --channels 256] [--threads 2]

Entries are synthetic per-part embeddings with identity structure (several entries per identity
around a centre drawn from a low-rank space), turned into gallery search vectors exactly as the
gallery does (per-part L2 normalisation). Exact search (IndexFlatIP) runs in the same process and
is the baseline: each approximate index prints its speed-up and its recall@10 against it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from stages.gallery.index import IndexSpec, build_index, gpu_available


def synthetic_vectors(n: int, parts: int, channels: int, rng: np.random.Generator, per_identity: int = 5) -> np.ndarray:
    """(n, parts * channels) unit search vectors of n / per_identity identities."""
    latent = 64
    basis = rng.normal(size=(parts, latent, channels)).astype(np.float32) / np.sqrt(latent)
    n_ids = max(1, n // per_identity)
    centres = rng.normal(size=(n_ids, latent)).astype(np.float32)
    out = np.empty((n, parts * channels), np.float32)
    for start in range(0, n, 8192):
        idx = np.arange(start, min(n, start + 8192))
        z = centres[idx % n_ids] + rng.normal(scale=0.5, size=(len(idx), latent)).astype(np.float32)
        f = np.einsum("nl,plc->npc", z, basis) + rng.normal(scale=0.3, size=(len(idx), parts, channels)).astype(np.float32)
        f /= np.linalg.norm(f, axis=2, keepdims=True)
        out[idx] = f.reshape(len(idx), -1) / np.sqrt(parts)
    return out


def timed_search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, float, float]:
    """(ids, batched ms/query, single-query ms)."""
    index.search(queries[:8], k)  # warm-up
    t = time.perf_counter()
    _, ids = index.search(queries, k)
    batched = (time.perf_counter() - t) * 1000 / len(queries)
    singles = queries[:20]
    t = time.perf_counter()
    for q in singles:
        index.search(q[None], k)
    single = (time.perf_counter() - t) * 1000 / len(singles)
    return ids, batched, single


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--parts", type=int, default=16)
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hnsw-max", type=int, default=20_000, help="build HNSW only up to this size (its build is slow on few cores)")
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"FAISS {faiss.__version__}, {'GPU' if gpu_available() else 'CPU'}, {args.threads} threads, "
          f"dim {args.parts}x{args.channels} = {args.parts * args.channels}")
    for n in args.sizes:
        x = synthetic_vectors(n, args.parts, args.channels, rng)
        ids = np.arange(n, dtype=np.int64)
        # queries: fresh samples of enrolled identities (same generator family, different noise)
        q = x[rng.choice(n, args.queries, replace=False)] + rng.normal(scale=0.2 / np.sqrt(x.shape[1]), size=(args.queries, x.shape[1])).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        nlist = int(np.sqrt(n))
        specs = [("flat", IndexSpec("flat"))]
        specs += [(f"ivf nlist={nlist} nprobe={p}", IndexSpec("ivf", nlist=nlist, nprobe=p)) for p in (8, 32, 64)]
        if n <= args.hnsw_max:
            specs += [(f"hnsw M=32 ef={e}", IndexSpec("hnsw", hnsw_m=32, ef_search=e)) for e in (64, 128)]
        print(f"\n{n} entries")
        print(f"  {'index':<28}{'build s':>9}{'ms/query (batch)':>18}{'ms/query (single)':>19}{'speed-up':>10}{'recall@10':>11}")
        exact_ids = None
        exact_ms = None
        built: dict[str, faiss.Index] = {}
        for name, spec in specs:
            key = spec.kind if spec.kind == "flat" else f"{spec.kind}"
            t = time.perf_counter()
            index = built.get(key)
            if index is None:
                index = build_index(x, ids, spec)
                built[key] = index
                build_s = time.perf_counter() - t
            else:
                build_s = 0.0
            inner = faiss.downcast_index(index.index)
            if isinstance(inner, faiss.IndexIVF):
                inner.nprobe = spec.nprobe
            if isinstance(inner, faiss.IndexHNSW):
                inner.hnsw.efSearch = spec.ef_search
            found, batched, single = timed_search(index, q, args.k)
            if exact_ids is None:
                exact_ids, exact_ms = found, batched
            recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(found, exact_ids)])
            print(f"  {name:<28}{build_s:>9.1f}{batched:>18.3f}{single:>19.3f}{exact_ms / batched:>9.1f}x{recall:>11.3f}")
        del built, x
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
