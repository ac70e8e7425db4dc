"""The `run` command end to end on real clips: outputs, bad input in a batch, bad config, Ctrl-C + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jsonschema

from pipeline.export import SCHEMA_PATH
from tests.helpers import PROJECT_ROOT, VIDEOS, require
from tests.test_rtsp import system_python  # noqa: F401 - the fixture: a Python with the GStreamer RTSP server

CAMPUS = VIDEOS / "campus_road_480x360.mp4"


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, YOLO_OFFLINE="1")
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "run_pipeline.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=PROJECT_ROOT)


def records(out_dir, pattern="*.jsonl"):
    return [json.loads(line) for path in sorted((out_dir / "tracks").glob(pattern)) for line in path.read_text().splitlines()]


def test_run_writes_valid_records_summary_and_silhouettes(tmp_path):
    clip = require(CAMPUS)
    proc = run_cli("run", str(clip), "--config", "front_half", "--out", str(tmp_path), "--max-frames", "150",
                   "--save-silhouettes", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames_total"] == 150 and summary["sources"][0]["status"] == "done"
    assert {s["stage"] for s in summary["stages"]} >= {"detect", "track", "segment", "tracklets"}
    schema = json.loads(SCHEMA_PATH.read_text())
    found = records(tmp_path)
    for record in found:
        jsonschema.validate(record, schema)
    tracks = [r for r in found if r["type"] == "track"]
    assert len({r["track_id"] for r in tracks}) >= 2
    assert any(r["final"] for r in tracks)
    assert list((tmp_path / "silhouettes").rglob("*.png"))


def test_bad_inputs_are_reported_and_the_batch_goes_on(tmp_path):
    clip = require(CAMPUS)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video\n")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 3])
    missing = tmp_path / "missing.mp4"
    out = tmp_path / "out"
    proc = run_cli("run", str(missing), str(not_video), str(truncated), str(clip), "--config", "front_half",
                   "--out", str(out), "--max-frames", "100", "--no-progress")
    assert proc.returncode == 1, proc.stderr  # some sources failed
    summary = {s["source"]: s for s in json.loads((out / "summary.json").read_text())["sources"]}
    assert summary[str(missing)]["status"] == "error" and summary[str(not_video)]["status"] == "error"
    assert summary[str(clip)]["status"] == "done" and summary[str(clip)]["frames"] == 100
    assert summary[str(truncated)]["frames"] > 0
    for source in (missing, not_video):
        message = summary[str(source)]["errors"][0]
        assert "\n" not in message and len(message) < 300
    assert any(r["type"] == "track" and r["source"] == str(clip) for r in records(out))


def test_bad_config_is_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("_base_: " + str(PROJECT_ROOT / "configs" / "front_half.yaml") + "\ndetect:\n  min_aera: 3\n")
    proc = run_cli("run", "x.mp4", "--config", str(config), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "detect: unknown key 'min_aera'" in lines[0]


def test_missing_weights_are_one_line(tmp_path):
    missing = tmp_path / "absent.pt"
    proc = run_cli("run", "x.mp4", "--config", "front_half", "--set", "track.split_on_appearance=true",
                   "--set", f"track.split_weights={missing}", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == (f"error: appearance ReID weights not found: {missing} "
                                            "(train them with python -m training.reid)")


def test_ctrl_c_flushes_then_resume_completes(tmp_path, system_python):  # noqa: F811 - the fixture
    """Deterministic: the source is a live stream that never ends (a real RTSP server looping a clip,
    retries for ever), so the run is still going when the signal arrives, whatever the machine's speed."""
    from tests.test_rtsp import RtspServer, free_port
    from tests.helpers import write_clip

    server = RtspServer(system_python, write_clip(tmp_path / "loop.mp4", frames=40), free_port())
    server.start()
    try:
        out = tmp_path / "out"
        args = [sys.executable, str(PROJECT_ROOT / "run_pipeline.py"), "run", server.url(), "--config", "front_half",
                "--out", str(out), "--no-progress", "--reconnect-forever"]
        # Ctrl-C as a terminal delivers it: a test run started in the background (``pytest &``) passes
        # SIGINT on ignored, and a process that inherits an ignored SIGINT rightly keeps ignoring it.
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
                                env=dict(os.environ, YOLO_OFFLINE="1"),
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        while not [r for r in _partial_records(out) if r["type"] == "track"]:  # records are flowing
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 130, stderr
        summary = json.loads((out / "summary.json").read_text())
        assert summary["interrupted"] and summary["sources"][0]["status"] == "incomplete"
        partial = records(out, "*.jsonl.partial")
        assert any(r["type"] == "track" for r in partial) and not list((out / "tracks").glob("*.jsonl"))
        resumed = run_cli("run", server.url(), "--config", "front_half", "--out", str(out), "--resume",
                          "--max-frames", "30", "--no-progress")
        assert resumed.returncode == 0, resumed.stderr
        assert len(list((out / "tracks").glob("*.jsonl"))) == 1 and not list((out / "tracks").glob("*.partial"))
        again = run_cli("run", server.url(), "--config", "front_half", "--out", str(out), "--resume", "--no-progress")
        assert again.returncode == 0
        assert json.loads((out / "summary.json").read_text())["sources"][0]["status"] == "skipped (complete)"
    finally:
        server.stop()


def _partial_records(out) -> list[dict]:
    found = []
    for path in (out / "tracks").glob("*.jsonl.partial") if (out / "tracks").exists() else []:
        for line in path.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:  # a line being written
                pass
    return found
