"""The whole chain with the shipped weights on a rendered scene: routes, identities, attributes, enrolment.

Real components only: the scene is rendered and H.264-encoded by the synthetic walker generator,
decoded by PyAV, and every stage of configs/default.yaml runs with its shipped weights against a
FAISS + SQLite gallery in a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import pytest

from pipeline import app
from pipeline.export import SCHEMA_PATH
from tests.helpers import PROJECT_ROOT

N_ATTRIBUTES = 15


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    import yaml

    from synth.scene import SiteConfig, write_site

    folder = tmp_path_factory.mktemp("scene")
    site = SiteConfig.from_dict(yaml.safe_load((PROJECT_ROOT / "configs" / "synth" / "ci_scene.yaml").read_text()))
    truth = json.loads(write_site(site, folder).read_text())
    return sorted(str(p) for p in folder.glob("*.mp4")), truth


def run_default(videos, out, gallery, auto_enrol: bool):
    config = app.load("default", [f"gallery.gallery={gallery}", f"gallery.auto_enrol={str(auto_enrol).lower()}",
                                  "export.save_embeddings=true", "runner.progress=false"])
    outputs = app.run(videos, out, config)
    return [json.loads(line) for path in outputs.track_files for line in path.read_text().splitlines()]


def test_whole_chain_on_a_rendered_scene(scene, tmp_path):
    videos, _ = scene
    gallery = tmp_path / "gallery"
    records = run_default(videos, tmp_path / "first", gallery, auto_enrol=True)
    schema = json.loads(SCHEMA_PATH.read_text())
    for record in records:
        jsonschema.validate(record, schema)
    tracks = [r for r in records if r["type"] == "track"]
    assert tracks, "no person was tracked in the rendered scene"
    assert all(r["gait"] is not None for r in tracks)  # every window went through the gait detector
    routed = {r["gait"]["route"] for r in tracks}
    assert "gait" in routed
    for record in tracks:
        if record["gait"]["route"] == "gait":
            assert record["embeddings"]["gait"] is not None
            assert record["embeddings"]["appearance"] is not None  # every window gets both modalities
            assert record["identity"] is not None and record["identity"]["modality"] == "fused"
            assert record["identity"]["windows"] >= 1
            if record["identity"]["candidates"]:  # an empty gallery gives no candidate and no scores
                assert "fused" in record["identity"]["scores"]
            assert len(record["attributes"]) == N_ATTRIBUTES
            assert {"gait_detector", "gait", "gallery", "attributes"} <= set(record["model_versions"])
    enrolled = {r["identity"]["id"] for r in tracks if r["final"] and r["identity"] and r["identity"]["enrolled"]}
    assert enrolled, "auto-enrol created no identity"

    # The same scene again against the gallery it filled: tracks are recognised, nothing new is enrolled.
    again = [r for r in run_default(videos, tmp_path / "second", gallery, auto_enrol=False) if r["type"] == "track"]
    matched = {r["identity"]["id"] for r in again if r["final"] and r["identity"] and r["identity"]["id"]}
    assert matched & enrolled
    assert not any(r["identity"]["enrolled"] for r in again if r["identity"])


def test_enroll_then_search_from_the_command_line(scene, tmp_path):
    videos, _ = scene
    gallery = str(tmp_path / "gallery")
    env = dict(os.environ, YOLO_OFFLINE="1", HF_HUB_OFFLINE="1")

    def cli(*args):
        return subprocess.run([sys.executable, str(PROJECT_ROOT / "run_pipeline.py"), *args], capture_output=True,
                              text=True, timeout=600, env=env, cwd=PROJECT_ROOT)

    out = tmp_path / "run"
    run = cli("run", *videos, "--out", str(out), "--save-embeddings", "--no-progress",
              "--set", f"gallery.gallery={gallery}")
    assert run.returncode == 0, run.stderr
    track_file = next((out / "tracks").glob("*.jsonl"))
    records = [json.loads(line) for line in track_file.read_text().splitlines()]
    gait_tracks = [r["track_id"] for r in records if r["type"] == "track" and r["final"] and r["embeddings"]["gait"]]
    assert gait_tracks
    enrolled = cli("enroll", "--gallery", gallery, "--name", "walker-a", "--jsonl", str(track_file),
                   "--track", str(gait_tracks[0]))
    assert enrolled.returncode == 0, enrolled.stderr
    listed = cli("gallery", "list", "--gallery", gallery, "--json")
    assert listed.returncode == 0 and "walker-a" in listed.stdout
    found = cli("search", "--gallery", gallery, "--jsonl", str(track_file), "--json")
    assert found.returncode == 0, found.stderr
    results = [json.loads(line) for line in found.stdout.splitlines() if line.startswith("{")]
    assert any("walker-a" in json.dumps(r) for r in results)
