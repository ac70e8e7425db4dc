"""Probe the command line as a hostile or unlucky user would, and count what goes wrong per class.

    python -m bench.probe_hostile [--root DIR] [--classes weights,config,...] [--json OUT.json]

``--root`` is the checkout whose ``run_pipeline.py`` is probed (default: this one), so the same probe
measures an older version too. Every case runs the real CLI in a fresh process, in a temporary
folder, with a time limit; it is classified as

    ok        a clean outcome: one error line on stderr and a non-zero status for a user error, or the
              correct result (the batch goes on, the read-only gallery lists, ...)
    traceback a Python traceback on stderr
    hang      still running at the time limit (killed)
    silent    a wrong result without a word: invalid input accepted, exit status 0 after failures,
              a message of many lines, Infinity in JSON
    lost/dup  records, silhouettes or gallery identities lost, merged or duplicated
    code      a pickled payload ran

Needs root for the cases that mount a small or read-only file system (skipped otherwise). Runs
heavy work under the caller's priority; run it under ``nice``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
OUTCOMES = ("ok", "traceback", "hang", "silent", "lost/dup", "code")


@dataclass
class Case:
    klass: str
    name: str
    outcome: str
    detail: str = ""


@dataclass
class Proc:
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    max_rss_mb: float

    @property
    def hung(self) -> bool:
        return self.rc is None

    def error_lines(self) -> list[str]:
        """stderr lines that are not log lines of the run (INFO/WARNING) nor a progress bar."""
        return [line for line in self.stderr.splitlines()
                if line.strip() and not line.startswith(("INFO ", "WARNING ", "gaitscope:"))]


class Probe:
    def __init__(self, root: Path, work: Path, clip: Path | None) -> None:
        self.root = root
        self.work = work
        self.cases: list[Case] = []
        self.python = sys.executable
        self.clip = self._clip(clip)

    # -- running --------------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 240, cwd: Path | None = None, env: dict | None = None) -> Proc:
        return self.run([self.python, str(self.root / "run_pipeline.py"), *args], timeout, cwd, env)

    def run(self, argv: list[str], timeout: float, cwd: Path | None = None, env: dict | None = None) -> Proc:
        cwd = cwd or self.fresh("cwd")
        environment = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": str(self.root), **(env or {})}
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            started = time.monotonic()
            proc = subprocess.Popen(argv, cwd=cwd, env=environment, stdout=out, stderr=err, start_new_session=True)
            rc, rss = None, 0.0
            while time.monotonic() - started < timeout:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    rc, rss = os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024
                    break
                time.sleep(0.1)
            if rc is None:
                os.killpg(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
            proc.returncode = rc if rc is not None else -9
            seconds = time.monotonic() - started
            out.seek(0)
            err.seek(0)
            return Proc(rc, out.read(), err.read(), seconds, rss)

    def fresh(self, name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work))
        return path

    def add(self, klass: str, name: str, outcome: str, detail: str = "") -> None:
        self.cases.append(Case(klass, name, outcome, detail[:300]))
        print(f"  {klass:<8} {name:<44} {outcome:<9} {detail[:150]}", flush=True)

    def user_error(self, klass: str, name: str, proc: Proc, must_say: str = "") -> None:
        """A case whose right answer is a clean one-line error and a non-zero status."""
        if proc.hung:
            self.add(klass, name, "hang", f"killed after {proc.seconds:.0f} s")
        elif "Traceback" in proc.stderr:
            self.add(klass, name, "traceback", _last_line(proc.stderr))
        elif proc.rc == 0:
            self.add(klass, name, "silent", "accepted (exit 0)")
        elif len(proc.error_lines()) != 1:
            self.add(klass, name, "silent", f"{len(proc.error_lines())} error lines, exit {proc.rc}")
        elif must_say and must_say not in proc.stderr:
            self.add(klass, name, "silent", f"message does not say {must_say!r}: {_last_line(proc.stderr)}")
        else:
            self.add(klass, name, "ok", f"exit {proc.rc}: {proc.error_lines()[0][:120]}")

    # -- material -------------------------------------------------------------------------------
    def _clip(self, given: Path | None) -> Path:
        if given is not None:
            return given
        import av
        import numpy as np

        path = self.work / "walk.mp4"
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
            stream.height, stream.width, stream.pix_fmt = 120, 160, "yuv420p"
            for i in range(60):
                image = np.full((120, 160, 3), 90, np.uint8)
                x = 10 + 2 * i
                image[30:100, x : x + 18] = 230  # a person-shaped bright blob walking right
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        return path

    def run_args(self, out: Path, *extra: str) -> list[str]:
        return ["run", "--config", "front_half", "--out", str(out), "--no-progress", *extra]

    def summary(self, out: Path) -> dict | None:
        try:
            return json.loads((out / "summary.json").read_text())
        except (OSError, ValueError):
            return None


# -- classes of faults ------------------------------------------------------------------------------
def probe_weights(p: Probe) -> None:
    import torch

    def hostile(name: str) -> tuple[Path, Path]:
        folder = p.fresh("weights")
        marker = folder / "PAYLOAD_RAN"
        path = folder / name
        torch.save({"model": _Payload(marker), "epoch": 1}, path)
        return path, marker

    cases = {
        "detect.weights (auto picks yolo)": lambda w: ["run", str(p.clip), "--out", str(p.fresh("o")),
                                                       "--set", f"detect.weights={w}", "--no-progress"],
        "detect.backend=yolo": lambda w: [*p.run_args(p.fresh("o"), "--set", "detect.backend=yolo",
                                                      "--set", f"detect.weights={w}"), str(p.clip)],
        "bench front_half --model": lambda w: ["bench", "front_half", str(p.clip), "--backend", "yolo", "--model",
                                               str(w), "--frames", "5"],
        "gait.weights": lambda w: ["run", str(p.clip), "--out", str(p.fresh("o")), "--set", f"gait.weights={w}",
                                   "--no-progress"],
    }
    for name, args in cases.items():
        weights, marker = hostile("yolo11n.pt")
        proc = p.cli(*args(weights), timeout=300)
        if marker.exists():
            p.add("weights", name, "code", "the pickled payload ran")
        else:
            p.user_error("weights", name, proc, "refused")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


_LEVELS = [", ".join(["lol"] * 9)] + [", ".join([f"*{c}"] * 9) for c in "abcdefgh"]
# nine levels of nine aliases (9**9 values) as the value of a real key: an error message that shows the
# value expands it
BILLION_LAUGHS = "detect:\n  backend: classic\n  history: [" + ", ".join(
    f"&{name} [{items}]" for name, items in zip("abcdefghi", _LEVELS)) + "]\n"


def probe_config(p: Probe) -> None:
    folder = p.fresh("config")
    bomb = folder / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    proc = p.cli("run", str(p.clip), "--config", str(bomb), "--out", str(folder / "o"), timeout=120)
    if not proc.hung and proc.max_rss_mb > 1500:
        p.add("config", f"billion laughs file ({bomb.stat().st_size} B)", "hang", f"peak RSS {proc.max_rss_mb:.0f} MB")
    else:
        p.user_error("config", f"billion laughs file ({bomb.stat().st_size} B)", proc)
    value = ("[&a [x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], "
             "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]]")
    proc = p.cli(*p.run_args(folder / "o2", "--set", f"detect.history={value}"), str(p.clip), timeout=120)
    longest = max((len(line) for line in proc.stderr.splitlines()), default=0)
    if not proc.hung and longest > 2000:
        p.add("config", "alias bomb in --set", "silent", f"a {longest}-character error line")
    else:
        p.user_error("config", "alias bomb in --set", proc)
    for override in ["source.frame_stride=0", "source.max_frames=-5", "source.queue_size=0", "source.queue_size=-1",
                     "runner.queue_size=0", "runner.batch_size=0", "source.open_timeout_s=0",
                     "source.open_timeout_s=.nan", "source.open_timeout_s=.inf", "tracklets.window_every=0",
                     "tracklets.min_length=-1", "track.lost_track_buffer=-5", "detect.history=[1, 2"]:
        proc = p.cli(*p.run_args(p.fresh("o"), "--set", override), str(p.clip))
        p.user_error("config", f"--set {override}", proc)
    for flag in (["--stride", "0"], ["--max-frames", "-5"]):
        proc = p.cli(*p.run_args(p.fresh("o"), *flag), str(p.clip))
        p.user_error("config", " ".join(flag), proc)
    binary = folder / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 16)
    p.user_error("config", "binary config file", p.cli("run", str(p.clip), "--config", str(binary), "--out",
                                                       str(folder / "o3")))
    (folder / "one.yaml").write_text("_base_: two.yaml\n")
    (folder / "two.yaml").write_text("_base_: one.yaml\n")
    p.user_error("config", "_base_ cycle", p.cli("run", str(p.clip), "--config", str(folder / "one.yaml"), "--out",
                                                 str(folder / "o4")))


def _records_file(folder: Path, rows: list[dict]) -> Path:
    path = folder / "run.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _track(track: int, vector: list, source: str = "cam.mp4") -> dict:
    return {"type": "track", "source": source, "track_id": track, "final": True,
            "embeddings": {"gait": vector, "appearance": None}, "model_versions": {"gait": "gar@1"}}


def _vectors(n: int, seed: int) -> list:
    import numpy as np

    return np.random.default_rng(seed).normal(size=(n, 4, 8)).round(4).tolist()


GALLERY_BUILDER = textwrap.dedent("""
    import sys, numpy as np
    from stages.gallery.store import EntryMeta, Gallery
    path, n = sys.argv[1], int(sys.argv[2])
    vectors = np.asarray(sys.stdin.read().split(), np.float32).reshape(n, 4, 8)
    with Gallery(path) as g:
        g.add("gait", list(vectors), [EntryMeta(f"person{i}", "cam.mp4", i) for i in range(n)], "gar@1")
""")
GALLERY_SIZE = 80  # more entries than the search shortlist (50), so a garbled index changes answers


def make_gallery(p: Probe, n: int = GALLERY_SIZE) -> tuple[Path, Path]:
    folder = p.fresh("gallery")
    gallery = folder / "g"
    vectors = _vectors(n, 0)
    records = _records_file(folder, [_track(i, v) for i, v in enumerate(vectors)])
    flat = " ".join(str(x) for v in vectors for row in v for x in row)
    done = subprocess.run([p.python, "-c", GALLERY_BUILDER, str(gallery), str(n)], input=flat, text=True,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(p.root)}, cwd=folder)
    if done.returncode:
        raise RuntimeError(f"cannot build the probe gallery: {done.stderr[-300:]}")
    return gallery, records


def _search_ok(p: Probe, gallery: Path, records: Path, n: int) -> tuple[Proc, bool]:
    proc = p.cli("search", "--gallery", str(gallery), "--jsonl", str(records), "--reranker", "none", "--json")
    try:
        results = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        best = {r["track_id"]: r["candidates"][0]["identity"] for r in results}
    except (ValueError, KeyError, IndexError):
        return proc, False
    return proc, all(best.get(i) == f"person{i}" for i in range(n))


ENROLLER = textwrap.dedent("""
    import sys, numpy as np
    from pipeline.messages import SilhouetteSequence, TrackWindow
    from stages.gallery.stage import GalleryMatcher
    path, seed, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    m = GalleryMatcher(gallery=path, reranker="none", gait_threshold=0.05, auto_enrol=True)
    seq = SilhouetteSequence(silhouettes=np.zeros((3, 64, 44), np.uint8), ratios=np.ones(3, np.float32),
                             boxes=np.zeros((3, 4), np.float32), frame_indices=np.arange(3), pts_s=np.arange(3) / 10,
                             frame_size=(240, 320))
    for i in range(n):
        w = TrackWindow(f"cam{seed}", i, 0, True, seq, gait_embedding=rng.normal(size=(4, 8)).astype(np.float32))
        w.model_versions["gait"] = "gar@1"
        m.process([w])
        print(w.identity.identity, flush=True)
    m.close()
""")


def probe_gallery(p: Probe) -> None:
    folder = p.fresh("auto-enrol")
    script = folder / "enrol.py"
    script.write_text(ENROLLER)
    gallery = folder / "g"
    env = {**os.environ, "PYTHONPATH": str(p.root)}
    procs = [subprocess.Popen([p.python, str(script), str(gallery), str(seed), "300"], cwd=folder, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outs = [proc.communicate(timeout=900) for proc in procs]
    names = [set(out.split()) for out, _ in outs]
    if any(proc.returncode for proc in procs):
        p.add("gallery", "2 processes auto-enrol 300 each", "traceback", _last_line(outs[0][1] + outs[1][1]))
    else:
        shared = names[0] & names[1]
        p.add("gallery", "2 processes auto-enrol 300 each", "lost/dup" if shared else "ok",
              f"{len(shared)} of {len(names[0] | names[1])} names given to two people")
    for how in ("truncated", "zeroed", "garbled", "deleted"):
        gallery, records = make_gallery(p)
        index = next(gallery.glob("gait-g*.faiss"))
        _damage(index, how)
        proc, right = _search_ok(p, gallery, records, GALLERY_SIZE)
        if proc.hung or "Traceback" in proc.stderr or proc.rc != 0:
            p.user_error("gallery", f"index {how}: search", proc)
        else:
            p.add("gallery", f"index {how}: search", "ok" if right else "lost/dup", "" if right else "wrong matches")
        if how == "garbled":  # then a write: is the garbled index carried forward?
            extra = _records_file(p.fresh("extra"), [_track(0, _vectors(1, 9)[0])])
            p.cli("enroll", "--gallery", str(gallery), "--name", "newcomer", "--jsonl", str(extra))
            _, right = _search_ok(p, gallery, records, GALLERY_SIZE)
            p.add("gallery", "index garbled, then a write", "ok" if right else "lost/dup",
                  "" if right else "the garbled index was carried into the next write")
    for how in ("truncated", "zeroed", "emptied", "deleted"):
        gallery, records = make_gallery(p)
        _damage(gallery / "gallery.sqlite", how)
        proc = p.cli("gallery", "list", "--gallery", str(gallery), "--json")
        if proc.rc == 0:
            p.add("gallery", f"database {how}: list", "lost/dup", "listed as a gallery (silently empty?)")
        else:
            p.user_error("gallery", f"database {how}: list", proc)
    gallery, records = make_gallery(p)
    with read_only(gallery) as view:
        if view is None:
            p.add("gallery", "read-only gallery: list + search", "ok", "skipped: cannot mount here")
        else:
            listing = p.cli("gallery", "list", "--gallery", str(view))
            search, right = _search_ok(p, view, records, GALLERY_SIZE)
            if listing.rc == 0 and search.rc == 0 and right:
                p.add("gallery", "read-only gallery: list + search", "ok")
            else:
                p.user_error("gallery", "read-only gallery: list + search", listing if listing.rc else search)
    gallery = p.fresh("empty") / "g"
    p.cli("enroll", "--gallery", str(gallery), "--name", "x", "--jsonl", str(_records_file(p.fresh("r"), [_track(0, _vectors(1, 3)[0])])))
    p.cli("gallery", "remove", "x", "--gallery", str(gallery))
    proc = p.cli("search", "--gallery", str(gallery), "--jsonl", str(records), "--reranker", "none", "--json")
    bad = "Infinity" in proc.stdout or "NaN" in proc.stdout
    p.add("gallery", "search --json on an empty gallery", "silent" if bad else ("ok" if proc.rc == 0 else "traceback"),
          "Infinity in the JSON" if bad else _last_line(proc.stderr) if proc.rc else "")


def _damage(file: Path, how: str) -> None:
    data = file.read_bytes()
    if how == "truncated":
        file.write_bytes(data[: len(data) // 2])
    elif how == "zeroed":
        file.write_bytes(bytes(len(data)))
    elif how == "garbled":  # the vector block overwritten, the size and the header kept: FAISS reads it fine
        a, b = len(data) // 8, len(data) * 3 // 4
        file.write_bytes(data[:a] + bytes(x ^ 0x5A for x in data[a:b]) + data[b:])
    elif how == "emptied":
        file.write_bytes(b"")
    elif how == "deleted":
        file.unlink()


class read_only:  # noqa: N801 - a context manager used like a function
    """A read-only bind mount of a folder (None where mounting is not permitted)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.view = folder.with_name(folder.name + "-ro")

    def __enter__(self) -> Path | None:
        self.view.mkdir()
        ok = subprocess.run(["mount", "--bind", str(self.folder), str(self.view)], capture_output=True).returncode == 0
        if ok and subprocess.run(["mount", "-o", "remount,bind,ro", str(self.view)], capture_output=True).returncode:
            subprocess.run(["umount", str(self.view)])
            ok = False
        self.mounted = ok
        return self.view if ok else None

    def __exit__(self, *exc: object) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.view)])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe_sources(p: Probe) -> None:
    def batch(name: str, bad: list[str], expect: str = "", timeout: float = 240, cwd: Path | None = None) -> None:
        out = p.fresh("o")
        proc = p.cli(*p.run_args(out), *bad, str(p.clip), timeout=timeout, cwd=cwd)
        summary = p.summary(out)
        clip_done = summary is not None and any(
            s["status"] == "done" and Path(s["source"]).name == p.clip.name for s in summary["sources"])
        if proc.hung:
            p.add("sources", name, "hang", f"killed after {proc.seconds:.0f} s; the file was "
                  f"{'done' if clip_done else 'never processed'}")
        elif "Traceback" in proc.stderr:
            p.add("sources", name, "traceback", _last_line(proc.stderr))
        elif not clip_done:
            p.add("sources", name, "lost/dup", f"exit {proc.rc}; the good file in the batch was not processed")
        elif any(Path(s["source"]).name == "unrelated.mp4" for s in summary["sources"]):
            p.add("sources", name, "silent", "processed the videos of the current folder")
        elif summary is not None and len(summary["sources"]) != 1 + len(bad):
            p.add("sources", name, "silent", f"{len(summary['sources'])} sources for {1 + len(bad)} arguments")
        elif proc.rc == 0:
            p.add("sources", name, "silent", "exit 0 although a source failed")
        elif expect and expect not in json.dumps(summary):
            p.add("sources", name, "silent", f"the error does not say {expect!r}")
        else:
            p.add("sources", name, "ok", f"exit {proc.rc} in {proc.seconds:.0f} s")

    dead = [f"rtsp://127.0.0.1:{_closed_port()}/cam{i}" for i in range(4)]
    batch("4 dead RTSP URLs + 1 file", dead, timeout=300)
    folder = p.fresh("fifo")
    fifo = folder / "camera.mp4"
    os.mkfifo(fifo)
    batch("FIFO named .mp4 + 1 file", [str(fifo)], timeout=120)
    batch("malformed URL rtsp://[::1 + 1 file", ["rtsp://[::1"], timeout=120)
    batch("5000-character path + 1 file", ["/tmp/" + "x" * 5000 + ".mp4"], timeout=120)
    cwd = p.fresh("cwd-with-videos")
    shutil.copy(p.clip, cwd / "unrelated.mp4")
    batch('empty argument "" + 1 file', [""], timeout=120, cwd=cwd)
    loop = p.fresh("loop")
    (loop / "a.mp4").symlink_to(loop / "b.mp4")
    (loop / "b.mp4").symlink_to(loop / "a.mp4")
    batch("symlink loop + 1 file", [str(loop / "a.mp4")], expect="loop", timeout=120)


def probe_resume(p: Probe) -> None:
    base = p.fresh("resume")
    videos = base / "videos"
    videos.mkdir()
    for i in range(3):
        shutil.copy(p.clip, videos / f"cam{i}.mp4")
    (base / "link").symlink_to(videos)
    for name, spelling in [("relative path", "videos"), ("absolute path", str(videos)),
                           ("through a symlink", str(base / "link"))]:
        out = p.fresh("out")
        first = p.cli(*p.run_args(out), str(videos), cwd=base, timeout=300)
        if first.rc != 0:
            p.user_error("resume", name, first)
            continue
        before = _record_count(out)
        again = p.cli(*p.run_args(out, "--resume"), spelling, cwd=base, timeout=300)
        if again.hung or "Traceback" in again.stderr:
            p.user_error("resume", name, again)
            continue
        extra = _record_count(out) - before
        p.add("resume", f"--resume with the folder as a {name}", "lost/dup" if extra else "ok",
              f"{extra} duplicated records" if extra else "0 duplicated records")


def _record_count(out: Path) -> int:
    return sum(len(f.read_text().splitlines()) for f in (out / "tracks").glob("*.jsonl"))


def probe_output(p: Probe) -> None:
    small = p.fresh("small-disk")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(small)],
                             capture_output=True).returncode == 0
    if not mounted:
        p.add("output", "full disk", "ok", "skipped: cannot mount a small file system here")
    else:
        try:
            out = small / "out"
            proc = p.cli(*p.run_args(out, "--save-silhouettes"), *[str(p.clip)] * 1,
                         str(_copies(p, 6)), timeout=300)
            summary_written = p.summary(out) is not None
            if proc.hung:
                p.add("output", "full disk", "hang", f"killed after {proc.seconds:.0f} s")
            elif "Traceback" in proc.stderr or proc.rc in (134, -6):
                p.add("output", "full disk", "traceback", f"exit {proc.rc}; summary written: {summary_written}")
            elif proc.rc == 0:
                p.add("output", "full disk", "lost/dup", "exit 0 with a full disk")
            else:
                p.add("output", "full disk", "ok", f"exit {proc.rc}; summary written: {summary_written}; "
                      f"{_last_line(proc.stderr)}")
        finally:
            subprocess.run(["umount", "-l", str(small)])
    out = p.fresh("silhouettes")
    (out / "silhouettes").mkdir()
    with read_only(out / "silhouettes") as view:
        if view is None:
            p.add("output", "silhouette PNGs cannot be written", "ok", "skipped: cannot mount here")
        else:
            subprocess.run(["mount", "--bind", str(view), str(out / "silhouettes")], check=True)
            try:
                proc = p.cli(*p.run_args(out, "--save-silhouettes"), str(p.clip), timeout=300)
            finally:
                subprocess.run(["umount", "-l", str(out / "silhouettes")])
            windows = (p.summary(out) or {}).get("windows", 0)
            if "Traceback" in proc.stderr:
                p.add("output", "silhouette PNGs cannot be written", "traceback", _last_line(proc.stderr))
            elif proc.rc == 0:
                p.add("output", "silhouette PNGs cannot be written", "lost/dup",
                      f"exit 0, 0 PNGs for {windows} windows, nothing said")
            else:
                p.add("output", "silhouette PNGs cannot be written", "ok", f"exit {proc.rc}: {_last_line(proc.stderr)}")
    in_the_way = p.fresh("file") / "out"
    in_the_way.write_text("a file")
    p.user_error("output", "--out is a file", p.cli(*p.run_args(in_the_way), str(p.clip)))
    folder = p.fresh("ro-out")
    with read_only(folder) as view:
        if view is None:
            p.add("output", "--out on a read-only file system", "ok", "skipped: cannot mount here")
        else:
            p.user_error("output", "--out on a read-only file system", p.cli(*p.run_args(view / "out"), str(p.clip)))


def _copies(p: Probe, n: int) -> Path:
    folder = p.fresh("copies")
    for i in range(n):
        shutil.copy(p.clip, folder / f"clip{i}.mp4")
    return folder


def probe_cli(p: Probe) -> None:
    out = p.fresh("o")
    proc = p.cli(*p.run_args(out), str(p.work / "missing.mp4"), str(p.clip), timeout=180)
    if proc.rc == 0:
        p.add("cli", "exit status, 1 of 2 sources failed", "silent", "exit 0")
    elif "Traceback" in proc.stderr or proc.hung:
        p.user_error("cli", "exit status, 1 of 2 sources failed", proc)
    else:
        p.add("cli", "exit status, 1 of 2 sources failed", "ok", f"exit {proc.rc}")
    p.user_error("cli", "unknown gallery verb", p.cli("gallery", "frobnicate"))
    p.user_error("cli", "gallery list of a missing gallery", p.cli("gallery", "list", "--gallery",
                                                                    str(p.work / "nowhere")))
    p.user_error("cli", "enroll from a missing records file", p.cli("enroll", "--name", "a", "--jsonl",
                                                                     str(p.work / "none.jsonl"), "--gallery",
                                                                     str(p.fresh("g") / "g")))
    bad = p.work / "bad.jsonl"
    bad.write_text("{not json\n")
    p.user_error("cli", "enroll from a garbled records file", p.cli("enroll", "--name", "a", "--jsonl", str(bad),
                                                                     "--gallery", str(p.fresh("g") / "g")))


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


CLASSES: dict[str, Callable[[Probe], None]] = {
    "weights": probe_weights, "config": probe_config, "gallery": probe_gallery, "sources": probe_sources,
    "resume": probe_resume, "output": probe_output, "cli": probe_cli,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=HERE, help="checkout whose run_pipeline.py is probed")
    parser.add_argument("--classes", default=",".join(CLASSES), help=f"comma-separated subset of {','.join(CLASSES)}")
    parser.add_argument("--clip", type=Path, default=None, help="a short video to use (default: a generated one)")
    parser.add_argument("--json", type=Path, default=None, help="also write every case here")
    args = parser.parse_args(argv)
    chosen = [c.strip() for c in args.classes.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(CLASSES))
    if unknown:
        parser.error(f"unknown classes {unknown}; choose from {list(CLASSES)}")
    with tempfile.TemporaryDirectory(prefix="probe-") as work:
        probe = Probe(args.root.resolve(), Path(work), args.clip)
        print(f"probing {probe.root} (python {sys.version.split()[0]})", flush=True)
        for name in chosen:
            started = time.monotonic()
            try:
                CLASSES[name](probe)
            except Exception as exc:  # noqa: BLE001 - a probe failure is reported, the other classes go on
                probe.add(name, "(probe itself failed)", "traceback", f"{type(exc).__name__}: {exc}")
            print(f"  ({name}: {time.monotonic() - started:.0f} s)", flush=True)
    print()
    print(f"{'class':<9}{'cases':>6}" + "".join(f"{o:>10}" for o in OUTCOMES))
    totals = dict.fromkeys(OUTCOMES, 0)
    for name in chosen:
        rows = [c for c in probe.cases if c.klass == name]
        counts = {o: sum(c.outcome == o for c in rows) for o in OUTCOMES}
        for o in OUTCOMES:
            totals[o] += counts[o]
        print(f"{name:<9}{len(rows):>6}" + "".join(f"{counts[o]:>10}" for o in OUTCOMES))
    print(f"{'total':<9}{len(probe.cases):>6}" + "".join(f"{totals[o]:>10}" for o in OUTCOMES))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(c) for c in probe.cases], indent=1))
    return 0 if totals["ok"] == len(probe.cases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
