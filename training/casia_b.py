"""CASIA-B silhouettes: readers for the compact shared copy and for OpenGait's pickle layout.

Compact copy (``data/casia-b``): one ``SID.npz.xz`` per subject; inside, one array per sequence
keyed ``TYPE/VIEW`` (``nm-01/090``), bit-packed ``(T, 64, 8)`` uint8; ``index.json`` maps
``SID/TYPE/VIEW`` to T. OpenGait layout: ``ROOT/SID/TYPE/VIEW/*.pkl``, each a pickled
``(T, 64, 64)`` uint8 array (0/255), as written by OpenGait's pretreatment.

Both readers yield :class:`CasiaSequence` with silhouettes ``(T, 64, 44)`` uint8 0/255: the
10 columns on each side are cut, as OpenGait's loader does for models that take 64x44 input.

API::

    reader = CasiaB(root)                       # compact copy; root defaults to ../shared/data/casia-b
    keys = reader.keys(subjects=TRAIN_SUBJECTS)  # list[SequenceKey], only sequences with >= min_frames
    seq = reader.load(keys[0])                  # CasiaSequence
    for seq in reader.iter_sequences(keys): ...  # decompresses each subject file once

    reader = OpenGaitPickles(root)              # OpenGait layout, same keys()/load()/iter_sequences()

Protocol constants (OpenGait/GaitSet standard): ``TRAIN_SUBJECTS`` 001-074, ``TEST_SUBJECTS``
075-124, ``GALLERY_TYPES`` nm-01..04, ``PROBE_TYPES`` {"NM": nm-05..06, "BG": bg-01..02,
"CL": cl-01..02}, ``VIEWS`` 000..180 step 18.
"""

from __future__ import annotations

import io
import json
import lzma
import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

TRAIN_SUBJECTS: tuple[str, ...] = tuple(f"{i:03d}" for i in range(1, 75))
TEST_SUBJECTS: tuple[str, ...] = tuple(f"{i:03d}" for i in range(75, 125))
ALL_SUBJECTS: tuple[str, ...] = TRAIN_SUBJECTS + TEST_SUBJECTS
VIEWS: tuple[str, ...] = tuple(f"{v:03d}" for v in range(0, 181, 18))
TYPES: tuple[str, ...] = tuple(
    [f"nm-{i:02d}" for i in range(1, 7)] + [f"bg-{i:02d}" for i in range(1, 3)] + [f"cl-{i:02d}" for i in range(1, 3)]
)
GALLERY_TYPES: tuple[str, ...] = ("nm-01", "nm-02", "nm-03", "nm-04")
PROBE_TYPES: dict[str, tuple[str, ...]] = {
    "NM": ("nm-05", "nm-06"),
    "BG": ("bg-01", "bg-02"),
    "CL": ("cl-01", "cl-02"),
}
CUT_COLUMNS = 10  # columns dropped on each side of the 64x64 frame -> 64x44
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "casia-b"


@dataclass(frozen=True, order=True)
class SequenceKey:
    """One CASIA-B sequence: subject "001".."124", type "nm-01".."cl-02", view "000".."180"."""

    subject: str
    type: str
    view: str

    @property
    def name(self) -> str:
        return f"{self.subject}/{self.type}/{self.view}"

    @classmethod
    def parse(cls, name: str) -> SequenceKey:
        subject, typ, view = name.split("/")
        return cls(subject, typ, view)


@dataclass(frozen=True)
class CasiaSequence:
    """A CASIA-B sequence. silhouettes: (T, 64, 44) uint8 0/255."""

    key: SequenceKey
    silhouettes: np.ndarray

    def __len__(self) -> int:
        return len(self.silhouettes)


def cut_sides(frames_64x64: np.ndarray) -> np.ndarray:
    """(T, 64, 64) -> (T, 64, 44): drop CUT_COLUMNS columns on each side (OpenGait's loader)."""
    if frames_64x64.ndim != 3 or frames_64x64.shape[1:] != (64, 64):
        raise ValueError(f"expected (T, 64, 64) silhouettes, got {frames_64x64.shape}")
    return np.ascontiguousarray(frames_64x64[:, :, CUT_COLUMNS:-CUT_COLUMNS])


def unpack_sequence(packed: np.ndarray) -> np.ndarray:
    """Bit-packed (T, 64, 8) uint8 -> (T, 64, 44) uint8 0/255."""
    bits = np.unpackbits(packed, axis=-1)  # (T, 64, 64) of 0/1
    return cut_sides(bits) * np.uint8(255)


def missing_root_message(root: Path) -> str:
    return f"CASIA-B not found at {root}: point root at the folder holding 001.npz.xz ... 124.npz.xz and index.json"


def select_keys(
    keys: Iterable[SequenceKey],
    subjects: Iterable[str] | None = None,
    types: Iterable[str] | None = None,
    views: Iterable[str] | None = None,
) -> list[SequenceKey]:
    """The keys among ``keys`` of the given subjects, types and views (None: any), sorted."""
    subj = None if subjects is None else set(subjects)
    typs = None if types is None else set(types)
    vws = None if views is None else set(views)
    return sorted(
        k
        for k in keys
        if (subj is None or k.subject in subj) and (typs is None or k.type in typs) and (vws is None or k.view in vws)
    )


class CasiaB:
    """Reader for the compact copy (one bit-packed ``SID.npz.xz`` per subject + ``index.json``).

    min_frames: sequences shorter than this are left out of ``keys()`` (CASIA-B has a few with
    1-5 frames, which no frame-sampling protocol can use); missing sequences are simply absent.
    """

    def __init__(self, root: str | Path = DEFAULT_ROOT, min_frames: int = 1) -> None:
        self.root = Path(root)
        index_path = self.root / "index.json"
        if not index_path.is_file():
            raise FileNotFoundError(missing_root_message(self.root))
        self.min_frames = int(min_frames)
        with open(index_path) as f:
            self.frame_counts: dict[str, int] = {k: int(v) for k, v in json.load(f).items()}

    def keys(
        self,
        subjects: Iterable[str] | None = None,
        types: Iterable[str] | None = None,
        views: Iterable[str] | None = None,
    ) -> list[SequenceKey]:
        """Sorted keys of the present sequences with at least ``min_frames`` frames, filtered."""
        long_enough = (SequenceKey.parse(name) for name, t in self.frame_counts.items() if t >= self.min_frames)
        return select_keys(long_enough, subjects, types, views)

    def num_frames(self, key: SequenceKey) -> int:
        return self.frame_counts[key.name]

    def load_subject_packed(self, subject: str) -> dict[str, np.ndarray]:
        """All sequences of one subject, still bit-packed: {"TYPE/VIEW": (T, 64, 8) uint8}."""
        path = self.root / f"{subject}.npz.xz"
        if not path.is_file():
            raise FileNotFoundError(f"CASIA-B subject file missing: {path}")
        with lzma.open(path) as f, np.load(io.BytesIO(f.read()), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def load(self, key: SequenceKey) -> CasiaSequence:
        """One sequence (decompresses its whole subject file: use iter_sequences for many)."""
        packed = self.load_subject_packed(key.subject)
        inner = f"{key.type}/{key.view}"
        if inner not in packed:
            raise KeyError(f"CASIA-B sequence {key.name} is not in {key.subject}.npz.xz")
        return CasiaSequence(key, unpack_sequence(packed[inner]))

    def iter_sequences(self, keys: Iterable[SequenceKey]) -> Iterator[CasiaSequence]:
        """Sequences for ``keys`` in subject order, each subject file decompressed once."""
        by_subject: dict[str, list[SequenceKey]] = {}
        for k in keys:
            by_subject.setdefault(k.subject, []).append(k)
        for subject in sorted(by_subject):
            packed = self.load_subject_packed(subject)
            for k in sorted(by_subject[subject]):
                arr = packed.get(f"{k.type}/{k.view}")
                if arr is not None:
                    yield CasiaSequence(k, unpack_sequence(arr))

    def load_packed(self, keys: Iterable[SequenceKey]) -> dict[SequenceKey, np.ndarray]:
        """Bit-packed (T, 64, 8) arrays for ``keys`` (8x smaller in memory than unpacked; unpack
        per clip with :func:`unpack_sequence`)."""
        out: dict[SequenceKey, np.ndarray] = {}
        by_subject: dict[str, list[SequenceKey]] = {}
        for k in keys:
            by_subject.setdefault(k.subject, []).append(k)
        for subject in sorted(by_subject):
            packed = self.load_subject_packed(subject)
            for k in by_subject[subject]:
                arr = packed.get(f"{k.type}/{k.view}")
                if arr is not None:
                    out[k] = arr
        return out


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and refuses every other global (pickles can run code)."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are accepted")


def load_numpy_pickle(path: str | Path) -> np.ndarray:
    """Load a pickled numpy array without allowing any other object type."""
    with open(path, "rb") as f:
        obj = _NumpyOnlyUnpickler(f).load()
    if not isinstance(obj, np.ndarray):
        raise pickle.UnpicklingError(f"{path} does not hold a numpy array (got {type(obj).__name__})")
    return obj


class OpenGaitPickles:
    """Reader for OpenGait's layout ``ROOT/SID/TYPE/VIEW/*.pkl`` ((T, 64, 64) or (T, 64, 44) uint8).

    Several pkl files in one sequence folder (OpenGait's multi-modal datasets) are not supported
    here: CASIA-B silhouettes have one.
    """

    def __init__(self, root: str | Path, min_frames: int = 1) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"OpenGait dataset folder not found: {self.root}")
        self.min_frames = int(min_frames)
        self._paths: dict[SequenceKey, Path] = {}
        for pkl in sorted(self.root.glob("*/*/*/*.pkl")):
            view_dir = pkl.parent
            key = SequenceKey(view_dir.parent.parent.name, view_dir.parent.name, view_dir.name)
            self._paths.setdefault(key, pkl)

    def keys(
        self,
        subjects: Iterable[str] | None = None,
        types: Iterable[str] | None = None,
        views: Iterable[str] | None = None,
    ) -> list[SequenceKey]:
        selected = select_keys(self._paths, subjects, types, views)
        if self.min_frames <= 1:
            return selected
        return [k for k in selected if len(load_numpy_pickle(self._paths[k])) >= self.min_frames]

    def load(self, key: SequenceKey) -> CasiaSequence:
        if key not in self._paths:
            raise KeyError(f"sequence {key.name} not found under {self.root}")
        arr = load_numpy_pickle(self._paths[key])
        if arr.ndim != 3 or arr.shape[1] != 64 or arr.shape[2] not in (44, 64):
            raise ValueError(f"{self._paths[key]}: expected (T, 64, 64) or (T, 64, 44) silhouettes, got {arr.shape}")
        arr = arr.astype(np.uint8, copy=False)
        if arr.shape[2] == 64:
            arr = cut_sides(arr)
        if arr.max(initial=0) == 1:  # 0/1 masks -> 0/255
            arr = arr * np.uint8(255)
        return CasiaSequence(key, arr)

    def iter_sequences(self, keys: Iterable[SequenceKey]) -> Iterator[CasiaSequence]:
        for k in sorted(keys):
            if k in self._paths:
                yield self.load(k)
