"""Review the frame-level stages on one clip: track statistics, timings and a contact sheet.

    python -m stages.detect.review CLIP.mp4 --sheet /tmp/sheet.png [--detector classic|yolox|yolo|openvino]
        [--segment detector|foreground] [--max-frames N] [--max-tracks N] [--option KEY=VALUE ...]

Runs detect -> ByteTrack -> segment on every frame (PyAV decoding), prints the number of tracks,
their mean length, the fraction of frames with at least one detection and milliseconds per frame
of each stage, and writes a sheet of tracked person crops beside their masks (a few per track,
spread over its life) to judge by eye whether the detections are people. Use it to tune the
classic detector for a new camera.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np
import supervision as sv
import yaml

from pipeline.messages import Frame, FrameResult
from stages.catalog import DETECTORS
from stages.detect.background import box_pixels
from stages.track import ByteTrackStage

_TILE = (128, 64)  # (height, width) of each crop and mask tile on the sheet


@dataclass
class ClipReview:
    frames: int = 0
    frames_with_detection: int = 0
    track_lengths: dict[int, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=lambda: {"detect": 0.0, "track": 0.0, "segment": 0.0})
    samples: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = field(default_factory=dict)

    def summary(self) -> str:
        lengths = list(self.track_lengths.values())
        mean_length = float(np.mean(lengths)) if lengths else 0.0
        ms = {k: 1000 * v / max(self.frames, 1) for k, v in self.seconds.items()}
        return (
            f"frames {self.frames}  tracks {len(lengths)}  mean track length {mean_length:.1f} frames  "
            f"frames with a detection {self.frames_with_detection / max(self.frames, 1):.1%}  "
            f"ms/frame detect {ms['detect']:.1f} track {ms['track']:.1f} segment {ms['segment']:.1f}"
        )


def review_clip(
    path: Path, detector: object, segmenter: object, tracker: ByteTrackStage, max_frames: int | None
) -> ClipReview:
    review = ClipReview()
    source_id = path.stem
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for index, decoded in enumerate(container.decode(stream)):
            if max_frames is not None and index >= max_frames:
                break
            image = decoded.to_ndarray(format="bgr24")
            frame = Frame(source_id, index, float(decoded.time or 0.0), image)
            item = FrameResult(frame, sv.Detections.empty())
            for name, stage in (("detect", detector), ("track", tracker), ("segment", segmenter)):
                start = time.perf_counter()
                (item,) = stage.process([item])
                review.seconds[name] += time.perf_counter() - start
            review.frames += 1
            review.frames_with_detection += int(len(item.detections) > 0)
            for track_id, box, mask in zip(item.detections.tracker_id, item.detections.xyxy, item.detections.mask):
                track_id = int(track_id)
                review.track_lengths[track_id] = review.track_lengths.get(track_id, 0) + 1
                if review.track_lengths[track_id] % 10 == 1:  # a sample every 10 frames of a track
                    review.samples.setdefault(track_id, []).append((index, *_tiles(image, box, mask)))
    return review


def _tiles(image: np.ndarray, box: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x1, y1, x2, y2 = box_pixels(box, image.shape[:2])
    crop = image[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)]
    crop_mask = mask[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)].astype(np.uint8) * 255
    size = (_TILE[1], _TILE[0])
    crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    crop_mask = cv2.cvtColor(cv2.resize(crop_mask, size, interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR)
    return crop, crop_mask


def contact_sheet(review: ClipReview, max_tracks: int = 24, per_track: int = 4) -> np.ndarray:
    """One row per track (the longest first): crop | mask pairs spread over the track's life."""
    longest = sorted(review.samples, key=lambda t: -review.track_lengths[t])[:max_tracks]
    pair_width = 2 * _TILE[1] + 4
    rows = []
    for track_id in longest:
        samples = review.samples[track_id]
        picks = [samples[i] for i in np.linspace(0, len(samples) - 1, min(per_track, len(samples))).astype(int)]
        row = np.full((_TILE[0] + 14, per_track * pair_width + 4), 40, dtype=np.uint8)
        row = cv2.cvtColor(row, cv2.COLOR_GRAY2BGR)
        for k, (index, crop, mask) in enumerate(picks):
            x = 4 + k * pair_width
            row[14:, x : x + _TILE[1]] = crop
            row[14:, x + _TILE[1] : x + 2 * _TILE[1]] = mask
            cv2.putText(row, f"f{index}", (x, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1)
        cv2.putText(
            row,
            f"id{track_id} n{review.track_lengths[track_id]}",
            (x + _TILE[1], 11),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.35,
            (0, 255, 255),
            1,
        )
        rows.append(row)
    if not rows:
        return np.zeros((_TILE[0], pair_width, 3), dtype=np.uint8)
    # Two columns of rows keep the sheet viewable.
    half = (len(rows) + 1) // 2
    left, right = rows[:half], rows[half:]
    right += [np.zeros_like(rows[0])] * (len(left) - len(right))
    return np.hstack([np.vstack(left), np.full((len(left) * rows[0].shape[0], 8, 3), 255, np.uint8), np.vstack(right)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--sheet", type=Path, required=True, help="contact sheet PNG to write")
    parser.add_argument("--detector", choices=DETECTORS.names(), default="classic")
    parser.add_argument("--segment", choices=("detector", "foreground"), default="detector")
    parser.add_argument("--lost-track-buffer", type=int, default=30)
    parser.add_argument("--max-tracks", type=int, default=24, help="tracks on the sheet, longest first")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="detector constructor option, repeatable (e.g. --option var_threshold=16, --option weights=yolo11n.pt)",
    )
    args = parser.parse_args()
    options = {key: yaml.safe_load(value) for key, _, value in (o.partition("=") for o in args.option)}
    detector = DETECTORS.load(args.detector)(**options)
    if args.segment == "detector":
        from stages.segment.detector import DetectorMasks

        segmenter: object = DetectorMasks()
    else:
        from stages.segment.foreground import ForegroundSegmenter

        segmenter = ForegroundSegmenter()
    tracker = ByteTrackStage(lost_track_buffer=args.lost_track_buffer)
    review = review_clip(args.clip, detector, segmenter, tracker, args.max_frames)
    print(f"{args.clip.name}: {review.summary()}")
    cv2.imwrite(str(args.sheet), contact_sheet(review, max_tracks=args.max_tracks))


if __name__ == "__main__":
    main()
