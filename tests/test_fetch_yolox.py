"""scripts/fetch_yolox.py: YOLOX-Nano downloaded when asked, checked by sha256 and as a YOLOX export.

A local HTTP server stands in for the publisher's release page, serving the published file from
../shared/models (skipped where absent), a tampered copy, or something that is not a model.
"""

from __future__ import annotations

import functools
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import load_script, require_model


@pytest.fixture(scope="module")
def fetch():
    return load_script("fetch_yolox")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def served(tmp_path: Path):
    """(folder, base URL): files put in the folder are served over HTTP on localhost."""
    folder = tmp_path / "release"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_published_file_is_downloaded_checked_and_kept(tmp_path: Path, fetch, served, capsys) -> None:
    published = require_model("yolox_nano/yolox_nano.onnx")
    folder, base = served
    (folder / "yolox_nano.onnx").write_bytes(published.read_bytes())
    models = tmp_path / "models"
    assert fetch.main(["--models-dir", str(models), "--url", f"{base}/yolox_nano.onnx"]) == 0
    assert (models / fetch.RELATIVE).read_bytes() == published.read_bytes()
    assert [p.name for p in (models / "yolox_nano").iterdir()] == ["yolox_nano.onnx"]
    (folder / "yolox_nano.onnx").unlink()  # a second call does not download again
    assert fetch.main(["--models-dir", str(models), "--url", f"{base}/yolox_nano.onnx"]) == 0
    assert "already in" in capsys.readouterr().out


def test_another_digest_installs_nothing_unless_asked(tmp_path: Path, fetch, served, capsys) -> None:
    data = bytearray(require_model("yolox_nano/yolox_nano.onnx").read_bytes())
    folder, base = served
    data[len(data) // 2] ^= 0x01  # one bit of a weight (weights are most of the file): still a loadable export
    (folder / "other.onnx").write_bytes(bytes(data))
    models = tmp_path / "models"
    assert fetch.main(["--models-dir", str(models), "--url", f"{base}/other.onnx"]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "sha256" in error and "--any-digest" in error
    assert not (models / "yolox_nano").exists()
    assert fetch.main(["--models-dir", str(models), "--url", f"{base}/other.onnx", "--any-digest"]) == 0
    assert (models / fetch.RELATIVE).read_bytes() == bytes(data)


def test_a_file_that_is_not_a_yolox_export_is_refused_in_one_line(tmp_path: Path, fetch, served, capsys) -> None:
    folder, base = served
    (folder / "page.onnx").write_bytes(b"<html>rate limited</html>")
    models = tmp_path / "models"
    assert fetch.main(["--models-dir", str(models), "--url", f"{base}/page.onnx", "--any-digest"]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "not a YOLOX-Nano export" in error
    assert not (models / "yolox_nano").exists(), "nothing installed, no partial file left"


def test_no_server_or_a_missing_file_is_one_line_and_nothing_installed(tmp_path: Path, fetch, served, capsys) -> None:
    _, base = served
    models = tmp_path / "models"
    assert fetch.main(["--models-dir", str(models), "--url", f"{base}/absent.onnx"]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "could not download" in error and "404" in error
    with socket.socket() as probe:  # a port nothing listens on: the connection is refused at once
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    assert fetch.main(["--models-dir", str(models), "--url", f"http://127.0.0.1:{closed}/yolox_nano.onnx"]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "could not download" in error
    assert not (models / "yolox_nano").exists()
