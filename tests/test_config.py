"""Config loading: inheritance, overrides, and one-line errors naming the key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from pipeline.config import ConfigError, build, check_arguments, load_config, merge_sections, options_from
from pipeline.registry import Registry, UnknownBackendError


class Dummy:
    def __init__(self, threshold: float = 0.5, mode: Literal["a", "b"] = "a", sizes: list[int] | None = None,
                 name: str = "x") -> None:
        self.threshold, self.mode, self.sizes, self.name = threshold, mode, sizes, name


KINDS = {"detect": Registry("detect", {"dummy": "tests.test_config:Dummy"})}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_backend_params_map_onto_constructor(tmp_path):
    cfg = load_config(write(tmp_path, "c.yaml", "detect:\n  backend: dummy\n  threshold: 1\n  sizes: [1, 2]\n"), KINDS)
    spec = cfg.stages["detect"]
    obj = build(KINDS["detect"].load(spec.backend), spec.params, "detect")
    assert (obj.threshold, obj.sizes) == (1, [1, 2])


@pytest.mark.parametrize(
    "text,expected",
    [
        ("detect:\n  backend: dummy\n  treshold: 0.3\n", "detect: unknown key 'treshold'"),
        ("detect:\n  backend: dummy\n  threshold: high\n", "detect.threshold: expected float"),
        ("detect:\n  backend: dummy\n  mode: c\n", "detect.mode: expected one of 'a', 'b'"),
        ("detect:\n  backend: dummy\n  sizes: [1, x]\n", "detect.sizes"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, expected):
    cfg = load_config(write(tmp_path, "c.yaml", text), KINDS)
    spec = cfg.stages["detect"]
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        check_arguments(KINDS["detect"].load(spec.backend), spec.params, "detect")


def test_unknown_section_backend_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown config section 'detcet'"):
        load_config(write(tmp_path, "a.yaml", "detcet: {backend: dummy}\n"), KINDS)
    with pytest.raises(ConfigError, match="unknown detect backend 'dumy'"):
        load_config(write(tmp_path, "b.yaml", "detect: {backend: dumy}\n"), KINDS)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml", KINDS)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "bad.yaml", "detect: [unclosed\n"), KINDS)


def test_inheritance_and_overrides(tmp_path):
    write(tmp_path, "base.yaml", "detect:\n  backend: dummy\n  threshold: 0.2\n  name: base\nrunner:\n  batch_size: 4\n")
    child = write(tmp_path, "child.yaml", "_base_: base.yaml\ndetect:\n  threshold: 0.7\n")
    cfg = load_config(child, KINDS, overrides=["detect.mode=b", "runner.queue_size=3"])
    assert cfg.stages["detect"].params == {"threshold": 0.7, "name": "base", "mode": "b"}
    assert cfg.runner == {"batch_size": 4, "queue_size": 3}
    assert "detect" not in load_config(child, KINDS, overrides=["detect.enabled=false"]).stages
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(child, KINDS, overrides=["oops"])


def test_a_dotted_override_reaches_into_nested_options(tmp_path):
    path = write(tmp_path, "nested.yaml", "detect:\n  backend: dummy\n  classic: {min_aspect: 1.5}\n  name: n\n")
    cfg = load_config(path, KINDS, overrides=["detect.classic.split_by_size=false", "detect.yolox.score=0.4"])
    assert cfg.stages["detect"].params == {"classic": {"min_aspect": 1.5, "split_by_size": False},
                                           "yolox": {"score": 0.4}, "name": "n"}
    with pytest.raises(ConfigError, match="'name' is not a mapping"):
        load_config(path, KINDS, overrides=["detect.name.first=x"])


def test_naming_a_backend_in_place_of_auto_keeps_autos_branch_for_it(tmp_path):
    kinds = {"detect": Registry("detect", {"dummy": "tests.test_config:Dummy", "auto": "tests.test_config:Dummy"})}
    path = write(tmp_path, "auto.yaml", "detect:\n  backend: auto\n  models_dir: /m\n  dummy: {threshold: 0.9}\n")
    for overrides in (["detect.backend=dummy", "detect.name=y"], ["detect.name=y", "detect.backend=dummy"]):
        spec = load_config(path, kinds, overrides=overrides).stages["detect"]
        assert (spec.backend, spec.params) == ("dummy", {"threshold": 0.9, "name": "y"})
    same = load_config(path, kinds, overrides=["detect.backend=auto"]).stages["detect"]
    assert same.params == {"models_dir": "/m", "dummy": {"threshold": 0.9}}
    named = write(tmp_path, "named.yaml", "detect:\n  backend: dummy\n  name: n\n")
    kinds["detect"] = Registry("detect", {"dummy": "tests.test_config:Dummy", "other": "tests.test_config:Dummy"})
    moved = load_config(named, kinds, overrides=["detect.backend=other"]).stages["detect"]
    assert (moved.backend, moved.params) == ("other", {"name": "n"})  # from a named backend: options kept


def test_the_default_config_runs_a_named_detector_with_its_auto_options():
    from stages.catalog import DETECTORS, STAGE_KINDS

    default = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    for backend in ("classic", "centre"):
        spec = load_config(default, STAGE_KINDS, overrides=[f"detect.backend={backend}"]).stages["detect"]
        assert spec.backend == backend
        check_arguments(DETECTORS.load(backend), spec.params, "detect")
    classic = load_config(default, STAGE_KINDS, overrides=["detect.backend=classic"]).stages["detect"]
    assert classic.params == {"split_by_size": False}


def test_changing_backend_replaces_section():
    merged = merge_sections({"detect": {"backend": "a", "x": 1}}, {"detect": {"backend": "b", "y": 2}})
    assert merged["detect"] == {"backend": "b", "y": 2}


def test_options_dataclass_validation():
    @dataclass
    class Options:
        stride: int = 1
        timeout_s: float = 5.0

    assert options_from(Options, {"stride": 2}, "source").stride == 2
    with pytest.raises(ConfigError, match="source.stride: expected int"):
        options_from(Options, {"stride": 1.5}, "source")


def test_registry_is_lazy_and_explains_unknown_names():
    registry = Registry("thing", {"missing_module": "no_such_module_anywhere:Thing"})
    assert registry.names() == ["missing_module"]  # nothing imported yet
    with pytest.raises(UnknownBackendError, match="choose one of: missing_module"):
        registry.target("other")
    with pytest.raises(ImportError):
        registry.load("missing_module")
