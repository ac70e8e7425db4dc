"""The Ray executor: the sources of a batch spread over Ray workers, with one gallery writer.

Each worker (a Ray actor) builds the configured stages once and runs the same chain as a local run,
one source at a time. It hands a source's records and files back in one piece; the driver (the
process that owns the output folder) writes them as a local run would and completes the source's
file atomically. A worker killed mid-source is restarted by Ray and the source retried from its
start: nothing of the lost attempt was written, so nothing is duplicated or missing, and a batch
stopped early leaves its unfinished sources to ``--resume``.

The gallery has a single writer: a `_GalleryOwner` actor on the driver's node holds the configured
gallery stage. Workers send it their windows without images and get its decisions back; it serves
one call at a time, so match-then-enrol is atomic across workers. Its decisions are remembered per
window until the driver has written the source, so a retried source gets the decisions of its first
attempt instead of matching the identities that attempt enrolled.

Annotated videos (``--video-out``) are written by the workers themselves: on a cluster that folder
must be on storage every node shares. Everything else goes through the driver.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import ConfigError, PipelineConfig, options_from
from pipeline.export import CollectedFiles, ExportOptions, OutputFiles, TrackRecordWriter, event_record, window_record
from pipeline.messages import SilhouetteSequence, SourceEvent, TrackWindow
from pipeline.progress import BatchProgress
from pipeline.runner import RunnerOptions, RunResult, StageStats

log = logging.getLogger("gaitscope")

INSTALL_HINT = "the Ray executor needs Ray: pip install 'gaitscope[ray]' (or pip install 'ray==2.60.*')"
PROGRESS_INTERVAL_S = 0.5


@dataclass(frozen=True)
class SourceProgress:
    """How far a worker is with a source: frames read, video seconds reached, the worker's process id."""

    frames: int
    video_s: float
    pid: int


@dataclass
class RayExecutor:
    """Runs a batch on Ray (pass it as ``executor`` to `pipeline.app.run`).

    address: an existing cluster ("auto", "ray://head:10001", ...); None starts Ray on this machine.
    workers: worker actors (default: one per CPU of the cluster).
    max_retries: restarts of a dead worker and retries of its source before the source is given up.
    watch: called in the driver with each progress update (source -> `SourceProgress`), for monitoring.
    """

    address: str | None = None
    workers: int | None = None
    max_retries: int = 3
    watch: Callable[[dict[str, SourceProgress]], None] | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--ray-workers must be >= 1, got {self.workers}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")

    def run(self, todo: list[str], out_dir: Path, config: PipelineConfig, writer: TrackRecordWriter,
            progress: BatchProgress, video_out: str | Path | None,
            save_silhouettes: bool) -> tuple[RunResult, list[Path], dict[str, str]]:
        return run_on_ray(todo, out_dir, config, writer, self, progress, video_out, save_silhouettes)


def import_ray():
    """The ``ray`` module, or a one-line error saying what to install."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT) from exc
    return ray


@dataclass
class SourceOutcome:
    """Everything a worker produced for one source, handed to the driver in one piece."""

    source_id: str
    records: list[dict[str, Any]]
    files: dict[str, bytes]
    frames: int
    windows: int
    events: list[SourceEvent]
    complete: bool
    stage_stats: list[dict[str, Any]]
    seconds: float
    backends: dict[str, str] = field(default_factory=dict)


class _CollectedRecords:
    """The `RecordSink` of a worker: records kept in memory until the source ends."""

    def __init__(self, options: ExportOptions) -> None:
        self.options = options
        self.records: list[dict[str, Any]] = []
        self.completed: set[str] = set()

    def write_window(self, window: TrackWindow, media: dict[str, Any] | None = None) -> None:
        if window.is_final or self.options.intermediate_windows:
            self.records.append(window_record(window, self.options, media))

    def write_event(self, event: SourceEvent) -> None:
        self.records.append(event_record(event))

    def complete(self, source_id: str) -> str:
        self.completed.add(source_id)
        return source_id

    def close_source(self, source_id: str) -> None:
        pass

    def close(self) -> None:
        pass


def _without_images(window: TrackWindow, last_sent: int) -> TrackWindow:
    """The window as the gallery needs it: embeddings and decisions, its first and last frame's timing,
    and the frames after ``last_sent`` (the last frame of its track already sent; -1: none), which the
    gallery counts towards starting an identity. Their silhouettes are blank, and no crops are shipped."""
    seq = window.sequence
    new = np.flatnonzero(seq.frame_indices > last_sent)
    keep = np.unique(np.concatenate([[0, len(seq) - 1], new])) if len(seq) else np.zeros(0, np.int64)
    light = SilhouetteSequence(
        silhouettes=np.zeros((len(keep), *seq.silhouettes.shape[1:]), np.uint8),
        ratios=seq.ratios[keep],
        boxes=seq.boxes[keep],
        frame_indices=seq.frame_indices[keep],
        pts_s=seq.pts_s[keep],
        frame_size=seq.frame_size,
        crops=None,
    )
    return dataclasses.replace(window, sequence=light)


# Fields the gallery owner never changes (or that are too big to send back).
_UNCHANGED = {"source_id", "track_id", "window_index", "is_final", "sequence", "gait_embedding", "appearance_embedding",
              "group_share"}


def _decision(window: TrackWindow) -> dict[str, Any]:
    """What the gallery stage set on a window (every field it may change, read generically)."""
    return {f.name: getattr(window, f.name) for f in dataclasses.fields(window) if f.name not in _UNCHANGED}


class _GalleryOwner:
    """Ray actor: the only writer of the gallery (calls are served one at a time)."""

    def __init__(self, config: PipelineConfig) -> None:
        from pipeline.app import build_stage

        self.stage, self.backend = build_stage(config, "gallery")
        self._decided: dict[str, dict[tuple[int, int], dict[str, Any]]] = {}

    def describe(self) -> str:
        return self.backend

    def process(self, windows: list[TrackWindow]) -> list[dict[str, Any]]:
        todo = [w for w in windows if (w.track_id, w.window_index) not in self._decided.get(w.source_id, {})]
        if todo:
            for window in self.stage.process(todo):
                self._decided.setdefault(window.source_id, {})[(window.track_id, window.window_index)] = _decision(
                    window
                )
        return [self._decided[w.source_id][(w.track_id, w.window_index)] for w in windows]

    def forget(self, source_id: str) -> None:
        """The driver wrote this source: its decisions are no longer needed for retries."""
        self._decided.pop(source_id, None)

    def close(self) -> dict[str, Any] | None:
        """Closes the stage; returns what it reports having changed (its ``outcome()``), if anything."""
        close = getattr(self.stage, "close", None)
        if close is not None:
            close()
        outcome = getattr(self.stage, "outcome", None)
        return outcome() if outcome is not None else None


class _RemoteGallery:
    """The gallery stage of a worker: forwards each batch to the gallery owner."""

    name = "gallery"

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self._last_sent: dict[tuple[str, int], int] = {}  # per track: the last frame index sent

    def process(self, batch: list[TrackWindow]) -> list[TrackWindow]:
        import ray

        light = []
        for w in batch:
            key = (w.source_id, int(w.track_id))
            light.append(_without_images(w, self._last_sent.get(key, -1)))
            if w.is_final:
                self._last_sent.pop(key, None)
            elif len(w.sequence):
                self._last_sent[key] = max(self._last_sent.get(key, -1), int(w.sequence.frame_indices[-1]))
        decisions = ray.get(self.owner.process.remote(light))
        for window, decision in zip(batch, decisions):
            for name, value in decision.items():
                setattr(window, name, value)
        return batch


class _ProgressBoard:
    """Ray actor: the latest progress of every source in flight, as reported by the workers."""

    def __init__(self) -> None:
        self._sources: dict[str, SourceProgress] = {}

    def report(self, source_id: str, progress: SourceProgress) -> None:
        self._sources[source_id] = progress

    def snapshot(self) -> dict[str, SourceProgress]:
        return dict(self._sources)


class _ReportingProgress:
    """A worker's stand-in for the progress line: sends its counts to the board every half second."""

    def __init__(self, board: Any) -> None:
        self.board = board
        self.pid = os.getpid()
        self._last = -math.inf

    def update(self, frames: dict[str, int], video_s: dict[str, float], done: Any, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        for source_id, count in list(frames.items()):
            self.board.report.remote(source_id, SourceProgress(count, float(video_s.get(source_id, 0.0)), self.pid))

    def close(self) -> None:
        pass


class _SourceWorker:
    """Ray actor: builds the stages once, then runs whole sources through them, one at a time."""

    def __init__(
        self, config: PipelineConfig, gallery: Any, board: Any, video_out: str | None, save_silhouettes: bool
    ) -> None:
        from pipeline.app import build_stages, set_compute_threads
        from pipeline.sources import SourceOptions

        self.runner_options = options_from(RunnerOptions, {**config.runner, "progress": False}, "runner")
        self.source_options = options_from(SourceOptions, config.source, "source")
        self.export_options = options_from(ExportOptions, config.export, "export")
        set_compute_threads(self.runner_options)
        prebuilt = {"gallery": (_RemoteGallery(gallery), "remote")} if "gallery" in config.stages else None
        self.pipeline = build_stages(config, prebuilt)
        self.board = board
        self.video_out = video_out
        self.save_silhouettes = save_silhouettes

    def pid(self) -> int:
        return os.getpid()

    def process(self, spec: str) -> SourceOutcome:
        from pipeline.app import OutputSink
        from pipeline.runner import Runner
        from pipeline.sources import open_source

        started = time.perf_counter()
        source = open_source(spec, self.source_options)
        records = _CollectedRecords(self.export_options)
        files = CollectedFiles()
        sink = OutputSink(records, files, self.export_options, self.save_silhouettes, self.video_out)
        p = self.pipeline
        runner = Runner(p.frame_stages, p.assembler, p.track_stages, self.runner_options, close_stages=False)
        try:
            result = runner.run(
                [source],
                on_window=sink.on_window,
                on_event=sink.on_event,
                on_frame=sink.on_frame,
                on_source_end=sink.on_source_end,
                progress=_ReportingProgress(self.board),
            )
        finally:
            sink.close()
        return SourceOutcome(
            source_id=source.source_id,
            records=records.records,
            files=files.files,
            frames=result.frames.get(source.source_id, 0),
            windows=result.windows,
            events=result.events,
            complete=source.source_id in records.completed,
            stage_stats=result.stage_stats,
            seconds=time.perf_counter() - started,
            backends=p.descriptions,
        )

    def close(self) -> None:
        self.pipeline.close()


def _start_ray(ray: Any, address: str | None) -> bool:
    """Connect to a cluster, or start Ray here; True when this call started it."""
    if ray.is_initialized():
        return False
    project_root = str(Path(__file__).resolve().parents[1])
    # Workers import this checkout (as the driver does), not some other installed copy.
    path = os.pathsep.join(p for p in (project_root, os.environ.get("PYTHONPATH", "")) if p)
    runtime_env = None if address else {"env_vars": {"PYTHONPATH": path}}
    ray.init(
        address=address, include_dashboard=False, configure_logging=False, log_to_driver=True, runtime_env=runtime_env
    )
    return True


def _merge_stats(outcomes: list[SourceOutcome]) -> list[dict[str, Any]]:
    merged: dict[str, StageStats] = {}
    for outcome in outcomes:
        for s in outcome.stage_stats:
            stats = merged.setdefault(s["stage"], StageStats(s["stage"]))
            stats.calls += s["calls"]
            stats.items_in += s["items_in"]
            stats.items_out += s["items_out"]
            stats.seconds += s["seconds"]
            stats.errors += s["errors"]
    return [stats.as_dict() for stats in merged.values()]


def run_on_ray(
    todo: list[str],
    out_dir: Path,
    config: PipelineConfig,
    writer: TrackRecordWriter,
    options: RayExecutor,
    progress: BatchProgress,
    video_out: str | Path | None = None,
    save_silhouettes: bool = False,
) -> tuple[RunResult, list[Path], dict[str, str]]:
    """Run ``todo`` on Ray workers; write each finished source through ``writer`` into ``out_dir``.

    Returns what a local run returns: the statistics, the completed track files, the backends.
    """
    ray = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    started = time.perf_counter()
    started_here = _start_ray(ray, options.address)
    files = OutputFiles(out_dir)
    outcomes: list[SourceOutcome] = []
    events: list[SourceEvent] = []
    track_files: list[Path] = []
    frames: dict[str, int] = {}
    video_s: dict[str, float] = {}
    done: list[str] = []
    interrupted = False
    descriptions: dict[str, str] = {}
    source_seconds: dict[str, float] = {}
    dispatch_seconds: dict[str, float] = {}
    startup: float | None = None
    gallery_outcome: dict[str, Any] | None = None
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        count = options.workers or max(1, int(cpus))
        # Ask for no more CPU than there is: over-asking leaves actors waiting for ever.
        per_worker = max(0.01, math.floor(min(1.0, cpus / count) * 100) / 100)
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        owner = (
            ray.remote(_GalleryOwner).options(num_cpus=0, scheduling_strategy=here).remote(config)
            if "gallery" in config.stages
            else None
        )
        board = ray.remote(_ProgressBoard).options(num_cpus=0, scheduling_strategy=here).remote()
        worker_class = ray.remote(_SourceWorker).options(
            num_cpus=per_worker, max_restarts=options.max_retries, max_task_retries=options.max_retries
        )

        config_ref = ray.put(config)  # held until the end: a restarted worker needs its arguments again

        def new_worker() -> Any:
            return worker_class.remote(
                config_ref, owner, board, None if video_out is None else str(video_out), save_silhouettes
            )

        if owner is not None:
            descriptions["gallery"] = ray.get(owner.describe.remote())
        log.info("ray: %d worker(s) x %.2f CPU for %d source(s)", count, per_worker, len(todo))
        idle = [new_worker() for _ in range(min(count, len(todo)))]
        ray.get([worker.pid.remote() for worker in idle])  # every worker has built its stages
        startup = time.perf_counter() - started
        pending = deque(todo)
        in_flight: dict[Any, tuple[Any, str]] = {}
        handed_out: dict[str, float] = {}
        try:
            while pending or in_flight:
                while idle and pending:
                    worker, spec = idle.pop(), pending.popleft()
                    in_flight[worker.process.remote(spec)] = (worker, spec)
                    handed_out[spec] = time.perf_counter()
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=PROGRESS_INTERVAL_S)
                snapshot = ray.get(board.snapshot.remote())
                for source_id, p in snapshot.items():
                    if source_id not in done:
                        frames[source_id], video_s[source_id] = p.frames, p.video_s
                if options.watch is not None:
                    options.watch(snapshot)
                for ref in ready:
                    worker, spec = in_flight.pop(ref)
                    try:
                        outcome: SourceOutcome = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # retries used up: the source stays to do
                        from pipeline.sources import source_id_of

                        message = f"worker lost: {type(exc).__name__}: {exc}".splitlines()[0]
                        log.error("%s: %s", source_id_of(spec), message)
                        events.append(SourceEvent(source_id_of(spec), "error", message))
                        ray.kill(worker, no_restart=True)
                        if owner is not None:
                            owner.forget.remote(source_id_of(spec))
                        idle.append(new_worker())
                        continue
                    _write_outcome(outcome, writer, files, track_files)
                    source_seconds[outcome.source_id] = outcome.seconds
                    dispatch_seconds[outcome.source_id] = time.perf_counter() - handed_out[spec]
                    if owner is not None:
                        owner.forget.remote(outcome.source_id)
                    outcomes.append(outcome)
                    events.extend(outcome.events)
                    for event in outcome.events:  # as a local run logs them
                        level = logging.ERROR if event.kind == "error" else logging.INFO
                        log.log(level, "%s: %s", event.source_id, event.message)
                    descriptions.update({k: v for k, v in outcome.backends.items() if k not in descriptions})
                    frames[outcome.source_id] = outcome.frames
                    if outcome.complete:
                        done.append(outcome.source_id)
                    idle.append(worker)
                progress.update(frames, video_s, done)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: unfinished sources are not written; rerun with --resume to do them")
            for ref in in_flight:
                ray.cancel(ref, force=True)
        finally:
            progress.update(frames, video_s, done, force=True)
            progress.close()
        for worker in idle:
            ray.get(worker.close.remote())
        if owner is not None:
            gallery_outcome = ray.get(owner.close.remote())  # flushes the gallery's indexes
    finally:
        writer.close()
        if started_here:
            ray.shutdown()
    descriptions = {kind: descriptions[kind] for kind in config.stages if kind in descriptions}
    result = RunResult(
        stage_stats=_merge_stats(outcomes),
        frames=frames,
        windows=sum(o.windows for o in outcomes),
        events=events,
        seconds=time.perf_counter() - started,
        interrupted=interrupted,
        sources_done=done,
        source_seconds=source_seconds,
        dispatch_seconds=dispatch_seconds,
        startup_seconds=startup,
        stage_outcomes={"gallery": gallery_outcome} if gallery_outcome is not None else {},
    )
    return result, track_files, descriptions


def _write_outcome(
    outcome: SourceOutcome, writer: TrackRecordWriter, files: OutputFiles, track_files: list[Path]
) -> None:
    """Write a source's files and records, then complete its record file (the last, atomic step)."""
    for relative, data in outcome.files.items():
        files.write(relative, data)
    for record in outcome.records:
        writer.write_record(outcome.source_id, record)
    if outcome.complete:
        track_files.append(writer.complete(outcome.source_id))
    else:
        writer.close_source(outcome.source_id)
