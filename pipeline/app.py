"""Composition: build the configured stages, run them over sources, write the outputs.

This is the one place that joins the engine to the stage catalog; everything here is plain
function calls that a script or a notebook can use as well as the CLI.
"""

from __future__ import annotations

import logging
import pickle
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.config import ConfigError, PipelineConfig, build, check_arguments, load_config, options_from
from pipeline.errors import OutputError, UserError, one_line, output_error, unpickling_reason
from pipeline.export import (
    ExportOptions,
    FileSink,
    OutputFiles,
    SilhouetteStripWriter,
    TrackMediaWriter,
    TrackRecordWriter,
    write_json_atomic,
)
from pipeline.messages import FrameResult, SourceEvent, TrackWindow
from pipeline.progress import BatchProgress
from pipeline.runner import NamedStage, Runner, RunnerOptions, RunResult
from pipeline.video_writer import AnnotatedVideoWriter, TrackCaption, track_state

log = logging.getLogger("gaitscope")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"


def config_path(name: str | Path | None) -> Path:
    """A config given by path, or by bare name from the project's configs/ folder."""
    if name is None:
        return DEFAULT_CONFIG
    path = Path(name)
    if path.exists() or path.suffix:
        return path
    return PROJECT_ROOT / "configs" / f"{name}.yaml"


def load(name: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load and validate a pipeline configuration (section names and backends)."""
    from stages.catalog import STAGE_KINDS

    return load_config(config_path(name), STAGE_KINDS, overrides)


def set_compute_threads(options: RunnerOptions) -> None:
    """Apply ``runner.torch_threads`` (process-wide, before any model is built)."""
    if options.torch_threads is not None:
        import torch

        torch.set_num_threads(max(1, options.torch_threads))


@dataclass
class BuiltPipeline:
    """The stages of a configuration, ready to run."""

    frame_stages: list[NamedStage]
    assembler: NamedStage
    track_stages: list[NamedStage]
    descriptions: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        for named in [*self.frame_stages, self.assembler, *self.track_stages]:
            close = getattr(named.stage, "close", None)
            if close is not None:
                close()


def build_stage(config: PipelineConfig, kind: str) -> tuple[Any, str]:
    """Construct one configured stage (validating its section against its constructor): (stage, backend).

    ``backend: auto`` asks the stage kind's entry in ``AUTO_BUILDERS`` to pick and build the best backend.
    Any other stage is built as it runs with the configured detector (`chosen_config`).
    """
    from stages.catalog import AUTO_BUILDERS, STAGE_KINDS

    if kind != "detect" and not config.detector_chosen:
        config = chosen_config(config)
    spec = config.stages[kind]
    backend, params = spec.backend, dict(spec.params)
    try:
        if backend == "auto":
            if kind not in AUTO_BUILDERS:
                raise ConfigError(f"{kind}.backend: 'auto' is only available for {', '.join(AUTO_BUILDERS.names())}")
            backend, stage = AUTO_BUILDERS.load(kind)(params)
            return stage, backend
        return build(STAGE_KINDS[kind].load(backend), params, kind), backend
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{kind}: weights refused: {unpickling_reason(exc)}") from exc
    except RuntimeError as exc:
        if "PytorchStreamReader" not in str(exc) and "zip archive" not in str(exc):
            raise
        raise UserError(f"{kind}: weights unreadable: not a complete torch checkpoint ({str(exc).splitlines()[0]})"
                        ) from exc


def choose_detector(config: PipelineConfig) -> tuple[PipelineConfig, tuple[Any, str] | None]:
    """(the configuration as it runs with its detector, that detector built where choosing needed it).

    ``detect: auto`` builds the best detector that works here (`stages.detect.choose_detector`);
    the returned configuration names that backend with the options it was built with, so other
    processes build the same one, and carries the chosen detector's ``detector_settings``. A
    configured backend is only looked up in the detector settings. Already chosen: returned as is.
    """
    detect = config.stages.get("detect")
    if config.detector_chosen or detect is None:
        return config, None
    if detect.backend != "auto":
        return config.with_detector(detect.backend, detect.params), None
    from stages.detect import choose_detector as choose_auto_detector

    choice, detector = choose_auto_detector(detect.params)
    changed = config.changed_by_settings(choice.backend)
    if changed:
        log.info("detector settings for %s: %s", choice.backend, ", ".join(changed))
    return config.with_detector(choice.backend, choice.options), (detector, choice.backend)


def chosen_config(config: PipelineConfig) -> PipelineConfig:
    """`choose_detector`'s configuration, for stages built elsewhere (the detector it built is closed)."""
    config, detector = choose_detector(config)
    close = getattr(detector[0], "close", None) if detector is not None else None
    if close is not None:
        close()
    return config


def build_stages(config: PipelineConfig, prebuilt: dict[str, tuple[Any, str]] | None = None) -> BuiltPipeline:
    """Construct every configured stage, the detector chosen first (`choose_detector`); ``prebuilt``:
    kind -> (stage, description) made elsewhere (e.g. a proxy of a stage that lives in another
    process), used instead of building that section (a prebuilt detector must come with a chosen
    configuration)."""
    from stages.catalog import FRAME_STAGE_KINDS, TRACK_STAGE_KINDS

    prebuilt = dict(prebuilt or {})
    if "detect" not in prebuilt:
        config, detector = choose_detector(config)
        if detector is not None:
            prebuilt["detect"] = detector
    built: dict[str, Any] = {}
    descriptions: dict[str, str] = {}
    for kind in config.stages:
        built[kind], descriptions[kind] = prebuilt.get(kind) or build_stage(config, kind)
    for required in ("detect", "track", "segment", "tracklets"):
        if required not in built:
            raise ConfigError(f"the '{required}' section is required (set its backend)")
    return BuiltPipeline(
        frame_stages=[NamedStage(k, built[k], FrameResult) for k in FRAME_STAGE_KINDS if k in built],
        assembler=NamedStage("tracklets", built["tracklets"], FrameResult),
        track_stages=[NamedStage(k, built[k], TrackWindow) for k in TRACK_STAGE_KINDS if k in built],
        descriptions=descriptions,
    )




@dataclass
class RunOutputs:
    """Where a run wrote its results, and its statistics.

    summary_path: None when the summary could not be written (then ``summary`` is all there is).
    output_error: why writing the outputs failed (disk full, ...): the run stopped early, its
        incomplete sources stay ``.partial`` for ``--resume``; None when every output was written.
    """

    out_dir: Path
    summary_path: Path | None
    track_files: list[Path]
    result: RunResult
    summary: dict[str, Any]
    output_error: str | None = None


def run(
    sources: list[str],
    out_dir: str | Path,
    config: PipelineConfig,
    video_out: str | Path | None = None,
    save_silhouettes: bool = False,
    resume: bool = False,
    report: bool = False,
    executor: Executor | None = None,
) -> RunOutputs:
    """Run the configured pipeline over sources and write JSON Lines, summary and extras.

    sources: file paths, folders (expanded recursively) or rtsp:// URLs.
    resume: skip sources whose output file is complete from an earlier run of the same out_dir.
    report: write ``out_dir/report.html`` at the end.
    executor: None runs here; e.g. `pipeline.ray_executor.RayExecutor` spreads the sources over Ray
        workers (same outputs).

    Unusable output folders are an OutputError before any model is built. An output that fails
    during the run (disk full) stops the sources; what is in flight is drained without writing,
    the summary says why, and ``output_error`` is set. Silhouette strips that cannot be written are
    counted in the summary (``silhouettes``), never dropped silently.
    """
    from pipeline.sources import SourceOptions, expand_sources, source_id_of

    out_dir = Path(out_dir)
    source_options = options_from(SourceOptions, config.source, "source")
    runner_options = options_from(RunnerOptions, config.runner, "runner")
    export_options = options_from(ExportOptions, config.export, "export")
    check_stage_params(config)
    prepare_output_dir(out_dir / "tracks")
    if video_out is not None:
        prepare_output_dir(Path(video_out))
    writer = TrackRecordWriter(out_dir, export_options)
    specs = expand_sources(sources)
    ids = [source_id_of(s) for s in specs]
    skipped = [i for i in ids if resume and writer.is_complete(i)]
    todo = [spec for spec, i in zip(specs, ids) if i not in skipped]
    if skipped:
        log.info("resume: %d source(s) already complete, %d to do", len(skipped), len(todo))
    progress = _batch_progress(todo, runner_options)
    started = time.time()
    outcome: dict[str, Any] = {"output_error": None}
    if executor is not None:
        config = chosen_config(config)  # chosen once: every worker builds the same detector, same settings
        result, track_files, descriptions = executor.run(todo, out_dir, config, writer, progress, video_out,
                                                         save_silhouettes)
    else:
        result, track_files, descriptions = _run_here(todo, out_dir, config, writer, source_options, runner_options,
                                                      progress, video_out, save_silhouettes, outcome)
    summary = _summary(config, descriptions, result, ids, skipped, track_files, started)
    summary.update(outcome)
    summary_path: Path | None = out_dir / "summary.json"
    try:
        write_json_atomic(summary_path, summary)
    except OSError as exc:
        log.error("%s", output_error(summary_path, exc))
        summary_path = None
    if report and summary_path is not None:
        from pipeline.report import write_report

        log.info("report: %s", write_report(out_dir))
    return RunOutputs(out_dir, summary_path, track_files, result, summary, outcome["output_error"])


def prepare_output_dir(folder: Path) -> None:
    """Create an output folder and prove it takes a file; OutputError (one line) when it cannot."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except FileExistsError as exc:
        raise OutputError(f"cannot use {folder} as an output folder: {exc.filename or folder} is a file in the way"
                          ) from None
    except NotADirectoryError:
        raise OutputError(f"cannot use {folder} as an output folder: a part of the path is a file") from None
    except OSError as exc:
        raise output_error(folder, exc) from None


def _batch_progress(todo: list[str], options: RunnerOptions) -> BatchProgress:
    """The batch's progress line; source lengths are probed only when it is shown."""
    from pipeline.progress import probe_duration
    from pipeline.sources import source_id_of

    progress = BatchProgress({}, options.progress)
    if progress.enabled:
        progress.durations = {source_id_of(s): probe_duration(s) for s in todo}
    return progress


def _run_here(
    todo: list[str],
    out_dir: Path,
    config: PipelineConfig,
    writer: TrackRecordWriter,
    source_options: Any,
    runner_options: RunnerOptions,
    progress: BatchProgress,
    video_out: str | Path | None,
    save_silhouettes: bool,
    outcome: dict[str, Any] | None = None,
) -> tuple[RunResult, list[Path], dict[str, str]]:
    """outcome: filled with ``output_error`` (and ``silhouettes`` counts when saved)."""
    from pipeline.sources import open_source

    set_compute_threads(runner_options)
    pipeline = build_stages(config)
    sink = OutputSink(writer, OutputFiles(out_dir), writer.options, save_silhouettes, video_out)
    runner = Runner(pipeline.frame_stages, pipeline.assembler, pipeline.track_stages, runner_options)
    sink.on_failure = runner.stop
    opened = (open_source(spec, source_options) for spec in todo)
    try:
        result = runner.run(
            opened,
            on_window=sink.on_window,
            on_event=sink.on_event,
            on_frame=sink.on_frame,
            on_source_end=sink.on_source_end,
            progress=progress,
        )
    finally:
        sink.close()
    if outcome is not None:
        outcome["output_error"] = sink.failure
        if sink.strips is not None:
            outcome["silhouettes"] = sink.strips.report()
    return result, sink.track_files, pipeline.descriptions


class Executor(Protocol):
    """Runs the sources of a batch somewhere else and writes their outputs through ``writer`` into
    ``out_dir`` exactly as a local run does; returns the statistics, the completed track files and
    the backends of the stages."""

    def run(self, todo: list[str], out_dir: Path, config: PipelineConfig, writer: TrackRecordWriter,
            progress: BatchProgress, video_out: str | Path | None,
            save_silhouettes: bool) -> tuple[RunResult, list[Path], dict[str, str]]: ...


class RecordSink(Protocol):
    """Where a source's records go (`TrackRecordWriter`, or a remote worker's collector)."""

    def write_window(self, window: TrackWindow, media: dict[str, Any] | None = None) -> None: ...

    def write_event(self, event: SourceEvent) -> None: ...

    def complete(self, source_id: str) -> Any: ...

    def close_source(self, source_id: str) -> None: ...

    def close(self) -> None: ...


class OutputSink:
    """What a run writes as windows, events and frames arrive: records, report media, silhouette
    strips and annotated videos. The same object serves a local run and each remote worker.

    The first OSError while writing (disk full, ...) is kept in ``failure`` and ``on_failure`` is
    called (the local run stops its sources); from then on nothing more is written, incomplete
    sources stay ``.partial``.
    """

    def __init__(self, records: RecordSink, files: FileSink, export_options: ExportOptions,
                 save_silhouettes: bool = False, video_out: str | Path | None = None) -> None:
        self.records = records
        self.media = TrackMediaWriter(files, export_options.crops_per_track, export_options.silhouettes_per_track)
        self.strips = SilhouetteStripWriter(getattr(files, "out_dir", "."), files=files) if save_silhouettes else None
        self.videos = AnnotatedVideos(Path(video_out)) if video_out is not None else None
        self.track_files: list[Path] = []
        self.failure: str | None = None
        self.on_failure: Callable[[], None] | None = None

    def _guarded(self, write: Callable[[], Any]) -> None:
        if self.failure is not None:
            return
        try:
            write()
        except OSError as exc:
            self.failure = str(output_error(getattr(exc, "filename", None) or "an output", exc))
            log.error("%s; stopping the sources", self.failure)
            if self.on_failure is not None:
                self.on_failure()

    def on_window(self, window: TrackWindow) -> None:
        def write() -> None:
            self.records.write_window(window, self.media.note(window))
            if self.strips is not None:
                self.strips.write(window)
            if self.videos is not None:
                self.videos.note_window(window)

        self._guarded(write)

    def on_event(self, event: SourceEvent) -> None:
        level = logging.ERROR if event.kind == "error" else logging.INFO
        log.log(level, "%s", one_line(f"{event.source_id or '(empty argument)'}: {event.message}"))
        self._guarded(lambda: self.records.write_event(event))

    def on_frame(self, result: FrameResult) -> None:
        if self.videos is not None:
            self._guarded(lambda: self.videos.write_frame(result))

    def on_source_end(self, source_id: str, complete: bool) -> None:
        self._guarded(lambda: self.media.end_source(source_id))
        if complete and self.failure is None:
            self._guarded(lambda: self.track_files.append(self.records.complete(source_id)))
        if not complete or self.failure is not None:
            self.records.close_source(source_id)
        if self.videos is not None:
            self._guarded(lambda: self.videos.close(source_id))

    def close(self) -> None:
        self.records.close()
        if self.videos is not None:
            self._guarded(self.videos.close_all)


def collect_windows(config: PipelineConfig, sources: list[str], final_only: bool = True) -> list[TrackWindow]:
    """Run the pipeline over sources and return its track windows (with embeddings) in memory."""
    from pipeline.sources import SourceOptions, expand_sources, open_source

    source_options = options_from(SourceOptions, config.source, "source")
    runner_options = options_from(RunnerOptions, {**config.runner, "progress": False}, "runner")
    set_compute_threads(runner_options)
    pipeline = build_stages(config)
    windows: list[TrackWindow] = []
    errors: list[str] = []

    def keep(window: TrackWindow) -> None:
        if window.is_final or not final_only:
            windows.append(window)

    def on_event(event: SourceEvent) -> None:
        if event.kind == "error":
            errors.append(f"{event.source_id}: {event.message}")

    runner = Runner(pipeline.frame_stages, pipeline.assembler, pipeline.track_stages, runner_options)
    runner.run((open_source(s, source_options) for s in expand_sources(sources)), on_window=keep, on_event=on_event)
    for message in errors:
        log.error(message)
    return windows


def _summary(
    config: PipelineConfig,
    backends: dict[str, str],
    result: RunResult,
    specs: list[str],
    skipped: list[str],
    track_files: list[Path],
    started: float,
) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    for event in result.events:
        if event.kind == "error":
            errors.setdefault(event.source_id, []).append(event.message)
    return {
        "started_unix": round(started, 3),
        "seconds": round(result.seconds, 3),
        "interrupted": result.interrupted,
        "config": config.path,
        "backends": backends,
        "sources": [
            {
                "source": spec,
                "frames": result.frames.get(spec),
                "status": "skipped (complete)" if spec in skipped else
                ("error" if spec in errors else ("done" if spec in result.sources_done else "incomplete")),
                "errors": errors.get(spec, []),
            }
            for spec in specs
        ],
        "windows": result.windows,
        "frames_total": sum(result.frames.values()),
        "fps": round(sum(result.frames.values()) / result.seconds, 2) if result.seconds > 0 else None,
        "stages": result.stage_stats,
        "outcomes": result.stage_outcomes,
        "track_files": [str(p) for p in track_files],
    }


class AnnotatedVideos:
    """One annotated MP4 per source: each track in its identity's colour, captioned with the identity
    and its latest state (walking / standing / partial)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writers: dict[str, Any] = {}
        self._captions: dict[str, dict[int, TrackCaption]] = {}

    def note_window(self, window: TrackWindow) -> None:
        # An identity once matched stays on the box while later windows have no decision yet.
        captions = self._captions.setdefault(window.source_id, {})
        previous = captions.get(window.track_id)
        identity = window.identity.identity if window.identity is not None and window.identity.identity else None
        if identity is None and previous is not None:
            identity = previous.identity
        captions[window.track_id] = TrackCaption(identity, track_state(window))

    def write_frame(self, result: FrameResult) -> None:
        from pipeline.export import source_file_stem

        source_id = result.frame.source_id
        writer = self._writers.get(source_id)
        if writer is None:
            writer = AnnotatedVideoWriter(self.folder / f"{source_file_stem(source_id)}.mp4")
            self._writers[source_id] = writer
        writer.write(result, self._captions.get(source_id))

    def close(self, source_id: str) -> None:
        self._captions.pop(source_id, None)
        writer = self._writers.pop(source_id, None)
        if writer is not None:
            writer.close()

    def close_all(self) -> None:
        for source_id in list(self._writers):
            self.close(source_id)


def check_stage_params(config: PipelineConfig) -> None:
    """Validate every stage section against its backend's constructor without building models."""
    from stages.catalog import STAGE_KINDS

    variants = [("", config.stages), *((f"detector_settings.{b}.", s) for b, s in config.detector_settings.items())]
    for prefix, stages in variants:
        for kind, spec in stages.items():
            if spec.backend == "auto" or (prefix and config.stages.get(kind) == spec):
                continue  # a section the settings leave as it is was checked once, as itself
            check_arguments(STAGE_KINDS[kind].load(spec.backend), spec.params, prefix + kind)
