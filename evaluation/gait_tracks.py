"""Gait on the chain's own tracks: the segmenter's silhouettes against exact ones.

``python -m evaluation.gait tracks --site configs/bench/sites/plaza.yaml`` runs the identity
benchmark's front end (default config, the benchmark's overrides) over a rendered site, keeps the
tracks that follow a walker (``evaluation.identity.truth``) and, from each, the frames where ground
truth shows that walker walking with the whole body in view. Its frames are embedded as the
gallery sees a track (``gait_sites.pipeline_windows``, pooled by their mean) four ways:

- ``segmenter_all_frames``: every frame of the track, the segmenter's silhouettes (no gait detector);
- ``segmenter_routed``: the frames the chain embeds for gait, the segmenter's silhouettes: those inside
  the gait detector's walking stretches of windows it routed to gait;
- ``segmenter_walking``: the walking frames, the segmenter's silhouettes;
- ``exact_walking``: the same frames, silhouettes from the site's visible mask of the walker cut to
  the track's box, made the way the pipeline makes them (``stages.silhouette``).

Each is scored with ``gait_sites.leave_out_rank1`` (every track against the tracks of the other
cameras, same / changed clothes), so the numbers compare with ``evaluation.gait site`` (the
sites' whole walks, no chain). The difference between the last two rows is what segmentation
costs gait on these tracks; between the first and the third, what frames that are not walking cost;
between the second and the third, what the gait detector's choice of frames costs (it also leaves
some tracks with no gait at all: fewer tracks, fewer probes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.identity.truth import TrackKey, TrackTruth
from pipeline.messages import TrackWindow

SELECTIONS = ("segmenter_all_frames", "segmenter_routed", "segmenter_walking", "exact_walking")
MIN_VISIBLE = 0.95  # least visible fraction of a walking frame


@dataclass(frozen=True)
class TrackFrames:
    """One track's frames, in order: silhouettes (T, 64, 44) uint8 from the segmenter, exact
    silhouettes (T, 64, 44) (zeros where none), ratios (T,), walking (T,) bool (ground truth: walking,
    whole body, visible, and an exact silhouette exists), routed (T,) bool (inside a walking stretch of
    a window the gait detector routed to gait, in any of the track's windows)."""

    silhouettes: np.ndarray
    exact: np.ndarray
    ratios: np.ndarray
    walking: np.ndarray
    routed: np.ndarray

    def selection(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(silhouettes, ratios) of one of ``SELECTIONS``."""
        if name == "segmenter_all_frames":
            return self.silhouettes, self.ratios
        if name == "segmenter_routed":
            return self.silhouettes[self.routed], self.ratios[self.routed]
        if name == "segmenter_walking":
            return self.silhouettes[self.walking], self.ratios[self.walking]
        if name == "exact_walking":
            return self.exact[self.walking], self.ratios[self.walking]
        raise ValueError(f"unknown selection {name!r}; choose from {list(SELECTIONS)}")


def track_frames(windows: Sequence[TrackWindow], track: TrackTruth, truth: dict) -> TrackFrames:
    """The frames of one truth-matched track (all its windows, each frame once) with their exact
    silhouettes and walking flags from the site's ground truth (``groundtruth.json`` as a dict)."""
    from stages.gait.recognizer import gait_frames
    from stages.segment.masks import clear_outside_boxes
    from stages.silhouette import silhouette_from_mask
    from synth.groundtruth import decode_mask

    frames: dict[int, tuple[np.ndarray, float, np.ndarray]] = {}
    routed_indices: set[int] = set()
    for w in windows:
        seq = w.sequence
        for i, index in enumerate(seq.frame_indices):
            frames.setdefault(int(index), (seq.silhouettes[i], float(seq.ratios[i]), np.asarray(seq.boxes[i], np.float64)))
        if w.gait is not None and w.gait.route == "gait":
            routed_indices.update(int(seq.frame_indices[i]) for i in gait_frames(w))
    order = sorted(frames)
    people_by_frame = truth["frames"][track.camera]
    size = tuple(int(v) for v in truth["frame_size"])
    exact = np.zeros((len(order), 64, 44), np.uint8)
    walking = np.zeros(len(order), bool)
    for j, index in enumerate(order):
        people = people_by_frame[index] if 0 <= index < len(people_by_frame) else []
        person = next((p for p in people if p["visit"] == track.visit), None)
        if (person is None or "mask" not in person or person["state"] != "walking" or not person["full_body"]
                or person["visible_fraction"] < MIN_VISIBLE):
            continue
        mask = clear_outside_boxes(decode_mask(person["mask"], size)[None], frames[index][2][None])[0]
        silhouette = silhouette_from_mask(mask)
        if silhouette is not None:
            exact[j], walking[j] = silhouette, True
    return TrackFrames(np.stack([frames[i][0] for i in order]), exact,
                       np.array([frames[i][1] for i in order], np.float32), walking,
                       np.array([i in routed_indices for i in order], bool))


def embed_tracks(model, frames: Sequence[TrackFrames], selection: str, min_frames: int = 15) -> list[np.ndarray | None]:
    """Each track's selected frames embedded as the pipeline's windows and pooled by their mean;
    None for a track with fewer than ``min_frames`` selected frames."""
    from evaluation.gait_sites import pipeline_windows
    from stages.gait.embedding import embed_sequences

    pieces, owner = [], []
    for i, f in enumerate(frames):
        sils, ratios = f.selection(selection)
        if len(sils) < min_frames:
            continue
        for window in pipeline_windows(len(sils), final=True):
            if window.stop - window.start >= min_frames:
                pieces.append((sils[window], ratios[window]))
                owner.append(i)
    embeddings = embed_sequences(model, pieces) if pieces else np.zeros((0,))
    owners = np.array(owner)
    return [embeddings[owners == i].mean(0) if (owners == i).any() else None for i in range(len(frames))]


def tracks_rank1(model, frames: Sequence[TrackFrames], tracks: Sequence[TrackTruth]) -> dict[str, dict]:
    """``leave_out_rank1`` of the tracks that have an embedding, per selection."""
    from evaluation.gait_sites import leave_out_rank1

    out = {}
    for selection in SELECTIONS:
        embedded = embed_tracks(model, frames, selection)
        keep = [i for i, e in enumerate(embedded) if e is not None]
        if not keep:
            out[selection] = {"same_outfit": None, "changed_outfit": None, "tracks": 0}
            continue
        scores = leave_out_rank1(np.stack([embedded[i] for i in keep]), np.array([tracks[i].identity for i in keep]),
                                 [tracks[i].clothes for i in keep], np.array([tracks[i].camera for i in keep]))
        out[selection] = {**scores, "tracks": len(keep)}
    return out


def site_tracks_report(model, site_path: str, overrides: Sequence[str] = ()) -> dict:
    """Run the benchmark's front end over one site and score gait on its tracks (see the module).
    overrides: ``section.key=value`` for the front end on top of the benchmark's (e.g. another
    segmenter), as with ``--set``."""
    from evaluation.identity.benchmark import DEFAULT_BENCH, BenchConfig
    from evaluation.identity.protocol import by_track
    from evaluation.identity.front_cache import front_end_run
    from evaluation.identity.sites import load_site, render_site
    from evaluation.identity.truth import match_tracks
    from pipeline import app

    bench = BenchConfig.load(DEFAULT_BENCH)
    config = app.load(bench.pipeline, [*bench.overrides, *overrides])
    rendered = render_site(Path(site_path).stem, load_site(site_path))
    truth = rendered.truth()
    run, _ = front_end_run(config, [str(v) for v in rendered.videos], rendered.folder)  # the benchmark's, when kept
    matched = {k: t for k, t in match_tracks(run.windows, truth, bench.min_iou, bench.min_share).items()
               if t.identity is not None}
    windows: dict[TrackKey, list[TrackWindow]] = by_track(run.windows)
    keys = sorted(k for k in matched if k in windows)
    frames = [track_frames(windows[k], matched[k], truth) for k in keys]
    scores = tracks_rank1(model, frames, [matched[k] for k in keys])
    return {**scores, "tracks": len(keys), "walking_frames": int(sum(f.walking.sum() for f in frames)),
            "frames": int(sum(len(f.walking) for f in frames))}
