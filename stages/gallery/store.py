"""The persistent gallery: identities, their embeddings and metadata in SQLite, one FAISS index per modality.

Layout of a gallery directory::

    gallery.sqlite         identities, entries (raw embeddings + metadata), meta (versions, calibration)
    gait-g<N>.faiss        index of the gait entries at generation N (derived data)
    appearance-g<N>.faiss  same for appearance

Crash safety: SQLite is the source of truth and every write is one transaction (all or nothing),
which also bumps the modality's generation. Index files are written to a temporary name and renamed
into place, named by generation; an index whose generation is not the database's is ignored and
rebuilt from SQLite at open. So a kill at any moment leaves either the previous or the new gallery.

Each gallery is bound to the models that made its embeddings (``model:gait``, ``model:appearance``);
adding or searching with another model's embeddings is refused.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import faiss
import numpy as np

from stages.gallery.calibration import Calibration
from stages.gallery.index import IndexSpec, SearchIndex, build_index

FORMAT = "gaitscope-gallery-1"
MODALITIES = ("gait", "appearance")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    auto INTEGER NOT NULL DEFAULT 0,
    attributes TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    modality TEXT NOT NULL,
    features BLOB NOT NULL,
    shape TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    track_id INTEGER,
    t_start REAL,
    t_end REAL,
    attributes TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_modality ON entries(modality);
CREATE INDEX IF NOT EXISTS entries_identity ON entries(identity_id);
CREATE TABLE IF NOT EXISTS merges (
    id INTEGER PRIMARY KEY,
    kept TEXT NOT NULL,
    absorbed TEXT NOT NULL,
    entries INTEGER NOT NULL,
    evidence TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);
"""


class GalleryError(ValueError):
    """A gallery that cannot be used as asked (wrong format, unknown identity, ...)."""


class GalleryModelMismatch(GalleryError):
    """Embeddings from a model other than the one the gallery was built with."""


def search_vector(embedding: np.ndarray) -> np.ndarray:
    """Unit vector whose inner products equal OpenGait's cosine similarity (mean over parts).

    embedding: (P, C) per-part gait features or (D,) appearance features. Each part is L2-normalised
    and the concatenation scaled by 1/sqrt(P), so <u, v> = mean_p cos(u_p, v_p).
    """
    e = np.asarray(embedding, dtype=np.float32)
    if e.ndim == 1:
        e = e[None, :]
    norms = np.linalg.norm(e, axis=-1, keepdims=True)
    return (e / np.maximum(norms, 1e-12) / np.sqrt(e.shape[0])).reshape(-1)


@dataclass(frozen=True)
class EntryMeta:
    """Where an embedding came from. t_start/t_end in seconds of the source; attributes JSON-able."""

    identity: str
    source: str = ""
    track_id: int | None = None
    t_start: float | None = None
    t_end: float | None = None
    attributes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GalleryEntry:
    entry_id: int
    identity: str
    modality: str
    shape: tuple[int, ...]
    source: str
    track_id: int | None
    t_start: float | None
    t_end: float | None
    attributes: dict
    created: float


@dataclass(frozen=True)
class IdentitySummary:
    name: str
    auto: bool
    created: float
    entries: dict[str, int]
    attributes: dict


class Gallery:
    """A gallery directory opened for reading and writing. Thread-safe (one lock)."""

    def __init__(self, path: str | Path, index_spec: IndexSpec | None = None, create: bool = True) -> None:
        self.path = Path(path).expanduser()
        db = self.path / "gallery.sqlite"
        if not db.exists():
            if not create:
                raise GalleryError(f"no gallery at {self.path} (create one with `enroll`)")
            self.path.mkdir(parents=True, exist_ok=True)
        self.spec = index_spec or IndexSpec()
        self._lock = threading.RLock()
        self._db = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)  # idempotent; executescript manages its own transaction
        with self._transaction():
            fmt = self._meta("format")
            if fmt is None:
                self._set_meta("format", FORMAT)
            elif fmt != FORMAT:
                raise GalleryError(f"{self.path}: gallery format {fmt!r}, this version reads {FORMAT!r}")
        self._indexes: dict[str, SearchIndex] = {}
        self._dirty: set[str] = set()
        for modality in MODALITIES:
            self._open_index(modality)

    # -- SQLite helpers -------------------------------------------------------------------------
    def _transaction(self):
        db = self._db

        class _Tx:
            def __enter__(self_inner):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, exc, tb):
                db.execute("ROLLBACK" if exc_type else "COMMIT")
                return False

        return _Tx()

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def _generation(self, modality: str) -> int:
        return int(self._meta(f"generation:{modality}") or 0)

    # -- indexes --------------------------------------------------------------------------------
    def _index_file(self, modality: str, generation: int) -> Path:
        return self.path / f"{modality}-g{generation}.faiss"

    def _load_vectors(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        rows = self._db.execute(
            "SELECT id, features, shape FROM entries WHERE modality = ? ORDER BY id", (modality,)
        ).fetchall()
        if not rows:
            return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.stack([search_vector(np.frombuffer(r[1], np.float32).reshape(json.loads(r[2]))) for r in rows])
        return vecs, ids

    def _open_index(self, modality: str) -> None:
        generation = self._generation(modality)
        count = self.count(modality)
        file = self._index_file(modality, generation)
        cpu = None
        if file.exists():
            cpu = faiss.read_index(str(file))
            if cpu.ntotal != count:  # not the index of this database state: rebuild
                cpu = None
        if cpu is None:
            vecs, ids = self._load_vectors(modality)
            dim = vecs.shape[1] if len(vecs) else int(self._meta(f"dim:{modality}") or 1)
            cpu = build_index(vecs.reshape(len(vecs), dim), ids, self.spec)
            if count:
                self._dirty.add(modality)
        self._indexes[modality] = SearchIndex(cpu, self.spec)

    def flush(self) -> None:
        """Write changed indexes (temporary file, fsync, rename) and drop stale generations."""
        with self._lock:
            for modality in sorted(self._dirty):
                generation = self._generation(modality)
                final = self._index_file(modality, generation)
                tmp = final.with_suffix(".faiss.tmp")
                faiss.write_index(self._indexes[modality].cpu, str(tmp))
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, final)
                for old in self.path.glob(f"{modality}-g*.faiss*"):
                    if old != final:
                        old.unlink(missing_ok=True)
                dir_fd = os.open(self.path, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            self._dirty.clear()

    def close(self) -> None:
        with self._lock:
            self.flush()
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- model binding and calibration ----------------------------------------------------------
    def model_version(self, modality: str) -> str | None:
        return self._meta(f"model:{modality}")

    def check_model(self, modality: str, version: str) -> None:
        """Refuse embeddings of a model other than the one this gallery's ``modality`` was built with."""
        if modality not in MODALITIES:
            raise GalleryError(f"unknown modality {modality!r}; use one of {MODALITIES}")
        stored = self.model_version(modality)
        if stored is not None and version and stored != version:
            raise GalleryModelMismatch(
                f"gallery {self.path} holds {modality} embeddings of model {stored!r}, not {version!r}: "
                f"use a gallery built with {version!r} or re-enrol into a new one"
            )

    def calibration(self, modality: str, scorer: str) -> Calibration | None:
        text = self._meta(f"calibration:{modality}:{scorer}")
        return None if text is None else Calibration.from_json(text)

    def set_calibration(self, modality: str, calibration: Calibration) -> None:
        with self._lock, self._transaction():
            self.check_model(modality, calibration.model_version)
            self._set_meta(f"calibration:{modality}:{calibration.scorer}", calibration.to_json())

    # -- writes ---------------------------------------------------------------------------------
    def add(
        self,
        modality: str,
        embeddings: Sequence[np.ndarray],
        metas: Sequence[EntryMeta],
        model_version: str,
        auto: bool = False,
    ) -> list[int]:
        """Add embeddings ((P, C) gait or (D,) appearance) in one transaction; returns entry ids.

        Identities are created when new (``auto`` marks those created by auto-enrolment).
        """
        if len(embeddings) != len(metas):
            raise ValueError(f"{len(embeddings)} embeddings for {len(metas)} metadata records")
        if not embeddings:
            return []
        arrays = [np.ascontiguousarray(e, dtype=np.float32) for e in embeddings]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise GalleryError(f"embeddings of different shapes in one batch: {sorted(shapes)}")
        shape = arrays[0].shape
        with self._lock:
            self.check_model(modality, model_version)
            index = self._indexes[modality]
            dim = int(np.prod(shape))
            if index.ntotal and index.cpu.d != dim:
                raise GalleryError(f"{modality} embeddings of shape {shape} do not fit this gallery's dimension {index.cpu.d}")
            now = time.time()
            ids: list[int] = []
            with self._transaction():
                if self.model_version(modality) is None and model_version:
                    self._set_meta(f"model:{modality}", model_version)
                self._set_meta(f"dim:{modality}", str(dim))
                for a, m in zip(arrays, metas):
                    identity_id = self._identity_id(m.identity, auto, now)
                    cur = self._db.execute(
                        "INSERT INTO entries(identity_id, modality, features, shape, source, track_id, t_start, t_end, attributes, created)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (identity_id, modality, a.tobytes(), json.dumps(list(shape)), m.source, m.track_id,
                         m.t_start, m.t_end, json.dumps(m.attributes), now),
                    )
                    ids.append(int(cur.lastrowid))
                self._set_meta(f"generation:{modality}", str(self._generation(modality) + 1))
            vectors = np.stack([search_vector(a) for a in arrays])
            if index.ntotal == 0 and index.cpu.d != dim:
                self._indexes[modality] = SearchIndex(build_index(vectors, np.asarray(ids), self.spec), self.spec)
            else:
                index.add(vectors, np.asarray(ids, dtype=np.int64))
            self._dirty.add(modality)
            return ids

    def _identity_id(self, name: str, auto: bool, now: float) -> int:
        if not name:
            raise GalleryError("identity name must not be empty")
        row = self._db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return int(row[0])
        cur = self._db.execute("INSERT INTO identities(name, auto, created) VALUES (?, ?, ?)", (name, int(auto), now))
        return int(cur.lastrowid)

    def remove_identity(self, name: str) -> int:
        """Delete an identity and all its entries; returns the number of entries removed."""
        with self._lock:
            row = self._db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise GalleryError(f"no identity {name!r} in gallery {self.path}")
            per_modality = dict(self._db.execute(
                "SELECT modality, COUNT(*) FROM entries WHERE identity_id = ? GROUP BY modality", (row[0],)
            ).fetchall())
            with self._transaction():
                self._db.execute("DELETE FROM identities WHERE id = ?", (row[0],))
                for modality in per_modality:
                    self._set_meta(f"generation:{modality}", str(self._generation(modality) + 1))
            for modality in per_modality:
                vecs, ids = self._load_vectors(modality)
                cpu = build_index(vecs, ids, self.spec) if len(ids) else build_index(
                    np.zeros((0, self._indexes[modality].cpu.d), np.float32), ids, self.spec)
                self._indexes[modality] = SearchIndex(cpu, self.spec)
                self._dirty.add(modality)
            return int(sum(per_modality.values()))

    def merge_identities(self, kept: str, absorbed: str, evidence: dict | None = None) -> int:
        """Move every entry of ``absorbed`` to ``kept``, delete ``absorbed`` and record the merge (with the
        evidence that linked them) in one transaction; returns the number of entries moved. The
        indexes need no change: entry ids stay the same."""
        if kept == absorbed:
            raise GalleryError(f"cannot merge identity {kept!r} into itself")
        with self._lock:
            ids = {}
            for name in (kept, absorbed):
                row = self._db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
                if row is None:
                    raise GalleryError(f"no identity {name!r} in gallery {self.path}")
                ids[name] = int(row[0])
            with self._transaction():
                moved = self._db.execute("UPDATE entries SET identity_id = ? WHERE identity_id = ?",
                                         (ids[kept], ids[absorbed])).rowcount
                self._db.execute("DELETE FROM identities WHERE id = ?", (ids[absorbed],))
                self._db.execute("INSERT INTO merges(kept, absorbed, entries, evidence, created) VALUES (?, ?, ?, ?, ?)",
                                 (kept, absorbed, moved, json.dumps(evidence or {}), time.time()))
            return int(moved)

    def merges(self) -> list[dict]:
        """Recorded merges, oldest first: kept, absorbed, entries moved, evidence, created."""
        with self._lock:
            rows = self._db.execute("SELECT kept, absorbed, entries, evidence, created FROM merges ORDER BY id").fetchall()
        return [{"kept": k, "absorbed": a, "entries": n, "evidence": json.loads(e), "created": c} for k, a, n, e, c in rows]

    def new_identity_name(self, prefix: str = "person") -> str:
        """A fresh name ``<prefix>-<n>`` not used yet (for auto-enrolment)."""
        with self._lock:
            n = self._db.execute("SELECT COUNT(*) FROM identities").fetchone()[0] + 1
            while self._db.execute("SELECT 1 FROM identities WHERE name = ?", (f"{prefix}-{n:05d}",)).fetchone():
                n += 1
            return f"{prefix}-{n:05d}"

    # -- reads ----------------------------------------------------------------------------------
    def count(self, modality: str | None = None) -> int:
        if modality is None:
            return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM entries WHERE modality = ?", (modality,)).fetchone()[0])

    def index_size(self, modality: str) -> int:
        return self._indexes[modality].ntotal

    def search(self, modality: str, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest entries by inner product of search vectors (Q, D): (similarities (Q, k), entry ids (Q, k))."""
        with self._lock:
            return self._indexes[modality].search(vectors, k)

    def features(self, entry_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Raw embeddings of entries, by id."""
        ids = sorted({int(i) for i in entry_ids if i >= 0})
        if not ids:
            return {}
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, features, shape FROM entries WHERE id IN ({','.join('?' * len(ids))})", ids
            ).fetchall()
        return {int(r[0]): np.frombuffer(r[1], np.float32).reshape(json.loads(r[2])).copy() for r in rows}

    def identities_of(self, entry_ids: Sequence[int]) -> dict[int, str]:
        ids = sorted({int(i) for i in entry_ids if i >= 0})
        if not ids:
            return {}
        with self._lock:
            rows = self._db.execute(
                "SELECT e.id, i.name FROM entries e JOIN identities i ON i.id = e.identity_id "
                f"WHERE e.id IN ({','.join('?' * len(ids))})", ids
            ).fetchall()
        return {int(a): b for a, b in rows}

    def entry_ids_of(self, names: Sequence[str], modality: str) -> dict[str, list[int]]:
        """Entry ids of ``modality`` of each named identity (oldest first)."""
        names = sorted(set(names))
        if not names:
            return {}
        with self._lock:
            rows = self._db.execute(
                "SELECT i.name, e.id FROM entries e JOIN identities i ON i.id = e.identity_id "
                f"WHERE e.modality = ? AND i.name IN ({','.join('?' * len(names))}) ORDER BY e.id", (modality, *names)
            ).fetchall()
        out: dict[str, list[int]] = {n: [] for n in names}
        for name, entry in rows:
            out[name].append(int(entry))
        return out

    def identities_seen_with(self, source: str, t_start: float, t_end: float) -> set[str]:
        """Identities with an entry from ``source`` whose time span overlaps [t_start, t_end] (seconds)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT i.name FROM entries e JOIN identities i ON i.id = e.identity_id "
                "WHERE e.source = ? AND e.t_start IS NOT NULL AND e.t_start <= ? AND e.t_end >= ?", (source, t_end, t_start)
            ).fetchall()
        return {r[0] for r in rows}

    def sources_of(self, entry_ids: Sequence[int]) -> dict[int, str]:
        """Source of each entry, by id."""
        ids = sorted({int(i) for i in entry_ids if i >= 0})
        if not ids:
            return {}
        with self._lock:
            rows = self._db.execute(f"SELECT id, source FROM entries WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall()
        return {int(a): b for a, b in rows}

    def source_sums(self, modality: str) -> dict[str, tuple[int, np.ndarray]]:
        """Per source: (count, sum) of the unit embeddings of ``modality`` seen from it (see add_to_source_sums)."""
        prefix = f"source_sum:{modality}:"
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)).fetchall()
        out = {}
        for key, value in rows:
            if key.startswith(prefix):
                d = json.loads(value)
                out[key[len(prefix):]] = (int(d["count"]), np.asarray(d["sum"], np.float64))
        return out

    def add_to_source_sums(self, modality: str, sums: dict[str, tuple[int, np.ndarray]]) -> None:
        """Add (count, sum) per source to the stored per-source statistics, in one transaction."""
        if not sums:
            return
        with self._lock, self._transaction():
            for source, (count, total) in sums.items():
                key = f"source_sum:{modality}:{source}"
                old = self._meta(key)
                if old is not None:
                    d = json.loads(old)
                    count, total = count + int(d["count"]), np.asarray(total, np.float64) + np.asarray(d["sum"], np.float64)
                self._set_meta(key, json.dumps({"count": int(count), "sum": np.round(np.asarray(total, np.float64), 6).tolist()}))

    def identities(self) -> list[IdentitySummary]:
        with self._lock:
            rows = self._db.execute("SELECT id, name, auto, created, attributes FROM identities ORDER BY name").fetchall()
            counts = self._db.execute("SELECT identity_id, modality, COUNT(*) FROM entries GROUP BY identity_id, modality").fetchall()
        per: dict[int, dict[str, int]] = {}
        for identity_id, modality, n in counts:
            per.setdefault(identity_id, {})[modality] = n
        return [IdentitySummary(name, bool(auto), created, per.get(i, {}), json.loads(attrs)) for i, name, auto, created, attrs in rows]

    def entries(self, identity: str | None = None) -> list[GalleryEntry]:
        query = (
            "SELECT e.id, i.name, e.modality, e.shape, e.source, e.track_id, e.t_start, e.t_end, e.attributes, e.created "
            "FROM entries e JOIN identities i ON i.id = e.identity_id"
        )
        args: tuple = ()
        if identity is not None:
            query += " WHERE i.name = ?"
            args = (identity,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY e.id", args).fetchall()
        return [
            GalleryEntry(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], r[5], r[6], r[7], json.loads(r[8]), r[9])
            for r in rows
        ]

    def info(self) -> dict:
        """Format, models, sizes and calibrations (for `gallery list` and export)."""
        with self._lock:
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        return {
            "path": str(self.path),
            "format": meta.get("format"),
            "models": {m: meta.get(f"model:{m}") for m in MODALITIES},
            "entries": {m: self.count(m) for m in MODALITIES},
            "identities": int(self._db.execute("SELECT COUNT(*) FROM identities").fetchone()[0]),
            "calibrations": {k.partition(":")[2]: json.loads(v) for k, v in meta.items() if k.startswith("calibration:")},
        }
