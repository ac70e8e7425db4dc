"""A finished run's JSON Lines records back as light track windows, so that a run made by
``pipeline.app.run`` (the demo, or any run over a rendered site) can be scored like the benchmark's.

Only what scoring reads is rebuilt: boxes and frame indices (from ``boxes``), embeddings (from
``embeddings``: the run needs ``export.save_embeddings=true``), the identity decision, the final
flag and model versions. Silhouettes and crops are not in the records and stay empty.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from evaluation.identity.runs import empty_silhouettes
from pipeline.messages import IdentityMatch, RankedCandidate, SilhouetteSequence, TrackWindow


def _sequence(record: dict) -> SilhouetteSequence:
    boxes = record.get("boxes")
    if not boxes:
        raise ValueError(f"{record['source']}#{record['track_id']}: records without boxes (export.save_boxes=false)")
    frames = np.array([int(b[0]) for b in boxes], np.int64)
    t0, t1 = record["time_s"]["start"], record["time_s"]["end"]
    span = max(int(frames[-1] - frames[0]), 1)
    return SilhouetteSequence(
        silhouettes=empty_silhouettes(len(frames)), ratios=np.ones(len(frames), np.float32),
        boxes=np.array([b[1:5] for b in boxes], np.float32), frame_indices=frames,
        pts_s=t0 + (frames - frames[0]) * (t1 - t0) / span, frame_size=tuple(record["frame_size"]))


def _identity(record: dict) -> IdentityMatch | None:
    match = record.get("identity")
    if match is None:
        return None
    inf = float("inf")
    candidates = [RankedCandidate(c["id"], inf if c["distance"] is None else c["distance"], c["initial_rank"], c["entry_id"])
                  for c in match.get("candidates", [])]
    return IdentityMatch(match["id"], match["modality"], inf if match["distance"] is None else match["distance"],
                         match["confidence"], candidates, match.get("enrolled", False))


def window_from_record(record: dict) -> TrackWindow:
    embeddings = record.get("embeddings")
    if embeddings is None:
        raise ValueError("records carry no embeddings: run with export.save_embeddings=true to score them")
    gait, appearance = embeddings.get("gait"), embeddings.get("appearance")
    return TrackWindow(
        source_id=record["source"], track_id=int(record["track_id"]), window_index=int(record["window_index"]),
        is_final=bool(record["final"]), sequence=_sequence(record),
        gait_embedding=None if gait is None else np.asarray(gait, np.float32),
        appearance_embedding=None if appearance is None else np.asarray(appearance, np.float32),
        identity=_identity(record), model_versions=dict(record.get("model_versions") or {}),
        errors=list(record.get("errors") or []), group_share=record.get("group_share"))


def windows_from_records(paths: Iterable[str | Path]) -> list[TrackWindow]:
    """Track windows of JSON Lines files, in file order (events are skipped)."""
    out = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                if record.get("type") == "track":
                    out.append(window_from_record(record))
    return out
