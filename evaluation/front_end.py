"""Front-end accuracy on a rendered site: every detector x segmenter pair against the ground truth.

The site's videos are decoded once per detector; each frame is detected, tracked (ByteTrack, as in
the pipeline) and then segmented by every segmenter, so all pairs see identical tracks. Measured:

- detection recall / precision at box IoU >= 0.5 (the detector's raw output, before tracking),
  counting ground-truth people whose visible box is at least ``--min-height`` pixels tall; a
  detection matching a smaller person is neither a hit nor a false alarm;
- ID switches (CLEAR-MOT): a ground-truth walker matched by a tracked box whose id differs from
  the id that last matched it; and the number of track ids;
- mask IoU: for each tracked box matched to a ground-truth person, the IoU of its mask with the
  person's visible mask (an empty mask counts 0); mean over all matches and over people at least
  ``--mask-min-height`` pixels tall (the ones a crop segmenter works on).

``--detector gt`` uses the ground-truth boxes with one id per visit: the segmenters' own accuracy.

    python -m evaluation.front_end --scene configs/synth/demo_site.yaml --out out/front_end \\
        --detector classic --detector gt --segmenter detector --segmenter pose_crop --segmenter paddleseg \\
        --mask-every 5
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
from scipy.optimize import linear_sum_assignment

from pipeline.config import build
from pipeline.messages import Frame, FrameResult
from stages.catalog import DETECTORS, SEGMENTERS, TRACKERS
from stages.segment.masks import with_masks
from synth.groundtruth import decode_mask, load_groundtruth

log = logging.getLogger("evaluation.front_end")
MATCH_IOU = 0.5


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4) x (m, 4) xyxy -> (n, m) IoU."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match(gt_boxes: np.ndarray, boxes: np.ndarray, threshold: float = MATCH_IOU) -> list[tuple[int, int]]:
    """One-to-one (gt row, detection row) pairs with IoU >= threshold, maximising total IoU."""
    if len(gt_boxes) == 0 or len(boxes) == 0:
        return []
    iou = box_iou(gt_boxes, boxes)
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= threshold]


@dataclass
class DetectionCounts:
    hits: int = 0
    misses: int = 0
    false_alarms: int = 0

    def add(self, gt_boxes: np.ndarray, counted: np.ndarray, boxes: np.ndarray) -> None:
        """counted: (G,) bool, ground-truth people that count (tall enough)."""
        pairs = match(gt_boxes, boxes)
        matched_gt = {g for g, _ in pairs}
        matched_det = {d for _, d in pairs}
        self.hits += sum(1 for g, _ in pairs if counted[g])
        self.misses += int(np.count_nonzero(counted)) - sum(1 for g in matched_gt if counted[g])
        # Unmatched detections are false alarms unless they overlap a small (uncounted) person.
        small = gt_boxes[~counted]
        for d in set(range(len(boxes))) - matched_det:
            if len(small) == 0 or box_iou(boxes[d : d + 1], small).max() < MATCH_IOU:
                self.false_alarms += 1

    def as_dict(self) -> dict[str, float]:
        recall = self.hits / max(self.hits + self.misses, 1)
        precision = self.hits / max(self.hits + self.false_alarms, 1)
        return {
            "recall": round(recall, 4),
            "precision": round(precision, 4),
            "hits": self.hits,
            "misses": self.misses,
            "false_alarms": self.false_alarms,
        }


@dataclass
class TrackCounts:
    id_switches: int = 0
    track_ids: set[tuple[str, int]] = field(default_factory=set)
    _last: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, camera: str, visit_keys: list[str], pairs: list[tuple[int, int]], tracker_ids: np.ndarray) -> None:
        self.track_ids.update((camera, int(t)) for t in tracker_ids)
        for g, d in pairs:
            key = (camera, visit_keys[g])
            tid = int(tracker_ids[d])
            if key in self._last and self._last[key] != tid:
                self.id_switches += 1
            self._last[key] = tid


@dataclass
class MaskScores:
    all: list[float] = field(default_factory=list)
    tall: list[float] = field(default_factory=list)
    empty: int = 0

    def as_dict(self) -> dict[str, float]:
        return {
            "mask_iou": round(float(np.mean(self.all)), 4) if self.all else None,
            "mask_iou_tall": round(float(np.mean(self.tall)), 4) if self.tall else None,
            "matches": len(self.all),
            "empty_masks": self.empty,
        }


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


def _gt_frame(records: list[dict], frame_size: tuple[int, int]) -> tuple[np.ndarray, list[str], list[dict]]:
    boxes = np.array([r["box"] for r in records], dtype=np.float64).reshape(-1, 4)
    keys = [f"{r['identity']}/{r['visit']}" for r in records]
    return boxes, keys, records


def _copy(item: FrameResult) -> FrameResult:
    """The same frame with its own copy of the masks (segmenters may fill them in place)."""
    detections = item.detections
    mask = None if detections.mask is None else detections.mask.copy()
    return FrameResult(item.frame, with_masks(detections, mask), item.ended_track_ids)


def _stage(registry, backend: str, params: dict[str, Any], kind: str) -> Any:
    return build(registry.load(backend), params, kind)


def evaluate_camera(
    video: Path,
    camera: str,
    records: list[list[dict]],
    frame_size: tuple[int, int],
    detector: str,
    segmenters: dict[str, Any],
    min_height: float,
    mask_min_height: float,
    results: dict[str, Any],
    mask_every: int = 1,
) -> None:
    """Run one camera through one detector and all segmenters, adding to ``results``' counters.

    Masks are scored on every ``mask_every``-th frame; segmenters with per-source state (those with
    ``end_source``, e.g. background models) still see every frame, the others only scored ones.
    """
    from synth.video import iter_video

    detect = None if detector == "gt" else _stage(DETECTORS, detector, {}, "detect")
    track = _stage(TRACKERS, "bytetrack", {}, "track")
    detections_counts: DetectionCounts = results["detection"]
    track_counts: TrackCounts = results["tracks"]
    visit_ids: dict[str, int] = {}
    for index, image in enumerate(iter_video(video)):
        gt_records = records[index] if index < len(records) else []
        gt_boxes, keys, _ = _gt_frame(gt_records, frame_size)
        heights = gt_boxes[:, 3] - gt_boxes[:, 1]
        counted = heights >= min_height
        frame = Frame(camera, index, index / 25.0, image)
        if detect is None:
            ids = np.array([visit_ids.setdefault(k, len(visit_ids)) for k in keys], dtype=int)
            tracked = FrameResult(
                frame,
                sv.Detections(
                    xyxy=gt_boxes.astype(np.float32),
                    tracker_id=ids,
                    confidence=np.ones(len(ids), np.float32),
                    class_id=np.zeros(len(ids), int),
                ),
            )
            raw_boxes = gt_boxes
        else:
            (detected,) = detect.process([FrameResult(frame, sv.Detections.empty())])
            raw_boxes = detected.detections.xyxy
            (tracked,) = track.process([detected])
        detections_counts.add(gt_boxes, counted, raw_boxes)
        pairs = match(gt_boxes, tracked.detections.xyxy)
        track_counts.add(
            camera,
            keys,
            pairs,
            tracked.detections.tracker_id if tracked.detections.tracker_id is not None else np.zeros(0, int),
        )
        scored = index % mask_every == 0
        gt_masks = {g: decode_mask(gt_records[g]["mask"], frame_size) for g, _ in pairs} if scored else {}
        for name, segmenter in segmenters.items():
            if not scored and not hasattr(segmenter, "end_source"):
                continue
            (segmented,) = segmenter.process([_copy(tracked)])
            if not scored:
                continue
            scores: MaskScores = results["masks"][name]
            masks = segmented.detections.mask
            for g, d in pairs:
                predicted = masks[d] if masks is not None else np.zeros(frame_size, bool)
                iou = mask_iou(predicted, gt_masks[g])
                scores.all.append(iou)
                scores.empty += int(not predicted.any())
                if heights[g] >= mask_min_height:
                    scores.tall.append(iou)


def evaluate_site(
    scene_dir: Path,
    detectors: list[str],
    segmenter_specs: list[str],
    min_height: float,
    mask_min_height: float,
    mask_every: int = 1,
) -> list[dict[str, Any]]:
    """One row per detector x segmenter pair."""
    gt = load_groundtruth(scene_dir / "groundtruth.json")
    frame_size = tuple(gt["frame_size"])
    rows = []
    for detector in detectors:
        segmenters = {name: _stage(SEGMENTERS, name, {}, "segment") for name in segmenter_specs}
        results = {
            "detection": DetectionCounts(),
            "tracks": TrackCounts(),
            "masks": {name: MaskScores() for name in segmenters},
        }
        for camera in gt["cameras"]:
            name = camera["name"]
            log.info("%s: camera %s", detector, name)
            evaluate_camera(
                scene_dir / f"{name}.mp4",
                name,
                gt["frames"][name],
                frame_size,
                detector,
                segmenters,
                min_height,
                mask_min_height,
                results,
                mask_every,
            )
            for segmenter in segmenters.values():
                end = getattr(segmenter, "end_source", None)
                if end is not None:
                    end(name)
        for name in segmenters:
            rows.append(
                {
                    "detector": detector,
                    "segmenter": name,
                    **results["detection"].as_dict(),
                    "id_switches": results["tracks"].id_switches,
                    "track_ids": len(results["tracks"].track_ids),
                    **results["masks"][name].as_dict(),
                }
            )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| detector | segmenter | recall | precision | ID switches | track ids | mask IoU | mask IoU (tall) "
        "| empty masks |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['detector']} | {r['segmenter']} | {r['recall']:.3f} | {r['precision']:.3f} | "
            f"{r['id_switches']} | {r['track_ids']} | {r['mask_iou'] or 0:.3f} | {r['mask_iou_tall'] or 0:.3f} | "
            f"{r['empty_masks']}/{r['matches']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", default="configs/synth/demo_site.yaml", help="site YAML to render (configs/synth/)")
    parser.add_argument("--rendered", type=Path, default=None, help="an already rendered site folder (skips rendering)")
    parser.add_argument("--duration", type=float, default=None, help="override the site's duration_s")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--detector", action="append", default=None, help="detect backend, or 'gt' (repeatable)")
    parser.add_argument("--segmenter", action="append", default=None, help="segment backend (repeatable)")
    parser.add_argument("--min-height", type=float, default=20.0, help="least GT box height counted for detection")
    parser.add_argument("--mask-every", type=int, default=1, help="score masks on every N-th frame")
    parser.add_argument("--mask-min-height", type=float, default=40.0, help="least GT box height for 'mask IoU (tall)'")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    scene_dir = args.rendered
    if scene_dir is None:
        import yaml

        from synth.scene import SiteConfig, write_site

        data = yaml.safe_load(Path(args.scene).read_text()) or {}
        if args.duration is not None:
            data["duration_s"] = args.duration
        scene_dir = args.out / "site"
        write_site(SiteConfig.from_dict(data), scene_dir)
    rows = evaluate_site(
        scene_dir,
        args.detector or ["classic"],
        args.segmenter or ["detector", "pose_crop"],
        args.min_height,
        args.mask_min_height,
        args.mask_every,
    )
    (args.out / "front_end.json").write_text(json.dumps(rows, indent=1))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
