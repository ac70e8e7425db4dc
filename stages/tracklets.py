"""Where tracked person masks become silhouette sequences, one growing tracklet per track.

The assembler turns each tracked detection into a 64x44 silhouette (OpenGait pretreatment of the
mask inside the box), keeps per track the most recent ``max_length`` frames (older frames are
released, so memory is bounded on endless streams), and emits a `TrackWindow`:

- every ``window_every`` new frames while the person is in view (results before they leave);
- once more, with ``is_final=True``, when the tracker reports the track ended or its source ends.

Frames whose mask is near-empty are skipped, as OpenGait's pretreatment drops them.

Each window also says what share of its track's boxes so far hold several people (``group_share``):
background subtraction follows people who walk side by side or cross in a crowd as one blob, and such
a track shows a group, not a person. Every box of the track so far is judged by its size where it
stands, against the camera's person height at its foot row as learnt so far from the source's tracked
boxes (`stages.detect.person_size`, the classic detector's group test); boxes cut by the frame's edge
are not judged, and before the person size is known the share is None.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from pipeline.domains import PositiveInt
from pipeline.messages import GROUP_PART, FrameResult, SilhouetteSequence, TrackWindow
from stages.detect.person_size import PersonSizeModel, several_people
from stages.silhouette import crop_box, resize_ratio, silhouette_from_mask

MAX_JUDGED_BOXES = 10_000  # a track's boxes kept for its group share: 400 s at 25 fps, about 1 MB as arrays


@dataclass
class _Tracklet:
    source_id: str
    track_id: int
    frame_size: tuple[int, int]
    entries: deque = field(default_factory=deque)  # (silhouette, ratio, box, index, pts, crop, group part)
    frames_seen: int = 0
    since_emit: int = 0
    windows_emitted: int = 0
    last_index: int = -1
    boxes: deque = field(default_factory=lambda: deque(maxlen=MAX_JUDGED_BOXES))  # every box so far, for group_share


class TrackletAssembler:
    """Per-track silhouette buffers that emit windows for the track-level stages.

    window_every: emit a window after this many new silhouettes of a track.
    max_length: frames kept per track and per window (older ones are released).
    min_length: a window needs at least this many silhouettes (shorter final tracks are dropped).
    keep_crops: keep a (128, 64, 3) appearance crop per frame for ReID.
    stale_after: close a track that got no detection for this many frames of its source even if
        the tracker did not say so (guards against trackers that never report an end).
    """

    def __init__(
        self,
        window_every: PositiveInt = 30,
        max_length: PositiveInt = 120,
        min_length: PositiveInt = 8,
        keep_crops: bool = True,
        stale_after: PositiveInt = 150,
    ) -> None:
        self.window_every = window_every
        self.max_length = max_length
        self.min_length = min_length
        self.keep_crops = keep_crops
        self.stale_after = stale_after
        self._tracks: dict[tuple[str, int], _Tracklet] = {}
        self._sizes: dict[str, PersonSizeModel] = {}  # per source: its person height at each foot row

    def process(self, batch: list[FrameResult]) -> list[TrackWindow]:
        windows: list[TrackWindow] = []
        for result in batch:
            windows.extend(self._add_frame(result))
        return windows

    def end_source(self, source_id: str) -> list[TrackWindow]:
        """Close every open track of a source (its stream ended)."""
        keys = [key for key in self._tracks if key[0] == source_id]
        closed = [w for key in keys if (w := self._close(key)) is not None]
        self._sizes.pop(source_id, None)
        return closed

    def open_tracks(self) -> int:
        return len(self._tracks)

    def _add_frame(self, result: FrameResult) -> list[TrackWindow]:
        frame, detections = result.frame, result.detections
        emitted: list[TrackWindow] = []
        tracker_ids = detections.tracker_id
        parts = detections.data.get(GROUP_PART)
        if tracker_ids is not None and len(detections) and detections.mask is not None:
            sizes = self._sizes.get(frame.source_id)
            if sizes is None:
                sizes = self._sizes[frame.source_id] = PersonSizeModel(frame.size[0])
            sizes.observe(detections.xyxy, frame.size)
            for i, track_id in enumerate(tracker_ids):
                silhouette = silhouette_from_mask(detections.mask[i])
                if silhouette is None:
                    continue
                key = (frame.source_id, int(track_id))
                tracklet = self._tracks.get(key)
                if tracklet is None:
                    tracklet = _Tracklet(frame.source_id, int(track_id), frame.size, deque(maxlen=self.max_length))
                    self._tracks[key] = tracklet
                box = np.asarray(detections.xyxy[i], dtype=np.float32)
                crop = crop_box(frame.image, box) if self.keep_crops else None
                tracklet.entries.append((silhouette, resize_ratio(box), box, frame.index, frame.pts_s, crop,
                                         parts is not None and bool(parts[i])))
                tracklet.frames_seen += 1
                tracklet.since_emit += 1
                tracklet.boxes.append(box)
                tracklet.last_index = frame.index
                if tracklet.since_emit >= self.window_every and len(tracklet.entries) >= self.min_length:
                    emitted.append(self._window(tracklet, is_final=False))
        ended = set(result.ended_track_ids)
        for key, tracklet in list(self._tracks.items()):
            if key[0] != frame.source_id:
                continue
            if key[1] in ended or frame.index - tracklet.last_index > self.stale_after:
                window = self._close(key)
                if window is not None:
                    emitted.append(window)
        return emitted

    def _group_share(self, tracklet: _Tracklet) -> float | None:
        """Share of the track's boxes so far that hold several people, each judged by the camera's
        person size as now known (None before it is, or when every box touches the frame's edge)."""
        sizes = self._sizes.get(tracklet.source_id)
        line = None if sizes is None else sizes.line()
        if line is None:
            return None
        judged = several_people(np.stack(tracklet.boxes), line, tracklet.frame_size)
        judged = judged[judged >= 0]
        return float(judged.mean()) if len(judged) else None

    def _close(self, key: tuple[str, int]) -> TrackWindow | None:
        tracklet = self._tracks.pop(key)
        if len(tracklet.entries) < self.min_length:
            return None
        return self._window(tracklet, is_final=True)

    def _window(self, tracklet: _Tracklet, is_final: bool) -> TrackWindow:
        silhouettes, ratios, boxes, indices, pts, crops, parts = zip(*tracklet.entries)
        sequence = SilhouetteSequence(
            silhouettes=np.stack(silhouettes),
            ratios=np.asarray(ratios, dtype=np.float32),
            boxes=np.stack(boxes).astype(np.float32),
            frame_indices=np.asarray(indices, dtype=np.int64),
            pts_s=np.asarray(pts, dtype=np.float64),
            frame_size=tracklet.frame_size,
            crops=np.stack(crops) if self.keep_crops else None,
            group_parts=np.asarray(parts, dtype=bool) if any(parts) else None,
        )
        window = TrackWindow(
            source_id=tracklet.source_id,
            track_id=tracklet.track_id,
            window_index=tracklet.windows_emitted,
            is_final=is_final,
            sequence=sequence,
            group_share=self._group_share(tracklet),
        )
        tracklet.windows_emitted += 1
        tracklet.since_emit = 0
        return window
