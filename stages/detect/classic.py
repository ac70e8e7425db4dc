"""Classic person detector for static cameras: background subtraction, no weights at all.

Per source: MOG2 foreground (shadows removed, cleaned with morphology) -> connected components ->
fragments of one body merged (a torso and legs split by a background of similar colour) -> blobs of
people walking side by side split at valleys of their column profile -> blobs too tall or wide for
one person at their foot row (the camera's person size, learnt from its detections) cut into
person-sized boxes -> person-shape filter
(height/width aspect, area relative to the frame, fill ratio of the box). Each detection carries its
blob as the mask, so the detector gives silhouettes directly.

It cannot tell a person from any other moving thing of a person's shape, and people standing still
for long fade into the background (MOG2 learns them); use the YOLO backend when weights exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import supervision as sv

from pipeline.messages import GROUP_PART, FrameResult
from stages.detect.background import BackgroundModel, no_people, paste_mask
from stages.detect.person_size import PersonSizeModel, SizeLine, cover, several_people

_TYPICAL_FILL = 0.6  # foreground fraction of a walking person's box; confidence = fill / this


@dataclass(frozen=True)
class _Blob:
    """A foreground region at working resolution: box (x2, y2 exclusive) and its mask inside the box."""

    x1: int
    y1: int
    x2: int
    y2: int
    mask: np.ndarray  # (y2 - y1, x2 - x1) bool
    part: bool = False  # cut out of a blob of several people: its box shows the others too

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    @property
    def area(self) -> int:
        return int(self.mask.sum())


class ClassicDetector:
    """Person boxes and masks from background subtraction (one MOG2 model per source).

    history / var_threshold / learning_rate: MOG2 settings (learning_rate -1 = automatic).
    warmup_frames: frames per source used only to learn the background (no detections).
    work_width: frames are processed at most this wide (pixels); results are in full resolution.
    open_px / close_px: morphology kernel sizes (working pixels) to drop speckle / fill gaps.
    min_area_fraction / max_area_fraction: blob area bounds relative to the frame area.
    min_aspect / max_aspect: bounds on box height / width for a standing or walking person.
    global_change_fraction: a frame with more foreground than this fraction is a global change
    (exposure, lights), relearnt quickly and given no detections.
    ghost_contrast: least ratio of a blob outline's edge strength in the frame to that in the
    background image; below it the blob is a ghost (where someone stood), not a person.
    protect_frames: frames a detected person is kept out of the background model in a row.
    edge_min_aspect: lower aspect bound for boxes touching the frame border (cut-off bodies).
    min_fill: least fraction of the box covered by the blob.
    merge_overlap / merge_gap: fragments merge when their horizontal overlap is at least this
    fraction of the narrower one and the vertical gap at most this fraction of the taller one,
    unless both are whole bodies: large enough and at least ``body_aspect`` times taller than wide
    (a torso or a pair of legs alone is squatter than that).
    split_width_ratio / split_valley: blobs wider than this fraction of their height are split at
    column-profile valleys lower than this fraction of the smaller neighbouring peak.
    split_by_size: learn the person size per image row from the detections (``person_size``) and
    cut a blob taller than ``group_height`` or wider than ``group_width`` times one person there
    into person-sized boxes (people overlapping one behind the other, or side by side).
    """

    def __init__(
        self,
        *,
        history: int = 500,
        var_threshold: float = 16.0,
        learning_rate: float = -1.0,
        warmup_frames: int = 20,
        work_width: int = 640,
        open_px: int = 3,
        close_px: int = 7,
        global_change_fraction: float = 0.35,
        protect_frames: int = 50,
        ghost_contrast: float = 1.0,
        min_area_fraction: float = 0.001,
        max_area_fraction: float = 0.5,
        min_aspect: float = 1.2,
        max_aspect: float = 5.0,
        edge_min_aspect: float = 0.6,
        min_fill: float = 0.3,
        merge_overlap: float = 0.5,
        merge_gap: float = 0.25,
        body_aspect: float = 1.8,
        split_width_ratio: float = 0.7,
        split_valley: float = 0.5,
        split_by_size: bool = False,
        group_height: float = 1.2,
        group_width: float = 1.4,
    ) -> None:
        if warmup_frames < 0:
            raise ValueError(f"warmup_frames must be >= 0, got {warmup_frames}")
        if not 0 < min_area_fraction < max_area_fraction <= 1:
            raise ValueError("need 0 < min_area_fraction < max_area_fraction <= 1")
        if not 0 < min_aspect < max_aspect:
            raise ValueError("need 0 < min_aspect < max_aspect")
        self._mog2_options = {
            "history": history,
            "var_threshold": var_threshold,
            "learning_rate": learning_rate,
            "work_width": work_width,
            "open_px": open_px,
            "close_px": close_px,
            "global_change_fraction": global_change_fraction,
            "protect_frames": protect_frames,
        }
        self.warmup_frames = warmup_frames
        self.ghost_contrast = ghost_contrast
        self.min_area_fraction = min_area_fraction
        self.max_area_fraction = max_area_fraction
        self.min_aspect = min_aspect
        self.max_aspect = max_aspect
        self.edge_min_aspect = edge_min_aspect
        self.min_fill = min_fill
        self.merge_overlap = merge_overlap
        self.merge_gap = merge_gap
        self.body_aspect = body_aspect
        self.split_width_ratio = split_width_ratio
        self.split_valley = split_valley
        self.split_by_size = split_by_size
        self.group_height = group_height
        self.group_width = group_width
        self._models: dict[str, BackgroundModel] = {}
        self._sizes: dict[str, PersonSizeModel] = {}

    def process(self, batch: list[FrameResult]) -> list[FrameResult]:
        out = []
        for item in batch:
            detections = self.detect(item.frame.source_id, item.frame.image)
            out.append(FrameResult(item.frame, detections, item.ended_track_ids))
        return out

    def end_source(self, source_id: str) -> list[FrameResult]:
        """The source ended: forget its background model (a folder of clips is many sources)."""
        self._models.pop(source_id, None)
        self._sizes.pop(source_id, None)
        return []

    def detect(self, source_id: str, image: np.ndarray) -> sv.Detections:
        """People in one frame of a source: xyxy (N, 4) float32, mask (N, H, W) bool, confidence."""
        model = self._models.get(source_id)
        if model is None:
            model = self._models[source_id] = BackgroundModel(**self._mog2_options)
        foreground = model.foreground(image)
        frame_size = (int(image.shape[0]), int(image.shape[1]))
        if model.frames_seen <= self.warmup_frames:
            # The warm-up learns everything, people included: ghosts of people present at the
            # start fade fastest while MOG2's learning rate is still high.
            model.learn()
            return no_people(frame_size)
        size = None
        if self.split_by_size:
            size = self._sizes.get(source_id)
            if size is None:
                size = self._sizes[source_id] = PersonSizeModel(foreground.shape[0])
        line = None if size is None else size.line()
        # Ghosts (places people left, still in the model) are neither reported nor protected,
        # so the model forgets them.
        blobs = [
            b for b in self.people(foreground, line)
            if model.contour_contrast(b.mask, b.x1, b.y1) >= self.ghost_contrast
        ]
        model.learn(_boxes_mask(blobs, foreground.shape))
        if size is not None:
            size.observe(np.array([[b.x1, b.y1, b.x2, b.y2] for b in blobs], np.float64), foreground.shape)
        if not blobs:
            return no_people(frame_size)
        scale = model.scale
        boxes = np.array([[b.x1 * scale, b.y1 * scale, b.x2 * scale, b.y2 * scale] for b in blobs], dtype=np.float32)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, frame_size[1])
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, frame_size[0])
        masks = np.stack([paste_mask(b.mask, box, frame_size) for b, box in zip(blobs, boxes)])
        fill = np.array([b.area / (b.width * b.height) for b in blobs], dtype=np.float32)
        return sv.Detections(
            xyxy=boxes,
            mask=masks,
            confidence=np.minimum(fill / _TYPICAL_FILL, 1.0).astype(np.float32),
            class_id=np.zeros(len(blobs), dtype=int),
            data={GROUP_PART: np.array([b.part for b in blobs], dtype=bool)} if any(b.part for b in blobs) else {},
        )

    def people(self, foreground: np.ndarray, line: SizeLine | None = None) -> list[_Blob]:
        """Person-shaped blobs of a (h, w) bool foreground mask, in its pixel coordinates; with the
        camera's person size ``line``, blobs of several people are cut into one box each."""
        height, width = foreground.shape
        frame_area = height * width
        min_area = self.min_area_fraction * frame_area
        count, labels, stats, _ = cv2.connectedComponentsWithStats(foreground.astype(np.uint8), connectivity=8)
        # Fragments much smaller than a person are noise even as parts of one.
        keep = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area / 8]
        boxes = {
            i: (
                int(stats[i, cv2.CC_STAT_LEFT]),
                int(stats[i, cv2.CC_STAT_TOP]),
                int(stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH]),
                int(stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT]),
            )
            for i in keep
        }
        groups = self._merge_fragments(boxes, stats, min_area)
        people: list[_Blob] = []
        for group in groups:
            x1 = min(boxes[i][0] for i in group)
            y1 = min(boxes[i][1] for i in group)
            x2 = max(boxes[i][2] for i in group)
            y2 = max(boxes[i][3] for i in group)
            mask = np.isin(labels[y1:y2, x1:x2], group)
            for part in self._split(_Blob(x1, y1, x2, y2, mask)):
                for blob in self._cover(part, line, (height, width)):
                    if self._person_shaped(blob, (height, width), min_area):
                        people.append(blob)
        return people

    def _merge_fragments(
        self, boxes: dict[int, tuple[int, int, int, int]], stats: np.ndarray, min_area: float
    ) -> list[list[int]]:
        """Groups of component labels that form one body (union-find over stacked fragments)."""
        parent = {i: i for i in boxes}

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        labels = list(boxes)
        for a_pos, a in enumerate(labels):
            for b in labels[a_pos + 1 :]:
                if self._fragments_of_one_body(boxes[a], boxes[b], stats, a, b, min_area):
                    parent[root(a)] = root(b)
        groups: dict[int, list[int]] = {}
        for i in labels:
            groups.setdefault(root(i), []).append(i)
        return list(groups.values())

    def _fragments_of_one_body(
        self,
        a: tuple[int, int, int, int],
        b: tuple[int, int, int, int],
        stats: np.ndarray,
        label_a: int,
        label_b: int,
        min_area: float,
    ) -> bool:
        overlap = min(a[2], b[2]) - max(a[0], b[0])
        narrower = min(a[2] - a[0], b[2] - b[0])
        if overlap < self.merge_overlap * narrower:
            return False
        gap = max(a[1], b[1]) - min(a[3], b[3])
        taller = max(a[3] - a[1], b[3] - b[1])
        if gap > self.merge_gap * taller:
            return False

        # Two complete people one above the other (one further away) stay apart: merge only
        # when at least one piece is not a body on its own.
        def whole(box: tuple[int, int, int, int], label: int) -> bool:
            w, h = box[2] - box[0], box[3] - box[1]
            return stats[label, cv2.CC_STAT_AREA] >= min_area and h >= self.body_aspect * w

        return not (whole(a, label_a) and whole(b, label_b))

    def _split(self, blob: _Blob) -> list[_Blob]:
        """Split a blob that is too wide for one person at its deepest column-profile valley."""
        if blob.width <= self.split_width_ratio * blob.height:
            return [blob]
        profile = blob.mask.sum(axis=0).astype(np.float32)
        window = max(3, blob.height // 10) | 1
        profile = np.convolve(profile, np.ones(window, np.float32) / window, mode="same")
        margin = max(2, int(0.2 * blob.height))  # each part at least a narrow person wide
        best, best_ratio = -1, self.split_valley
        for col in range(margin, blob.width - margin):
            left_peak = profile[:col].max()
            right_peak = profile[col:].max()
            ratio = profile[col] / max(min(left_peak, right_peak), 1e-6)
            if ratio < best_ratio:
                best, best_ratio = col, ratio
        if best < 0:
            return [blob]
        parts = []
        for x1, x2 in ((0, best), (best, blob.width)):
            part = _tight(blob.mask[:, x1:x2], blob.x1 + x1, blob.y1)
            if part is not None:
                parts.extend(self._split(part))
        return parts

    def _cover(self, blob: _Blob, line: SizeLine | None, frame_size: tuple[int, int]) -> list[_Blob]:
        """A blob too tall or too wide for one person at its foot row, cut into person-sized parts.
        Blobs touching the frame's border are left whole: their feet or heads may be outside."""
        if line is None:
            return [blob]
        box = np.array([[blob.x1, blob.y1, blob.x2, blob.y2]], np.float64)
        if several_people(box, line, frame_size, self.group_height, self.group_width)[0] != 1:  # one, or not judged
            return [blob]
        boxes = cover(blob.mask, blob.x1, blob.y1, line)
        if len(boxes) < 2:
            return [blob]
        parts = [_tight(blob.mask[y1 - blob.y1 : y2 - blob.y1, x1 - blob.x1 : x2 - blob.x1], x1, y1, part=True)
                 for x1, y1, x2, y2 in boxes]
        return [p for p in parts if p is not None]

    def _person_shaped(self, blob: _Blob, frame_size: tuple[int, int], min_area: float) -> bool:
        area = blob.area
        frame_area = frame_size[0] * frame_size[1]
        if area < min_area or area > self.max_area_fraction * frame_area:
            return False
        aspect = blob.height / blob.width
        lower = self.edge_min_aspect if _touches_border(blob, frame_size) else self.min_aspect
        if not lower <= aspect <= self.max_aspect:
            return False
        return area / (blob.width * blob.height) >= self.min_fill


def _touches_border(blob: _Blob, frame_size: tuple[int, int]) -> bool:
    """Whether the blob reaches the frame's edge (a body that may be cut off there)."""
    return blob.x1 == 0 or blob.y1 == 0 or blob.x2 == frame_size[1] or blob.y2 == frame_size[0]


def _tight(mask: np.ndarray, x0: int, y0: int, part: bool = False) -> _Blob | None:
    """The blob of a mask cropped to its foreground's bounding box (x0, y0 = mask origin)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    y1, y2, x1, x2 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return _Blob(x0 + x1, y0 + y1, x0 + x2, y0 + y2, mask[y1:y2, x1:x2], part)


def _boxes_mask(blobs: list[_Blob], shape: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for blob in blobs:
        mask[blob.y1 : blob.y2, blob.x1 : blob.x2] = True
    return mask
