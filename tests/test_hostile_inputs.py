"""Unlucky and hostile sources and outputs through the real CLI: a batch always ends, every bad source
is one error of its own, resume does not depend on spelling, and output failures are never silent."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.messages import Frame, FrameResult, SourceEvent
from pipeline.runner import NamedStage, Runner, RunnerOptions
from pipeline.sources import expand_sources, source_id_of
from tests.helpers import PROJECT_ROOT, write_clip


def run_cli(*args: str, cwd: Path = PROJECT_ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "run_pipeline.py"), "run", "--config", "front_half",
                           "--no-progress", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "YOLO_OFFLINE": "1"})


def summary_of(out: Path) -> dict[str, dict]:
    return {s["source"]: s for s in json.loads((out / "summary.json").read_text())["sources"]}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error")]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "walk.mp4")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _BlockedLiveSource:
    """A live source that delivers nothing until closed (a camera that is down)."""

    live = True

    def __init__(self, name: str) -> None:
        self.source_id = name
        self._closed = threading.Event()

    def __iter__(self):
        self._closed.wait()
        return iter(())

    def close(self) -> None:
        self._closed.set()


class _File:
    live = False

    def __init__(self, name: str, n: int) -> None:
        self.source_id, self.n = name, n

    def __iter__(self):
        import numpy as np

        yield SourceEvent(self.source_id, "opened", "opened")
        for i in range(self.n):
            yield Frame(self.source_id, i, i / 10, np.zeros((8, 8, 3), np.uint8))
        yield SourceEvent(self.source_id, "ended", "ended")

    def close(self) -> None:
        pass


class _Collect:
    def process(self, batch):
        return []


def test_live_sources_that_are_down_never_hold_the_file_slots():
    dead = [_BlockedLiveSource(f"rtsp://cam{i}") for i in range(4)]
    files_done: queue.Queue = queue.Queue()
    runner = Runner([], NamedStage("tracklets", _Collect(), FrameResult), [], RunnerOptions(max_open_sources=1))

    def on_source_end(source_id: str, complete: bool) -> None:
        if source_id.startswith("file"):
            files_done.put(source_id)
            if files_done.qsize() == 2:
                runner.stop()  # the files are done while every camera is still down

    result = runner.run([*dead, _File("file-a", 5), _File("file-b", 7)], on_window=lambda w: None,
                        on_source_end=on_source_end)
    assert sorted(files_done.queue) == ["file-a", "file-b"]
    assert result.frames["file-a"] == 5 and result.frames["file-b"] == 7


def test_dead_cameras_give_up_by_default_and_the_batch_ends(tmp_path, clip):
    out = tmp_path / "out"
    dead = [f"rtsp://127.0.0.1:{closed_port()}/cam{i}" for i in range(4)]
    proc = run_cli(*dead, str(clip), "--out", str(out), "--set", "runner.max_open_sources=1",
                   "--set", "source.reconnect_initial_s=0.05", "--set", "source.reconnect_max_s=0.1")
    assert proc.returncode == 1, proc.stderr
    summary = summary_of(out)
    assert summary[str(clip)]["status"] == "done"
    for url in dead:
        assert summary[url]["status"] == "error" and "giving up after 5 reconnect attempts" in summary[url]["errors"][-1]


def test_each_unusable_source_is_one_error_and_the_batch_goes_on(tmp_path, clip):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    shutil.copy(clip, cwd / "unrelated.mp4")  # "" must not mean "the current folder"
    fifo = tmp_path / "camera.mp4"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(tmp_path / "loop2.mp4")
    (tmp_path / "loop2.mp4").symlink_to(loop)
    long_path = "/tmp/" + "x" * 5000 + ".mp4"
    out = tmp_path / "out"
    proc = run_cli(str(fifo), "rtsp://[::1", long_path, "", str(loop), str(clip), "--out", str(out), cwd=cwd,
                   timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    summary = summary_of(out)
    assert len(summary) == 6 and summary[str(clip)]["status"] == "done"
    expected = {str(fifo): "not a regular file (a FIFO", "rtsp://[::1": "malformed URL", "": "empty source argument",
                str(loop): "symbolic link loop"}
    for source, message in expected.items():
        assert summary[source]["status"] == "error" and message in summary[source]["errors"][0], summary[source]
    (long_id,) = [s for s in summary if s.endswith("x.mp4")]
    assert "path too long" in summary[long_id]["errors"][0]
    assert len(error_lines(proc.stderr)) == 5 and all(len(line) <= 400 for line in error_lines(proc.stderr))


def test_source_ids_do_not_depend_on_spelling(tmp_path, clip):
    (tmp_path / "videos").mkdir()
    shutil.copy(clip, tmp_path / "videos" / "a.mp4")
    (tmp_path / "link").symlink_to(tmp_path / "videos")
    spellings = ["videos/a.mp4", str(tmp_path / "videos" / "a.mp4"), str(tmp_path / "link" / "a.mp4"),
                 str(tmp_path / "videos" / ".." / "videos" / "a.mp4")]
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        assert len({source_id_of(s) for s in spellings}) == 1
        assert len(expand_sources([*spellings, "videos", "link"])) == 1
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("spelling", ["videos", "{abs}/videos", "{abs}/link"])
def test_resume_with_the_folder_spelled_differently_duplicates_nothing(tmp_path, clip, spelling):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(2):
        shutil.copy(clip, videos / f"cam{i}.mp4")
    (tmp_path / "link").symlink_to(videos)
    out = tmp_path / "out"
    assert run_cli(str(videos), "--out", str(out)).returncode == 0
    before = {p.name: p.read_text() for p in (out / "tracks").glob("*.jsonl")}
    again = run_cli(spelling.format(abs=tmp_path), "--resume", "--out", str(out), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    after = {p.name: p.read_text() for p in (out / "tracks").glob("*.jsonl")}
    assert after == before and len(after) == 2
    assert {s["status"] for s in summary_of(out).values()} == {"skipped (complete)"}


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs inside the test's folder (skips where mounting is not permitted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small file system here (needs root); the write-error paths are the same")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def test_full_disk_stops_with_a_clear_error_and_resume_completes(tmp_path, clip, small_disk):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(6):
        shutil.copy(clip, videos / f"cam{i}.mp4")
    reference = tmp_path / "reference"
    assert run_cli(str(videos), "--out", str(reference)).returncode == 0
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 24 * 1024))  # leave ~24 KiB: a source or two fit
    out = small_disk / "out"
    proc = run_cli(str(videos), "--out", str(out), "--save-silhouettes")
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert any("No space left on device" in line for line in error_lines(proc.stderr)), proc.stderr
    assert "rerun with --resume" in proc.stderr
    filler.unlink()
    resumed = run_cli(str(videos), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    done = {p.name: p.read_text().splitlines() for p in (out / "tracks").glob("*.jsonl")}
    expected = {p.name: p.read_text().splitlines() for p in (reference / "tracks").glob("*.jsonl")}
    assert sorted(done) == sorted(expected)
    for name, lines in expected.items():  # nothing lost, nothing twice
        assert [json.loads(x)["type"] for x in done[name]] == [json.loads(x)["type"] for x in lines]
    assert not list((out / "tracks").glob("*.partial"))


def test_silhouettes_that_cannot_be_written_are_counted_and_fail_the_run(tmp_path, clip):
    out = tmp_path / "out"
    out.mkdir()
    (out / "silhouettes").write_text("a file in the way")
    proc = run_cli(str(clip), "--out", str(out), "--save-silhouettes")
    assert proc.returncode == 3, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    strips = summary["silhouettes"]
    assert strips["written"] == 0 and strips["failed"] == summary["windows"] > 0
    assert any("silhouette strips not written" in line for line in error_lines(proc.stderr))


def test_unusable_output_folders_are_one_line(tmp_path, clip):
    in_the_way = tmp_path / "out"
    in_the_way.write_text("a file")
    for out in (in_the_way, in_the_way / "sub"):
        proc = run_cli(str(clip), "--out", str(out))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "cannot use" in proc.stderr
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only file system here")
    try:
        proc = run_cli(str(clip), "--out", str(ro / "out"))
    finally:
        subprocess.run(["umount", "-l", str(ro)])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: cannot write {ro / 'out' / 'tracks'}: Read-only file system"]
