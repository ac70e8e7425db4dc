"""Video sources: files, folders of camera archives and RTSP streams, decoded with PyAV.

A source decodes in its own thread into a bounded queue (back-pressure: a slow pipeline slows the
decoder, memory stays constant) and is iterated as a stream of ``Frame`` items interleaved with
``SourceEvent`` items:

- ``opened``: once, when the source was first opened (size, codec, rate).
- ``gap``: frames missing between two frames: a live stream reconnected, or the timestamps jumped
  by more than 10 frame intervals (at least 1 s; e.g. an archive that paused recording).
  ``pts_s`` is the last frame before the gap, the next frame's ``pts_s`` its end; the message
  gives the span.
- ``reconnected``: live streams only, after a drop.
- ``error``: what went wrong. For files it is the last item (missing, not a regular file, a
  symlink loop, not a video, truncated or corrupt: the frames that could be decoded come first).
  For live streams it reports a failed connection or a drop, and the source retries with
  exponential backoff; it is the last item when ``max_reconnect_attempts`` retries without a frame
  in between failed (bounded by default, so a batch ends; ``null`` retries forever).
- ``ended``: the last item of a file that decoded completely, or of any source once ``max_frames``
  frames were delivered.

Event messages are one line for the user and do not repeat the ``source_id`` the event carries.
Nothing a user can feed in raises or hangs: every PyAV call on the network has a timeout, only
regular files are opened (a FIFO or a device could block forever), a malformed URL or an
unusable path is an error of that source alone, and ``close()`` ends the iteration at once (the
decode thread follows within one read timeout). Credentials in URLs are masked in ``source_id``
and every message. The ``source_id`` of a file is its resolved absolute path, so the same file
given as a relative path, an absolute path or through a symlink is one source (``--resume``).
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import re
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

import av
import av.error

from pipeline.config import check_fields
from pipeline.domains import NonNegativeInt, PositiveFloat, PositiveInt
from pipeline.messages import Frame, SourceEvent

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg",
     ".flv", ".wmv", ".3gp", ".h264", ".264", ".h265", ".265", ".hevc", ".mjpeg", ".mjpg"}
)
LIVE_SCHEMES = frozenset({"rtsp", "rtsps"})

# user:password@ inside any URL of a text (PyAV error messages can quote the URL); the password
# runs to the last @ of the host part, so it may itself contain @.
_CREDENTIALS = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):[^/\s]*@")
# cameras that take them in the query string: ?user=admin&password=...
_QUERY_SECRETS = re.compile(r"(?P<head>[?&](?:password|passwd|pwd|pass|token|key|auth)=)[^&\s]*", re.IGNORECASE)


def mask_credentials(text: str) -> str:
    """``rtsp://user:secret@host/x?token=t`` -> ``rtsp://user:***@host/x?token=***``, in every URL of ``text``."""
    return _QUERY_SECRETS.sub(r"\g<head>***", _CREDENTIALS.sub(r"\g<head>:***@", text))


@dataclass
class SourceOptions:
    """Options of every source (the ``source:`` section of a configuration).

    frame_stride: deliver every n-th decoded frame (``Frame.index`` still counts all of them).
    max_frames: stop after delivering this many frames (after the stride); None = all.
    rtsp_transport: "tcp" (reliable, default) or "udp".
    open_timeout_s: give up opening (connect, handshake, stream probing) after this long.
    read_timeout_s: a live stream that delivers nothing for this long counts as dropped.
    reconnect_initial_s, reconnect_max_s: live streams retry after the initial delay, doubling up
        to the maximum after each failed attempt.
    max_reconnect_attempts: retries after a drop or a failed connection, without a frame in
        between, before a live source gives up (0: at once); None = retry forever (for an operator's
        endless watch; batch runs stay bounded by default, so a dead camera cannot hold a batch).
    live_analyze_s: how much of a live stream FFmpeg reads to probe it (latency of opening).
    queue_size: decoded items buffered between the decode thread and the consumer.
    decode_threads: decoder threads (FFmpeg frame/slice threading); 0 = FFmpeg chooses.
    """

    frame_stride: PositiveInt = 1
    max_frames: NonNegativeInt | None = None
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    open_timeout_s: PositiveFloat = 5.0
    read_timeout_s: PositiveFloat = 5.0
    reconnect_initial_s: PositiveFloat = 1.0
    reconnect_max_s: PositiveFloat = 30.0
    max_reconnect_attempts: NonNegativeInt | None = 5
    live_analyze_s: PositiveFloat = 0.5
    queue_size: PositiveInt = 16
    decode_threads: NonNegativeInt = 0

    def __post_init__(self) -> None:
        check_fields(self, "source")


def is_live(spec: str) -> bool:
    """True for network stream URLs (rtsp://, rtsps://), which reconnect instead of ending."""
    scheme, sep, _ = spec.partition("://")
    return bool(sep) and scheme.lower() in LIVE_SCHEMES


def source_id_of(spec: str) -> str:
    """The id of a source: a URL with its credentials masked, or a file's resolved absolute path.

    Resolving makes ``clips/a.mp4``, ``/data/clips/a.mp4`` and a symlink to it one source, so outputs
    and ``--resume`` do not depend on how the path was spelled. A path that cannot be resolved (a
    symlink loop, too long) keeps its absolute spelling; opening it reports why.
    """
    if "://" in spec or not spec:
        return mask_credentials(spec)
    try:
        return str(Path(spec).resolve())
    except (OSError, RuntimeError):
        return os.path.abspath(spec) if len(spec) < 4096 else spec


def expand_sources(specs: list[str]) -> list[str]:
    """Files as given, folders expanded recursively to their video files (sorted), URLs as given.

    Files with other extensions inside folders are skipped. A folder without any video file, a
    missing path or an unreadable file is kept as given, so that opening it reports why.
    Duplicates are dropped (the first occurrence keeps its place).
    """
    expanded: list[str] = []
    for spec in specs:
        if spec and "://" not in spec and _is_dir(spec):  # "" is an error of its own, never the current folder
            videos = sorted(
                str(p) for p in Path(spec).rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and _is_regular(p)
            )
            expanded.extend(videos or [spec])
        else:
            expanded.append(spec)
    by_id: dict[str, str] = {}
    for spec in expanded:
        by_id.setdefault(source_id_of(spec), spec)
    return list(by_id.values())


def _is_dir(spec: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(spec).st_mode)
    except (OSError, ValueError):
        return False


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except (OSError, ValueError):
        return False


def open_source(spec: str, options: SourceOptions | None = None) -> VideoSource:
    """A source for a file path, a folder (its error if it holds no video) or an rtsp:// URL.

    Nothing is opened until the source is iterated.
    """
    return VideoSource(spec, options or SourceOptions())


class _Stopped(Exception):
    """The consumer closed the source; the decode thread unwinds."""


_END = object()  # queue sentinel after the last item


class VideoSource:
    """One file or stream; iterate it once for ``Frame`` and ``SourceEvent`` items, then ``close()``.

    source_id: the file's resolved path, or the URL with its password masked (`source_id_of`).
    """

    def __init__(self, spec: str, options: SourceOptions) -> None:
        self.spec = spec
        self.options = options
        self.source_id = source_id_of(spec)
        self.live = is_live(spec)
        self._queue: queue.Queue = queue.Queue(maxsize=options.queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._delivered = 0  # frames put in the queue (after stride)
        self._decoded = 0  # frames decoded (before stride), also Frame.index of the next one

    # consumer side -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Frame | SourceEvent]:
        if self._thread is not None:
            raise RuntimeError(f"{self.source_id}: a source can be iterated only once")
        self._thread = threading.Thread(target=self._run, name=f"decode:{self.source_id}", daemon=True)
        self._thread.start()
        return self._items()

    def _items(self) -> Iterator[Frame | SourceEvent]:
        try:
            while not self._stop.is_set():
                try:
                    item = self._queue.get(timeout=0.1)  # short wait: notices close() from any thread
                except queue.Empty:
                    continue
                if item is _END:
                    return
                yield item
        finally:  # the consumer stopped early or finished: stop decoding, without waiting for it
            self._request_stop()

    def _request_stop(self) -> None:
        self._stop.set()
        while True:  # unblock a decode thread waiting for room in the queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def close(self, join_timeout_s: float = 0.5) -> None:
        """Stops decoding; the iteration ends at once. Safe to call twice and from any thread.

        The decode thread exits as soon as its current PyAV call returns: at once for files and
        flowing streams, within the read timeout for a silent one (it is a daemon thread, so it
        never keeps the process alive).
        """
        self._request_stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=join_timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # decode thread -----------------------------------------------------------------------------

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _event(self, kind: str, message: str, pts_s: float | None = None) -> None:
        message = mask_credentials(message)
        log.debug("%s", message)  # the consumer reports events; logging them here would say it twice
        self._put(SourceEvent(self.source_id, kind, message, pts_s))  # type: ignore[arg-type]

    def _run(self) -> None:
        try:
            if self.live:
                self._run_live()
            else:
                self._run_file()
        except _Stopped:
            return
        except Exception as exc:  # noqa: BLE001 - a decoder bug must end this source, never the process
            try:
                self._event("error", f"unexpected {type(exc).__name__}: {_reason(exc)}")
            except _Stopped:
                return
        try:
            self._put(_END)
        except _Stopped:
            pass

    def _limit_reached(self) -> bool:
        return self.options.max_frames is not None and self._delivered >= self.options.max_frames

    def _open(self, **kwargs: object) -> av.container.InputContainer:
        container = av.open(self.spec, mode="r", **kwargs)
        if not container.streams.video:
            container.close()
            raise _NoVideo("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads
        stream.thread_count = self.options.decode_threads
        return container

    def _describe(self, container: av.container.InputContainer) -> str:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        rate = _frame_rate(stream)
        frames = f", {stream.frames} frames" if stream.frames and not self.live else ""
        return f"{ctx.width}x{ctx.height} {ctx.name} {rate:.4g} fps{frames}"

    def _run_file(self) -> None:
        if "://" in self.spec:
            scheme = self.spec.partition("://")[0][:20]
            self._event("error", f"unsupported URL scheme {scheme!r} (use rtsp:// or a path)")
            return
        problem = _unusable_path(self.spec)
        if problem:
            self._event("error", problem)
            return
        if _is_dir(self.spec):
            if expand_sources([self.spec]) == [self.spec]:
                self._event("error", "folder holds no video files (.mp4, .mkv, .avi, ...)")
            else:
                self._event("error", "is a folder; expand it into its files first")
            return
        try:
            container = self._open(timeout=self.options.open_timeout_s)
        except (av.error.FFmpegError, OSError, _NoVideo) as exc:
            self._event("error", f"cannot open as video: {_reason(exc)}")
            return
        try:
            self._decode_file(container)
        finally:
            container.close()

    def _decode_file(self, container: av.container.InputContainer) -> None:
        stream = container.streams.video[0]
        self._event("opened", f"opened: {self._describe(container)}", 0.0)
        start = stream.start_time or 0
        rate = _frame_rate(stream)
        gap_s = _gap_threshold_s(1.0 / rate if rate else 0.04)
        last_pts_s: float | None = None
        bad_packets = 0
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    bad_packets += 1  # FFmpeg conceals the damage; the following frames still decode
                    continue
                for frame in frames:
                    if frame.pts is not None:
                        pts_s = float((frame.pts - start) * stream.time_base)
                    else:
                        pts_s = self._decoded / rate if rate else float(self._decoded)
                    if last_pts_s is not None:
                        if pts_s <= last_pts_s:  # damaged timestamps: keep time moving forward
                            pts_s = last_pts_s + 1e-6
                        elif pts_s - last_pts_s > gap_s:  # an archive that paused recording
                            self._event("gap", _gap_message(last_pts_s, pts_s), last_pts_s)
                    last_pts_s = pts_s
                    self._deliver(frame, pts_s)
                    if self._limit_reached():
                        self._event("ended", f"ended after max_frames={self.options.max_frames}")
                        return
        except (av.error.FFmpegError, OSError) as exc:
            self._event("error", f"read failed after {self._decoded} frames: {_reason(exc)}")
            return
        expected = stream.frames
        if bad_packets or (expected and self._decoded < expected):
            of = f" of {expected}" if expected else ""
            self._event(
                "error",
                f"truncated or corrupt: decoded {self._decoded}{of} frames, "
                f"{bad_packets} undecodable packets",
            )
            return
        self._event("ended", f"ended after {self._decoded} frames")

    def _deliver(self, frame: av.VideoFrame, pts_s: float) -> None:
        """Counts a decoded frame and queues it when the stride selects it (converting only then)."""
        if self._stop.is_set():
            raise _Stopped
        index = self._decoded
        self._decoded += 1
        if index % self.options.frame_stride:
            return
        image = frame.to_ndarray(format="bgr24")
        self._put(Frame(self.source_id, index, pts_s, image))
        self._delivered += 1

    # live streams ------------------------------------------------------------------------------

    def _run_live(self) -> None:
        opts = self.options
        try:
            urlsplit(self.spec)
        except ValueError as exc:
            self._event("error", f"malformed URL: {_reason(exc)}")
            return
        clock = _LiveClock()
        retries = 0  # reconnect attempts since the last frame
        connections = 0
        while True:
            started = time.monotonic()
            try:
                container = self._open(
                    options={
                        "rtsp_transport": opts.rtsp_transport,
                        "analyzeduration": str(int(opts.live_analyze_s * 1e6)),
                    },
                    timeout=(opts.open_timeout_s, opts.read_timeout_s),
                )
            except (av.error.FFmpegError, OSError, _NoVideo) as exc:
                if time.monotonic() - started >= 0.9 * opts.open_timeout_s:  # FFmpeg says "invalid data"
                    problem = f"cannot connect: no answer within {opts.open_timeout_s:g} s"
                else:
                    problem = f"cannot connect: {_reason(exc)}"
            else:
                connections += 1
                kind = "opened" if connections == 1 else "reconnected"
                self._event(kind, f"{kind}: {self._describe(container)}", clock.last_pts_s)
                decoded_before = self._decoded
                try:
                    problem = self._decode_live(container, clock)
                finally:
                    container.close()
                if self._decoded > decoded_before:  # a server that accepts and drops at once keeps backing off
                    retries = 0
                if self._limit_reached():
                    self._event("ended", f"ended after max_frames={opts.max_frames}")
                    return
            if opts.max_reconnect_attempts is not None and retries >= opts.max_reconnect_attempts:
                self._event("error", f"{problem}; giving up after "
                                     f"{retries} reconnect attempts", clock.last_pts_s)
                return
            delay = min(opts.reconnect_initial_s * 2 ** min(retries, 30), opts.reconnect_max_s)
            self._event("error", f"{problem}; retrying in {delay:.1f} s", clock.last_pts_s)
            retries += 1
            if self._stop.wait(delay):
                raise _Stopped

    def _decode_live(self, container: av.container.InputContainer, clock: _LiveClock) -> str:
        """Decodes until the stream drops; returns why it stopped."""
        stream = container.streams.video[0]
        rate = _frame_rate(stream)
        clock.new_connection(1.0 / rate if rate else 0.04)
        packets = container.demux(stream)
        while True:
            asked = time.monotonic()  # not counting time blocked on a slow consumer
            try:
                packet = next(packets)
            except StopIteration:
                problem = "stream ended"
                break
            except (av.error.FFmpegError, OSError) as exc:
                problem = f"stream dropped: {_reason(exc)}"
                break
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                continue  # a damaged packet on the wire; the decoder resynchronises on its own
            for frame in frames:
                stream_s = float(frame.pts * stream.time_base) if frame.pts is not None else None
                previous_s = clock.last_pts_s
                pts_s, after_gap = clock.stamp(stream_s)
                if after_gap and previous_s is not None:
                    self._event("gap", _gap_message(previous_s, pts_s), previous_s)
                self._deliver(frame, pts_s)
                if self._limit_reached():
                    return "max_frames reached"
        if time.monotonic() - asked >= 0.9 * self.options.read_timeout_s:  # FFmpeg's reason is vague
            problem = f"stream silent for {self.options.read_timeout_s:g} s"
        return f"{problem} after {self._decoded} frames"


class _LiveClock:
    """Monotonic presentation times for a live stream across reconnects.

    Within a connection, times follow the stream's own timestamps; each connection is placed on
    the wall clock (seconds since the source's first frame), so the time lost while reconnecting
    shows up as a jump, and never before the previous frame.
    """

    def __init__(self) -> None:
        self.t0: float | None = None  # time.monotonic() of the first frame
        self.last_pts_s: float | None = None
        self._frame_s = 0.04
        self._offset: float | None = None  # pts_s - stream_s within the current connection
        self._first_of_connection = False

    def new_connection(self, frame_interval_s: float) -> None:
        self._frame_s = frame_interval_s
        self._offset = None
        self._first_of_connection = True

    def stamp(self, stream_s: float | None) -> tuple[float, bool]:
        """pts_s of the next frame, and whether frames are missing before it (a reconnect, or a
        jump of the stream's clock while connected)."""
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        earliest = 0.0 if self.last_pts_s is None else self.last_pts_s + self._frame_s
        if stream_s is None:  # FFmpeg leaves the first frames before RTCP sync without pts
            pts_s = max(now - self.t0, earliest)
        else:
            if self._offset is None:
                self._offset = max(now - self.t0, earliest) - stream_s
            pts_s = max(stream_s + self._offset, earliest if self.last_pts_s is None else self.last_pts_s + 1e-6)
        after_gap = self.last_pts_s is not None and (
            self._first_of_connection or pts_s - self.last_pts_s > _gap_threshold_s(self._frame_s)
        )
        self._first_of_connection = False
        self.last_pts_s = pts_s
        return pts_s, after_gap


def _frame_rate(stream: av.video.stream.VideoStream) -> float:
    """Nominal frames per second (FFmpeg's guess, which ignores recording pauses), 0 if unknown."""
    rate = stream.guessed_rate or stream.average_rate
    return float(rate) if rate else 0.0


def _gap_threshold_s(frame_interval_s: float) -> float:
    """Frames further apart than this mark a gap: 10 frame intervals, at least 1 s."""
    return max(1.0, 10 * frame_interval_s)


def _gap_message(start_s: float, end_s: float) -> str:
    return f"no frames for {end_s - start_s:.1f} s ({start_s:.2f} s .. {end_s:.2f} s)"


class _NoVideo(Exception):
    """The container opened but holds no video stream."""


_PATH_ERRORS = {
    errno.ENOENT: "file not found",
    errno.ELOOP: "symbolic link loop (the path never reaches a file)",
    errno.ENAMETOOLONG: "path too long for the file system",
    errno.EACCES: "permission denied",
    errno.ENOTDIR: "file not found (a part of the path is not a folder)",
}


def _unusable_path(spec: str) -> str | None:
    """Why a local path cannot be opened as a video file (one line), or None when it can be tried."""
    if not spec.strip():
        return "empty source argument (give a file, a folder or an rtsp:// URL)"
    try:
        mode = os.stat(spec).st_mode
    except OSError as exc:
        return _PATH_ERRORS.get(exc.errno, f"cannot open: {_reason(exc)}")
    except ValueError as exc:  # e.g. a NUL byte in the path
        return f"invalid path: {exc}"
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return None
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else \
        "a socket" if stat.S_ISSOCK(mode) else "not a file"
    return f"not a regular file ({kind}: reading it could block forever); give a video file or an rtsp:// URL"


def _reason(exc: BaseException) -> str:
    """One line describing an FFmpeg/OS error, without the Errno number or the quoted URL."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return mask_credentials(str(text).splitlines()[0])
