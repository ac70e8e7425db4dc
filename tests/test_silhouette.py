"""OpenGait pretreatment: golden test on real CASIA-B frames re-padded into larger canvases."""

from __future__ import annotations

import io
import lzma

import cv2
import numpy as np
import pytest

from stages.silhouette import crop_box, cut_sides, opengait_pretreat, resize_ratio, silhouette_from_mask
from tests.helpers import CASIA_B, require


def reference_pretreat(img: np.ndarray, img_size: int = 64) -> np.ndarray | None:
    """OpenGait's published pretreatment, restated step by step with plain loops (0/255 uint8 input)."""
    if img.sum() <= 10000:
        return None
    row_has = [bool(img[r].any()) for r in range(img.shape[0])]
    top = row_has.index(True)
    bottom = len(row_has) - 1 - row_has[::-1].index(True)
    img = img[top : bottom + 1]
    new_w = int(img_size * (img.shape[1] / img.shape[0]))
    img = cv2.resize(img, (new_w, img_size), interpolation=cv2.INTER_CUBIC)
    total = float(img.sum())
    running, centre = 0.0, None
    for column in range(img.shape[1]):
        running += float(img[:, column].sum())
        if running > total / 2:
            centre = column
            break
    if not centre:
        return None
    left, right = centre - img_size // 2, centre + img_size // 2
    if left <= 0 or right >= img.shape[1]:
        left, right = left + img_size // 2, right + img_size // 2
        pad = np.zeros((img.shape[0], img_size // 2))
        img = np.concatenate([pad, img, pad], axis=1)
    return img[:, left:right].astype("uint8")


def casia_frames(n: int = 40) -> np.ndarray:
    path = require(CASIA_B / "001.npz.xz")
    with lzma.open(path) as fh:
        archive = np.load(io.BytesIO(fh.read()))
        packed = archive["nm-01/090"]
    frames = np.unpackbits(packed, axis=-1)[:n] * 255
    return frames.astype(np.uint8)


def repad(frame: np.ndarray, scale: int, canvas: tuple[int, int], offset: tuple[int, int]) -> np.ndarray:
    big = cv2.resize(frame, (frame.shape[1] * scale, frame.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    out = np.zeros(canvas, dtype=np.uint8)
    y, x = offset
    out[y : y + big.shape[0], x : x + big.shape[1]] = big
    return out


@pytest.mark.parametrize("scale,canvas,offset", [(3, (360, 480), (20, 100)), (5, (480, 640), (130, 250)), (7, (480, 640), (0, 3)), (2, (240, 320), (50, 40))])
def test_pretreatment_matches_opengait_on_repadded_casia_frames(scale, canvas, offset):
    ious = []
    for frame in casia_frames():
        big = repad(frame, scale, canvas, offset)
        ours = opengait_pretreat(big)
        expected = reference_pretreat(big)
        assert (ours is None) == (expected is None)
        if ours is None:
            continue
        assert ours.shape == (64, 64) and ours.dtype == np.uint8
        np.testing.assert_array_equal(ours, expected)
        # and it lands back on the dataset's own pretreated frame, up to interpolation
        ours_bin, orig_bin = ours > 127, frame > 127
        iou = (ours_bin & orig_bin).sum() / max(1, (ours_bin | orig_bin).sum())
        ious.append(iou)
    assert len(ious) > 30
    assert np.mean(ious) > 0.85 and np.min(ious) > 0.8  # even factors blur under cubic resampling


def test_near_empty_and_edge_masks():
    assert opengait_pretreat(np.zeros((100, 100), np.uint8)) is None
    tiny = np.zeros((100, 100), np.uint8)
    tiny[10:15, 10:15] = 1  # 25 px * 255 < 10000
    assert opengait_pretreat(tiny) is None
    # a person at the image's left edge: the window leaves the image and is padded
    edge = np.zeros((200, 300), bool)
    edge[20:180, 0:30] = True
    out = opengait_pretreat(edge)
    assert out is not None and out.shape == (64, 64)
    assert out[:, :10].max() == 0  # padding on the left


def test_silhouette_from_mask_is_64x44_and_bool_input_equals_255_input():
    mask = np.zeros((300, 200), bool)
    cv2.ellipse(mask.view(np.uint8), (100, 150), (30, 120), 0, 0, 360, 1, -1)
    a = silhouette_from_mask(mask)
    b = silhouette_from_mask(mask.astype(np.uint8) * 255)
    assert a.shape == (64, 44)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(cut_sides(opengait_pretreat(mask)), a)


def test_ratio_and_crop():
    box = np.array([10, 20, 50, 148], np.float32)
    assert resize_ratio(box) == pytest.approx(2.0)
    image = np.random.default_rng(0).integers(0, 255, (200, 100, 3), dtype=np.uint8)
    crop = crop_box(image, np.array([-5, -5, 500, 500], np.float32))
    assert crop.shape == (128, 64, 3)
