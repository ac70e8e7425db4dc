"""Person-crop data for appearance ReID: mini-MARS tracklets and Market-1501 images.

mini-MARS (``data/reid/mini_mars``): ``gtPepper/{train,query,gallery}.json`` list tracklets
``{pid, camid, img_paths, tracklet_length}`` with paths relative to the dataset folder.
Images are returned as (128, 64, 3) uint8 BGR, the pipeline's crop format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.messages import CROP_SIZE
from stages.reid.stage import spread

DEFAULT_REID_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "reid"


@dataclass(frozen=True)
class Tracklet:
    """pid: identity; camid: camera; crops: (T, 128, 64, 3) uint8 BGR."""

    pid: int
    camid: int
    crops: np.ndarray


def read_crop(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.resize(img, (CROP_SIZE[1], CROP_SIZE[0]), interpolation=cv2.INTER_AREA)


def load_mars_split(root: Path, split: str, max_frames: int | None = None) -> list[Tracklet]:
    """Tracklets of one mini-MARS split ("train", "query", "gallery"), at most ``max_frames``
    frames each, spread evenly."""
    index = root / "gtPepper" / f"{split}.json"
    if not index.is_file():
        raise FileNotFoundError(f"mini-MARS split file not found: {index}")
    out = []
    for item in json.loads(index.read_text()):
        paths = item["img_paths"]
        crops = np.stack([read_crop(root / paths[i]) for i in spread(len(paths), max_frames)])
        out.append(Tracklet(int(item["pid"]), int(item["camid"]), crops))
    return out


def load_market_split(root: Path, split: str) -> list[Tracklet]:
    """Market-1501 images of one split ("bounding_box_train", "bounding_box_test", "query"), one
    single-frame tracklet each; pid and camera from the file name (``0004_c1s6_..._02.jpg``)."""
    folder = root / split
    if not folder.is_dir():
        raise FileNotFoundError(f"Market-1501 split folder not found: {folder}")
    out = []
    for p in sorted(folder.glob("*.jpg")):
        pid, cam = p.name.split("_")[:2]
        out.append(Tracklet(int(pid), int(cam[1]) - 1, read_crop(p)[None]))
    return out
