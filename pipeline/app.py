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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, PipelineConfig, build, check_arguments, load_config, options_from
from pipeline.errors import OutputError, UserError, one_line, output_error, unpickling_reason
from pipeline.export import ExportOptions, SilhouetteStripWriter, TrackRecordWriter, write_json_atomic
from pipeline.messages import FrameResult, SourceEvent, TrackWindow
from pipeline.runner import NamedStage, Runner, RunnerOptions, RunResult

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


def build_stages(config: PipelineConfig) -> BuiltPipeline:
    """Construct every configured stage (validating its section against its constructor)."""
    from stages.catalog import FRAME_STAGE_KINDS, STAGE_KINDS, TRACK_STAGE_KINDS

    built: dict[str, Any] = {}
    descriptions: dict[str, str] = {}
    for kind, spec in config.stages.items():
        registry = STAGE_KINDS[kind]
        backend, params = spec.backend, dict(spec.params)
        if kind == "detect" and backend == "auto":
            backend, params = _resolve_auto_detector(params, registry)
        elif backend == "auto":
            raise ConfigError(f"{kind}.backend: 'auto' is only available for detect")
        cls = registry.load(backend)
        try:
            built[kind] = build(cls, params, kind)
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as exc:
            raise UserError(f"{kind}: weights refused: {unpickling_reason(exc)}") from exc
        except RuntimeError as exc:
            if "PytorchStreamReader" not in str(exc) and "zip archive" not in str(exc):
                raise
            raise UserError(f"{kind}: weights unreadable: not a complete torch checkpoint ({str(exc).splitlines()[0]})"
                            ) from exc
        descriptions[kind] = backend
    for required in ("detect", "track", "segment", "tracklets"):
        if required not in built:
            raise ConfigError(f"the '{required}' section is required (set its backend)")
    return BuiltPipeline(
        frame_stages=[NamedStage(k, built[k], FrameResult) for k in FRAME_STAGE_KINDS if k in built],
        assembler=NamedStage("tracklets", built["tracklets"], FrameResult),
        track_stages=[NamedStage(k, built[k], TrackWindow) for k in TRACK_STAGE_KINDS if k in built],
        descriptions=descriptions,
    )


def _resolve_auto_detector(params: dict[str, Any], registry) -> tuple[str, dict[str, Any]]:
    """``detect: {backend: auto, weights: PATH, yolo: {...}, classic: {...}}`` -> one backend.

    YOLO when its weights file exists, the classic detector otherwise (logged once); the options of
    both are validated so a typo in the branch not taken is still reported.
    """
    from stages.detect import choose_detector

    params = dict(params)
    weights = params.pop("weights", None)
    branches = {name: params.pop(name, None) or {} for name in ("yolo", "classic")}
    if params:
        raise ConfigError(f"detect: unknown key {next(iter(params))!r} for backend auto (accepted: weights, yolo, classic)")
    for name, options in branches.items():
        if not isinstance(options, dict):
            raise ConfigError(f"detect.{name}: expected a mapping of {name} options")
        check_arguments(registry.load(name), {**options, **({"weights": weights} if name == "yolo" and weights else {})}, f"detect.{name}")
    choice = choose_detector(weights)
    return choice.backend, {**branches[choice.backend], **choice.options}


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
) -> RunOutputs:
    """Run the configured pipeline over sources and write JSON Lines, summary and extras.

    sources: file paths, folders (expanded recursively) or rtsp:// URLs.
    resume: skip sources whose output file is complete from an earlier run of the same out_dir.

    Unusable output folders are an OutputError before any model is built. An output that fails
    during the run (disk full) stops the sources; what is in flight is drained without writing,
    the summary says why, and ``output_error`` is set. Silhouette strips that cannot be written are
    counted in the summary (``silhouettes``), never dropped silently.
    """
    from pipeline.sources import SourceOptions, expand_sources, open_source, source_id_of

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

    set_compute_threads(runner_options)
    pipeline = build_stages(config)
    strips = SilhouetteStripWriter(out_dir) if save_silhouettes else None
    videos = _AnnotatedVideos(Path(video_out)) if video_out is not None else None
    track_files: list[Path] = []
    runner = Runner(pipeline.frame_stages, pipeline.assembler, pipeline.track_stages, runner_options)
    failure: list[str] = []  # the first output error; then nothing more is written

    def guarded(write):
        def call(*args: Any) -> None:
            if failure:
                return
            try:
                write(*args)
            except OSError as exc:
                failure.append(str(output_error(getattr(exc, "filename", None) or out_dir, exc)))
                log.error("%s; stopping the sources", failure[0])
                runner.stop()
        return call

    @guarded
    def on_window(window: TrackWindow) -> None:
        writer.write_window(window)
        if strips is not None:
            strips.write(window)
        if videos is not None:
            videos.note_window(window)

    @guarded
    def on_event(event: SourceEvent) -> None:
        level = logging.ERROR if event.kind == "error" else logging.INFO
        log.log(level, "%s", one_line(f"{event.source_id or '(empty argument)'}: {event.message}"))
        writer.write_event(event)

    def on_source_end(source_id: str, complete: bool) -> None:
        if complete and not failure:
            guarded(lambda: track_files.append(writer.complete(source_id)))()
        if not complete or failure:
            writer.close_source(source_id)
        if videos is not None:
            guarded(videos.close)(source_id)

    opened = (open_source(spec, source_options) for spec in todo)
    started = time.time()
    try:
        result = runner.run(
            opened,
            on_window=on_window,
            on_event=on_event,
            on_frame=guarded(videos.write_frame) if videos is not None else None,
            on_source_end=on_source_end,
        )
    finally:
        writer.close()
        if videos is not None:
            try:
                videos.close_all()
            except OSError as exc:
                failure.append(str(output_error(video_out, exc)))
    summary = _summary(config, pipeline, result, ids, skipped, track_files, started)
    summary["output_error"] = failure[0] if failure else None
    if strips is not None:
        summary["silhouettes"] = strips.report()
    summary_path: Path | None = out_dir / "summary.json"
    try:
        write_json_atomic(summary_path, summary)
    except OSError as exc:
        log.error("%s", output_error(summary_path, exc))
        summary_path = None
    return RunOutputs(out_dir, summary_path, track_files, result, summary, failure[0] if failure else None)


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
    pipeline: BuiltPipeline,
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
        "backends": pipeline.descriptions,
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
        "track_files": [str(p) for p in track_files],
    }


class _AnnotatedVideos:
    """One annotated MP4 per source, with the latest identity/route label of each track."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writers: dict[str, Any] = {}
        self._labels: dict[tuple[str, int], str] = {}

    def note_window(self, window: TrackWindow) -> None:
        # Short captions, so that neighbouring boxes stay readable: the identity when one matched,
        # else the route ("gait" or "app").
        if window.identity is not None and window.identity.identity:
            label = window.identity.identity
        elif window.gait is not None:
            label = {"appearance": "app"}.get(window.gait.route, window.gait.route)
        else:
            return
        self._labels[(window.source_id, window.track_id)] = label

    def write_frame(self, result: FrameResult) -> None:
        from pipeline.export import source_file_stem
        from pipeline.video_writer import AnnotatedVideoWriter

        source_id = result.frame.source_id
        writer = self._writers.get(source_id)
        if writer is None:
            writer = AnnotatedVideoWriter(self.folder / f"{source_file_stem(source_id)}.mp4")
            self._writers[source_id] = writer
        labels = {tid: label for (sid, tid), label in self._labels.items() if sid == source_id}
        writer.write(result, labels)

    def close(self, source_id: str) -> None:
        writer = self._writers.pop(source_id, None)
        if writer is not None:
            writer.close()

    def close_all(self) -> None:
        for source_id in list(self._writers):
            self.close(source_id)


def check_stage_params(config: PipelineConfig) -> None:
    """Validate every stage section against its backend's constructor without building models."""
    from stages.catalog import STAGE_KINDS

    for kind, spec in config.stages.items():
        if spec.backend == "auto":
            continue
        check_arguments(STAGE_KINDS[kind].load(spec.backend), spec.params, kind)
