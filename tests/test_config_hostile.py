"""Hostile and mistaken configurations: alias bombs, cycles, binary files, out-of-domain numbers.
Each is one bounded line naming what is wrong, found before any model is built."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from pipeline.app import check_stage_params, load
from pipeline.config import ConfigError, options_from
from pipeline.errors import MAX_MESSAGE_CHARS
from pipeline.runner import RunnerOptions
from pipeline.sources import SourceOptions

ROOT = Path(__file__).resolve().parents[1]

BILLION_LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi")
)


def test_billion_laughs_file_fails_fast_with_little_memory(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 450
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match="aliases expand to more than") as err:
            load(str(bomb))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20 and len(str(err.value)) <= MAX_MESSAGE_CHARS


def test_alias_bomb_in_an_override_is_refused():
    value = "[&a [x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b], " \
            "&d [*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d]]"
    with pytest.raises(ConfigError, match="aliases expand") as err:
        load("front_half", [f"detect.history={value}"])
    assert len(str(err.value)) <= MAX_MESSAGE_CHARS


@pytest.mark.parametrize("text, message", [
    ("a: &a [*a]\n", "refers to a value that contains it"),
    ("detect: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
    ("detect: {backend: [1, 2\n", "not valid YAML"),
    ("1: x\nsource: {}\n", "unknown config section 1"),
    ("_base_: [a]\n", "_base_ must be a file name"),
    ("detect: {backend: classic, history: " + "9" * 5000 + "}\n", "not valid YAML"),
    ("detect: {backend: classic, history: '" + "9" * 5000 + "'}\n", "detect.history: expected"),
    ("detect: {backend: classic, " + "k" * 1000 + ": 1}\n", "unknown key"),
])
def test_malformed_documents_are_one_bounded_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        config = load(str(path))
        check_stage_params(config)
    assert "\n" not in str(err.value) and len(str(err.value)) <= MAX_MESSAGE_CHARS


def test_binary_file_and_base_cycle(tmp_path):
    binary = tmp_path / "b.yaml"
    binary.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ConfigError, match="not a text"):
        load(str(binary))
    (tmp_path / "one.yaml").write_text("_base_: two.yaml\n")
    (tmp_path / "two.yaml").write_text("_base_: one.yaml\n")
    with pytest.raises(ConfigError, match=r"_base_ cycle \(one.yaml -> two.yaml -> one.yaml\)"):
        load(str(tmp_path / "one.yaml"))
    with pytest.raises(ConfigError, match="_base_ cycle"):
        (tmp_path / "self.yaml").write_text("_base_: self.yaml\n")
        load(str(tmp_path / "self.yaml"))


@pytest.mark.parametrize("override, message", [
    ("source.frame_stride=0", "source.frame_stride: expected int >= 1, got 0"),
    ("source.max_frames=-5", "source.max_frames: expected int >= 0 or null, got -5"),
    ("source.queue_size=0", "source.queue_size"),
    ("source.queue_size=-1", "source.queue_size"),
    ("source.open_timeout_s=0", "source.open_timeout_s: expected float > 0"),
    ("source.open_timeout_s=.nan", "source.open_timeout_s: expected float > 0 (finite), got nan"),
    ("source.read_timeout_s=.inf", "(finite)"),
    ("source.rtsp_transport=http", "source.rtsp_transport: expected one of 'tcp', 'udp'"),
    ("runner.queue_size=0", "runner.queue_size"),
    ("runner.batch_size=0", "runner.batch_size: expected int >= 1"),
    ("runner.max_open_sources=-2", "runner.max_open_sources"),
    ("tracklets.window_every=0", "tracklets.window_every: expected int >= 1"),
    ("tracklets.min_length=-1", "tracklets.min_length"),
    ("track.lost_track_buffer=-5", "track.lost_track_buffer: expected int >= 0"),
    ("track.minimum_matching_iou=1.5", "track.minimum_matching_iou: expected float in [0, 1]"),
    ("detect.history=[1, 2", "not valid YAML"),
])
def test_numbers_outside_the_documented_domain_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        config = load("front_half", [override])
        options_from(SourceOptions, config.source, "source")
        options_from(RunnerOptions, config.runner, "runner")
        check_stage_params(config)
    assert message in str(err.value)


def test_dataclass_options_check_their_domain_when_built_in_code():
    with pytest.raises(ValueError, match="source.frame_stride"):
        SourceOptions(frame_stride=0)
    with pytest.raises(ValueError, match="runner.batch_size"):
        RunnerOptions(batch_size=0)


@pytest.mark.parametrize("args", [["--stride", "0"], ["--max-frames", "-5"], ["--set", "source.frame_stride=[x"],
                                  ["--set", "nodot=1"]])
def test_cli_user_errors_are_one_line_and_touch_nothing(tmp_path, args):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), "run", str(tmp_path / "x.mp4"), "--config",
                           "front_half", "--out", str(out), *args], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not out.exists()


def test_bomb_message_names_the_file_once(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("detect:\n  backend: classic\n  history: [&a [x, x, x, x, x, x, x, x, x], "
                    + ", ".join(f"&{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefg", "bcdefgh")) + "]\n")
    with pytest.raises(ConfigError) as err:
        load(str(bomb))
    assert str(err.value) == f"{bomb}: YAML aliases expand to more than 10000 values; refused"
