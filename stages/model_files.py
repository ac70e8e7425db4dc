"""Where third-party model files live: one directory laid out like the published model folders.

The directory is ``$GAITSCOPE_MODELS`` when set, else ``~/.cache/gaitscope/models``; a config may
name another one (``models_dir`` options of the backends that use it). Inside it each model keeps
its publisher's folder name, for example::

    yolox_nano/yolox_nano.onnx
    mediapipe_pose/pose_landmark_full.tflite
    pp_humanseg_v1_lite_192/model.pdmodel
    osnet_x0_25_msmt17/osnet_x0_25_msmt17.onnx

Nothing here downloads anything: a file is either present or reported missing.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import UserError

ENV_VAR = "GAITSCOPE_MODELS"
DEFAULT_MODELS_DIR = "~/.cache/gaitscope/models"


class ModelFileError(UserError):
    """A model file that is missing, unreadable, of the wrong shape, or lacks its runtime.

    The message is one line: the file, what is wrong with it, and what to do.
    """

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        super().__init__(f"{path}: {problem}; {fix}")
        self.path = Path(path)


def models_dir(override: str | Path | None = None) -> Path:
    """The models directory: ``override`` when given, else ``$GAITSCOPE_MODELS``, else the default."""
    chosen = override or os.environ.get(ENV_VAR) or DEFAULT_MODELS_DIR
    return Path(chosen).expanduser()


def find_model(relative: str | Path, override: str | Path | None = None) -> Path | None:
    """``models_dir(override) / relative`` when that file or folder exists, else None."""
    path = models_dir(override) / relative
    return path if path.exists() else None


def resolve_model_path(path: str | Path, override: str | Path | None = None) -> Path:
    """A user-given model path: absolute or ``~`` paths as they are, relative ones first against the
    working directory, then against the models directory (so ``yolox_nano/yolox_nano.onnx`` works)."""
    given = Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return given
    return models_dir(override) / given


def models_available(overrides: list[str | Path | None]) -> list[list]:
    """The files (relative path, size) of each models directory a configuration looks in: the default
    one (``$GAITSCOPE_MODELS`` or the cache) and any a stage names (``overrides``). ``auto`` backends
    choose by what is there, so results made with another set of files are not the same results."""
    out = []
    for folder in sorted({models_dir(o) for o in [*overrides, None]}):
        files = sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file()) \
            if folder.is_dir() else []
        out.append(files)
    return out
