"""``detector_settings``: stage settings measured for one detector, used only when that detector runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pipeline import app
from pipeline.config import ConfigError, load_config
from pipeline.runner import RunResult
from stages.catalog import STAGE_KINDS
from stages.model_files import ENV_VAR
from tests.helpers import PROJECT_ROOT

SHARED_YOLOX = (PROJECT_ROOT / ".." / "shared" / "models" / "yolox_nano" / "yolox_nano.onnx").resolve()

CONFIG = """
detect: {backend: auto}
track: {backend: bytetrack, split_recheck_after: 8}
segment: {backend: detector}
tracklets: {backend: window}
gallery: {backend: faiss, top_k: 5}
detector_settings:
  yolox:
    track: {backend: botsort, split_recheck_after: 4}
    gallery: {scores: fusion_for_yolox.json}
"""


def _load(tmp_path: Path, overrides: list[str] | None = None, text: str = CONFIG):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path, STAGE_KINDS, overrides)


def test_the_sections_stay_as_written_until_a_detector_is_chosen(tmp_path) -> None:
    config = _load(tmp_path)
    assert config.stages["track"].backend == "bytetrack" and not config.detector_chosen
    yolox = config.detector_settings["yolox"]
    assert yolox["track"].backend == "botsort" and yolox["track"].params == {"split_recheck_after": 4}
    # A section with the same backend merges key by key, as _base_ does.
    assert yolox["gallery"].params == {"top_k": 5, "scores": "fusion_for_yolox.json"}
    assert yolox["segment"] == config.stages["segment"]


def test_command_line_overrides_win_over_the_detector_settings(tmp_path) -> None:
    config = _load(tmp_path, ["track.split_recheck_after=6", "gallery.scores=mine.json"])
    assert config.stages["track"].params["split_recheck_after"] == 6
    assert config.detector_settings["yolox"]["track"].params["split_recheck_after"] == 6
    assert config.detector_settings["yolox"]["gallery"].params["scores"] == "mine.json"


def test_the_settings_themselves_can_be_overridden_or_dropped(tmp_path) -> None:
    tuned = _load(tmp_path, ["detector_settings.yolox.track.split_recheck_after=2"])
    assert tuned.detector_settings["yolox"]["track"].params["split_recheck_after"] == 2
    assert tuned.stages["track"].params["split_recheck_after"] == 8
    assert _load(tmp_path, ["detector_settings.yolox=null"]).detector_settings == {}


@pytest.mark.parametrize(
    "settings,expected",
    [
        ("detector_settings: [yolox]", "detector_settings: expected a mapping of detector backends"),
        ("detector_settings: {yolo_x: {}}", "detector_settings: 'yolo_x' is not a detector backend (known: "),
        ("detector_settings: {yolox: {detect: {score_threshold: 0.4}}}",
         "detector_settings.yolox: 'detect' is not a stage section it can set"),
        ("detector_settings: {yolox: {track: botsort}}", "detector_settings.yolox.track: expected a mapping"),
        ("detector_settings: {yolox: {track: {backend: bytetrak}}}", "track.backend: unknown track backend 'bytetrak'"),
    ],
)
def test_bad_settings_are_one_line_naming_them(tmp_path, settings, expected) -> None:
    with pytest.raises(ConfigError, match=r"^" + expected.replace("[", r"\[").replace("(", r"\(")) as error:
        _load(tmp_path, text=CONFIG.split("detector_settings:")[0] + settings + "\n")
    assert "\n" not in str(error.value)


def test_a_misspelt_key_in_the_settings_is_found_before_any_model_is_built(tmp_path) -> None:
    config = _load(tmp_path, ["detector_settings.yolox.track.split_recheck_afterr=4"])
    with pytest.raises(ConfigError, match="^detector_settings.yolox.track: unknown key 'split_recheck_afterr'"):
        app.check_stage_params(config)


def test_a_named_detector_takes_its_settings_without_building_anything(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))  # no model file: choosing must not need one
    config, built = app.choose_detector(_load(tmp_path, ["detect.backend=yolox"]))
    assert built is None and config.detector_chosen
    assert config.stages["detect"].backend == "yolox" and config.stages["track"].backend == "botsort"
    assert config.stages["gallery"].params["scores"] == "fusion_for_yolox.json"
    tracker, _ = app.build_stage(_load(tmp_path, ["detect.backend=yolox"]), "track")  # chosen on the way
    assert type(tracker).__name__ == "BoTSORTStage"


def test_settings_follow_the_detector_that_runs_not_the_file_that_was_found(tmp_path, monkeypatch, caplog) -> None:
    """A YOLOX-Nano file that does not load leaves the shipped centre detector running: with its settings,
    not YOLOX-Nano's."""
    corrupt = tmp_path / "yolox_nano" / "yolox_nano.onnx"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\x00garbage" * 64)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    loaded = _load(tmp_path)
    with caplog.at_level(logging.INFO):
        config, (detector, backend) = app.choose_detector(loaded)
    assert backend == "centre" and type(detector).__name__ == "CentreNetDetector"
    assert config.stages["detect"].backend == "centre" and config.detector_chosen
    expected = loaded.detector_settings.get("centre", loaded.stages)
    assert {k: v for k, v in config.stages.items() if k != "detect"} == {
        k: v for k, v in expected.items() if k != "detect"}
    assert not [r for r in caplog.records if r.getMessage().startswith("detector settings for yolox")]


def test_the_detector_is_built_once_and_the_other_stages_take_its_settings(monkeypatch, caplog) -> None:
    if not SHARED_YOLOX.is_file():
        pytest.skip(f"model not found: {SHARED_YOLOX} (tests read ../shared/models next to the project)")
    monkeypatch.setenv(ENV_VAR, str(SHARED_YOLOX.parents[1]))
    monkeypatch.chdir(PROJECT_ROOT)  # the default config names the shipped score fusion relative to the project
    config = app.load("default", ["attributes.enabled=false"])
    assert config.detector_settings["yolox"]["track"].backend == "botsort"
    with caplog.at_level(logging.INFO):
        built = app.build_stages(config)
    try:
        assert built.descriptions["detect"] == "yolox"
        tracker = next(s.stage for s in built.frame_stages if s.name == "track")
        assert type(tracker).__name__ == "BoTSORTStage"
        gallery = next(s.stage for s in built.track_stages if s.name == "gallery")
        shipped = json.loads((PROJECT_ROOT / "weights" / "score_fusion_yolox.params.json").read_text())
        assert gallery.score_model.thresholds == shipped["thresholds"]
    finally:
        built.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("detector: yolox") for m in messages) == 1
    assert "detector settings for yolox: gallery, track" in messages


def test_the_shipped_default_gives_yolox_what_the_yolox_config_gives(monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, "/nonexistent")
    default = app.load("default")
    named, _ = app.choose_detector(app.load("yolox"))
    found = default.with_detector("yolox", {})
    assert found.stages == named.stages
    assert found.stages["track"].backend == "botsort" and found.stages["track"].params["split_recheck_after"] == 4
    assert found.stages["gallery"].params["scores"] == "weights/score_fusion_yolox.params.json"
    # without any model file: the shipped centre detector, with the score fusion fitted on its tracks
    centre, _ = app.choose_detector(default)
    assert centre.stages["detect"].backend == "centre"
    assert centre.stages["gallery"].params["scores"] == "weights/score_fusion_centre.params.json"
    # its tracks are also split at crossings (the fusion was fitted on them); every other setting as written
    assert centre.stages["track"].params == {**default.stages["track"].params, "split_at_crossings": True}
    assert {k: v for k, v in centre.stages.items() if k not in ("detect", "track", "gallery")} == {
        k: v for k, v in default.stages.items() if k not in ("detect", "track", "gallery")}
    classic = default.with_detector("classic", {})  # no settings of its own: the sections as written
    assert {k: v for k, v in classic.stages.items() if k != "detect"} == {
        k: v for k, v in default.stages.items() if k != "detect"}


class _RecordingExecutor:
    """An executor that only records the configuration it was handed."""

    def __init__(self) -> None:
        self.config = None

    def run(self, todo, out_dir, config, writer, progress, video_out, save_silhouettes):
        self.config = config
        return RunResult([], {}, 0, [], 0.0, False), [], {}


def test_a_distributed_run_hands_its_workers_the_chosen_detector(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    executor = _RecordingExecutor()
    app.run([], tmp_path / "out", _load(tmp_path), executor=executor)
    assert executor.config.detector_chosen and executor.config.stages["detect"].backend == "centre"
    assert executor.config.stages["detect"].params == {}
