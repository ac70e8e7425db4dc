"""Download YOLOX-Nano's ONNX export (Megvii, Apache-2.0) into the models directory, when asked.

``detect: auto`` uses YOLOX-Nano wherever ``<models dir>/yolox_nano/yolox_nano.onnx`` exists, and the
default config carries settings measured for it (``docs/detectors.md``). No package registry carries
the file, so it comes from its publisher's GitHub release. The download is checked against the sha256
of the file those settings were measured with, and loaded as a YOLOX export (input 416x416, a YOLOX
head) before it is moved into place; a file already there with that digest is kept. Offline, or on
any mismatch, it says so in one line and installs nothing.

    python scripts/fetch_yolox.py [--models-dir DIR] [--url URL] [--any-digest]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from stages.checkpoints import sha256_of
from stages.model_files import ModelFileError, models_dir

URL = "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_nano.onnx"
RELATIVE = "yolox_nano/yolox_nano.onnx"
# the file the shipped YOLOX-Nano settings and score fusion were measured with
MEASURED_SHA256 = "e8af074932d4ed7e232278e3055cefcdea3edf178874a3694ae292649fb464dd"


class FetchError(RuntimeError):
    """The file could not be downloaded, did not match, or is not a YOLOX export; the message is one line."""


def download(url: str, path: Path, timeout_s: float) -> None:
    """``url`` -> ``path``; FetchError on any network or HTTP failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, path.open("wb") as out:
            shutil.copyfileobj(response, out)
    except urllib.error.HTTPError as error:
        raise FetchError(f"could not download {url} (HTTP {error.code} {error.reason})") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise FetchError(f"could not download {url} ({getattr(error, 'reason', None) or error})") from None


def check_export(path: Path) -> None:
    """FetchError unless ``path`` loads and runs as a YOLOX export at 416x416."""
    from stages.detect.yolox import YoloxDetector

    try:
        YoloxDetector(model=str(path))
    except ModelFileError as error:
        raise FetchError(f"the download is not a YOLOX-Nano export: {error}") from None


def fetch(target: Path, url: str = URL, any_digest: bool = False, timeout_s: float = 60.0) -> Path:
    """Download, check and install the file under ``target``; its path."""
    path = target / RELATIVE
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")  # the runtimes read by extension
    try:
        download(url, partial, timeout_s)
        digest = sha256_of(partial)
        if digest != MEASURED_SHA256 and not any_digest:
            raise FetchError(
                f"{url} has sha256 {digest}, not that of the file the shipped settings were measured with "
                f"({MEASURED_SHA256}); --any-digest installs it anyway"
            )
        check_export(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
        if not any(path.parent.iterdir()):
            path.parent.rmdir()  # a failed download leaves no trace
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", default=None, help="default: $GAITSCOPE_MODELS or ~/.cache/gaitscope/models")
    parser.add_argument("--url", default=URL, help="where to download from (a mirror of the release file)")
    parser.add_argument("--any-digest", action="store_true",
                        help="install a file whose sha256 differs from the measured one (it is still checked as a "
                             "YOLOX export)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server")
    args = parser.parse_args(argv)
    target = models_dir(args.models_dir)
    existing = target / RELATIVE
    if existing.is_file() and sha256_of(existing) == MEASURED_SHA256:
        print(f"YOLOX-Nano already in {existing}")
        return 0
    try:
        path = fetch(target, args.url, args.any_digest, args.timeout)
    except (FetchError, OSError) as error:
        print(f"YOLOX-Nano not installed: {error}", file=sys.stderr)
        return 1
    print(f"installed {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
