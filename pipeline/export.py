"""Sinks: JSON Lines track records, the run summary, silhouette strips, per-track report media.

Records of a source go to ``OUT/tracks/<name>.jsonl.partial`` as they arrive (flushed per record)
and the file is renamed to ``.jsonl`` when the source completes, so an interrupted archive run
can be resumed without duplicate or lost records: a resumed run skips completed sources and
redoes the partial ones. The record layout is published as ``pipeline/schemas/track_record.schema.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from pipeline.messages import SourceEvent, TrackWindow

SCHEMA_VERSION = "1.0"
SCHEMA_PATH = Path(__file__).with_name("schemas") / "track_record.schema.json"


@dataclass
class ExportOptions:
    """The ``export:`` config section.

    save_embeddings: include gait/appearance embeddings in each record (needed to enrol a track
        from a previous run's output).
    save_boxes: include the per-frame boxes of each window.
    intermediate_windows: write the windows emitted while a track is in view, not only final ones.
    crops_per_track: appearance crops saved per track (its largest views, JPEG under
        ``OUT/media/<source>/``), referenced by the track's final record; 0 saves none.
    silhouettes_per_track: silhouettes of the track's best walking stretch saved as one PNG strip
        beside the crops (evenly spread over the window when the track never walked); 0 saves none.
    """

    save_embeddings: bool = False
    save_boxes: bool = True
    intermediate_windows: bool = True
    crops_per_track: int = 3
    silhouettes_per_track: int = 16

    def __post_init__(self) -> None:
        for name in ("crops_per_track", "silhouettes_per_track"):
            if getattr(self, name) < 0:
                raise ValueError(f"export.{name} must be >= 0, got {getattr(self, name)}")


def source_file_stem(source_id: str) -> str:
    """A file name for a source: readable stem + short hash of the full id (unique per source)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source_id.split("?")[0]).stem or "source")[:60]
    digest = hashlib.sha1(source_id.encode()).hexdigest()[:8]
    return f"{base}-{digest}"


def _distance(value: float) -> float | None:
    """A distance for JSON: None when there was nothing to compare with (an empty gallery gives inf)."""
    return round(float(value), 5) if np.isfinite(value) else None


def _round(values: np.ndarray, digits: int = 2) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def window_record(window: TrackWindow, options: ExportOptions, media: dict[str, Any] | None = None) -> dict[str, Any]:
    """One JSON record for a track window (see the published schema); ``media``: the track's saved
    crops and silhouette strip (final windows), paths relative to the output folder."""
    seq = window.sequence
    indices = seq.frame_indices
    record: dict[str, Any] = {
        "type": "track",
        "schema_version": SCHEMA_VERSION,
        "source": window.source_id,
        "track_id": window.track_id,
        "window_index": window.window_index,
        "final": window.is_final,
        "frames": {"first": int(indices[0]), "last": int(indices[-1]), "count": len(seq)},
        "time_s": {"start": round(float(seq.pts_s[0]), 3), "end": round(float(seq.pts_s[-1]), 3)},
        "frame_size": list(seq.frame_size),
        "ratio_mean": round(float(np.mean(seq.ratios)), 3),
        "group_share": None if window.group_share is None else round(float(window.group_share), 4),
    }
    if options.save_boxes:
        record["boxes"] = [[int(i), *_round(b, 1)] for i, b in zip(indices, seq.boxes)]
    gait = window.gait
    if gait is None:
        record["gait"] = None
    else:
        covered = np.zeros(len(seq), dtype=bool)
        segments = []
        for s in gait.segments:
            covered[s.start : s.stop] = True
            segments.append(_span(indices, seq.pts_s, s.start, s.stop) | {"score": round(s.score, 4)})
        record["gait"] = {
            "route": gait.route,
            "walking_fraction": round(gait.walking_fraction, 4),
            "segments": segments,
            "non_gait_segments": [_span(indices, seq.pts_s, a, b) for a, b in _runs(~covered)],
        }
    match = window.identity
    record["identity"] = None if match is None else {
        "id": match.identity,
        "modality": match.modality,
        "distance": _distance(match.distance),
        "confidence": round(match.confidence, 4),
        "enrolled": match.enrolled,
        "scores": {k: _distance(v) for k, v in match.scores.items()},
        "windows": match.windows,
        "merged": list(match.merged),
        "mixed": match.mixed,
        "group": match.group,
        "candidates": [
            {"id": c.identity, "distance": _distance(c.distance), "initial_rank": c.initial_rank, "entry_id": c.entry_id,
             "score": None if c.score is None else _distance(c.score)}
            for c in match.candidates
        ],
    }
    record["attributes"] = None if window.attributes is None else {
        name: {
            "label": p.label,
            "probability": round(p.probability, 4),
            "probabilities": {label: round(v, 4) for label, v in p.probabilities.items()},
        }
        for name, p in window.attributes.items()
    }
    if options.save_embeddings:
        record["embeddings"] = {
            "gait": None if window.gait_embedding is None else np.asarray(window.gait_embedding, np.float32).tolist(),
            "appearance": None
            if window.appearance_embedding is None
            else np.asarray(window.appearance_embedding, np.float32).tolist(),
        }
    if media:
        record["media"] = media
    record["model_versions"] = dict(window.model_versions)
    record["errors"] = list(window.errors)
    return record


def event_record(event: SourceEvent) -> dict[str, Any]:
    return {
        "type": "event",
        "schema_version": SCHEMA_VERSION,
        "source": event.source_id,
        "kind": event.kind,
        "message": event.message,
        "pts_s": event.pts_s,
    }


def _span(indices: np.ndarray, pts: np.ndarray, start: int, stop: int) -> dict[str, Any]:
    return {
        "start_frame": int(indices[start]),
        "end_frame": int(indices[stop - 1]),
        "start_s": round(float(pts[start]), 3),
        "end_s": round(float(pts[stop - 1]), 3),
    }


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True values."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


class TrackRecordWriter:
    """Writes per-source JSON Lines files, completing each atomically when its source ends."""

    def __init__(self, out_dir: str | Path, options: ExportOptions | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.tracks_dir = self.out_dir / "tracks"
        self.tracks_dir.mkdir(parents=True, exist_ok=True)
        self.options = options or ExportOptions()
        self._files: dict[str, Any] = {}
        self.records_written = 0

    def completed_path(self, source_id: str) -> Path:
        return self.tracks_dir / f"{source_file_stem(source_id)}.jsonl"

    def is_complete(self, source_id: str) -> bool:
        return self.completed_path(source_id).exists()

    def write_window(self, window: TrackWindow, media: dict[str, Any] | None = None) -> None:
        if not window.is_final and not self.options.intermediate_windows:
            return
        self._write(window.source_id, window_record(window, self.options, media))

    def write_event(self, event: SourceEvent) -> None:
        self._write(event.source_id, event_record(event))

    def write_record(self, source_id: str, record: dict[str, Any]) -> None:
        """Append a record made elsewhere (e.g. by a remote worker) to a source's file."""
        self._write(source_id, record)

    def complete(self, source_id: str) -> Path:
        """Close a source's file and publish it under its final name."""
        handle = self._handle(source_id)
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        del self._files[source_id]
        final = self.completed_path(source_id)
        os.replace(final.with_suffix(".jsonl.partial"), final)
        return final

    def close_source(self, source_id: str) -> None:
        """Flush and close a source's file without publishing it (it stays ``.partial``)."""
        handle = self._files.pop(source_id, None)
        if handle is not None:
            _close_partial(handle)

    def close(self) -> None:
        """Flush files of sources that did not complete (they stay ``.partial``)."""
        for handle in self._files.values():
            _close_partial(handle)
        self._files.clear()

    def _handle(self, source_id: str):
        handle = self._files.get(source_id)
        if handle is None:
            path = self.completed_path(source_id).with_suffix(".jsonl.partial")
            handle = open(path, "w", encoding="utf-8")
            self._files[source_id] = handle
        return handle

    def _write(self, source_id: str, record: dict[str, Any]) -> None:
        handle = self._handle(source_id)
        handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        handle.flush()
        self.records_written += 1


def _close_partial(handle: Any) -> None:
    """Close a file that stays ``.partial``; a failing flush (disk full) loses nothing a resume keeps."""
    try:
        handle.close()
    except OSError:
        pass


class FileSink(Protocol):
    """Where the extra files of a run go: ``write(path relative to the output folder, bytes)``."""

    def write(self, relative: str, data: bytes) -> None: ...


class OutputFiles:
    """Writes files under an output folder, each atomically (temporary name, then rename)."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)

    def write(self, relative: str, data: bytes) -> None:
        path = self.out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)  # no half-written file left behind
            raise


class CollectedFiles:
    """Keeps files in memory (a remote worker hands them to the process that owns the output folder)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def write(self, relative: str, data: bytes) -> None:
        self.files[relative] = data


def encode_image(image: np.ndarray, extension: str) -> bytes:
    """PNG or JPEG bytes of a uint8 image."""
    ok, buffer = cv2.imencode(extension, image, [cv2.IMWRITE_JPEG_QUALITY, 88] if extension == ".jpg" else [])
    if not ok:
        raise ValueError(f"cannot encode an image of shape {image.shape} as {extension}")
    return buffer.tobytes()


class SilhouetteStripWriter:
    """Saves each window's new silhouettes as a PNG strip (``OUT/silhouettes/<source>/``).

    Frames already saved for a track (windows overlap) are not saved again; ``per_row`` frames per
    row of the strip. ``files``: where to write (default: into ``out_dir``). A strip that cannot be
    written is counted (``failed``, ``first_error``), never dropped silently; the run reports it.
    """

    def __init__(self, out_dir: str | Path, per_row: int = 20, files: FileSink | None = None) -> None:
        self.out_dir = Path(out_dir) / "silhouettes"
        self.per_row = per_row
        self.files = files if files is not None else OutputFiles(out_dir)
        self._last_saved: dict[tuple[str, int], int] = {}
        self.written = 0
        self.failed = 0
        self.first_error: str | None = None

    def report(self) -> dict[str, Any]:
        return {"written": self.written, "failed": self.failed, "first_error": self.first_error}

    def write(self, window: TrackWindow) -> Path | None:
        seq = window.sequence
        key = (window.source_id, window.track_id)
        last = self._last_saved.get(key, -1)
        new = np.flatnonzero(seq.frame_indices > last)
        if window.is_final:
            self._last_saved.pop(key, None)
        if len(new) == 0:
            return None
        if not window.is_final:
            self._last_saved[key] = int(seq.frame_indices[-1])
        strip = tile(seq.silhouettes[new], self.per_row)
        name = f"track{window.track_id:05d}_w{window.window_index:03d}_f{int(seq.frame_indices[new[0]])}.png"
        relative = f"silhouettes/{source_file_stem(window.source_id)}/{name}"
        try:
            self.files.write(relative, encode_image(strip, ".png"))
        except OSError as exc:
            self.failed += 1
            if self.first_error is None:
                self.first_error = f"{exc.filename or relative}: {exc.strerror or exc}"
            return None
        self.written += 1
        return self.out_dir.parent / relative


@dataclass
class _TrackMedia:
    crops: list[tuple[float, int, np.ndarray]] = field(default_factory=list)  # (score, frame index, crop)
    silhouettes: np.ndarray | None = None
    walking_frames: int = 0  # length of the walking stretch the silhouettes come from (0: none yet)
    last_frame: int = -1


class TrackMediaWriter:
    """A few pictures per track for the report: its best appearance crops and a silhouette strip.

    While a track is open it keeps at most ``crops_per_track`` crops (largest boxes, at least
    ``min_frame_gap`` frames apart; boxes cut by the frame border count half) and the silhouettes of
    its longest walking stretch (every other frame, at most ``silhouettes_per_track``), so memory is
    bounded per open track. On the track's final window they are written under
    ``media/<source>/`` and their paths returned for the record.
    """

    def __init__(self, files: FileSink, crops_per_track: int = 3, silhouettes_per_track: int = 16,
                 min_frame_gap: int = 10) -> None:
        self.files = files
        self.crops_per_track = crops_per_track
        self.silhouettes_per_track = silhouettes_per_track
        self.min_frame_gap = min_frame_gap
        self._tracks: dict[tuple[str, int], _TrackMedia] = {}

    @property
    def enabled(self) -> bool:
        return self.crops_per_track > 0 or self.silhouettes_per_track > 0

    def note(self, window: TrackWindow) -> dict[str, Any] | None:
        """Take this window's frames into account; on a final window write the files and return
        ``{"crops": [path, ...], "silhouettes": path | None}`` (paths relative to the output folder)."""
        if not self.enabled:
            return None
        key = (window.source_id, window.track_id)
        state = self._tracks.setdefault(key, _TrackMedia())
        seq = window.sequence
        new = np.flatnonzero(seq.frame_indices > state.last_frame)
        if len(new):
            state.last_frame = int(seq.frame_indices[-1])
        if seq.crops is not None and self.crops_per_track and len(new):
            self._keep_crops(state, window, new)
        if self.silhouettes_per_track:
            self._keep_silhouettes(state, window)
        if not window.is_final:
            return None
        del self._tracks[key]
        return self._write(window, state)

    def end_source(self, source_id: str) -> None:
        """Forget the open tracks of a source that ended without their final windows."""
        for key in [k for k in self._tracks if k[0] == source_id]:
            del self._tracks[key]

    def _keep_crops(self, state: _TrackMedia, window: TrackWindow, new: np.ndarray) -> None:
        seq = window.sequence
        height, width = seq.frame_size
        boxes = seq.boxes[new]
        cut = (boxes[:, 0] <= 1) | (boxes[:, 1] <= 1) | (boxes[:, 2] >= width - 2) | (boxes[:, 3] >= height - 2)
        scores = (boxes[:, 3] - boxes[:, 1]) * np.where(cut, 0.5, 1.0)
        # Best few of this window first (a window holds up to max_length frames), then merge.
        order = np.argsort(-scores, kind="stable")[: 4 * self.crops_per_track]
        candidates = state.crops + [(float(scores[i]), int(seq.frame_indices[new[i]]), seq.crops[new[i]].copy())
                                    for i in order]
        candidates.sort(key=lambda c: (-c[0], c[1]))
        kept: list[tuple[float, int, np.ndarray]] = []
        for candidate in candidates:
            if all(abs(candidate[1] - k[1]) >= self.min_frame_gap for k in kept):
                kept.append(candidate)
            if len(kept) == self.crops_per_track:
                break
        state.crops = kept

    def _keep_silhouettes(self, state: _TrackMedia, window: TrackWindow) -> None:
        seq = window.sequence
        segments = [] if window.gait is None else window.gait.segments
        longest = max(segments, key=lambda s: (s.stop - s.start, s.score), default=None)
        if longest is not None and longest.stop - longest.start > state.walking_frames:
            frames = seq.silhouettes[longest.start : longest.stop : 2][: self.silhouettes_per_track]
            state.silhouettes, state.walking_frames = frames.copy(), longest.stop - longest.start
        elif state.walking_frames == 0 and window.is_final and len(seq):
            count = min(len(seq), self.silhouettes_per_track)
            picks = np.unique(np.linspace(0, len(seq) - 1, count).round().astype(int))
            state.silhouettes = seq.silhouettes[picks].copy()

    def _write(self, window: TrackWindow, state: _TrackMedia) -> dict[str, Any]:
        folder = f"media/{source_file_stem(window.source_id)}"
        crops = []
        for i, (_, frame, crop) in enumerate(sorted(state.crops, key=lambda c: c[1])):
            relative = f"{folder}/track{window.track_id:05d}_crop{i}_f{frame}.jpg"
            self.files.write(relative, encode_image(crop, ".jpg"))
            crops.append(relative)
        silhouettes = None
        if state.silhouettes is not None and len(state.silhouettes):
            silhouettes = f"{folder}/track{window.track_id:05d}_silhouettes.png"
            self.files.write(silhouettes, encode_image(tile(state.silhouettes, self.silhouettes_per_track), ".png"))
        return {"crops": crops, "silhouettes": silhouettes}


def tile(images: np.ndarray, per_row: int, pad: int = 2, value: int = 64) -> np.ndarray:
    """(N, H, W[, C]) uint8 -> one image with ``per_row`` images per row, separated by ``pad``."""
    n, h, w = images.shape[:3]
    rows = (n + per_row - 1) // per_row
    cols = min(n, per_row)
    shape = (rows * (h + pad) + pad, cols * (w + pad) + pad, *images.shape[3:])
    canvas = np.full(shape, value, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, per_row)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y : y + h, x : x + w] = image
    return canvas


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON to a temporary file and rename it over ``path``."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
