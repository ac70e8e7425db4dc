"""The persistent gallery: identities, their embeddings and metadata in SQLite, one FAISS index per modality.

Layout of a gallery directory::

    gallery.sqlite         identities, entries (raw embeddings + metadata), meta (versions, calibration),
                           merges, track_ends (boxes on each enrolled track's first and last frames)
    gait-g<N>.faiss        index of the gait entries at generation N (derived data)
    appearance-g<N>.faiss  same for appearance

Crash safety: SQLite is the source of truth and every write is one transaction (all or nothing),
which also bumps the modality's generation. Index files are written to a temporary name and renamed
into place, named by generation, and their generation, entry count and sha256 are recorded in the
database (``index:<modality>``); an index file that is missing, damaged or out of step with the
database (another generation, count or checksum) is ignored and rebuilt from SQLite. So a kill at any
moment leaves either the previous or the new gallery, and a damaged index is never carried forward.
A new auto-enrolled identity gets its name and its entries in one write transaction, so concurrent
processes never give one name to two people.

A database that is not a readable gallery (truncated, zeroed, emptied, garbled) is refused with one
line and left untouched; a deleted one is never silently replaced by an empty gallery while its
index files remain. A gallery on a read-only file system or without write permission opens read-only:
listing and searching work, writes are refused.

Each gallery is bound to the models that made its embeddings (``model:gait``, ``model:appearance``);
adding or searching with another model's embeddings is refused.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self
from urllib.parse import quote

import faiss
import numpy as np

from pipeline.errors import UserError
from stages.checkpoints import sha256_of
from stages.gallery.calibration import Calibration
from stages.gallery.index import IndexSpec, SearchIndex, build_index

log = logging.getLogger(__name__)

FORMAT = "gaitscope-gallery-1"
MODALITIES = ("gait", "appearance")

# Identities merged because later evidence linked them (created on first use in older galleries).
_MERGES = """CREATE TABLE IF NOT EXISTS merges (
    id INTEGER PRIMARY KEY,
    kept TEXT NOT NULL,
    absorbed TEXT NOT NULL,
    entries INTEGER NOT NULL,
    evidence TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
)"""

# A track's boxes on its first and last few frames (created on first use in older galleries): where one
# track hands its person over to another, consolidation compares them (stages.gallery.consolidation).
_TRACK_ENDS = """CREATE TABLE IF NOT EXISTS track_ends (
    source TEXT NOT NULL,
    track_id INTEGER NOT NULL,
    first_boxes TEXT NOT NULL,
    last_boxes TEXT NOT NULL,
    PRIMARY KEY (source, track_id)
)"""

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
"""


class GalleryError(UserError, ValueError):
    """A gallery that cannot be used as asked (wrong format, unknown identity, damaged, read-only, ...)."""


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


_HEADER = b"SQLite format 3\x00"


class _Rows:
    """The fetched result of one statement (fetched at once, so a damaged page fails inside ``execute``)."""

    def __init__(self, rows: list, lastrowid: int | None, rowcount: int) -> None:
        self._rows = rows
        self.lastrowid = lastrowid
        self.rowcount = rowcount

    def fetchone(self):
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list:
        return self._rows


class _Database:
    """The gallery's SQLite connection; every SQLite error becomes a one-line GalleryError naming the file."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._connection = connection
        self.path = path

    def execute(self, sql: str, args: Sequence = ()) -> _Rows:
        try:
            cursor = self._connection.execute(sql, args)
            rows = cursor.fetchall()
            return _Rows(rows, cursor.lastrowid, cursor.rowcount)
        except sqlite3.Error as exc:
            raise _database_error(self.path, exc) from None

    def close(self) -> None:
        self._connection.close()


def _database_error(db: Path, exc: sqlite3.Error) -> GalleryError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "locked" in text or "busy" in text:
        return GalleryError(f"{db}: busy ({text}): another process held it for longer than {_BUSY_TIMEOUT_S:g} s")
    if "readonly" in text or "read-only" in text:
        return GalleryError(f"{db} is read-only: cannot write to it")
    if "full" in text:
        return GalleryError(f"{db}: cannot write ({text}): free some space and retry; the gallery is unchanged")
    if "unable to open" in text:
        return GalleryError(f"{db}: cannot open ({text})")
    if isinstance(exc, sqlite3.OperationalError) and "no such table" not in text:
        return GalleryError(f"{db}: {text}")
    return GalleryError(f"{db}: damaged gallery database ({text}); it is left untouched: restore it from a "
                        "backup, or move it away to start a new gallery")


_BUSY_TIMEOUT_S = 30.0


def _create_database(db: Path) -> None:
    """A new empty gallery database, put in place atomically (a half-made file is never ``gallery.sqlite``)."""
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".gallery.", suffix=".sqlite.new", dir=db.parent)
        os.close(fd)
    except OSError as exc:
        raise GalleryError(f"cannot create a gallery at {db.parent}: {exc.strerror or exc}") from None
    tmp = Path(name)
    try:
        connection = sqlite3.connect(tmp, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
            connection.execute("INSERT INTO meta(key, value) VALUES ('format', ?)", (FORMAT,))
        finally:
            connection.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(tmp, db)  # never replaces: when another process created one first, theirs is used
        except FileExistsError:
            pass
    except sqlite3.Error as exc:
        raise _database_error(db, exc) from None
    except OSError as exc:
        raise GalleryError(f"cannot create a gallery at {db.parent}: {exc.strerror or exc}") from None
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)


def _check_header(db: Path) -> None:
    """Refuse files that cannot be a gallery database: empty, not SQLite, or shorter than their header says."""
    try:
        size = db.stat().st_size
        with open(db, "rb") as f:
            header = f.read(100)
    except OSError as exc:
        raise GalleryError(f"{db}: cannot read ({exc.strerror or exc})") from None
    problem = None
    if size == 0:
        problem = "empty file"
    elif len(header) < 100 or not header.startswith(_HEADER):
        problem = "not an SQLite database (zeroed or overwritten?)"
    else:
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        # A checkpoint writes page 1 (with the new page count) before the pages after it; killed in between,
        # the file is short but the write-ahead log still holds every page, and SQLite replays it on open.
        if header[24:28] == header[92:96] and pages and size < pages * page_size and not _has_wal(db):
            problem = f"truncated ({size} of {pages * page_size} bytes)"
    if problem:
        raise GalleryError(f"{db}: damaged gallery database ({problem}); it is left untouched: restore it from "
                           "a backup, or move it away to start a new gallery")


def _has_wal(db: Path) -> bool:
    """Whether SQLite's write-ahead log beside the database holds anything to replay."""
    try:
        return Path(f"{db}-wal").stat().st_size > 0
    except OSError:
        return False


def _writable(db: Path) -> bool:
    """Whether the database and its folder (for SQLite's -wal and -shm files) accept writes."""
    try:
        fd = os.open(db, os.O_RDWR)
        os.close(fd)
        with tempfile.TemporaryFile(dir=db.parent):
            pass
    except OSError:
        return False
    return True


def _connect(db: Path) -> tuple[_Database, bool]:
    """(connection, read_only) for an existing gallery database."""
    _check_header(db)
    uri = "file:" + quote(str(db.resolve()))
    try:
        if _writable(db):
            connection = sqlite3.connect(db, check_same_thread=False, isolation_level=None, timeout=_BUSY_TIMEOUT_S)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA foreign_keys=ON")
            connection.executescript(_SCHEMA)  # idempotent: tables added by later versions appear in old galleries
            return _Database(connection, db), False
        connection = sqlite3.connect(uri + "?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
        try:
            connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
        except sqlite3.OperationalError:
            connection.close()
            # WAL needs a -shm file it cannot create in a read-only folder: nobody can write there either
            connection = sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True, check_same_thread=False,
                                         isolation_level=None)
        return _Database(connection, db), True
    except sqlite3.Error as exc:
        raise _database_error(db, exc) from None


@dataclass(frozen=True)
class EntryMeta:
    """Where an embedding came from. t_start/t_end in seconds of the source; attributes JSON-able."""

    identity: str
    source: str = ""
    track_id: int | None = None
    t_start: float | None = None
    t_end: float | None = None
    attributes: dict = field(default_factory=dict)


BoxAt = tuple[float, float, float, float, float]  # (t in seconds of the source, x0, y0, x1, y1 in pixels)


@dataclass(frozen=True)
class TrackEnds:
    """A track's boxes on its first and on its last few frames, oldest first (empty: not known)."""

    first: tuple[BoxAt, ...] = ()
    last: tuple[BoxAt, ...] = ()


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
    """A gallery directory opened for reading and writing (or reading only). Thread-safe (one lock).

    read_only: set when the directory or database cannot be written (read-only file system, no
    permission); writes then raise GalleryError and indexes are rebuilt in memory only.
    """

    def __init__(self, path: str | Path, index_spec: IndexSpec | None = None, create: bool = True) -> None:
        self.path = Path(path).expanduser()
        db = self.path / "gallery.sqlite"
        if self.path.exists() and not self.path.is_dir():
            raise GalleryError(f"{self.path} is not a gallery directory (a file is in the way)")
        if not db.exists():
            leftovers = sorted(p.name for p in self.path.glob("*.faiss")) if self.path.is_dir() else []
            if leftovers:
                raise GalleryError(
                    f"{db} is missing but its index files remain ({leftovers[0]}, ...): the database was deleted; "
                    "restore it from a backup (an empty gallery is never started over it)"
                )
            if not create:
                raise GalleryError(f"no gallery at {self.path} (create one with `enroll`)")
            _create_database(db)
        self.spec = index_spec or IndexSpec()
        self._lock = threading.RLock()
        self._db, self.read_only = _connect(db)
        try:
            fmt = self._meta("format")
        except GalleryError:
            self._db.close()
            raise
        if fmt != FORMAT:
            self._db.close()
            found = "no gallery format" if fmt is None else f"gallery format {fmt!r}"
            raise GalleryError(f"{db}: {found}, this version reads {FORMAT!r}; the file is left untouched")
        self._indexes: dict[str, SearchIndex] = {}
        self._index_generation: dict[str, int] = {}  # the database generation each in-memory index reflects
        self._dirty: set[str] = set()
        for modality in MODALITIES:
            self._open_index(modality)

    # -- SQLite helpers -------------------------------------------------------------------------
    def _transaction(self):
        db = self._db
        if self.read_only:
            raise GalleryError(f"gallery {self.path} is read-only (file system or permissions): cannot write to it")

        class _Tx:
            def __enter__(self_inner):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, exc, tb):
                db.execute("ROLLBACK" if exc_type else "COMMIT")
                return False

        return _Tx()

    def _has_table(self, name: str) -> bool:
        """Whether the database has table ``name`` (tables of later versions appear in older galleries on first use)."""
        row = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        return row is not None

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

    def _stored_index(self, modality: str, generation: int, count: int) -> tuple[object | None, str]:
        """The index file of ``generation`` when its recorded count and checksum hold, else (None, why)."""
        file = self._index_file(modality, generation)
        if not file.exists():
            return None, "missing"
        record = json.loads(self._meta(f"index:{modality}") or "{}")
        if record.get("generation") != generation or record.get("entries") != count:
            return None, "not recorded for this database state"
        try:
            if sha256_of(file) != record.get("sha256"):
                return None, "damaged (checksum mismatch)"
            cpu = faiss.read_index(str(file))
        except (OSError, RuntimeError) as exc:
            return None, f"unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        if cpu.ntotal != count:
            return None, f"holds {cpu.ntotal} vectors for {count} entries"
        return cpu, ""

    def _open_index(self, modality: str) -> None:
        """Load the recorded index of the database's generation, or rebuild it from SQLite."""
        generation = self._generation(modality)
        count = self.count(modality)
        cpu, why = self._stored_index(modality, generation, count) if count else (None, "")
        if cpu is None:
            if count:
                level = logging.DEBUG if why == "missing" else logging.WARNING  # missing: killed before flush
                log.log(level, "gallery %s: %s index %s; rebuilt from gallery.sqlite (%d entries)",
                        self.path, modality, why, count)
            self._indexes[modality] = SearchIndex(self._build_from_database(modality), self.spec)
            if count:
                self._dirty.add(modality)
        else:
            self._indexes[modality] = SearchIndex(cpu, self.spec)
        self._index_generation[modality] = generation

    def _build_from_database(self, modality: str):
        vecs, ids = self._load_vectors(modality)
        dim = vecs.shape[1] if len(vecs) else int(self._meta(f"dim:{modality}") or 1)
        return build_index(vecs.reshape(len(vecs), dim), ids, self.spec)

    def _in_step(self, modality: str) -> SearchIndex:
        """The modality's index, rebuilt first when another process changed the database since."""
        generation = self._generation(modality)
        if generation != self._index_generation[modality]:
            self._indexes[modality] = SearchIndex(self._build_from_database(modality), self.spec)
            self._index_generation[modality] = generation
            self._dirty.add(modality)
        return self._indexes[modality]

    def flush(self) -> None:
        """Write changed indexes (temporary file, fsync, rename), record their checksums, drop stale files.

        Runs inside a write transaction, so concurrent writers never interleave index files; an index
        another process has since superseded is not written. A failed write leaves the database as it
        is (the index is rebuilt from it at the next open).
        """
        with self._lock:
            if self.read_only or not self._dirty:
                self._dirty.clear()
                return
            try:
                with self._transaction():
                    for modality in sorted(self._dirty):
                        self._write_index(modality)
            except OSError as exc:
                log.warning("gallery %s: could not write its index (%s); it is rebuilt from gallery.sqlite at "
                            "the next open", self.path, exc.strerror or exc)
            self._dirty.clear()

    def _write_index(self, modality: str) -> None:
        generation = self._generation(modality)
        if generation != self._index_generation[modality]:
            return  # superseded by another process's write
        final = self._index_file(modality, generation)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{modality}-g{generation}.", suffix=".faiss.tmp", dir=self.path)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            index = self._indexes[modality].cpu
            faiss.write_index(index, str(tmp))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            record = {"generation": generation, "entries": int(index.ntotal), "sha256": sha256_of(tmp)}
            os.replace(tmp, final)
        except RuntimeError as exc:  # faiss reports write errors (disk full) as RuntimeError
            raise OSError(str(exc).splitlines()[0] if str(exc) else "faiss write failed") from None
        finally:
            tmp.unlink(missing_ok=True)
        self._set_meta(f"index:{modality}", json.dumps(record))
        for old in [*self.path.glob(f"{modality}-g*.faiss*"), *self.path.glob(f".{modality}-g*.faiss.tmp")]:
            if old != final:
                old.unlink(missing_ok=True)
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        with self._lock:
            try:
                self.flush()
            finally:
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
        return self._write({modality: (embeddings, metas, model_version)}, auto)[1].get(modality, [])

    def enrol_new_identity(
        self, prefix: str, batches: Mapping[str, tuple[Sequence[np.ndarray], Sequence[EntryMeta], str]]
    ) -> tuple[str, dict[str, list[int]]]:
        """A new auto-enrolled identity ``<prefix>-NNNNN`` with its entries: (name, entry ids per modality).

        batches: per modality (embeddings, metadata, model version); the metadata's identity is
        replaced by the new name. The name is chosen and the entries added in one write transaction,
        so two processes enrolling into one gallery never share a name.
        """
        if not any(len(b[0]) for b in batches.values()):
            raise GalleryError("a new identity needs at least one embedding")
        return self._write(batches, True, prefix)

    def _write(
        self,
        batches: Mapping[str, tuple[Sequence[np.ndarray], Sequence[EntryMeta], str]],
        auto: bool,
        new_prefix: str | None = None,
    ) -> tuple[str | None, dict[str, list[int]]]:
        prepared: dict[str, tuple[list[np.ndarray], Sequence[EntryMeta], str]] = {}
        for modality, (embeddings, metas, model_version) in batches.items():
            if len(embeddings) != len(metas):
                raise ValueError(f"{len(embeddings)} embeddings for {len(metas)} metadata records")
            if modality not in MODALITIES:
                raise GalleryError(f"unknown modality {modality!r}; use one of {MODALITIES}")
            if not embeddings:
                continue
            arrays = [np.ascontiguousarray(e, dtype=np.float32) for e in embeddings]
            shapes = {a.shape for a in arrays}
            if len(shapes) != 1:
                raise GalleryError(f"embeddings of different shapes in one batch: {sorted(shapes)}")
            prepared[modality] = (arrays, metas, model_version)
        if not prepared:
            return None, {}
        with self._lock:
            now = time.time()
            ids: dict[str, list[int]] = {}
            name = None
            rebuild: set[str] = set()
            generations: dict[str, int] = {}
            with self._transaction():
                if new_prefix is not None:
                    name = self._allocate_name(new_prefix)
                for modality, (arrays, metas, model_version) in prepared.items():
                    self.check_model(modality, model_version)
                    dim = int(np.prod(arrays[0].shape))
                    stored_dim = self._meta(f"dim:{modality}")
                    if self.count(modality) and stored_dim is not None and int(stored_dim) != dim:
                        raise GalleryError(f"{modality} embeddings of shape {arrays[0].shape} do not fit this "
                                           f"gallery's dimension {stored_dim}")
                    if self.model_version(modality) is None and model_version:
                        self._set_meta(f"model:{modality}", model_version)
                    self._set_meta(f"dim:{modality}", str(dim))
                    shape = json.dumps(list(arrays[0].shape))
                    ids[modality] = []
                    for a, m in zip(arrays, metas):
                        identity_id = self._identity_id(m.identity if name is None else name, auto, now)
                        cur = self._db.execute(
                            "INSERT INTO entries(identity_id, modality, features, shape, source, track_id, t_start, "
                            "t_end, attributes, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (identity_id, modality, a.tobytes(), shape, m.source, m.track_id,
                             m.t_start, m.t_end, json.dumps(m.attributes), now),
                        )
                        ids[modality].append(int(cur.lastrowid))
                    generation = self._generation(modality)
                    if generation != self._index_generation[modality]:
                        rebuild.add(modality)  # another process wrote since: this index no longer fits
                    self._set_meta(f"generation:{modality}", str(generation + 1))
                    generations[modality] = generation + 1
                built = {m: self._build_from_database(m) for m in rebuild}  # inside: no other writer
            self._index_generation.update(generations)
            for modality, (arrays, _, _) in prepared.items():
                index = self._indexes[modality]
                if modality in built:
                    self._indexes[modality] = SearchIndex(built[modality], self.spec)
                elif index.ntotal == 0 and index.cpu.d != arrays[0].size:
                    vectors = np.stack([search_vector(a) for a in arrays])
                    self._indexes[modality] = SearchIndex(
                        build_index(vectors, np.asarray(ids[modality]), self.spec), self.spec)
                else:
                    vectors = np.stack([search_vector(a) for a in arrays])
                    index.add(vectors, np.asarray(ids[modality], dtype=np.int64))
                self._dirty.add(modality)
            return name, ids

    def _allocate_name(self, prefix: str) -> str:
        """A fresh ``<prefix>-<n>``, never the name of an identity merged away (records and merges still
        mention it); call inside the write transaction that adds its entries."""
        self._db.execute(_MERGES)
        n = self._db.execute("SELECT COUNT(*) FROM identities").fetchone()[0] + 1
        while self._db.execute("SELECT 1 FROM identities WHERE name = ? UNION SELECT 1 FROM merges WHERE absorbed = ?",
                               (f"{prefix}-{n:05d}",) * 2).fetchone():
            n += 1
        return f"{prefix}-{n:05d}"

    def _identity_id(self, name: str, auto: bool, now: float) -> int:
        if not name:
            raise GalleryError("identity name must not be empty")
        row = self._db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return int(row[0])
        cur = self._db.execute("INSERT INTO identities(name, auto, created) VALUES (?, ?, ?)", (name, int(auto), now))
        return int(cur.lastrowid)

    def remove_identity(self, name: str) -> int:
        """Delete an identity, all its entries and its tracks' end boxes; returns the number of entries removed."""
        with self._lock:
            with self._transaction():
                row = self._db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
                if row is None:
                    raise GalleryError(f"no identity {name!r} in gallery {self.path}")
                per_modality = dict(self._db.execute(
                    "SELECT modality, COUNT(*) FROM entries WHERE identity_id = ? GROUP BY modality", (row[0],)
                ).fetchall())
                if self._has_table("track_ends"):
                    self._db.execute("DELETE FROM track_ends WHERE (source, track_id) IN (SELECT source, track_id FROM "
                                     "entries WHERE identity_id = ?)", (row[0],))
                self._db.execute("DELETE FROM identities WHERE id = ?", (row[0],))
                built, generations = {}, {}
                for modality in per_modality:
                    generations[modality] = self._generation(modality) + 1
                    self._set_meta(f"generation:{modality}", str(generations[modality]))
                    built[modality] = self._build_from_database(modality)
            self._index_generation.update(generations)
            for modality, cpu in built.items():
                self._indexes[modality] = SearchIndex(cpu, self.spec)
                self._dirty.add(modality)
            return int(sum(per_modality.values()))

    def merge_identities(self, kept: str, absorbed: str, evidence: dict | None = None) -> int:
        """Move every entry of ``absorbed`` to ``kept``, delete ``absorbed`` and record the merge (with the
        evidence that linked them) in one transaction; returns the number of entries moved. Entry ids
        and vectors stay the same, so the indexes need no change."""
        if kept == absorbed:
            raise GalleryError(f"cannot merge identity {kept!r} into itself")
        with self._lock, self._transaction():
            ids = {}
            for name in (kept, absorbed):
                row = self._db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
                if row is None:
                    raise GalleryError(f"no identity {name!r} in gallery {self.path}")
                ids[name] = int(row[0])
            self._db.execute(_MERGES)
            moved = int(self._db.execute("SELECT COUNT(*) FROM entries WHERE identity_id = ?", (ids[absorbed],)).fetchone()[0])
            self._db.execute("UPDATE entries SET identity_id = ? WHERE identity_id = ?", (ids[kept], ids[absorbed]))
            self._db.execute("DELETE FROM identities WHERE id = ?", (ids[absorbed],))
            self._db.execute("INSERT INTO merges(kept, absorbed, entries, evidence, created) VALUES (?, ?, ?, ?, ?)",
                             (kept, absorbed, moved, json.dumps(evidence or {}), time.time()))
            return moved

    def merges(self) -> list[dict]:
        """Recorded merges, oldest first: kept, absorbed, entries moved, evidence, created."""
        with self._lock:
            if not self._has_table("merges"):
                return []
            rows = self._db.execute("SELECT kept, absorbed, entries, evidence, created FROM merges ORDER BY id").fetchall()
        return [{"kept": k, "absorbed": a, "entries": n, "evidence": json.loads(e), "created": c} for k, a, n, e, c in rows]

    # -- reads ----------------------------------------------------------------------------------
    def count(self, modality: str | None = None) -> int:
        if modality is None:
            return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM entries WHERE modality = ?", (modality,)).fetchone()[0])

    def index_size(self, modality: str) -> int:
        with self._lock:
            return self._in_step(modality).ntotal

    def search(self, modality: str, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest entries by inner product of search vectors (Q, D): (similarities (Q, k), entry ids (Q, k))."""
        with self._lock:
            return self._in_step(modality).search(vectors, k)

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

    def tracks_seen_with(self, source: str, track_id: int, t_start: float, t_end: float) -> list[tuple[str, float, float]]:
        """Other tracks of ``source`` whose time span (their entries' union, seconds) overlaps [t_start,
        t_end]: (identity, start, end) of each, the people that source showed beside this track."""
        with self._lock:
            rows = self._db.execute(
                "SELECT i.name, MIN(e.t_start), MAX(e.t_end) FROM entries e JOIN identities i ON i.id = e.identity_id "
                "WHERE e.source = ? AND e.track_id IS NOT ? AND e.t_start IS NOT NULL "
                "GROUP BY i.name, e.track_id HAVING MIN(e.t_start) <= ? AND MAX(e.t_end) >= ?",
                (source, track_id, t_end, t_start)
            ).fetchall()
        return [(name, float(lo), float(hi)) for name, lo, hi in rows]

    def record_track_ends(self, source: str, track_id: int, ends: TrackEnds) -> None:
        """Keep a track's end boxes: its first ones as first recorded (they never change), its last ones as now."""
        if not ends.first and not ends.last:
            return
        with self._lock, self._transaction():
            self._db.execute(_TRACK_ENDS)
            self._db.execute(
                "INSERT INTO track_ends(source, track_id, first_boxes, last_boxes) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(source, track_id) DO UPDATE SET last_boxes = excluded.last_boxes",
                (source, int(track_id), json.dumps(ends.first), json.dumps(ends.last)))

    def track_ends(self, tracks: Iterable[tuple[str, int | None]]) -> dict[tuple[str, int], TrackEnds]:
        """The recorded end boxes of these (source, track id) tracks; tracks without any are left out."""
        wanted = sorted({(source, int(track)) for source, track in tracks if track is not None})
        rows = []
        with self._lock:
            if not wanted or not self._has_table("track_ends"):
                return {}
            # Looked up by primary key, a few hundred tracks per statement (SQLite caps its parameters).
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                rows += self._db.execute(
                    "SELECT source, track_id, first_boxes, last_boxes FROM track_ends WHERE (source, track_id) IN "
                    f"(VALUES {','.join(['(?, ?)'] * len(chunk))})", [v for key in chunk for v in key]).fetchall()
        return {(source, int(track)): TrackEnds(tuple(tuple(b) for b in json.loads(first)),
                                                tuple(tuple(b) for b in json.loads(last)))
                for source, track, first, last in rows}

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
