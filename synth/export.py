"""Dataset exports of synthetic sequences: OpenGait layout, attribute labels, DHS windows.

OpenGait layout (``write_opengait``), one folder per sequence ``ROOT/ID/TYPE/VIEW/`` with
ID = identity as 5 digits, TYPE = ``{condition}-{n:02d}`` (n counts that identity's sequences of
that condition and view from 01), VIEW = viewing angle rounded to a degree, 3 digits (000-359):

- ``VIEW.pkl``: (T, 64, 64) uint8 0/255, the OpenGait pretreatment output of the rendered
  full-frame masks (stages.silhouette.opengait_pretreat), the same array format as CASIA-B's
  pkl files: OpenGait's loader (and stages.silhouette.cut_sides) cut it to the pipeline's 64x44;
- ``VIEW-ratios.pkl``: (T,) float32 box height / 64 (GADER's resize ratio);
- ``VIEW-rgb.pkl``: (T, 128, 64, 3) uint8 BGR box crops (stages.silhouette.crop_box), if rendered.

Frames the pretreatment drops (nothing visible) are left out of all three, as OpenGait does.
Beside the identity folders: ``sequences.json`` (one entry per sequence: folder, identity,
condition, outfit, camera, view, behaviour, per-frame walking / full_body flags of the kept frames),
``attributes.json`` (table and per-identity classes, see ``write_attributes``) and, when asked for,
``dhs.npz`` (``dhs_windows`` arrays plus ``classes``).

DHS windows (``dhs_windows``): GADER's detection input, the knee row of every silhouette stacked over
time (44 x L) for windows of several lengths, labelled by the frames' ground truth.
"""

from __future__ import annotations

import json
import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np

from synth.attributes import ATTRIBUTES, attribute_labels
from synth.dataset import SyntheticSequence

KNEE_ROW = 48  # row of a 64-high silhouette a quarter of the body height above the feet
DHS_CLASSES = ("full_walking", "full_standing", "partial_walking", "partial_standing")


def sequence_folder(seq: SyntheticSequence, n: int) -> Path:
    """Relative OpenGait folder ID/TYPE/VIEW of a sequence; n: its 1-based count in that (ID, cond, view)."""
    view = f"{round(seq.view_deg) % 360:03d}"
    return Path(f"{seq.identity:05d}") / f"{seq.condition}-{n:02d}" / view


class DatasetWriter:
    """Streams sequences to disk: OpenGait folders, then sequences.json, attributes.json and the
    DHS windows (dhs.npz) on ``close``. Keeps only the small per-sequence labels in memory."""

    def __init__(self, root: str | Path, opengait: bool = True, attributes: bool = True,
                 dhs_lengths: tuple[int, ...] = ()) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.opengait, self.attributes, self.dhs_lengths = opengait, attributes, tuple(dhs_lengths)
        self._counts: dict[tuple[int, str, int], int] = defaultdict(int)
        self._index: list[dict] = []
        self._attrs: dict[int, dict[str, int]] = {}
        self._dhs: list[dict[str, np.ndarray]] = []
        self.folders: list[Path] = []

    def add(self, seq: SyntheticSequence) -> None:
        self._attrs[seq.identity] = dict(seq.attributes)
        if self.dhs_lengths:
            self._dhs.append(dhs_windows([seq], self.dhs_lengths))
        if not self.opengait:
            return
        key = (seq.identity, seq.condition, round(seq.view_deg) % 360)
        self._counts[key] += 1
        rel = sequence_folder(seq, self._counts[key])
        folder = self.root / rel
        folder.mkdir(parents=True, exist_ok=True)
        keep = seq.visible
        view = rel.name
        _dump(folder / f"{view}.pkl", np.ascontiguousarray(seq.silhouettes64[keep]))
        _dump(folder / f"{view}-ratios.pkl", np.ascontiguousarray(seq.ratios[keep]))
        if seq.crops is not None:
            _dump(folder / f"{view}-rgb.pkl", np.ascontiguousarray(seq.crops[keep]))
        self._index.append({
            "folder": rel.as_posix(), "identity": seq.identity, "condition": seq.condition, "outfit": seq.outfit,
            "camera": seq.camera.name,
            "view_deg": round(seq.view_deg, 2), "behaviour": seq.behaviour, "frames": int(keep.sum()),
            "walking": seq.walking[keep].astype(int).tolist(), "full_body": seq.full_body[keep].astype(int).tolist(),
        })
        self.folders.append(folder)

    def close(self) -> None:
        if self.opengait:
            (self.root / "sequences.json").write_text(json.dumps(self._index))
        if self.attributes:
            write_attributes(self._attrs, self.root / "attributes.json")
        if self.dhs_lengths:
            merged = {k: np.concatenate([d[k] for d in self._dhs]) for k in self._dhs[0]} if self._dhs else {}
            np.savez_compressed(self.root / "dhs.npz", classes=np.asarray(DHS_CLASSES), **merged)


def write_opengait(seqs: list[SyntheticSequence], root: str | Path) -> list[Path]:
    """Write sequences in the OpenGait layout (plus sequences.json and attributes.json) under root;
    returns the sequence folders in order."""
    writer = DatasetWriter(root)
    for seq in seqs:
        writer.add(seq)
    writer.close()
    return writer.folders


def _dump(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        pickle.dump(array, f, protocol=4)


def write_attributes(classes: dict[int, dict[str, int]], path: str | Path) -> dict:
    """Attribute labels per identity (identity -> {name: class index}) as JSON:
    {"attributes": [[name, [labels]], ...], "identities": {"<id>": {"classes": {...}, "labels": {...}}}}."""
    per_id = {str(i): {"classes": dict(c), "labels": attribute_labels(c)} for i, c in sorted(classes.items())}
    data = {"attributes": [[name, labels] for name, labels in ATTRIBUTES], "identities": per_id}
    Path(path).write_text(json.dumps(data, indent=1))
    return data


def knee_row_dhs(silhouettes: np.ndarray, row: int = KNEE_ROW) -> np.ndarray:
    """(T, 64, W) silhouettes -> (W, T) uint8 DHS: the knee row of every frame, time along columns."""
    return np.ascontiguousarray(silhouettes[:, row, :].T)


def frame_classes(walking: np.ndarray, full_body: np.ndarray) -> np.ndarray:
    """(T,) int64 per-frame DHS class index (DHS_CLASSES order)."""
    return np.where(full_body, 0, 2) + np.where(walking, 0, 1)


def dhs_windows(seqs: list[SyntheticSequence], lengths: tuple[int, ...] = (10, 20, 30),
                purity: float = 0.8) -> dict[str, np.ndarray]:
    """Labelled DHS windows: for each length L, arrays ``dhs_L`` (N, 44, L) uint8, ``label_L`` (N,)
    int64 class (DHS_CLASSES), ``identity_L`` (N,) int64. Windows step by L // 2; a window's class
    is its majority frame class, kept when at least ``purity`` of its frames agree."""
    out: dict[str, list] = defaultdict(list)
    for seq in seqs:
        dhs = knee_row_dhs(seq.silhouettes)
        classes = frame_classes(seq.walking & seq.visible, seq.full_body & seq.visible)
        for length in lengths:
            for start in range(0, len(seq) - length + 1, max(length // 2, 1)):
                counts = np.bincount(classes[start:start + length], minlength=4)
                if counts.max() < purity * length:
                    continue
                out[f"dhs_{length}"].append(dhs[:, start:start + length])
                out[f"label_{length}"].append(int(counts.argmax()))
                out[f"identity_{length}"].append(seq.identity)
    result = {}
    for length in lengths:
        width = seqs[0].silhouettes.shape[2] if seqs else 44
        result[f"dhs_{length}"] = (np.stack(out[f"dhs_{length}"]) if out[f"dhs_{length}"]
                                   else np.zeros((0, width, length), np.uint8))
        result[f"label_{length}"] = np.asarray(out[f"label_{length}"], dtype=np.int64)
        result[f"identity_{length}"] = np.asarray(out[f"identity_{length}"], dtype=np.int64)
    return result


def load_pickle_array(path: str | Path) -> np.ndarray:
    """Load one exported pkl, accepting numpy arrays only (restricted unpickler)."""

    class _NumpyOnly(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if module.startswith("numpy") and name in {"ndarray", "dtype", "_reconstruct", "scalar",
                                                       "_frombuffer"}:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"{path}: refusing to unpickle {module}.{name}")

    with open(path, "rb") as f:
        obj = _NumpyOnly(f).load()
    if not isinstance(obj, np.ndarray):
        raise pickle.UnpicklingError(f"{path}: expected a numpy array, got {type(obj).__name__}")
    return obj
