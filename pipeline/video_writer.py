"""Annotated video output: an H.264 MP4 of the frames with person boxes, track ids and labels.

One writer per source. The file is opened on the first frame (its size fixes the video size;
later frames of another size, e.g. after a stream reconnects at a new resolution, are resized).
Frames are timed by their ``pts_s`` (so a frame stride or a gap in a live stream keeps real
time), or at a constant rate when the caller gives one.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Self

import av
import cv2
import numpy as np

from pipeline.messages import FrameResult

_BOX_THICKNESS = 2
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable, well-saturated BGR colour per track id."""
    hue = int((int(track_id) * 0.6180339887) % 1.0 * 180)  # golden-ratio steps: close ids, distant hues
    hsv = np.array([[[hue, 220, 255]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_annotations(
    image: np.ndarray,
    boxes: np.ndarray,
    track_ids: np.ndarray | None = None,
    labels: Mapping[int, str] | None = None,
) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 BGR with boxes (N, 4) xyxy pixels drawn.

    Each box is captioned ``#<track id>`` followed by ``labels[track id]`` when given (identity,
    route, ...). Boxes without a track id are drawn grey and uncaptioned.
    """
    out = np.ascontiguousarray(image).copy()
    scale = max(0.4, min(out.shape[:2]) / 900)
    thickness = max(1, round(scale * 2))
    for i, box in enumerate(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        track_id = None if track_ids is None or track_ids[i] is None else int(track_ids[i])
        color = (160, 160, 160) if track_id is None else track_color(track_id)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, _BOX_THICKNESS)
        if track_id is None:
            continue
        caption = f"#{track_id}"
        if labels and labels.get(track_id):
            caption += f" {labels[track_id]}"
        (tw, th), baseline = cv2.getTextSize(caption, _FONT, scale, thickness)
        top = y1 - th - baseline - 4 if y1 - th - baseline - 4 >= 0 else y1  # inside the box at the top edge
        cv2.rectangle(out, (x1, top), (x1 + tw + 4, top + th + baseline + 4), color, cv2.FILLED)
        cv2.putText(out, caption, (x1 + 2, top + th + 2), _FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return out


class AnnotatedVideoWriter:
    """Writes annotated frames to an H.264 (libx264) MP4.

    path: output file (its folder is created).
    fps: constant frame rate of the written video (e.g. the source's rate divided by the frame
        stride); None times each frame by its ``pts_s`` (millisecond resolution).
    crf: x264 quality (lower is better, 23 is x264's default). preset: x264 speed preset.
    """

    def __init__(self, path: str | Path, fps: float | None = None, crf: int = 23, preset: str = "veryfast") -> None:
        if fps is not None and fps <= 0:
            raise ValueError(f"annotated video fps must be > 0, got {fps}")
        self.path = Path(path)
        # one tick per frame at a constant rate, else milliseconds
        self.time_base = Fraction(1, 1000) if fps is None else 1 / Fraction(fps).limit_denominator(1001)
        self.constant_rate = fps is not None
        self.crf = crf
        self.preset = preset
        self.frames_written = 0
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._first_size: tuple[int, int] | None = None  # (height, width) of the first frame
        self._size: tuple[int, int] | None = None  # (height, width) of the encoded video, even
        self._last_pts = -1

    def _open(self, height: int, width: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        container = av.open(str(self.path), mode="w")
        try:
            stream = container.add_stream(
                "libx264", rate=1 / self.time_base, options={"crf": str(self.crf), "preset": self.preset}
            )
        except Exception:
            container.close()
            raise
        # yuv420p (what every player decodes) needs even dimensions
        self._first_size = (height, width)
        self._size = (height - height % 2, width - width % 2)
        stream.height, stream.width = self._size
        stream.pix_fmt = "yuv420p"
        stream.time_base = self.time_base
        self._container, self._stream = container, stream

    def write(self, result: FrameResult, labels: Mapping[int, str] | None = None) -> None:
        """Draws the frame's detections (boxes, track ids, ``labels[track id]``) and appends it."""
        image = result.frame.image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"annotated video frames must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if self._container is None:
            self._open(image.shape[0], image.shape[1])
        assert self._stream is not None and self._container is not None and self._size is not None
        detections = result.detections
        annotated = draw_annotations(image, detections.xyxy, detections.tracker_id, labels)
        h, w = self._size
        if annotated.shape[:2] == self._first_size:
            annotated = annotated[:h, :w]  # drops the last row/column of an odd size
        else:
            annotated = cv2.resize(annotated, (w, h), interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(annotated), format="bgr24")
        if self.constant_rate:
            pts = self.frames_written
        else:  # strictly increasing, as the muxer requires
            pts = max(round(result.frame.pts_s / self.time_base), self._last_pts + 1)
        frame.pts = self._last_pts = pts
        frame.time_base = self.time_base  # not the stream's: the muxer changes that once it starts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flushes the encoder and finishes the file. Safe to call twice, or with no frame written
        (then no file is created)."""
        if self._container is None:
            return
        assert self._stream is not None
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = self._stream = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
