"""``detect: auto`` over a models directory, and the OpenVINO detectors (SSD, ultralytics export) on real frames."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline import app
from pipeline.config import ConfigError
from stages.detect import build_auto_detector
from stages.model_files import ENV_VAR, ModelFileError
from tests.helpers import PROJECT_ROOT, VIDEOS, require

SHARED_MODELS = (PROJECT_ROOT / ".." / "shared" / "models").resolve()
CAMPUS = VIDEOS / "campus_road_480x360.mp4"
SSD = "pedestrian_detection_adas_0002/pedestrian-detection-adas-0002.xml"


def _shared(relative: str) -> Path:
    path = SHARED_MODELS / relative
    if not path.exists():
        pytest.skip(f"model not found: {path} (tests read ../shared/models next to the project)")
    return path


def _campus_frame(index: int = 200) -> np.ndarray:
    require(CAMPUS)
    with av.open(str(CAMPUS)) as container:
        for position, decoded in enumerate(container.decode(video=0)):
            if position == index:
                return decoded.to_ndarray(format="bgr24")
    raise AssertionError("clip too short")


def _needs(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} not installed")


def test_auto_picks_yolox_from_the_models_directory(monkeypatch, caplog) -> None:
    _shared("yolox_nano/yolox_nano.onnx")
    monkeypatch.setenv(ENV_VAR, str(SHARED_MODELS))
    config = app.load("front_half", ["detect.backend=auto"])
    with caplog.at_level(logging.INFO, logger="stages.detect"):
        built = app.build_stages(config)
    assert built.descriptions["detect"] == "yolox"
    lines = [r.getMessage() for r in caplog.records if r.name == "stages.detect"]
    assert lines == [
        f"detector: yolox (YOLOX-Nano ONNX, Apache-2.0, found at {SHARED_MODELS / 'yolox_nano' / 'yolox_nano.onnx'})"
    ]
    built.close()


def test_auto_without_models_is_the_shipped_centre_detector(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with caplog.at_level(logging.INFO, logger="stages.detect"):
        backend, detector = build_auto_detector({"centre": {"warmup_frames": 5}, "classic": {"warmup_frames": 7}})
    assert backend == "centre" and detector.warmup_frames == 5
    assert [r.getMessage() for r in caplog.records] == [
        "detector: centre (no third-party model found: the shipped centre detector)"
    ]


def test_auto_without_any_weights_is_the_classic_detector(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    monkeypatch.setattr("stages.detect.centre.DEFAULT_WEIGHTS", tmp_path / "absent.pt")
    with caplog.at_level(logging.INFO, logger="stages.detect"):
        backend, detector = build_auto_detector({"classic": {"warmup_frames": 5}})
    assert backend == "classic" and detector.warmup_frames == 5
    assert [r.getMessage() for r in caplog.records] == ["detector: classic (no learned detector model found)"]


def test_a_corrupt_model_is_one_line_and_auto_moves_on(tmp_path, monkeypatch, caplog) -> None:
    corrupt = tmp_path / "yolox_nano" / "yolox_nano.onnx"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\x00garbage" * 64)
    with caplog.at_level(logging.INFO, logger="stages.detect"):
        backend, _ = build_auto_detector({"models_dir": str(tmp_path)})
    assert backend == "centre"
    warning, chosen = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"detector: cannot use yolox: {corrupt}: ") and "\n" not in warning
    assert chosen == "detector: centre (the shipped centre detector)"


def test_corrupt_shipped_weights_leave_the_classic_detector(tmp_path, monkeypatch, caplog) -> None:
    broken = tmp_path / "person_centrenet.pt"
    broken.write_bytes(b"\x00garbage" * 64)
    monkeypatch.setattr("stages.detect.centre.DEFAULT_WEIGHTS", broken)
    with caplog.at_level(logging.INFO, logger="stages.detect"):
        backend, _ = build_auto_detector({"models_dir": str(tmp_path)})
    assert backend == "classic"
    warning, chosen = [r.getMessage() for r in caplog.records]
    assert warning.startswith("detector: cannot use centre: ") and "not a readable torch checkpoint" in warning
    assert chosen == "detector: classic (every learned detector failed to load)"


def test_auto_falls_back_to_the_next_learned_detector(tmp_path, caplog) -> None:
    _needs("openvino")
    ssd = _shared(SSD)
    (tmp_path / "yolox_nano").mkdir()
    (tmp_path / "yolox_nano" / "yolox_nano.onnx").write_bytes(b"not onnx")
    (tmp_path / "pedestrian_detection_adas_0002").symlink_to(ssd.parent, target_is_directory=True)
    with caplog.at_level(logging.INFO, logger="stages.detect"):
        backend, detector = build_auto_detector({"models_dir": str(tmp_path), "openvino": {"score_threshold": 0.6}})
    assert backend == "openvino" and detector.score_threshold == 0.6
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert len(detector.detect([_campus_frame()])[0]) >= 4


def test_auto_reports_a_misspelt_option_even_in_a_branch_not_taken(tmp_path) -> None:
    with pytest.raises(ConfigError, match="detect.yolox: unknown key 'score_treshold'"):
        build_auto_detector({"models_dir": str(tmp_path), "yolox": {"score_treshold": 0.4}})
    with pytest.raises(ConfigError, match="unknown key 'yolov9' for backend auto"):
        build_auto_detector({"yolov9": {}})


def test_openvino_ssd_finds_the_campus_walkers() -> None:
    _needs("openvino")
    from stages.detect.openvino_ssd import OpenVinoSsdDetector

    detector = OpenVinoSsdDetector(model=str(_shared(SSD)))
    (found,) = detector.detect([_campus_frame()])
    assert 5 <= len(found) <= 9 and np.all(found.confidence >= 0.5) and np.all(found.class_id == 0)
    heights, widths = found.xyxy[:, 3] - found.xyxy[:, 1], found.xyxy[:, 2] - found.xyxy[:, 0]
    assert np.all(heights > 1.5 * widths)


def test_openvino_ssd_without_its_runtime_says_what_to_install(monkeypatch) -> None:
    from stages.detect.openvino_ssd import OpenVinoSsdDetector

    ssd = _shared(SSD)
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(
        ModelFileError, match=f"^{ssd}: needs the openvino package, which is not installed; pip install openvino$"
    ):
        OpenVinoSsdDetector(model=str(ssd))


def test_ultralytics_openvino_export_from_the_models_directory() -> None:
    _needs("openvino")
    _needs("ultralytics")
    folder = _shared("yolov8n_int8_openvino")
    from stages.detect.yolo import YoloDetector

    detector = YoloDetector(weights=folder.name, models_dir=str(SHARED_MODELS), confidence=0.35)
    try:
        (found,) = detector.detect([_campus_frame()])
        assert 6 <= len(found) <= 9 and detector.has_masks is False
        assert np.all(found.class_id == 0)
    finally:
        detector.close()


def test_a_folder_that_is_no_ultralytics_export_is_refused(tmp_path) -> None:
    from stages.detect.yolo import YoloDetector

    (tmp_path / "model.xml").write_text("<net/>")
    with pytest.raises(ModelFileError, match="not an ultralytics OpenVINO export"):
        YoloDetector(weights=str(tmp_path))


def test_the_yolox_config_stops_with_one_line_where_its_model_is_absent(tmp_path, monkeypatch) -> None:
    """configs/yolox.yaml names the detector, so a missing model file is an error, not the classic detector."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    config, built = app.choose_detector(app.load("yolox"))
    assert built is None and config.stages["detect"].backend == "yolox"  # named, so nothing is built to choose
    track = config.stages["track"]
    assert track.backend == "botsort" and track.params["split_on_appearance"] is True
    assert track.params["split_recheck_after"] == 4 and track.params["split_recheck_distance"] == 0.35
    with pytest.raises(ModelFileError, match="yolox_nano.onnx") as error:
        app.build_stage(config, "detect")
    assert "\n" not in str(error.value)


def test_the_yolox_config_runs_yolox_with_its_own_score_fusion(monkeypatch) -> None:
    _shared("yolox_nano/yolox_nano.onnx")
    monkeypatch.setenv(ENV_VAR, str(SHARED_MODELS))
    monkeypatch.chdir(PROJECT_ROOT)  # the config names the shipped score fusion relative to the project
    config = app.load("yolox")
    detector, backend = app.build_stage(config, "detect")
    assert backend == "yolox" and len(detector.detect([_campus_frame()])[0]) >= 5
    tracker, _ = app.build_stage(config, "track")
    assert type(tracker).__name__ == "BoTSORTStage"
    gallery, _ = app.build_stage(config, "gallery")
    shipped = PROJECT_ROOT / "weights" / "score_fusion_yolox.params.json"
    assert gallery.score_model.thresholds == json.loads(shipped.read_text())["thresholds"]
