"""The runner: sources -> frame-level stages -> tracklets -> track-level stages -> sink.

Every stage runs in its own worker thread and talks to its neighbours through bounded queues, so a
slow stage applies back-pressure all the way to the decoders and memory stays constant on endless
streams. Model stages see batches: a worker takes whatever is waiting in its queue, up to
``batch_size`` items, so frames of several sources share one detector call.

Items that are not data for a stage (source events, end-of-source markers) pass through every
worker in order, so per-source ordering is preserved. A stage that fails on a batch does not stop
the run: frame batches are dropped with one error event per affected source, track windows carry
the error in ``window.errors`` and go on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import check_fields
from pipeline.domains import PositiveInt
from pipeline.messages import FrameResult, SourceEvent, TrackWindow
from pipeline.progress import BatchProgress

log = logging.getLogger("gaitscope")


@dataclass
class RunnerOptions:
    """The ``runner:`` config section.

    queue_size: capacity of each inter-stage queue (items).
    batch_size: most items a model stage processes in one call (frames across sources, or windows).
    max_open_sources: files decoded at the same time (a folder of archives opens them in turn); live
        streams are read each by a reader of its own, so a stream that is down never holds up files.
    progress: show a progress bar; None means only when stderr is a terminal.
    torch_threads: intra-op threads of torch for the whole process (None leaves torch's default).
        Stages already run concurrently in their own threads, and their small tensors run faster
        single-threaded than with threads that stall each other.
    """

    queue_size: PositiveInt = 16
    batch_size: PositiveInt = 8
    max_open_sources: PositiveInt = 4
    progress: bool | None = None
    torch_threads: PositiveInt | None = 1

    def __post_init__(self) -> None:
        check_fields(self, "runner")


@dataclass(frozen=True)
class SourceEnd:
    """Marker that follows the last item of a source through every queue.

    complete: False when the run was stopped before the source ended (its output is partial).
    """

    source_id: str
    complete: bool = True


class _Stop:
    """Marker that follows the last item of the whole run."""


STOP = _Stop()


@dataclass
class _OpenSource:
    """A source being read by `merge_by_video_time`: its items, the next one, and that item's video time."""

    source: Any
    items: Iterator[Any]
    next_item: Any = None
    time_s: float = 0.0


def merge_by_video_time(
    sources: Iterable[Any],
    max_open: int,
    stop: threading.Event,
    on_open: Callable[[Any], None],
    on_close: Callable[[Any], None],
) -> Iterator[Any]:
    """The items of several sources as one stream, earliest video time first; each source's own order
    is kept and its last item is followed by its ``SourceEnd``.

    Up to ``max_open`` sources are open at once (each decodes in a thread of its own); the next one
    opens when one ends. Among the open sources the one whose next item is earliest in its own video
    (seconds since its start; ties: the order they were given) goes first. Auto-enrolment decides each
    finished track against what the gallery holds at that moment, so the order in which the cameras'
    tracks end is part of a run's result: merged by video time it is the order in which the cameras
    recorded them, and the same batch gives the same identities on every run, however fast each
    decoder happens to be. A source that fails is reported (an error event) and ended; the others go on.
    """
    waiting = deque(sources)
    open_sources: dict[int, _OpenSource] = {}
    opened = 0

    def end(source: Any, error: Exception | None) -> list[Any]:
        source.close()
        on_close(source)
        ended = SourceEnd(source.source_id, complete=not stop.is_set())
        if error is None:
            return [ended]
        return [SourceEvent(source.source_id, "error", f"{type(error).__name__}: {error}".splitlines()[0]), ended]

    def advance(key: int) -> list[Any]:
        """Read the next item of an open source; at its end (or failure) the items that end it."""
        current = open_sources[key]
        try:
            current.next_item = next(current.items)
        except StopIteration:
            del open_sources[key]
            return end(current.source, None)
        except Exception as exc:  # noqa: BLE001 - a broken source must not take the batch down
            del open_sources[key]
            return end(current.source, exc)
        pts_s = getattr(current.next_item, "pts_s", None)
        if pts_s is not None:  # events without a time keep the time of the frame before them
            current.time_s = float(pts_s)
        return []

    while not stop.is_set():
        while waiting and len(open_sources) < max_open and not stop.is_set():
            source = waiting.popleft()
            on_open(source)
            try:
                items = iter(source)
            except Exception as exc:  # noqa: BLE001 - as above
                yield from end(source, exc)
                continue
            key, opened = opened, opened + 1
            open_sources[key] = _OpenSource(source, items)
            yield from advance(key)
        if not open_sources:
            return
        key = min(open_sources, key=lambda k: (open_sources[k].time_s, k))
        yield open_sources[key].next_item
        yield from advance(key)
    for current in open_sources.values():  # stopped: what is open ends incomplete
        yield from end(current.source, None)


@dataclass
class StageStats:
    """Time and item counts of one stage over a run."""

    name: str
    calls: int = 0
    items_in: int = 0
    items_out: int = 0
    seconds: float = 0.0
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        per_item = 1000.0 * self.seconds / self.items_in if self.items_in else 0.0
        rate = self.items_in / self.seconds if self.seconds > 0 else 0.0
        return {
            "stage": self.name,
            "calls": self.calls,
            "items_in": self.items_in,
            "items_out": self.items_out,
            "seconds": round(self.seconds, 3),
            "ms_per_item": round(per_item, 3),
            "items_per_s": round(rate, 1),
            "errors": self.errors,
        }


@dataclass
class NamedStage:
    """A built stage and the name it reports under."""

    name: str
    stage: Any
    accepts: type  # FrameResult or TrackWindow


class _Worker(threading.Thread):
    def __init__(
        self,
        named: NamedStage,
        inbox: queue.Queue,
        outbox: queue.Queue,
        batch_size: int,
        on_item: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__(name=f"stage-{named.name}", daemon=True)
        self.named = named
        self.inbox = inbox
        self.outbox = outbox
        self.batch_size = batch_size
        self.on_item = on_item
        self.stats = StageStats(named.name)

    def run(self) -> None:
        pending: Any = None
        while True:
            item = pending if pending is not None else self.inbox.get()
            pending = None
            if not isinstance(item, self.named.accepts):
                if self._control(item):
                    return
                continue
            batch = [item]
            while len(batch) < self.batch_size:
                try:
                    nxt = self.inbox.get_nowait()
                except queue.Empty:
                    break
                if isinstance(nxt, self.named.accepts):
                    batch.append(nxt)
                else:
                    pending = nxt
                    break
            self._process(batch)

    def _control(self, item: Any) -> bool:
        """Forward a non-data item; True when the run is over."""
        if isinstance(item, SourceEnd):
            end_source = getattr(self.named.stage, "end_source", None)
            if end_source is not None:
                try:
                    for out in end_source(item.source_id) or ():
                        self._emit(out)
                except Exception as exc:  # a failing stage must not stop the other sources
                    self.stats.errors += 1
                    self.outbox.put(SourceEvent(item.source_id, "error", f"{self.named.name}: {exc}"))
        self.outbox.put(item)
        return item is STOP

    def _process(self, batch: list[Any]) -> None:
        start = time.perf_counter()
        try:
            outputs = self.named.stage.process(batch)
        except Exception as exc:
            self.stats.errors += 1
            message = f"{self.named.name} failed: {type(exc).__name__}: {exc}".splitlines()[0]
            log.error(message)
            if self.named.accepts is TrackWindow:
                for window in batch:
                    window.errors.append(message)
                outputs = batch
            else:
                for source_id in dict.fromkeys(r.frame.source_id for r in batch):
                    self.outbox.put(SourceEvent(source_id, "error", message))
                outputs = []
        self.stats.seconds += time.perf_counter() - start
        self.stats.calls += 1
        self.stats.items_in += len(batch)
        if self.on_item is not None:
            try:
                for item in batch:
                    self.on_item(item)
            except Exception as exc:  # a failing tap must not kill the worker (the run would hang)
                self.stats.errors += 1
                log.error("%s: output tap failed: %s", self.named.name, f"{type(exc).__name__}: {exc}".splitlines()[0])
        for out in outputs:
            self._emit(out)

    def _emit(self, out: Any) -> None:
        self.stats.items_out += 1
        self.outbox.put(out)


@dataclass
class RunResult:
    """What a run produced, besides what the sink wrote."""

    stage_stats: list[dict[str, Any]]
    frames: dict[str, int]
    windows: int
    events: list[SourceEvent]
    seconds: float
    interrupted: bool
    sources_done: list[str] = field(default_factory=list)
    # What stages changed beyond their outputs, reported when they close (the gallery: identities merged).
    stage_outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Distributed runs only: a worker's seconds on each source, seconds from handing each source out
    # to having written its outputs, and seconds until every worker had built its stages.
    source_seconds: dict[str, float] = field(default_factory=dict)
    dispatch_seconds: dict[str, float] = field(default_factory=dict)
    startup_seconds: float | None = None


class Runner:
    """Connects sources, stages and a sink with bounded queues and worker threads.

    frame_stages: stages taking list[FrameResult] and returning list[FrameResult], in order.
    assembler: the stage that turns FrameResults into TrackWindows (has ``end_source``).
    track_stages: stages taking and returning list[TrackWindow], in order.
    close_stages: close the stages at the end of `run` (False when the same stages serve more runs).
    """

    def __init__(
        self,
        frame_stages: list[NamedStage],
        assembler: NamedStage,
        track_stages: list[NamedStage],
        options: RunnerOptions | None = None,
        close_stages: bool = True,
    ) -> None:
        self.frame_stages = frame_stages
        self.close_stages = close_stages
        self.assembler = assembler
        self.track_stages = track_stages
        self.options = options or RunnerOptions()
        self._stop = threading.Event()
        self._open_sources: dict[str, Any] = {}

    def stop(self) -> None:
        """Ask the sources to stop; what is in flight is still processed and flushed."""
        self._stop.set()
        for source in list(self._open_sources.values()):
            source.close()  # wakes a reader blocked on a silent stream

    def run(
        self,
        sources: Iterable[Any],
        on_window: Callable[[TrackWindow], None],
        on_event: Callable[[SourceEvent], None] | None = None,
        on_frame: Callable[[FrameResult], None] | None = None,
        on_source_end: Callable[[str, bool], None] | None = None,
        progress: BatchProgress | None = None,
    ) -> RunResult:
        """Run to the end of every source (or until `stop`/Ctrl-C) and return the statistics.

        sources: objects with ``source_id``, iteration yielding Frame or SourceEvent, and ``close()``;
            they are opened lazily, ``max_open_sources`` at a time.
        on_window: called in the calling thread for each TrackWindow after the last stage.
        on_frame: called for each FrameResult after tracking and segmentation (annotated video).
        on_source_end: called with (source_id, complete) after the last window of a source was
            delivered; complete is False when the run was stopped before the source ended.
        progress: the batch's progress line (default: one without known durations, shown as
            ``runner.progress`` says).
        """
        import supervision as sv

        started = time.perf_counter()
        size = self.options.queue_size
        queues = [queue.Queue(maxsize=size) for _ in range(len(self.frame_stages) + len(self.track_stages) + 2)]
        workers: list[_Worker] = []
        chain = [*self.frame_stages, self.assembler, *self.track_stages]
        for i, named in enumerate(chain):
            tap = on_frame if named is self.assembler else None
            batch = self.options.batch_size
            workers.append(_Worker(named, queues[i], queues[i + 1], batch, on_item=tap))
        for worker in workers:
            worker.start()

        head, tail = queues[0], queues[-1]
        frames: dict[str, int] = {}
        video_s: dict[str, float] = {}  # time of the latest frame read, per source
        # Files are merged into one stream in video-time order (deterministic results); live streams
        # each get a reader of their own and arrive as they come, so one that is down (retrying) never
        # holds up the files of the batch.
        sources = list(sources)
        files = [s for s in sources if not getattr(s, "live", False)]
        live = [s for s in sources if getattr(s, "live", False)]
        open_lock = threading.Lock()
        readers_left = [1 + len(live)]

        def opened(source: Any) -> None:
            frames.setdefault(source.source_id, 0)
            self._open_sources[source.source_id] = source

        def closed(source: Any) -> None:
            self._open_sources.pop(source.source_id, None)

        def put(item: Any) -> None:
            if isinstance(item, (SourceEvent, SourceEnd)):
                head.put(item)
                return
            frames[item.source_id] = frames.get(item.source_id, 0) + 1
            video_s[item.source_id] = item.pts_s
            head.put(FrameResult(item, sv.Detections.empty()))

        def reader_done() -> None:
            with open_lock:
                readers_left[0] -= 1
                if readers_left[0] == 0:
                    head.put(STOP)

        def read(group: list[Any], max_open: int) -> None:
            try:
                for item in merge_by_video_time(group, max_open, self._stop, opened, closed):
                    put(item)
            finally:
                reader_done()

        readers = [threading.Thread(target=read, args=(files, self.options.max_open_sources), name="reader-files",
                                    daemon=True)]
        readers += [threading.Thread(target=read, args=([s], 1), name=f"live-reader-{i}", daemon=True)
                    for i, s in enumerate(live)]
        for reader in readers:
            reader.start()

        events: list[SourceEvent] = []
        done: list[str] = []
        windows = 0
        interrupted = False
        if progress is None:
            progress = BatchProgress({}, self.options.progress)

        def deliver(item: Any) -> None:
            nonlocal windows
            if isinstance(item, TrackWindow):
                windows += 1
                on_window(item)
            elif isinstance(item, SourceEvent):
                events.append(item)
                if on_event is not None:
                    on_event(item)
            elif isinstance(item, SourceEnd):
                if item.complete:
                    done.append(item.source_id)
                if on_source_end is not None:
                    on_source_end(item.source_id, item.complete)

        try:
            while True:
                try:
                    item = tail.get(timeout=0.2)
                except queue.Empty:
                    progress.update(frames, video_s, done)
                    continue
                if item is STOP:
                    break
                deliver(item)
                progress.update(frames, video_s, done)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: stopping the sources and flushing what is in flight (Ctrl-C again to abort)")
            self.stop()
            # drain: the sources end (marked incomplete), the stages flush, final windows still arrive
            while (item := tail.get()) is not STOP:
                deliver(item)
        finally:
            progress.update(frames, video_s, done, force=True)
            progress.close()
        for worker in workers:
            worker.join(timeout=5)
        outcomes: dict[str, dict[str, Any]] = {}
        if self.close_stages:
            for named in chain:
                close = getattr(named.stage, "close", None)
                if close is not None:
                    close()
                outcome = getattr(named.stage, "outcome", None)
                if outcome is not None:
                    outcomes[named.name] = outcome()
        return RunResult(
            stage_stats=[w.stats.as_dict() for w in workers],
            frames=dict(frames),
            windows=windows,
            events=events,
            seconds=time.perf_counter() - started,
            interrupted=interrupted or self._stop.is_set(),
            sources_done=done,
            stage_outcomes=outcomes,
        )
