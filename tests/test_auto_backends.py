"""``backend: auto`` for segment and reid: what is chosen from a models directory, why, and falling back.

Uses the published models in ../shared/models (skipped where absent) and broken copies of them.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from pipeline import app
from pipeline.config import ConfigError
from tests.helpers import SHARED_MODELS, require_model

POSE = "mediapipe_pose/pose_landmark_full.tflite"
OSNET = "osnet_x0_25_msmt17/osnet_x0_25_msmt17.onnx"


def _build(tmp_path: Path, models: Path, *overrides: str) -> tuple[app.BuiltPipeline, list[str]]:
    config = tmp_path / "front.yaml"
    config.write_text(
        "detect: {backend: classic}\ntrack: {backend: bytetrack}\nsegment: {backend: auto}\n"
        "tracklets: {backend: window}\nreid: {backend: auto}\n"
    )
    handler = _Lines()
    logger = logging.getLogger("gaitscope")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        built = app.build_stages(
            app.load(config, [f"segment.models_dir={models}", f"reid.models_dir={models}", *overrides])
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return built, handler.lines


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_learned_segmenter_chosen_and_research_reid_only_on_request(tmp_path: Path) -> None:
    require_model(POSE)
    require_model(OSNET)
    built, lines = _build(tmp_path, SHARED_MODELS)
    assert built.descriptions["segment"] == "pose_crop" and built.descriptions["reid"] == "appearance"
    segment_line = next(line for line in lines if line.startswith("segment:"))
    reid_line = next(line for line in lines if line.startswith("reid:"))
    assert "pose_crop" in segment_line and "pose_landmark_full.tflite" in segment_line
    assert "research use only" in reid_line and "allow_research_weights" in reid_line
    built, lines = _build(tmp_path, SHARED_MODELS, "reid.allow_research_weights=true")
    assert built.descriptions["reid"] == "onnx"
    assert type(built.track_stages[0].stage).__name__ == "OnnxReID"


def test_an_empty_models_directory_falls_back_and_says_how_to_fill_it(tmp_path: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    built, lines = _build(tmp_path, empty, "reid.allow_research_weights=true")
    assert built.descriptions["segment"] == "detector" and built.descriptions["reid"] == "appearance"
    segment_line = next(line for line in lines if line.startswith("segment:"))
    assert "scripts/install.sh" in segment_line and str(empty) in segment_line


def test_a_corrupt_model_is_one_line_and_auto_moves_on(tmp_path: Path) -> None:
    require_model(POSE)
    models = tmp_path / "models"
    (models / "mediapipe_pose").mkdir(parents=True)
    (models / POSE).write_bytes(b"\x00" * 4096)  # truncated download
    (models / "osnet_x0_25_msmt17").mkdir()
    shutil.copy(require_model("yolox_nano/yolox_nano.onnx"), models / OSNET)  # the wrong model under the right name
    built, lines = _build(tmp_path, models, "reid.allow_research_weights=true")
    assert built.descriptions["segment"] == "detector" and built.descriptions["reid"] == "appearance"
    warnings = [line for line in lines if "trying the next choice" in line]
    assert len(warnings) == 2
    assert any(str(models / POSE) in line for line in warnings) and any(
        str(models / OSNET) in line for line in warnings
    )
    assert all("\n" not in line for line in warnings)


def test_auto_branch_options_are_validated_and_used(tmp_path: Path) -> None:
    require_model(POSE)
    built, _ = _build(tmp_path, SHARED_MODELS, "segment.pose_crop={min_height: 80}")
    assert built.frame_stages[2].stage.min_height == 80
    with pytest.raises(ConfigError, match="segment.pose_crop"):
        _build(tmp_path, SHARED_MODELS, "segment.pose_crop={min_heigth: 80}")
    with pytest.raises(ConfigError, match="allow_research"):
        _build(tmp_path, SHARED_MODELS, "segment.allow_research_weights=true")
