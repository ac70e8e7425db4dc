"""H.264 video writing with PyAV."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Self

import av
import numpy as np


class VideoWriter:
    """Writes BGR uint8 frames of one size to an H.264 MP4 (yuv420p, constant frame rate).

    preset: libx264 speed preset; "ultrafast" keeps encoding well ahead of rendering on one core
    (files are larger than with slower presets at the same crf).
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], crf: int = 20,
                 preset: str = "ultrafast") -> None:
        height, width = size
        if width % 2 or height % 2:
            raise ValueError(f"H.264 with yuv420p needs an even frame size, got {width}x{height}")
        self._container = av.open(str(path), mode="w")
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": preset}
        self._stream.codec_context.thread_count = 1

    def write(self, image_bgr: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(image_bgr, format="bgr24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_video(path: str | Path) -> Iterator[np.ndarray]:
    """Frames of a video one at a time, BGR uint8 (constant memory)."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="bgr24")


def read_video(path: str | Path) -> list[np.ndarray]:
    """All frames of a video as BGR uint8 arrays (for tests and checks on short clips)."""
    return list(iter_video(path))
