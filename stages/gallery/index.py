"""FAISS inner-product index over unit vectors, exact or approximate, on GPU when one is present.

Kinds: "flat" (exact, the default for small galleries), "ivf" (IndexIVFFlat, ``nlist`` cells,
``nprobe`` searched) and "hnsw" (IndexHNSWFlat, ``hnsw_m`` links, ``ef_search``). Vectors are unit
norm, so inner product = cosine similarity. The index is derived data: the gallery rebuilds it from
SQLite whenever it changes shape (removals, IVF training), so no index needs in-place deletion.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

INDEX_KINDS = ("flat", "ivf", "hnsw")


@dataclass(frozen=True)
class IndexSpec:
    """How to index one modality. Approximate kinds fall back to flat below ``min_train`` vectors."""

    kind: str = "flat"
    nlist: int = 1024
    nprobe: int = 32
    hnsw_m: int = 32
    ef_search: int = 128
    ef_construction: int = 80
    min_train: int = 0  # 0: 39 vectors per IVF cell (FAISS's own minimum)

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; choose one of {INDEX_KINDS}")


def gpu_available() -> bool:
    return faiss.get_num_gpus() > 0


def build_index(vectors: np.ndarray, ids: np.ndarray, spec: IndexSpec) -> faiss.Index:
    """A CPU index holding ``vectors`` (N, D) float32 unit rows under int64 ``ids`` (N,)."""
    n, dim = vectors.shape
    kind = spec.kind
    if kind == "ivf":
        nlist = min(spec.nlist, max(1, n // 39))
        if n < max(spec.min_train, 39 * nlist) or nlist < 2:
            kind = "flat"
    if kind == "hnsw" and n < max(spec.min_train, 1):
        kind = "flat"
    if kind == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    elif kind == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(np.ascontiguousarray(vectors))
        ivf.nprobe = spec.nprobe
        index = faiss.IndexIDMap2(ivf)
    else:
        hnsw = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = spec.ef_construction
        hnsw.hnsw.efSearch = spec.ef_search
        index = faiss.IndexIDMap2(hnsw)
    if n:
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    return index


def apply_search_params(index: faiss.Index, spec: IndexSpec) -> None:
    """Set nprobe / efSearch on a (possibly re-loaded) index: FAISS does not persist efSearch."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(inner, faiss.IndexIVF):
        inner.nprobe = spec.nprobe
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = spec.ef_search


class SearchIndex:
    """The searchable form of an index: a GPU copy when a GPU is present, else the CPU index."""

    def __init__(self, cpu_index: faiss.Index, spec: IndexSpec) -> None:
        apply_search_params(cpu_index, spec)
        self.cpu = cpu_index
        self._search = cpu_index
        if gpu_available() and "HNSW" not in type(faiss.downcast_index(cpu_index.index)).__name__:
            self._resources = faiss.StandardGpuResources()
            self._search = faiss.index_cpu_to_gpu(self._resources, 0, cpu_index)

    @property
    def ntotal(self) -> int:
        return int(self.cpu.ntotal)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.cpu.add_with_ids(vectors, ids)
        if self._search is not self.cpu:
            self._search.add_with_ids(vectors, ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities (Q, k) float32, ids (Q, k) int64; -1 where fewer than k entries)."""
        if self.ntotal == 0 or k <= 0:
            q = len(queries)
            return np.zeros((q, 0), np.float32), np.zeros((q, 0), np.int64)
        sims, ids = self._search.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, self.ntotal))
        return sims, ids
