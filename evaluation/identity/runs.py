"""Running the chain over a rendered site: the front end once, later stages replayed per variant.

The front end (detect ... gait, reid) is the expensive part, and most of it does not depend on the
settings a variant changes. A site is run once per front-end configuration with the gallery stage
disabled, and its track windows are kept in emission order without their appearance crops. A
variant that only changes the gait stages (``gait_detector``, ``gait``) re-runs just those on the
kept silhouettes, when appearance embeddings do not depend on routing (``reid.routes: all``). Every
variant then feeds the windows, in the same order and batches, through a fresh gallery stage built
from its own config: the online decisions (auto-enrol) are what the full pipeline would have made.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.app import build_stages, set_compute_threads
from pipeline.config import PipelineConfig, build, options_from
from pipeline.messages import TrackWindow, merged_names
from pipeline.runner import Runner, RunnerOptions

log = logging.getLogger(__name__)

GALLERY_SECTION = "gallery"
GAIT_SECTIONS = ("gait_detector", "gait")  # re-run on kept silhouettes when a variant changes only them
# Stages that run after the gallery and do not change identities: left out of the front end.
AFTER_GALLERY = ("attributes",)


def _section(override: str) -> str:
    return override.split(".", 1)[0].strip()


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(front-end, gait-stage, gallery) overrides of a variant, each group replayed on its own."""
    gallery = [o for o in overrides if _section(o) == GALLERY_SECTION]
    gait = [o for o in overrides if _section(o) in GAIT_SECTIONS]
    return [o for o in overrides if o not in gallery and o not in gait], gait, gallery


def gait_replayable(config: PipelineConfig) -> bool:
    """Whether the gait stages can be re-run alone: appearance embeddings must not depend on routing."""
    reid = config.stages.get("reid")
    return reid is None or reid.params.get("routes", "all") == "all"  # every window is the default


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
    """A copy without appearance crops (nothing after reid reads them; they are 3 MB a window)."""
    return dataclasses.replace(window, sequence=dataclasses.replace(window.sequence, crops=None))


def run_front_end(config: PipelineConfig, sources: list[str], truth_masks: Path | None = None) -> FrontEndRun:
    """Run every stage before the gallery over ``sources`` (one run, sources interleaved as in a
    live multi-camera deployment) and keep all windows, intermediate and final.

    truth_masks: a rendered site's ``groundtruth.json``: its visible masks replace the segmenter
    (``evaluation.identity.truth_masks``)."""
    from pipeline.sources import SourceOptions, expand_sources, open_source

    stages = {k: v for k, v in config.stages.items() if k != GALLERY_SECTION and k not in AFTER_GALLERY}
    front = dataclasses.replace(config, stages=stages)
    source_options = options_from(SourceOptions, front.source, "source")
    runner_options = options_from(RunnerOptions, {**front.runner, "progress": False}, "runner")
    set_compute_threads(runner_options)
    prebuilt = None
    if truth_masks is not None:
        from evaluation.identity.truth_masks import TruthMasks

        prebuilt = {"segment": (TruthMasks(truth_masks), "ground-truth masks")}
    pipeline = build_stages(front, prebuilt)
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


def _front_end(config: PipelineConfig, sources: list[str], truth_masks: Path | None) -> FrontEndRun:
    return run_front_end(config, sources, truth_masks)


def _exit_with(parent: int) -> None:
    """Child initializer: end this process as soon as the benchmark that started it is gone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _in_child(function, *args):
    """``function(*args)`` in a child process: the models' memory goes back to the system when it
    ends, so that a benchmark of many runs stays within one run's memory."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_exit_with, initargs=(os.getpid(),)) as pool:
        return pool.submit(function, *args).result()


def run_front_end_isolated(config: PipelineConfig, sources: list[str], truth_masks: Path | None = None) -> FrontEndRun:
    """``run_front_end`` in a child process."""
    return _in_child(_front_end, config, sources, truth_masks)


def _gait_stages(config: PipelineConfig, run: FrontEndRun) -> FrontEndRun:
    from stages.catalog import STAGE_KINDS

    set_compute_threads(options_from(RunnerOptions, config.runner, "runner"))
    stages = [build(STAGE_KINDS[k].load(config.stages[k].backend), config.stages[k].params, k)
              for k in GAIT_SECTIONS if k in config.stages]
    windows = [dataclasses.replace(w, gait=None, gait_embedding=None, identity=None, errors=list(w.errors),
                                   model_versions={k: v for k, v in w.model_versions.items() if k not in GAIT_SECTIONS})
               for w in run.windows]
    for start in range(0, len(windows), run.batch_size):
        batch = windows[start : start + run.batch_size]
        for stage in stages:
            batch = stage.process(batch)
    return dataclasses.replace(run, windows=windows)


def rerun_gait_stages(config: PipelineConfig, run: FrontEndRun) -> FrontEndRun:
    """The run's windows through ``config``'s gait detector and gait recognizer again (emission
    order, runner batches, in a child process); appearance embeddings are kept."""
    if not gait_replayable(config):
        raise ValueError("gait stages can be re-run alone only when reid embeds every window (reid.routes: all)")
    return _in_child(_gait_stages, config, run)


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

    Returns the windows with their identities (auto-enrol when the config or ``params`` ask; a track
    named on the stage's second look takes that name on its final window; an identity later merged
    into another, online or when the stage closed, is renamed to the one it lives on in) and the
    number of identities in the gallery afterwards.
    """
    from stages.gallery.store import Gallery

    windows = fresh_windows(run.windows)
    with tempfile.TemporaryDirectory(prefix="gaitscope-bench-gallery-") as tmp:
        stage = build_gallery_stage(config, Path(tmp) / "gallery", **params)
        try:
            for start in range(0, len(windows), run.batch_size):
                stage.process(windows[start : start + run.batch_size])
        finally:
            stage.close()
        with Gallery(Path(tmp) / "gallery", create=False) as gallery:
            identities = len(gallery.identities())
            merges = gallery.merges()
    return follow_merges(named_late(windows, stage.outcome().get("named", [])), merges), identities


@dataclass(frozen=True)
class EnrolOrders:
    """Other emission orders to replay auto-enrolment in, besides the emitted one. count: how many
    (0: none); each shifts every camera's clock by a uniform random offset in
    [-max_offset_s, max_offset_s], drawn from seed."""

    count: int = 0
    max_offset_s: float = 3.0
    seed: int = 0

    @staticmethod
    def from_dict(data: dict, key: str = "enrol_orders") -> EnrolOrders:
        """From a config section; ``key`` names it in errors."""
        unknown = sorted(set(data) - {"count", "max_offset_s", "seed"})
        if unknown:
            raise ValueError(f"{key}: unknown key(s) {unknown}; expected count, max_offset_s, seed")
        orders = EnrolOrders(int(data.get("count", 0)), float(data.get("max_offset_s", 3.0)), int(data.get("seed", 0)))
        if orders.count < 0 or orders.max_offset_s < 0:
            raise ValueError(f"{key}: count and max_offset_s must not be negative (got {data})")
        return orders

    def shifts(self, cameras: list[str]) -> list[dict[str, float]]:
        """The camera clock offsets (seconds) of each other order; deterministic in the seed and the
        sorted camera names."""
        rng = np.random.default_rng(self.seed)
        names = sorted(set(cameras))
        return [dict(zip(names, rng.uniform(-self.max_offset_s, self.max_offset_s, len(names)).tolist()))
                for _ in range(self.count)]


def clock_shifted_order(t_end: np.ndarray, cameras: np.ndarray, offsets_s: dict[str, float]) -> np.ndarray:
    """Emission order of windows (end times ``t_end``, from ``cameras``) when each camera's clock is
    shifted by ``offsets_s[camera]``: by shifted end time, each camera's own windows kept in their
    order (its running latest time, since a final window can end before the one emitted before it)."""
    key = np.empty(len(t_end))
    latest: dict[str, float] = {}
    for row, (end, camera) in enumerate(zip(np.asarray(t_end, float).tolist(), np.asarray(cameras).tolist())):
        latest[camera] = max(latest.get(camera, -np.inf), end + offsets_s.get(camera, 0.0))
        key[row] = latest[camera]
    return np.lexsort((np.arange(len(key)), key))


def with_shifted_clocks(run: FrontEndRun, offsets_s: dict[str, float]) -> FrontEndRun:
    """The run's windows in the order a run with each source's clock shifted by ``offsets_s`` emits them."""
    t_end = np.asarray([float(w.sequence.pts_s[-1]) if len(w.sequence.pts_s) else 0.0 for w in run.windows])
    order = clock_shifted_order(t_end, np.asarray([w.source_id for w in run.windows]), offsets_s)
    return dataclasses.replace(run, windows=[run.windows[i] for i in order.tolist()])


def named_late(windows: list[TrackWindow], named: list[dict]) -> list[TrackWindow]:
    """The windows with each track the gallery named on a second look (``outcome()["named"]``:
    source, track_id, identity) carrying that name on its final window, where its decision is read."""
    late = {(n["source"], int(n["track_id"])): n["identity"] for n in named}
    if not late:
        return windows
    return [dataclasses.replace(w, identity=dataclasses.replace(w.identity, identity=late[(w.source_id, int(w.track_id))]))
            if w.is_final and w.identity is not None and (w.source_id, int(w.track_id)) in late else w for w in windows]


def follow_merges(windows: list[TrackWindow], merges: list[dict]) -> list[TrackWindow]:
    """The windows with each identity that was merged away replaced by the identity it lives on in
    (``Gallery.merges`` records, oldest first): what the gallery says about the track at the end."""
    renamed = merged_names(merges)
    if not renamed:
        return windows
    return [dataclasses.replace(w, identity=dataclasses.replace(w.identity, identity=renamed[w.identity.identity]))
            if w.identity is not None and w.identity.identity in renamed else w for w in windows]
