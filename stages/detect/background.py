"""Background subtraction for one static camera: MOG2 foreground without shadows, cleaned up.

Used by the classic detector (people = person-shaped foreground blobs) and by the foreground
segmenter (a person's mask = the foreground inside its box). Both keep one `BackgroundModel` per
source, because the model is the memory of what that camera's empty scene looks like.
"""

from __future__ import annotations

import cv2
import numpy as np
import supervision as sv

_FOREGROUND = 255  # MOG2 marks foreground 255 and shadows 127 (with detectShadows)
_EXPOSURE_INLIER = 20.0  # grey levels: a grid pixel within this of the gain's prediction is scene


class BackgroundModel:
    """MOG2 on a downscaled copy of the frames, giving a cleaned boolean foreground mask.

    The model runs at ``work_width`` pixels wide (frames narrower than that are not upscaled):
    people stay tens of pixels tall at that width on surveillance footage and MOG2's cost grows
    with the pixel count. Morphology kernel sizes are in working-resolution pixels.

    Frames are first brought to the background's exposure (per-channel gain and offset). Each frame is
    used twice: `foreground` compares it with the model without learning, then
    `learn` updates the model with the people's regions replaced by the current background, so a
    person who stops walking is not absorbed into the background within seconds (selective
    update). A pixel stays protected for at most ``protect_frames`` frames in a row: a "person"
    that never moves is more likely a ghost (where someone stood when the model started) than a
    person, and ghosts must fade. learning_rate -1 means 1 / min(frames seen, history), MOG2's
    own schedule.
    """

    def __init__(
        self,
        *,
        history: int,
        var_threshold: float,
        learning_rate: float,
        work_width: int,
        open_px: int,
        close_px: int,
        global_change_fraction: float,
        protect_frames: int,
        relearn_rate: float = 0.2,
    ) -> None:
        self._mog2 = cv2.createBackgroundSubtractorMOG2(history=history, varThreshold=var_threshold, detectShadows=True)
        self._history = history
        self._learning_rate = learning_rate
        self._work_width = work_width
        self._open = _ellipse(open_px)
        self._close = _ellipse(close_px)
        self._global_change_fraction = global_change_fraction
        self._relearn_rate = relearn_rate
        self._protect_frames = protect_frames
        self._protected_for: np.ndarray | None = None  # (h, w) uint16 frames protected in a row
        self._frame: np.ndarray | None = None  # last frame at working size, to learn from
        self._background: np.ndarray | None = None  # the model's background image, per frame
        self._global_change = False
        self.frames_seen = 0
        self.scale = 1.0  # original pixels per working pixel, set by the first frame

    def foreground(self, image: np.ndarray) -> np.ndarray:
        """Compare one frame (H, W, 3) uint8 BGR with the model; (h, w) bool at working size.

        When more than ``global_change_fraction`` of the frame turns foreground at once, the scene
        changed as a whole (camera exposure, lights): the foreground is empty rather than full of
        wall-sized false blobs, and `learn` takes the frame in quickly.
        """
        height, width = image.shape[:2]
        if width > self._work_width:
            self.scale = width / self._work_width
            size = (self._work_width, max(1, round(height / self.scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        else:
            self.scale = 1.0
            small = image
        self._background = None
        if self.frames_seen > 0:
            small = _match_exposure(small, self.background_image())
        self._frame = small
        self.frames_seen += 1
        if self.frames_seen == 1:  # nothing to compare with yet: the model starts from this frame
            self._mog2.apply(small, learningRate=1.0)
            self._global_change = False
            return np.zeros(small.shape[:2], dtype=bool)
        raw = self._mog2.apply(small, learningRate=0.0)
        self._global_change = np.count_nonzero(raw == _FOREGROUND) > self._global_change_fraction * raw.size
        if self._global_change:
            return np.zeros(raw.shape, dtype=bool)
        # Shadows (127) are dropped: they glue walkers to their shadows and to each other.
        fg = np.where(raw == _FOREGROUND, np.uint8(255), np.uint8(0))
        fg = cv2.medianBlur(fg, 3)
        if self._open is not None:
            fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._open)
        if self._close is not None:
            fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, self._close)
        return fg > 0

    def learn(self, protect: np.ndarray | None = None) -> None:
        """Update the model with the last frame given to `foreground`.

        protect: (h, w) bool at working size, pixels (people) to keep out of the background.
        """
        if self._frame is None or self.frames_seen == 1:
            return
        frame = self._frame
        if protect is None or self._global_change:
            self._protected_for = None
        else:
            if self._protected_for is None:
                self._protected_for = np.zeros(protect.shape, dtype=np.uint16)
            counts = self._protected_for + 1
            self._protected_for = np.where(protect, np.minimum(counts, np.iinfo(np.uint16).max), 0).astype(np.uint16)
            protect = protect & (self._protected_for <= self._protect_frames)
        if self._global_change:
            rate = self._relearn_rate
        else:
            rate = self._learning_rate
            if rate < 0:
                rate = 1.0 / min(self.frames_seen, self._history)
            if protect is not None and protect.any():
                frame = cv2.copyTo(self.background_image(), protect.view(np.uint8), frame.copy())
        self._mog2.apply(frame, learningRate=rate)
        self._frame = None

    def background_image(self) -> np.ndarray:
        """The model's current background (h, w, 3) uint8 BGR at working size (cached per frame)."""
        if self._background is None:
            self._background = self._mog2.getBackgroundImage()
        return self._background

    def contour_contrast(self, mask: np.ndarray, x: int, y: int) -> float:
        """How much more a blob's outline is an edge in the frame than in the background.

        mask: (h, w) bool blob at working size whose top-left pixel is (x, y). A real object has
        its edges in the current frame; a ghost (the place a person left, still in the model) has
        them in the background image instead, giving a ratio below 1.
        """
        if self._frame is None:
            raise RuntimeError("contour_contrast needs a frame: call foreground first")
        h, w = mask.shape
        frame_h, frame_w = self._frame.shape[:2]
        x0, y0 = max(x - 1, 0), max(y - 1, 0)
        x1, y1 = min(x + w + 1, frame_w), min(y + h + 1, frame_h)
        padded = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        padded[y - y0 : y - y0 + h, x - x0 : x - x0 + w] = mask
        outline = cv2.morphologyEx(padded, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        current = _gradient(self._frame[y0:y1, x0:x1])[outline].mean()
        background = _gradient(self.background_image()[y0:y1, x0:x1])[outline].mean()
        return float(current / max(background, 1.0))

    def boxes_mask(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(h, w) bool at working size, True inside the boxes (N, 4) given in full-frame pixels."""
        if self._frame is None:
            raise RuntimeError("boxes_mask needs a frame: call foreground first")
        h, w = self._frame.shape[:2]
        mask = np.zeros((h, w), dtype=bool)
        for box in boxes_xyxy:
            x1, y1, x2, y2 = box_pixels(np.asarray(box) / self.scale, (h, w))
            mask[y1:y2, x1:x2] = True
        return mask


def _match_exposure(frame: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The frame mapped per channel (gain and offset) onto the background's brightness.

    Cameras re-expose when a dark coat fills the view; without this the whole frame turns
    foreground. The gain starts as the median background/frame ratio over a sparse pixel grid
    (people covering less than half of the view do not move it); gain and offset are then fitted
    by least squares on the grid pixels that this gain already explains (the scene, not the
    people), because dark and saturated regions do not follow a pure gain.
    """
    sample = frame[::4, ::4].reshape(-1, 3).astype(np.float32)
    reference = background[::4, ::4].reshape(-1, 3).astype(np.float32)
    gain = np.clip(np.median((reference + 1.0) / (sample + 1.0), axis=0), 0.5, 2.0)
    offset = np.zeros(3, dtype=np.float32)
    for channel in range(3):
        inliers = np.abs(reference[:, channel] - gain[channel] * sample[:, channel]) < _EXPOSURE_INLIER
        if np.count_nonzero(inliers) < 100:
            continue
        x = sample[inliers, channel]
        design = np.stack([x, np.ones_like(x)], axis=1)
        (fitted_gain, fitted_offset), *_ = np.linalg.lstsq(design, reference[inliers, channel], rcond=None)
        gain[channel], offset[channel] = np.clip(fitted_gain, 0.5, 2.0), fitted_offset
    if np.all(np.abs(gain - 1.0) < 0.01) and np.all(np.abs(offset) < 1.0):
        return frame
    # A per-channel lookup table maps every pixel value at once (same result as the float mapping).
    levels = np.arange(256, dtype=np.float32)[:, None]
    table = np.clip(levels * gain.astype(np.float32) + offset, 0, 255).astype(np.uint8)
    return cv2.LUT(frame, table[None, :, :])


def _gradient(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude (h, w) float32 of a BGR image's grey levels."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    dx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    dy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(dx, dy)


def _ellipse(size_px: int) -> np.ndarray | None:
    if size_px <= 1:
        return None
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size_px, size_px))


def paste_mask(crop: np.ndarray, box_xyxy: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """A crop's mask resized into its box of a full frame.

    crop: (h, w) bool or float mask covering ``box_xyxy`` (any resolution).
    box_xyxy: (4,) box in pixels of the full frame.
    frame_size: (height, width) of the full frame.
    Returns (height, width) bool, False outside the box.
    """
    height, width = frame_size
    x1, y1, x2, y2 = box_pixels(box_xyxy, frame_size)
    full = np.zeros((height, width), dtype=bool)
    if x2 <= x1 or y2 <= y1 or crop.size == 0:
        return full
    resized = cv2.resize(crop.astype(np.float32), (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    full[y1:y2, x1:x2] = resized >= 0.5
    return full


def box_pixels(box_xyxy: np.ndarray, frame_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer pixel bounds (x1, y1, x2, y2), x2/y2 exclusive, clipped to the frame."""
    height, width = frame_size
    x1 = min(max(int(np.floor(box_xyxy[0])), 0), width)
    y1 = min(max(int(np.floor(box_xyxy[1])), 0), height)
    x2 = min(max(int(np.ceil(box_xyxy[2])), 0), width)
    y2 = min(max(int(np.ceil(box_xyxy[3])), 0), height)
    return x1, y1, x2, y2


def no_people(frame_size: tuple[int, int]) -> sv.Detections:
    """The detections of a frame without people, for the detectors that give masks: (0, H, W) of them."""
    return sv.Detections(
        xyxy=np.zeros((0, 4), dtype=np.float32),
        mask=np.zeros((0, *frame_size), dtype=bool),
        confidence=np.zeros(0, dtype=np.float32),
        class_id=np.zeros(0, dtype=int),
    )
