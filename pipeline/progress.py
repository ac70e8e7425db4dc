"""Progress of a batch: sources and video hours done and left, speed in video-hours per hour.

Shown on one line of the terminal (only when stderr is one); the formatting is a plain function of
a `ProgressSnapshot` so it can be tested without a clock.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class ProgressSnapshot:
    """Where a batch stands.

    video_s_done: seconds of video processed (finished sources count their whole duration).
    video_s_total: seconds of video in the batch; None when a source's length is unknown (streams).
    """

    sources_total: int
    sources_done: int
    frames: int
    video_s_done: float
    video_s_total: float | None
    elapsed_s: float

    @property
    def video_hours_per_hour(self) -> float | None:
        return self.video_s_done / self.elapsed_s if self.elapsed_s > 0 and self.video_s_done > 0 else None


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def format_progress(snapshot: ProgressSnapshot, width: int = 20) -> str:
    """One line, e.g. ``[#####-----] 2/4 sources  1.50 h of 3.00 h video, 1.50 h left  6.0 video-h/h  eta 15m00s``."""
    s = snapshot
    total = s.video_s_total
    fraction = (
        min(1.0, s.video_s_done / total) if total else (s.sources_done / s.sources_total if s.sources_total else 0.0)
    )
    filled = round(fraction * width)
    parts = [f"[{'#' * filled}{'-' * (width - filled)}] {s.sources_done}/{s.sources_total} sources"]
    if total:
        left = max(0.0, total - s.video_s_done)
        parts.append(f"{_hours(s.video_s_done)} of {_hours(total)} video, {_hours(left)} left")
    else:
        parts.append(f"{_hours(s.video_s_done)} video")
    parts.append(f"{s.frames} frames")
    speed = s.video_hours_per_hour
    if speed is not None:
        parts.append(f"{speed:.2f} video-h/h")
        if total:
            parts.append(f"eta {_duration(max(0.0, total - s.video_s_done) / speed)}")
    return "  ".join(parts)


def probe_duration(spec: str) -> float | None:
    """Length in seconds of a video file from its container header; None for streams or unreadable files."""
    if "://" in spec:
        return None
    import av

    try:
        with av.open(spec, timeout=2.0) as container:
            if container.duration is not None:
                return container.duration / 1_000_000
            stream = container.streams.video[0]
            return float(stream.duration * stream.time_base) if stream.duration else None
    except Exception:  # unreadable: its own error is reported when the run opens it
        return None


class BatchProgress:
    """The batch's progress line on stderr, redrawn at most every ``interval_s``.

    durations: source -> length in seconds (None: unknown). enabled: None = only on a terminal.
    """

    def __init__(
        self,
        durations: dict[str, float | None],
        enabled: bool | None = None,
        stream: TextIO | None = None,
        interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.durations = dict(durations)
        self.interval_s = interval_s
        self.clock = clock
        self.started = clock()
        self._last_draw = -float("inf")
        self._width = 0

    def snapshot(self, frames: dict[str, int], video_s: dict[str, float], done: Iterable[str]) -> ProgressSnapshot:
        done = set(done)
        seconds = 0.0
        for source in set(video_s) | done:
            duration = self.durations.get(source)
            at = video_s.get(source, 0.0)
            seconds += (duration if duration is not None else at) if source in done else min(at, duration or at)
        known = list(self.durations.values())
        total = sum(known) if known and all(d is not None for d in known) else None
        return ProgressSnapshot(
            len(self.durations) or len(set(video_s) | done),
            len(done),
            sum(frames.values()),
            seconds,
            total,
            self.clock() - self.started,
        )

    def update(
        self, frames: dict[str, int], video_s: dict[str, float], done: Iterable[str], force: bool = False
    ) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if not force and now - self._last_draw < self.interval_s:
            return
        self._last_draw = now
        line = format_progress(self.snapshot(dict(frames), dict(video_s), list(done)))
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
