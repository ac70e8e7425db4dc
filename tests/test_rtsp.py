"""RTSP sources against a real RTSP server (GStreamer's, started here on 127.0.0.1), and against
addresses that refuse or never answer.

The server runs under Debian's Python, which has PyGObject and the GStreamer RTSP bindings:
``apt-get install -y python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp
gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad``; the tests that
need it are skipped, saying so, where it is missing.
"""

from __future__ import annotations

import itertools
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pipeline.messages import Frame, SourceEvent
from pipeline.sources import SourceOptions, open_source

# Debian's interpreters, which see the distribution's PyGObject (a virtual environment does not)
SYSTEM_PYTHONS = (Path("/usr/bin/python3.11"), Path("/usr/bin/python3"))
SERVER_SCRIPT = Path(__file__).resolve().parent / "rtsp_server.py"
FPS = 10
_GST_CHECK = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "assert all(Gst.ElementFactory.find(e) for e in ('appsrc', 'qtdemux', 'h264parse', 'rtph264pay'))"
)


@pytest.fixture(scope="module")
def system_python() -> Path:
    """A Python with the GStreamer RTSP server bindings, or a skip saying what to install."""
    for python in SYSTEM_PYTHONS:
        if python.exists() and subprocess.run(
            [str(python), "-c", _GST_CHECK], capture_output=True, timeout=30, check=False
        ).returncode == 0:
            return python
    pytest.skip(
        "no GStreamer RTSP server for the stream tests: apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
        "gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s, 160x120, 10 fps H.264 clip: a white square moving right (the server loops it)."""
    path = tmp_path_factory.mktemp("rtsp") / "loop.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "g": "10"})
        stream.height, stream.width, stream.pix_fmt = 120, 160, "yuv420p"
        for i in range(2 * FPS):
            image = np.zeros((120, 160, 3), dtype=np.uint8)
            cv2.rectangle(image, (5 * i, 40), (5 * i + 30, 80), (255, 255, 255), cv2.FILLED)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


class RtspServer:
    """The looping clip server in its own process; stop() kills it (by its pid) like a crash."""

    def __init__(self, python: Path, clip: Path, port: int) -> None:
        self.python, self.clip, self.port = python, clip, port
        self.process: subprocess.Popen | None = None

    def url(self, credentials: str = "") -> str:
        return f"rtsp://{credentials}127.0.0.1:{self.port}/stream"

    def start(self, timeout_s: float = 15.0) -> None:
        self.process = subprocess.Popen(
            [str(self.python), str(SERVER_SCRIPT), "--clip", str(self.clip), "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(f"RTSP server did not start: {line!r}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def server(system_python: Path, clip: Path) -> Iterator[RtspServer]:
    srv = RtspServer(system_python, clip, free_port())
    srv.start()
    yield srv
    srv.stop()


def fast_options(**overrides: object) -> SourceOptions:
    values: dict = {"open_timeout_s": 2.0, "read_timeout_s": 2.0, "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0}
    values.update(overrides)
    return SourceOptions(**values)


def test_reads_frames_at_the_stream_rate(server: RtspServer) -> None:
    frames: list[Frame] = []
    arrivals: list[float] = []
    events: list[SourceEvent] = []
    with open_source(server.url(), fast_options(max_frames=30)) as source:
        for item in source:
            if isinstance(item, Frame):
                frames.append(item)
                arrivals.append(time.monotonic())
            else:
                events.append(item)
    assert [e.kind for e in events] == ["opened", "ended"]
    assert len(frames) == 30 and frames[0].image.shape == (120, 160, 3)
    assert [f.index for f in frames] == list(range(30))
    pts = np.array([f.pts_s for f in frames])
    assert pts[0] == 0.0 and np.all(np.diff(pts) > 0)
    np.testing.assert_allclose(np.diff(pts[1:]), 1 / FPS, atol=0.01)  # the stream's own clock
    # frames beyond what FFmpeg buffered while probing arrive in real time, crossing the clip's loop
    rate = (len(arrivals) - 11) / (arrivals[-1] - arrivals[10])
    assert 0.6 * FPS < rate < 1.6 * FPS  # reading as fast as possible would be hundreds
    # the looped clip starts over: the square is back at the left
    assert frames[21].image[60, 10].mean() > 200 and frames[18].image[60, 10].mean() < 50


def test_credentials_are_masked(server: RtspServer) -> None:
    url = server.url("alice:s3cret@")
    with open_source(url, fast_options(max_frames=3)) as source:
        items = list(source)
    assert source.source_id == server.url("alice:***@")
    assert all(item.source_id == source.source_id for item in items)
    messages = [item.message for item in items if isinstance(item, SourceEvent)]
    assert messages and not any("s3cret" in m for m in messages)
    assert sum(isinstance(item, Frame) for item in items) == 3


def test_refused_connection_is_an_error_at_once_and_retries_with_backoff() -> None:
    url = f"rtsp://bob:pw123@127.0.0.1:{free_port()}/stream"
    started = time.monotonic()
    with open_source(url, fast_options(max_reconnect_attempts=2)) as source:
        timed = [(time.monotonic() - started, item) for item in source]
    assert [item.kind for _, item in timed] == ["error", "error", "error"]
    first_s, first = timed[0]
    assert first_s < 5.0  # at once, not after a timeout
    assert "Connection refused" in first.message and "retrying in 0.2 s" in first.message
    assert first.source_id == url.replace(":pw123@", ":***@") and all("pw123" not in e.message for _, e in timed)
    assert "retrying in 0.4 s" in timed[1][1].message
    assert "giving up after 2 reconnect attempts" in timed[2][1].message
    assert timed[2][0] < 10.0  # 0.2 s + 0.4 s of backoff, not a hang


def test_silent_server_is_an_error_within_the_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []

    def accept_and_say_nothing() -> None:
        try:
            while True:
                accepted.append(listener.accept()[0])
        except OSError:  # listener closed at the end of the test
            pass

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    url = f"rtsp://127.0.0.1:{listener.getsockname()[1]}/stream"
    try:
        started = time.monotonic()
        with open_source(url, fast_options(open_timeout_s=1.0, max_reconnect_attempts=0)) as source:
            events = list(source)
        elapsed = time.monotonic() - started
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    assert [e.kind for e in events] == ["error"]
    assert "no answer within 1 s" in events[0].message
    assert 0.9 < elapsed < 10.0  # the 1 s timeout, with room for a loaded machine
    assert accepted  # it really connected and waited


def test_close_ends_the_iteration_while_the_source_waits_on_a_silent_server() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        source = open_source(f"rtsp://127.0.0.1:{listener.getsockname()[1]}/s", fast_options(open_timeout_s=5.0))
        items = iter(source)
        threading.Timer(0.5, source.close).start()  # as the runner's stop() does from another thread
        started = time.monotonic()
        assert list(items) == []
        assert time.monotonic() - started < 4.5  # before the 5 s open timeout: close ended the wait
    finally:
        listener.close()


def test_server_killed_mid_stream_then_restarted_gives_a_gap_and_frames_resume(server: RtspServer) -> None:
    frames: list[Frame] = []
    events: list[SourceEvent] = []
    frames_before_reconnect = 0
    started = time.monotonic()
    with open_source(server.url("cam:pw@"), fast_options()) as source:
        for item in source:
            if isinstance(item, Frame):
                frames.append(item)
                if len(frames) == 10:
                    server.stop()  # the camera goes away mid-stream
            else:
                events.append(item)
                if item.kind == "error" and server.process is None:
                    time.sleep(1.0)  # stays away a while, then comes back on the same address
                    server.start()
                if item.kind == "reconnected":
                    frames_before_reconnect = len(frames)
            if frames_before_reconnect and len(frames) >= frames_before_reconnect + 10:
                break
            assert time.monotonic() - started < 25, f"no reconnect; events: {[e.message for e in events]}"
    kinds = [e.kind for e in events]
    assert kinds[0] == "opened"
    assert kinds.index("error") < kinds.index("reconnected") < kinds.index("gap")
    assert "stream ended" in events[kinds.index("error")].message
    gap = events[kinds.index("gap")]
    last, resumed = frames[frames_before_reconnect - 1], frames[frames_before_reconnect]
    # the gap runs from the last frame before the drop to the first frame after it
    assert gap.pts_s == pytest.approx(last.pts_s)
    assert resumed.pts_s - last.pts_s > 0.8  # the server was away for at least 1 s
    assert f"({last.pts_s:.2f} s .. {resumed.pts_s:.2f} s)" in gap.message
    pts = [f.pts_s for f in frames]
    assert all(b > a for a, b in itertools.pairwise(pts))
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(f.source_id == server.url("cam:***@") for f in frames)
    assert not any(":pw@" in e.message for e in events)


def test_server_that_hangs_mid_stream_is_a_drop_within_the_read_timeout(server: RtspServer) -> None:
    assert server.process is not None
    frames: list[Frame] = []
    events: list[SourceEvent] = []
    hung_at = resumed_at = 0.0
    with open_source(server.url(), fast_options(read_timeout_s=1.0, open_timeout_s=1.0)) as source:
        for item in source:
            if isinstance(item, Frame):
                frames.append(item)
                if len(frames) == 5:
                    os.kill(server.process.pid, signal.SIGSTOP)  # connection stays open, nothing comes
                    hung_at = time.monotonic()
            else:
                events.append(item)
                if item.kind == "error" and not resumed_at:
                    resumed_at = time.monotonic()
                    os.kill(server.process.pid, signal.SIGCONT)
                if item.kind == "reconnected":
                    break
            assert not hung_at or time.monotonic() - hung_at < 15, [e.message for e in events]
    drop = next(e for e in events if e.kind == "error")
    assert "stream silent for 1 s" in drop.message
    assert 0.9 < resumed_at - hung_at < 10.0  # the read timeout, not a hang


def test_unknown_stream_path_is_one_clear_error(server: RtspServer) -> None:
    url = server.url().replace("/stream", "/nothing-here")
    with open_source(url, fast_options(max_reconnect_attempts=0)) as source:
        events = list(source)
    assert [e.kind for e in events] == ["error"]
    assert "404" in events[0].message and "\n" not in events[0].message


def test_run_command_on_a_live_stream_masks_credentials(system_python: Path, tmp_path: Path) -> None:
    """`run_pipeline.py run rtsp://...` end to end on a real clip served live: tracks, masked credentials."""
    import json
    import sys

    campus = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "videos" / "campus_road_480x360.mp4"
    if not campus.exists():
        pytest.skip(f"shared clip {campus} is absent")
    srv = RtspServer(system_python, campus, free_port())
    srv.start()
    try:
        out = tmp_path / "out"
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve().parents[1] / "run_pipeline.py"), "run",
             srv.url("analyst:s3cret@"), "--config", "front_half", "--out", str(out), "--max-frames", "80",
             "--no-progress"],
            capture_output=True, text=True, timeout=120, check=False,
        )
    finally:
        srv.stop()
    assert proc.returncode == 0, proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr
    summary_text = (out / "summary.json").read_text()
    assert "s3cret" not in summary_text and "analyst:***@" in summary_text
    assert json.loads(summary_text)["frames_total"] == 80
    records = [json.loads(line) for path in (out / "tracks").glob("*.jsonl") for line in path.read_text().splitlines()]
    assert any(r["type"] == "track" for r in records)
    assert all("s3cret" not in r["source"] for r in records)
