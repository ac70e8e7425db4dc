"""Weights from a path the user gives never run code: malicious pickles are refused in one line before
any library unpickles them, and real checkpoints still load."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from stages.checkpoints import TORCH_TENSORS, UnsafeCheckpointError, vet_torch_pickle

ROOT = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this runs ``touch MARKER`` (what a hostile checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"model": _Payload(marker), "epoch": 3}, path)
    return path


def write_clip(path: Path, frames: int = 10) -> None:
    import av
    import numpy as np

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        stream.height, stream.width, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(frames):
            image = np.full((64, 64, 3), 20 * i % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "YOLO_OFFLINE": "1"})


def assert_refused_in_one_line(proc: subprocess.CompletedProcess, marker: Path) -> None:
    assert not marker.exists(), "the payload ran"
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("error", "Traceback", "  "))]
    assert len(lines) == 1 and "refused" in lines[0], proc.stderr
    assert len(lines[0]) <= 420


def test_vetting_walks_the_pickle_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = hostile_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(UnsafeCheckpointError, match=r"references posix\.system"):
        vet_torch_pickle(evil, TORCH_TENSORS)
    assert not marker.exists()
    good = tmp_path / "good.pt"
    torch.save({"state": torch.nn.Linear(3, 2).state_dict(), "half": torch.zeros(2, dtype=torch.float16)}, good)
    vet_torch_pickle(good, TORCH_TENSORS)


def test_legacy_torchscript_and_garbage_files_are_refused(tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save({"x": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    script = tmp_path / "script.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), script)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 100)
    plain_pickle = tmp_path / "plain.pt"
    plain_pickle.write_bytes(pickle.dumps({"a": 1}))
    for path, reason in [(legacy, "not a zip-format"), (script, "TorchScript"), (garbage, "not a zip-format"),
                         (plain_pickle, "not a zip-format")]:
        with pytest.raises(UnsafeCheckpointError, match=reason):
            vet_torch_pickle(path, TORCH_TENSORS)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("archive/evil.pkl", pickle.dumps(1))
    with pytest.raises(UnsafeCheckpointError, match="one data.pkl"):
        vet_torch_pickle(other, TORCH_TENSORS)


def test_a_class_called_instead_of_restored_is_refused(tmp_path):
    pytest.importorskip("ultralytics")
    from ultralytics.nn.tasks import DetectionModel

    from stages.detect.yolo import ULTRALYTICS_CHECKPOINT

    class _Construct:
        def __reduce__(self):
            return (DetectionModel, ("yolov8n.yaml",))

    path = tmp_path / "construct.pt"
    torch.save({"model": _Construct()}, path)
    with pytest.raises(UnsafeCheckpointError, match="calls ultralytics.nn.tasks.DetectionModel"):
        vet_torch_pickle(path, ULTRALYTICS_CHECKPOINT)


def test_a_real_ultralytics_checkpoint_passes_and_loads(tmp_path):
    pytest.importorskip("ultralytics")
    os.environ["YOLO_OFFLINE"] = "1"
    from ultralytics import YOLO

    from stages.detect.yolo import ULTRALYTICS_CHECKPOINT, YoloDetector

    path = tmp_path / "yolov8n.pt"
    YOLO("yolov8n.yaml").save(str(path))  # the checkpoint layout ultralytics writes (random weights)
    vet_torch_pickle(path, ULTRALYTICS_CHECKPOINT)
    assert YoloDetector(weights=str(path)).has_masks is False


@pytest.mark.parametrize("how", ["yolo", "auto", "bench"])
def test_hostile_yolo_weights_never_run_and_are_one_line(tmp_path, how):
    marker = tmp_path / "pwned"
    evil = hostile_checkpoint(tmp_path / "yolo11n.pt", marker)
    if how == "yolo":
        proc = cli("run", str(tmp_path / "clip.mp4"), "--config", "front_half", "--out", str(tmp_path / "o"),
                   "--set", "detect.backend=yolo", "--set", f"detect.weights={evil}")
    elif how == "auto":  # `auto` picks YOLO because the file exists
        proc = cli("run", str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "o"), "--set", f"detect.weights={evil}")
    else:
        clip = tmp_path / "clip.mp4"
        write_clip(clip)
        proc = cli("bench", "front_half", str(clip), "--backend", "yolo", "--model", str(evil))
    assert_refused_in_one_line(proc, marker)


def test_hostile_stage_weights_are_one_line_not_torch_advice(tmp_path):
    marker = tmp_path / "pwned"
    evil = hostile_checkpoint(tmp_path / "gait.pt", marker)
    proc = cli("run", str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "o"), "--set", f"gait.weights={evil}")
    assert_refused_in_one_line(proc, marker)
    assert "posix.system" in proc.stderr and "weights_only" not in proc.stderr


def test_hostile_reranker_for_search_is_one_line(tmp_path):
    import json

    marker = tmp_path / "pwned"
    evil = hostile_checkpoint(tmp_path / "cargait.pt", marker)
    records = tmp_path / "run.jsonl"
    records.write_text(json.dumps({"type": "track", "source": "c.mp4", "track_id": 1, "final": True,
                                   "embeddings": {"gait": [[0.1, 0.2], [0.3, 0.4]], "appearance": None},
                                   "model_versions": {"gait": "gar@1"}}) + "\n")
    gallery = str(tmp_path / "g")
    assert cli("enroll", "--gallery", gallery, "--name", "a", "--jsonl", str(records)).returncode == 0
    proc = cli("search", "--gallery", gallery, "--jsonl", str(records), "--reranker", str(evil))
    assert_refused_in_one_line(proc, marker)
