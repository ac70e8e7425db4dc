"""Cutting a person's region out of a frame for a crop segmenter, and putting its output back.

A region is an axis-aligned rectangle in frame pixels with the model input's aspect ratio, centred
on the person's box and ``scale`` times larger than what the box needs, so the model sees the whole
person with some context and undistorted. Parts of a region outside the frame are black. The
model's output map is warped back onto the box's pixels only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Region:
    """x1, y1: top-left corner in frame pixels (may be outside the frame); width, height in pixels."""

    x1: float
    y1: float
    width: float
    height: float


def region_around(box_xyxy: np.ndarray, scale: float, input_size: tuple[int, int]) -> Region:
    """The smallest region with the aspect of ``input_size`` (height, width) holding the box,
    grown ``scale`` times, centred on the box."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    aspect = input_size[1] / input_size[0]  # width / height
    height = scale * max(y2 - y1, (x2 - x1) / aspect, 1.0)
    width = height * aspect
    return Region((x1 + x2 - width) / 2.0, (y1 + y2 - height) / 2.0, width, height)


def cut_region(image: np.ndarray, region: Region, input_size: tuple[int, int]) -> np.ndarray:
    """The region of a frame resampled to ``input_size`` (height, width): (h, w, 3); black outside the frame."""
    out_h, out_w = input_size
    kx, ky = region.width / out_w, region.height / out_h  # frame pixels per input pixel
    if max(kx, ky) > 1.0:  # shrinking: warpAffine has no area filter, so copy and area-resize
        left, top = int(np.floor(region.x1)), int(np.floor(region.y1))
        width, height = int(np.ceil(region.width)), int(np.ceil(region.height))
        frame_h, frame_w = image.shape[:2]
        canvas = np.zeros((height, width, 3), dtype=image.dtype)
        fx1, fy1 = max(left, 0), max(top, 0)
        fx2, fy2 = min(left + width, frame_w), min(top + height, frame_h)
        if fx2 > fx1 and fy2 > fy1:
            canvas[fy1 - top : fy2 - top, fx1 - left : fx2 - left] = image[fy1:fy2, fx1:fx2]
        return cv2.resize(canvas, (out_w, out_h), interpolation=cv2.INTER_AREA)
    # Pixel centres: input pixel u sits at frame x = x1 + (u + 0.5) * kx - 0.5.
    to_frame = np.array(
        [[kx, 0.0, region.x1 + 0.5 * kx - 0.5], [0.0, ky, region.y1 + 0.5 * ky - 0.5]], dtype=np.float64
    )
    return cv2.warpAffine(
        image,
        to_frame,
        (out_w, out_h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def region_map_in_box(values: np.ndarray, region: Region, box_px: tuple[int, int, int, int]) -> np.ndarray:
    """A model output map (h, w) over the region, resampled onto the box's frame pixels:
    (y2 - y1, x2 - x1) float32. box_px: integer (x1, y1, x2, y2), x2/y2 exclusive, not empty."""
    bx1, by1, bx2, by2 = box_px
    return region_map_onto(values, region, Region(bx1, by1, bx2 - bx1, by2 - by1), (by2 - by1, bx2 - bx1))


def region_map_onto(values: np.ndarray, source: Region, target: Region, size: tuple[int, int],
                    outside: float | None = None) -> np.ndarray:
    """A map (h, w) over the ``source`` region resampled onto the ``target`` region at ``size``
    (height, width): float32. ``outside``: the value beyond the source map (None: its border replicated).
    With ``source = Region(0, 0, frame_width, frame_height)`` this cuts a full-frame mask to a region."""
    map_h, map_w = values.shape[:2]
    out_h, out_w = size
    kx, ky = map_w / source.width, map_h / source.height  # source map pixels per frame pixel
    tx, ty = target.width / out_w, target.height / out_h  # frame pixels per output pixel
    # Output pixel u sits at frame x = target.x1 + (u + 0.5) * tx, i.e. at source map (x - source.x1) * kx - 0.5.
    to_map = np.array(
        [[kx * tx, 0.0, (target.x1 + 0.5 * tx - source.x1) * kx - 0.5],
         [0.0, ky * ty, (target.y1 + 0.5 * ty - source.y1) * ky - 0.5]],
        dtype=np.float64,
    )
    border = cv2.BORDER_REPLICATE if outside is None else cv2.BORDER_CONSTANT
    return cv2.warpAffine(
        np.ascontiguousarray(values, dtype=np.float32),
        to_map,
        (out_w, out_h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=border,
        borderValue=0.0 if outside is None else float(outside),
    )
