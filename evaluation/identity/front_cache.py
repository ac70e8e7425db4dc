"""Front-end runs of the identity benchmark kept between benchmark runs.

The front end (detect ... gait, reid) takes most of a benchmark run, and a variant that changes only
the gallery (scores, thresholds, re-ranker, auto-enrol settings) does not change it. A finished run is
kept beside its rendered site, as one ``.npz`` (no pickles), under a key made of everything that
decides its windows: the configuration of every stage before the gallery and of the runner and
sources, the source of the code that runs them, the content of every file that configuration names
and of the shipped weights a front-end stage can load, the files of the models directory the ``auto``
backends choose from, and whether the site's rendered masks replaced the segmenter. Change any of those
and the front end runs again; a cached run that cannot be read is run again too. Files inside the
repository go into the key by their path relative to it, so another checkout of the same commit reuses
the runs; refitting a weight file only the gallery side reads (``GALLERY_SIDE_WEIGHTS``) keeps them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from evaluation.identity.runs import AFTER_GALLERY, GALLERY_SECTION, FrontEndRun, run_front_end_isolated
from pipeline.config import PipelineConfig
from pipeline.messages import GaitDetection, GaitSegment, SilhouetteSequence, TrackWindow
from stages.checkpoints import sha256_of
from stages.model_files import models_available

log = logging.getLogger(__name__)

FORMAT = "gaitscope-front-end-run/2"  # 2: each window's group_share
REPO_ROOT = Path(__file__).resolve().parents[2]
# Stage packages that only read finished windows: their code does not change a front-end run.
NOT_FRONT_END = ("gallery", "rerank", "attributes")
# Shipped weights (by file-name prefix) that only those stages load: score fusions, re-rankers, attribute models.
GALLERY_SIDE_WEIGHTS = ("score_fusion", "cargait", "gait_projection", "clip_gar")
FOLDER = "front_end"
KEEP = 8  # runs kept per site, the most recently used: every change of the front end's code makes a new one


def front_end_key(config: PipelineConfig, truth_masks: Path | None = None, root: Path = REPO_ROOT) -> str:
    """A short hash of what decides the windows ``run_front_end`` makes with ``config`` (see the module
    docstring); ``truth_masks``: the rendered masks that replace the segmenter, if any."""
    stages = {k: [s.backend, s.params] for k, s in config.stages.items()
              if k != GALLERY_SECTION and k not in AFTER_GALLERY}
    # Files the configuration names, and the shipped weights the stages load when it names none.
    named = {Path(v).resolve() for v in _strings(stages) if _is_file(v)}
    named |= {p.resolve() for p in front_end_weights(root)}
    key = {
        "format": FORMAT,
        "stages": stages,
        "source": config.source,
        "runner": {k: v for k, v in config.runner.items() if k != "progress"},
        "code": source_digest(root),
        "files": sorted([_key_path(p, root), sha256_of(p)] for p in named),
        "models": models_available([s.params.get("models_dir") for s in config.stages.values()]),
        "truth_masks": None if truth_masks is None else sha256_of(truth_masks),
    }
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def front_end_weights(root: Path = REPO_ROOT) -> list[Path]:
    """The shipped weight files a front-end stage may load without the configuration naming them."""
    return [p for p in sorted((root / "weights").glob("*"))
            if p.is_file() and not p.name.startswith(GALLERY_SIDE_WEIGHTS)]


def _key_path(path: Path, root: Path) -> str:
    """``path`` relative to the repository when inside it (the same in every checkout), else absolute."""
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def source_digest(root: Path = REPO_ROOT) -> str:
    """A hash of the code a front-end run executes: the stages before the gallery, the pipeline package
    and the benchmark's own front-end runner."""
    files = [*front_end_stage_files(root), *sorted((root / "pipeline").rglob("*.py")),
             *(root / "evaluation" / "identity" / n for n in ("runs.py", "truth_masks.py"))]
    return files_digest(files, root)[:16]


def front_end_stage_files(root: Path = REPO_ROOT) -> list[Path]:
    """The stage modules whose code can change a window (every package outside ``NOT_FRONT_END``)."""
    stages = root / "stages"
    return [p for p in sorted(stages.rglob("*.py")) if p.relative_to(stages).parts[0] not in NOT_FRONT_END]


def files_digest(files: list[Path], root: Path) -> str:
    """sha1 over each existing file's path relative to ``root`` and its bytes, in the given order."""
    digest = hashlib.sha1()
    for path in files:
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cached_run_path(site_folder: Path, key: str) -> Path:
    return Path(site_folder) / FOLDER / f"{key}.npz"


def front_end_run(config: PipelineConfig, videos: list[str], site_folder: Path, truth_masks: Path | None = None,
                  reuse: bool = True) -> tuple[FrontEndRun, bool]:
    """(run, whether it was read from the cache): ``run_front_end_isolated`` over a rendered site's
    ``videos``, kept in ``site_folder`` for the next benchmark run. reuse: False runs the front end
    even when a cached run exists (and replaces it)."""
    path = cached_run_path(site_folder, front_end_key(config, truth_masks))
    if reuse and path.is_file():
        try:
            run = load_run(path)
            os.utime(path)  # recently used: kept when older runs are let go
            return run, True
        except ValueError as exc:
            log.warning("%s; running the front end again", exc)
    run = run_front_end_isolated(config, videos, truth_masks)
    if not run.errors:  # a run that lost a source is not kept: the next benchmark run tries again
        save_run(path, run)
        _let_go_of_old_runs(path.parent)
    return run, False


def _let_go_of_old_runs(folder: Path, keep: int = KEEP) -> None:
    runs = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in runs[keep:]:
        old.unlink(missing_ok=True)


def save_run(path: Path, run: FrontEndRun) -> None:
    """Write ``run`` (windows without appearance crops, as ``run_front_end`` keeps them) to ``path``,
    atomically: an interrupted save leaves no file that looks complete."""
    windows = run.windows
    for w in windows:
        if w.identity is not None or w.attributes is not None:
            raise ValueError("only front-end windows (no identity, no attributes) can be cached")
    sources = sorted({w.source_id for w in windows})
    lengths = np.array([len(w.sequence) for w in windows], np.int64)
    seqs = [w.sequence for w in windows]

    def cat(name: str, dtype, shape: tuple[int, ...]) -> np.ndarray:
        parts = [np.asarray(getattr(s, name), dtype) for s in seqs]
        return np.concatenate(parts) if parts else np.zeros((0, *shape), dtype)

    gait_emb = [w.gait_embedding for w in windows if w.gait_embedding is not None]
    appearance = [w.appearance_embedding for w in windows if w.appearance_embedding is not None]
    arrays = {
        "meta": np.asarray(json.dumps({"format": FORMAT, "seconds": run.seconds, "frames": run.frames,
                                       "errors": run.errors, "batch_size": run.batch_size, "sources": sources})),
        "source": np.array([sources.index(w.source_id) for w in windows], np.int64),
        "track_id": np.array([w.track_id for w in windows], np.int64),
        "window_index": np.array([w.window_index for w in windows], np.int64),
        "is_final": np.array([w.is_final for w in windows], bool),
        "lengths": lengths,
        "frame_size": np.array([s.frame_size for s in seqs], np.int64).reshape(-1, 2),
        "silhouettes": cat("silhouettes", np.uint8, (64, 44)),
        "ratios": cat("ratios", np.float32, ()),
        "boxes": cat("boxes", np.float32, (4,)),
        "frame_indices": cat("frame_indices", np.int64, ()),
        "pts_s": cat("pts_s", np.float64, ()),
        "has_group_parts": np.array([s.group_parts is not None for s in seqs], bool),
        "group_parts": np.concatenate(
            [np.zeros(len(s), bool) if s.group_parts is None else np.asarray(s.group_parts, bool) for s in seqs]
        ) if seqs else np.zeros(0, bool),
        "gait": np.array([json.dumps(_gait_dict(w.gait)) for w in windows] or [""]),
        "has_gait_embedding": np.array([w.gait_embedding is not None for w in windows], bool),
        "gait_embedding": np.stack(gait_emb).astype(np.float32) if gait_emb else np.zeros((0, 1, 1), np.float32),
        "has_appearance": np.array([w.appearance_embedding is not None for w in windows], bool),
        "appearance": np.stack(appearance).astype(np.float32) if appearance else np.zeros((0, 1), np.float32),
        "model_versions": np.array([json.dumps(w.model_versions) for w in windows] or [""]),
        "window_errors": np.array([json.dumps(w.errors) for w in windows] or [""]),
        "group_share": np.array([np.nan if w.group_share is None else w.group_share for w in windows], np.float64),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
    np.savez_compressed(partial, **arrays)
    partial.replace(path)


def load_run(path: Path) -> FrontEndRun:
    """The run ``save_run`` wrote to ``path``; ValueError when the file is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable front-end run ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    ends = np.cumsum(data["lengths"])
    starts = ends - data["lengths"]
    gait_rows = np.cumsum(data["has_gait_embedding"]) - 1
    appearance_rows = np.cumsum(data["has_appearance"]) - 1
    windows = []
    for i in range(len(data["track_id"])):
        a, b = int(starts[i]), int(ends[i])
        sequence = SilhouetteSequence(
            silhouettes=data["silhouettes"][a:b], ratios=data["ratios"][a:b], boxes=data["boxes"][a:b],
            frame_indices=data["frame_indices"][a:b], pts_s=data["pts_s"][a:b],
            frame_size=(int(data["frame_size"][i, 0]), int(data["frame_size"][i, 1])),
            group_parts=data["group_parts"][a:b] if data["has_group_parts"][i] else None)
        windows.append(TrackWindow(
            source_id=meta["sources"][int(data["source"][i])], track_id=int(data["track_id"][i]),
            window_index=int(data["window_index"][i]), is_final=bool(data["is_final"][i]), sequence=sequence,
            gait=_gait_from(json.loads(str(data["gait"][i]))),
            gait_embedding=data["gait_embedding"][gait_rows[i]] if data["has_gait_embedding"][i] else None,
            appearance_embedding=data["appearance"][appearance_rows[i]] if data["has_appearance"][i] else None,
            model_versions=json.loads(str(data["model_versions"][i])),
            errors=json.loads(str(data["window_errors"][i])),
            group_share=None if np.isnan(data["group_share"][i]) else float(data["group_share"][i])))
    return FrontEndRun(windows, float(meta["seconds"]), int(meta["frames"]), list(meta["errors"]),
                       int(meta["batch_size"]))


def _gait_dict(gait: GaitDetection | None) -> dict | None:
    if gait is None:
        return None
    return {"segments": [[s.start, s.stop, s.score] for s in gait.segments], "walking_fraction": gait.walking_fraction,
            "route": gait.route, "appearance_segments": [[s.start, s.stop, s.score] for s in gait.appearance_segments]}


def _gait_from(data: dict | None) -> GaitDetection | None:
    if data is None:
        return None
    return GaitDetection([GaitSegment(int(a), int(b), float(s)) for a, b, s in data["segments"]],
                         float(data["walking_fraction"]), data["route"],
                         [GaitSegment(int(a), int(b), float(s)) for a, b, s in data["appearance_segments"]])


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def _is_file(value: str) -> bool:
    try:
        return bool(value) and Path(value).is_file()
    except (OSError, ValueError):
        return False
