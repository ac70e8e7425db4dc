"""Annotated video output: an H.264 MP4 of the frames with person boxes, identities and states.

Each box is drawn in the colour of its identity (derived from the name, so a person keeps one colour
across cameras) and captioned with the name and whether the person walks, stands or is partly seen.

One writer per source. The file is opened on the first frame (its size fixes the video size;
later frames of another size, e.g. after a stream reconnects at a new resolution, are resized).
Frames are timed by their ``pts_s`` (so a frame stride or a gap in a live stream keeps real
time), or at a constant rate when the caller gives one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Self

import av
import cv2
import numpy as np

from pipeline.messages import FrameResult, TrackWindow

_FONT = cv2.FONT_HERSHEY_SIMPLEX
UNKNOWN_COLOR = (200, 200, 200)  # BGR: tracks not (yet) matched to an identity
UNTRACKED_COLOR = (120, 120, 120)  # detections without a track


@dataclass(frozen=True)
class TrackCaption:
    """What the video says about a track: its matched identity (None: unknown) and its state
    ("walking", "standing" or "partial"; None: not judged yet)."""

    identity: str | None = None
    state: str | None = None


def track_state(window: TrackWindow, recent: int = 30) -> str | None:
    """The state of a track at the end of a window, from the gait detector's segments.

    "walking": one of the last ``recent`` frames lies in a full-body walking segment; otherwise
    "partial" when the last box is cut by the frame border or clearly shorter than the window's
    median box (legs hidden), else "standing". None before the gait detector ran.
    """
    if window.gait is None or len(window.sequence) == 0:
        return None
    seq = window.sequence
    n = len(seq)
    if any(s.start < n and s.stop > n - recent for s in window.gait.segments):
        return "walking"
    height, width = seq.frame_size
    x1, y1, x2, y2 = (float(v) for v in seq.boxes[-1])
    cut = x1 <= 1 or y1 <= 1 or x2 >= width - 2 or y2 >= height - 2
    heights = seq.boxes[:, 3] - seq.boxes[:, 1]
    return "partial" if cut or (y2 - y1) < 0.8 * float(np.median(heights)) else "standing"


def identity_color(name: str) -> tuple[int, int, int]:
    """A stable, well-saturated BGR colour per identity name: the same person has the same colour
    in every source and every run."""
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    hue = digest[0] * 180 // 256
    value = 255 - digest[1] % 3 * 40  # three brightness levels separate names of close hues
    hsv = np.array([[[hue, 210, value]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def caption_color(caption: TrackCaption | None) -> tuple[int, int, int]:
    return UNKNOWN_COLOR if caption is None or not caption.identity else identity_color(caption.identity)


def text_scale(height: int) -> tuple[float, int]:
    """(font scale, stroke thickness) readable on a frame ``height`` pixels tall: about 14 px
    capitals at 480p and 27 px at 1080p."""
    scale = max(0.5, height / 1080 * 1.0)
    return scale, max(1, round(scale * 2))


def draw_annotations(
    image: np.ndarray,
    boxes: np.ndarray,
    track_ids: np.ndarray | None = None,
    captions: Mapping[int, TrackCaption] | None = None,
) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 BGR with boxes (N, 4) xyxy pixels drawn.

    A tracked box is drawn in its identity's colour (light grey while unknown) and captioned with
    the identity name (or ``#<track id>``) over its state. Boxes without a track id are drawn dark
    grey and uncaptioned.
    """
    out = np.ascontiguousarray(image).copy()
    scale, thickness = text_scale(out.shape[0])
    box_thickness = max(2, round(out.shape[0] / 360))
    for i, box in enumerate(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        track_id = None if track_ids is None or track_ids[i] is None else int(track_ids[i])
        if track_id is None:
            cv2.rectangle(out, (x1, y1), (x2, y2), UNTRACKED_COLOR, box_thickness)
            continue
        caption = (captions or {}).get(track_id)
        color = caption_color(caption)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, box_thickness)
        lines = [caption.identity if caption is not None and caption.identity else f"#{track_id}"]
        if caption is not None and caption.state:
            lines.append(caption.state)
        _draw_label(out, lines, x1, y1, color, scale, thickness)
    return out


def _draw_label(image: np.ndarray, lines: list[str], x: int, y: int, color: tuple[int, int, int],
                scale: float, thickness: int) -> None:
    """Black text on a filled ``color`` tag above (x, y), kept inside the frame; the second line smaller."""
    scales = [scale] + [scale * 0.8] * (len(lines) - 1)
    sizes = [cv2.getTextSize(t, _FONT, s, thickness) for t, s in zip(lines, scales)]
    pad = max(2, round(scale * 4))
    line_heights = [th + baseline + pad for (_, th), baseline in sizes]
    width = max(tw for (tw, _), _ in sizes) + 2 * pad
    height = sum(line_heights) + pad
    h, w = image.shape[:2]
    left = min(max(0, x), max(0, w - width))
    top = y - height if y - height >= 0 else min(max(0, y), max(0, h - height))  # inside the box when no room above
    cv2.rectangle(image, (left, top), (left + width, top + height), color, cv2.FILLED)
    baseline_y = top
    for text, s, ((_, th), baseline), lh in zip(lines, scales, sizes, line_heights):
        baseline_y += lh
        cv2.putText(image, text, (left + pad, baseline_y - baseline), _FONT, s, (0, 0, 0), thickness, cv2.LINE_AA)


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

    def write(self, result: FrameResult, captions: Mapping[int, TrackCaption] | None = None) -> None:
        """Draws the frame's detections (boxes, ``captions[track id]``) and appends it."""
        image = result.frame.image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"annotated video frames must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if self._container is None:
            self._open(image.shape[0], image.shape[1])
        assert self._stream is not None and self._container is not None and self._size is not None
        detections = result.detections
        annotated = draw_annotations(image, detections.xyxy, detections.tracker_id, captions)
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
