"""How tall a person is at each image row of a static camera, and blobs of several people cut apart.

On a ground plane seen by a fixed camera, a person's image height grows about linearly with the image
row of their feet. Background subtraction returns one blob for people who overlap in the image, one
behind the other or side by side: on the identity benchmark's rendered sites a quarter of the visible
walkers are lost inside such blobs (docs/detect.md). ``PersonSizeModel`` learns height(row) per
source from the detector's own boxes (most of them are single people; the median of each band of
rows ignores the groups), and ``cover`` explains a blob much taller or wider than one person standing
at its foot row by person-sized boxes chosen greedily, each covering as much of the foreground that
the previous ones left as it can.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

MIN_SLOPE = 0.05
MIN_AGREEMENT = 0.7  # share of the boxes within 25 % of the fitted height for the line to be used
HEAD_MARGIN = 0.15  # a part's head may sit this fraction of its height above the blob's top (hair, noise)


@dataclass(frozen=True)
class SizeLine:
    """Person height in pixels at foot row y: ``slope * y + intercept``; width = ``width_ratio`` x height."""

    slope: float
    intercept: float
    width_ratio: float

    def height_at(self, row: float | np.ndarray) -> float | np.ndarray:
        return self.slope * np.asarray(row, np.float64) + self.intercept


class PersonSizeModel:
    """height(foot row) of one camera, fitted to the boxes it is shown.

    frame_height: rows of the frames the boxes are in. bands: horizontal bands of foot rows, each
    summarised by its median box height (groups and partial bodies are the minority in a band).
    min_boxes: boxes seen before the model answers; min_bands: bands with at least ``band_boxes``
    boxes. capacity: the most recent boxes kept (people's sizes do not change, the mix does).
    """

    def __init__(self, frame_height: int, bands: int = 12, min_boxes: int = 200, min_bands: int = 3,
                 band_boxes: int = 10, capacity: int = 3000, refit_every: int = 50) -> None:
        if frame_height <= 0 or bands < 2 or min_bands < 2:
            raise ValueError("need frame_height > 0, bands >= 2 and min_bands >= 2")
        self.frame_height = int(frame_height)
        self.bands = int(bands)
        self.min_boxes = int(min_boxes)
        self.min_bands = int(min_bands)
        self.band_boxes = int(band_boxes)
        self.refit_every = int(refit_every)
        self._boxes: deque[tuple[float, float, float]] = deque(maxlen=int(capacity))  # (foot row, height, width)
        self._since_fit = 0
        self._line: SizeLine | None = None

    def observe(self, boxes: np.ndarray, frame_size: tuple[int, int]) -> None:
        """Take (N, 4) xyxy boxes of people; boxes touching the frame's border are cut and left out."""
        height, width = frame_size
        for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
            if x1 <= 0 or y1 <= 0 or x2 >= width or y2 >= height or y2 <= y1 or x2 <= x1:
                continue
            self._boxes.append((y2, y2 - y1, x2 - x1))
            self._since_fit += 1

    def line(self) -> SizeLine | None:
        """The fitted size line, or None until enough boxes over enough rows have been seen."""
        if len(self._boxes) < self.min_boxes:
            return None
        if self._line is None or self._since_fit >= self.refit_every:
            self._line = self._fit()
            self._since_fit = 0
        return self._line

    def _fit(self) -> SizeLine | None:
        data = np.asarray(self._boxes, np.float64)
        feet, heights, widths = data[:, 0], data[:, 1], data[:, 2]
        band = np.minimum((feet / self.frame_height * self.bands).astype(int), self.bands - 1)
        rows, meds, weights = [], [], []
        for b in range(self.bands):
            inside = band == b
            if inside.sum() >= self.band_boxes:
                rows.append(np.median(feet[inside]))
                meds.append(np.median(heights[inside]))
                weights.append(inside.sum())
        if len(rows) < self.min_bands:
            return None
        slope, intercept = np.polyfit(rows, meds, 1, w=np.sqrt(weights))
        # Heights must grow towards the camera: slope = person height / camera height for a level
        # camera, so 0.05 is a camera 30-odd metres up; flatter is no ground plane seen from above.
        if slope < MIN_SLOPE:
            return None
        # Where most boxes are not one standing person (people close to the camera, in parts), the
        # line describes nobody: measured, 83-97 % of a street, square or rendered camera's boxes lie
        # within 25 % of it, 41 % of an indoor close-up camera's.
        expected = slope * feet + intercept
        if np.mean(np.abs(heights / np.maximum(expected, 1e-6) - 1.0) <= 0.25) < MIN_AGREEMENT:
            return None
        return SizeLine(float(slope), float(intercept), float(np.median(widths / heights)))


def several_people(boxes: np.ndarray, line: SizeLine, frame_size: tuple[int, int], height: float = 1.2,
                   width: float = 1.4) -> np.ndarray:
    """(N,) for (N, 4) xyxy boxes: 1 where a box is more than ``height`` times taller or ``width`` times
    wider than one person standing at its foot row (it holds several), 0 where it is not, -1 where it
    touches the frame's edge (a body cut there) or stands where the line gives no positive height
    (above the horizon it extrapolates to): not judged. The classic detector's group test, and the
    tracklets' group share."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    rows, cols = frame_size
    expected = line.height_at(b[:, 3])
    several = (b[:, 3] - b[:, 1] > height * expected) | (b[:, 2] - b[:, 0] > width * line.width_ratio * expected)
    unjudged = (b[:, 0] <= 0) | (b[:, 1] <= 0) | (b[:, 2] >= cols) | (b[:, 3] >= rows) | (expected <= 0)
    return np.where(unjudged, -1, several.astype(np.int64))


def cover(mask: np.ndarray, x0: int, y0: int, line: SizeLine, max_people: int = 4,
          min_new: float = 0.3, min_fill: float = 0.35) -> list[tuple[int, int, int, int]]:
    """Person boxes (x1, y1, x2, y2, in the mask's frame coordinates) that explain a blob.

    mask: (h, w) bool blob whose top-left pixel is frame pixel (x0, y0). Boxes are person-sized for
    their foot row (``line``); the next box is the one covering the most foreground no box covers
    yet (the nearest person first: the largest box), among boxes where that is at least ``min_new``
    of the box and all foreground inside it at least ``min_fill``. One box or none means the blob is
    one person (or cannot be explained).
    """
    h, w = mask.shape
    fg = _summed_area(mask)
    uncovered = mask.copy()
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(max_people):
        free = _summed_area(uncovered)
        best, best_new = None, 0.0
        for foot in range(1, h + 1):  # the box's last row is foot - 1 (blob coordinates)
            height = float(line.height_at(y0 + foot))
            if height < 8:
                continue
            width = max(3, int(round(line.width_ratio * height)))
            if foot - height < -HEAD_MARGIN * height:
                continue  # its head would be above the blob: every person of a blob has their head in it
            top = max(0, foot - int(round(height)))
            left = np.clip(np.arange(w) - width // 2, 0, w)
            right = np.clip(np.arange(w) - width // 2 + width, 0, w)
            area = width * height
            new = _sums(free, top, foot, left, right)
            new[(new < min_new * area) | (_sums(fg, top, foot, left, right) < min_fill * area)] = 0.0
            col = int(np.argmax(new))
            if new[col] > best_new:
                best_new, best = float(new[col]), (int(left[col]), top, int(right[col]), foot)
        if best is None:
            break
        bx1, by1, bx2, by2 = best
        uncovered[by1:by2, bx1:bx2] = False
        boxes.append((x0 + bx1, y0 + by1, x0 + bx2, y0 + by2))
    return boxes


def _summed_area(mask: np.ndarray) -> np.ndarray:
    """(h + 1, w + 1) summed-area table of an (h, w) mask: entry [y, x] counts mask[:y, :x]."""
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    table[1:, 1:] = mask.cumsum(0).cumsum(1)
    return table


def _sums(table: np.ndarray, top: int, bottom: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Sums of the summed-area ``table`` over rows [top, bottom) and columns [left, right) (vectors)."""
    return (table[bottom, right] - table[top, right] - table[bottom, left] + table[top, left]).astype(np.float64)
