"""Running the chain over a rendered site: front end once, gallery stage replayed per variant.

The front end (detect ... gait, reid) is the expensive part and does not depend on the gallery's
settings, so a site is run once per front-end configuration with the gallery stage disabled, and
its track windows are kept in emission order without their appearance crops. Every variant then
feeds those windows, in the same order and batches, through a fresh gallery stage built from its
own config: the online decisions (auto-enrol) are what the full pipeline would have made, without
re-running detection for each gallery setting.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.app import build_stages, set_compute_threads
from pipeline.config import PipelineConfig, build, options_from
from pipeline.messages import SilhouetteSequence, TrackWindow
from pipeline.runner import Runner, RunnerOptions

log = logging.getLogger(__name__)

GALLERY_SECTION = "gallery"
# Stages that run after the gallery and do not change identities: left out of the front end.
AFTER_GALLERY = ("attributes",)


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(front-end overrides, gallery overrides) of a variant: gallery keys only change the replay."""
    gallery = [o for o in overrides if o.split(".", 1)[0].strip() == GALLERY_SECTION]
    return [o for o in overrides if o not in gallery], gallery


@dataclass
class FrontEndRun:
    """The windows of one site in the order the pipeline emitted them, and the run's statistics."""

    windows: list[TrackWindow]
    seconds: float
    frames: int
    errors: list[str]
    batch_size: int


def empty_silhouettes(frames: int) -> np.ndarray:
    """(frames, 64, 44) zeros that take no memory (a read-only broadcast view)."""
    return np.broadcast_to(np.zeros((1, 64, 44), np.uint8), (frames, 64, 44))


def _light(window: TrackWindow) -> TrackWindow:
    """A copy without crops and silhouettes: the gallery never reads them, and they are 3 MB a window."""
    seq = window.sequence
    return dataclasses.replace(window, sequence=dataclasses.replace(seq, crops=None, silhouettes=empty_silhouettes(len(seq))))


def run_front_end(config: PipelineConfig, sources: list[str]) -> FrontEndRun:
    """Run every stage before the gallery over ``sources`` (one run, sources interleaved as in a
    live multi-camera deployment) and keep all windows, intermediate and final."""
    from pipeline.sources import SourceOptions, expand_sources, open_source

    stages = {k: v for k, v in config.stages.items() if k != GALLERY_SECTION and k not in AFTER_GALLERY}
    front = dataclasses.replace(config, stages=stages)
    source_options = options_from(SourceOptions, front.source, "source")
    runner_options = options_from(RunnerOptions, {**front.runner, "progress": False}, "runner")
    set_compute_threads(runner_options)
    pipeline = build_stages(front)
    windows: list[TrackWindow] = []
    errors: list[str] = []

    def on_event(event) -> None:
        if event.kind == "error":
            errors.append(f"{event.source_id}: {event.message}")

    runner = Runner(pipeline.frame_stages, pipeline.assembler, pipeline.track_stages, runner_options)
    try:
        result = runner.run((open_source(s, source_options) for s in expand_sources(sources)),
                            on_window=lambda w: windows.append(_light(w)), on_event=on_event)
    finally:
        pipeline.close()
    for message in errors:
        log.error(message)
    return FrontEndRun(windows, result.seconds, sum(result.frames.values()), errors, runner_options.batch_size)


def _pack(window: TrackWindow) -> dict:
    """What scoring needs of a light window, as plain fields (a broadcast view would be pickled whole)."""
    seq = window.sequence
    return {"window": dataclasses.replace(window, sequence=None), "ratios": seq.ratios, "boxes": seq.boxes,
            "frame_indices": seq.frame_indices, "pts_s": seq.pts_s, "frame_size": seq.frame_size}


def _unpack(packed: dict) -> TrackWindow:
    seq = SilhouetteSequence(empty_silhouettes(len(packed["boxes"])), packed["ratios"], packed["boxes"],
                             packed["frame_indices"], packed["pts_s"], tuple(packed["frame_size"]))
    return dataclasses.replace(packed["window"], sequence=seq)


def _front_end_packed(config: PipelineConfig, sources: list[str]) -> tuple[list[dict], float, int, list[str], int]:
    run = run_front_end(config, sources)
    return [_pack(w) for w in run.windows], run.seconds, run.frames, run.errors, run.batch_size


def run_front_end_isolated(config: PipelineConfig, sources: list[str]) -> FrontEndRun:
    """``run_front_end`` in a child process: the models' memory goes back to the system when it ends,
    so that a benchmark of many runs stays within one run's memory."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        packed, seconds, frames, errors, batch_size = pool.submit(_front_end_packed, config, sources).result()
    return FrontEndRun([_unpack(p) for p in packed], seconds, frames, errors, batch_size)


def build_gallery_stage(config: PipelineConfig, gallery_dir: str | Path, **params):
    """The variant's gallery stage on a fresh gallery directory; ``params`` override its section."""
    from stages.catalog import GALLERIES

    spec = config.stages.get(GALLERY_SECTION)
    if spec is None:
        raise ValueError("the variant's config has no gallery section: nothing to identify with")
    return build(GALLERIES.load(spec.backend), {**spec.params, "gallery": str(gallery_dir), **params}, GALLERY_SECTION)


def fresh_windows(windows: list[TrackWindow]) -> list[TrackWindow]:
    """Copies with no identity decided, so that every replay starts from the front end's output."""
    return [dataclasses.replace(w, identity=None, model_versions=dict(w.model_versions), errors=list(w.errors))
            for w in windows]


def replay_gallery(config: PipelineConfig, run: FrontEndRun, **params) -> tuple[list[TrackWindow], int]:
    """Feed the run's windows through a fresh gallery stage in emission order and runner batches.

    Returns the windows with their identities (auto-enrol when the config or ``params`` ask) and
    the number of identities in the gallery afterwards.
    """
    windows = fresh_windows(run.windows)
    with tempfile.TemporaryDirectory(prefix="gaitscope-bench-gallery-") as tmp:
        stage = build_gallery_stage(config, Path(tmp) / "gallery", **params)
        try:
            for start in range(0, len(windows), run.batch_size):
                stage.process(windows[start : start + run.batch_size])
            identities = len(stage.gallery.identities())
        finally:
            stage.close()
    return windows, identities
