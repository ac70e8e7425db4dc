"""The Ray executor on a local Ray cluster: same records and gallery as a local run, a killed worker
loses and duplicates nothing, and a missing Ray is a one-line error.

Four short rendered clips (two sites of two cameras) go through the whole default chain with an
auto-enrolling gallery, once here and once on two Ray workers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

from cli.main import main as cli_main
from pipeline import app
from pipeline.export import source_file_stem
from tests.helpers import PROJECT_ROOT


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    import yaml

    from synth.scene import SiteConfig, write_site

    folder = tmp_path_factory.mktemp("clips")
    base = yaml.safe_load((PROJECT_ROOT / "configs" / "synth" / "two_camera_site.yaml").read_text())
    for name, seed in (("a", 5), ("b", 6)):
        write_site(SiteConfig.from_dict({**base, "seed": seed, "duration_s": 6.0}), folder / name)
    videos = sorted(folder.rglob("*.mp4"))
    assert len(videos) == 4
    return folder


def run(clips: Path, out: Path, gallery: Path, auto_enrol: bool, executor=None, one_source_at_a_time=False):
    # One item per model call: a batch's make-up (whatever was waiting) changes the last digits of the models'
    # outputs, and the runs are compared byte for byte.
    overrides = [f"gallery.gallery={gallery}", f"gallery.auto_enrol={str(auto_enrol).lower()}", "runner.progress=false",
                 "runner.batch_size=1"]
    if one_source_at_a_time:
        overrides.append("runner.max_open_sources=1")
    config = app.load("default", overrides)
    return app.run([str(clips)], out, config, executor=executor)


@pytest.fixture(scope="module")
def local_auto(clips, tmp_path_factory):
    """A local run that fills a fresh gallery (auto-enrol), one source after the other: who links to whom
    depends on the order in which tracks are enrolled, so the Ray run it is compared with keeps that order."""
    out = tmp_path_factory.mktemp("local-auto")
    run(clips, out / "run", out / "gallery", auto_enrol=True, one_source_at_a_time=True)
    return out


@pytest.fixture(scope="module")
def local_fixed(clips, local_auto, tmp_path_factory):
    """A local run against a copy of that gallery, without enrolling."""
    out = tmp_path_factory.mktemp("local-fixed")
    shutil.copytree(local_auto / "gallery", out / "gallery")
    run(clips, out / "run", out / "gallery", auto_enrol=False)
    return out


@pytest.fixture
def ray_executor(monkeypatch):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'gaitscope[ray]'")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    from pipeline.ray_executor import RayExecutor

    return RayExecutor


def records_of(out: Path) -> dict[str, list[dict]]:
    return {
        p.name: [json.loads(line) for line in p.read_text().splitlines()]
        for p in sorted((out / "run" / "tracks").glob("*.jsonl"))
    }


def gallery_identities(out: Path) -> dict[str, str]:
    """Gallery identity -> a name that does not depend on the order of enrolment: its first (source, track)."""
    from stages.gallery.store import Gallery

    with Gallery(out / "gallery", create=False) as gallery:
        members: dict[str, list] = {}
        for entry in gallery.entries():
            members.setdefault(entry.identity, []).append((entry.source, entry.track_id))
    return {name: f"{min(m)[0]}#{min(m)[1]}" for name, m in members.items()}


def test_two_ray_workers_write_the_records_of_a_local_run(clips, local_auto, local_fixed, tmp_path, ray_executor):
    # The gallery as the local run found it (a run also stores the cameras' appearance statistics in it).
    shutil.copytree(local_auto / "gallery", tmp_path / "gallery")
    outputs = run(clips, tmp_path / "run", tmp_path / "gallery", auto_enrol=False, executor=ray_executor(workers=2))
    assert [s["status"] for s in outputs.summary["sources"]] == ["done"] * 4
    summary = json.loads((local_fixed / "run" / "summary.json").read_text())
    for key in ("frames_total", "windows", "backends"):
        assert outputs.summary[key] == summary[key]
    assert sorted(Path(p).relative_to(tmp_path) for p in outputs.summary["track_files"]) == sorted(
        Path(p).relative_to(local_fixed) for p in summary["track_files"]
    )
    assert records_of(tmp_path) == records_of(local_fixed)  # byte for byte the same decisions and shortlists
    media = sorted(p.relative_to(tmp_path) for p in (tmp_path / "run" / "media").rglob("*.*"))
    assert media == sorted(p.relative_to(local_fixed) for p in (local_fixed / "run" / "media").rglob("*.*"))


def test_auto_enrol_with_a_worker_killed_mid_source(clips, local_auto, tmp_path, ray_executor):
    """A worker enrolling through the gallery actor is SIGKILLed mid-source and Ray retries its source.

    One worker, so that the sources are enrolled in the local run's order (two concurrent runs link
    tracks in whatever order they finish; the two-worker test above covers concurrency)."""
    killed: dict[str, object] = {}
    seen: list[tuple[str, int]] = []

    def kill_one(snapshot):
        for source, progress in snapshot.items():
            seen.append((source, progress.pid))
            finished = (tmp_path / "run" / "tracks" / f"{source_file_stem(source)}.jsonl").exists()
            # 150-frame clips: a report with fewer than 120 frames read leaves the worker dozens of frames of
            # whole-chain work (and the decode queue) before its source can be returned.
            if not killed and not finished and 1 <= progress.frames < 120:
                os.kill(progress.pid, signal.SIGKILL)
                killed.update(source=source, pid=progress.pid)

    outputs = run(
        clips, tmp_path / "run", tmp_path / "gallery", auto_enrol=True, executor=ray_executor(workers=1, watch=kill_one)
    )
    assert killed, "no worker was caught mid-source"
    # Ray restarted the worker and ran the source again, in another process.
    assert any(source == killed["source"] and pid != killed["pid"] for source, pid in seen)
    assert [s["status"] for s in outputs.summary["sources"]] == ["done"] * 4
    assert not list((tmp_path / "run" / "tracks").glob("*.partial"))

    records, local = records_of(tmp_path), records_of(local_auto)
    keys = Counter(
        (r["source"], r["track_id"], r["window_index"]) for rs in records.values() for r in rs if r["type"] == "track"
    )
    assert keys and max(keys.values()) == 1  # no window twice
    assert keys == Counter(
        (r["source"], r["track_id"], r["window_index"]) for rs in local.values() for r in rs if r["type"] == "track"
    )  # none missing

    # One consistent gallery: the same people, each made of the same tracks, and every track given the
    # same identity. (Shortlists and distances of a window depend on what other sources had enrolled
    # by then, which differs between any two runs that process sources concurrently.)
    names, local_names = gallery_identities(tmp_path), gallery_identities(local_auto)
    assert sorted(names.values()) == sorted(local_names.values()) and names

    def decisions(found, canonical):
        return {
            (r["source"], r["track_id"]): canonical.get((r["identity"] or {}).get("id"))
            for rs in found.values()
            for r in rs
            if r["type"] == "track" and r["final"]
        }

    assert decisions(records, names) == decisions(local, local_names)

    def without_identity(found):
        return {k: [{f: v for f, v in r.items() if f != "identity"} for r in rs] for k, rs in found.items()}

    assert without_identity(records) == without_identity(local)


def test_without_ray_the_flag_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code = cli_main(["run", str(tmp_path), "--executor", "ray", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "pip install" in err and "ray" in err


def test_ray_flags_need_the_ray_executor(tmp_path, capsys):
    assert cli_main(["run", str(tmp_path), "--ray-workers", "2", "--out", str(tmp_path / "out")]) == 2
    assert "--executor ray" in capsys.readouterr().err


def test_windows_sent_to_the_gallery_owner_keep_the_frames_it_counts():
    """Windows shipped without images still let the gallery count each frame a track showed once, and keep
    the boxes of the track's first and last frames."""
    import numpy as np

    from pipeline.messages import SilhouetteSequence, TrackWindow
    from pipeline.ray_executor import _without_images
    from stages.gallery.stage import TrackEvidence

    seen = np.flatnonzero(np.random.default_rng(0).random(200) < 0.7)  # a detection that comes and goes
    windows = []
    for i, end in enumerate((30, 60, 90, 200)):
        indices = seen[seen < end][-40:]  # overlapping windows of up to 40 frames
        t = len(indices)
        x = indices.astype(np.float32)
        boxes = np.stack([x, np.full_like(x, 20.0), x + 30.0, np.full_like(x, 100.0)], 1)
        sequence = SilhouetteSequence(np.full((t, 64, 44), 255, np.uint8), np.ones(t, np.float32),
                                      boxes, indices, indices / 25.0, (240, 320))
        windows.append(TrackWindow("cam1", 1, i, end == 200, sequence))
    last, light = -1, []
    for w in windows:
        light.append(_without_images(w, last))
        last = int(w.sequence.frame_indices[-1])
    counted = []
    for ws in (windows, light):
        evidence = TrackEvidence()
        for w in ws:
            evidence.add(w, {"gait": "gait", "appearance": "reid"})
        counted.append((evidence.frames, evidence.t_start, evidence.t_end, evidence.ends()))  # ends: for handovers
    distinct = len({int(f) for w in windows for f in w.sequence.frame_indices})
    assert counted[0] == counted[1] and counted[0][0] == distinct and counted[0][3].first and counted[0][3].last
    assert sum(len(w.sequence) for w in light) < sum(len(w.sequence) for w in windows)
    assert all(not w.sequence.silhouettes.any() and w.sequence.crops is None for w in light)
