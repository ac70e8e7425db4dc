"""Labelled track windows from rendered multi-camera sites: the data the score fusion is fitted on.

A site config (configs/synth/*.yaml) is rendered, every stage before the gallery is run over its
cameras (appearance embeddings for every window, gait embeddings where the gait detector routes to
gait), and each track is labelled with the identity and outfit of the walker whose ground-truth
boxes it overlaps most. The windows are cached as one ``.npz`` per site (no pickles) so that fits
can be repeated without re-running the pipeline; the cache records the embedding models, and a
cache made by other models is rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from evaluation.identity.front_cache import files_digest, front_end_stage_files
from evaluation.identity.truth import box_iou
from pipeline.messages import SilhouetteSequence, TrackWindow
from stages.gallery.stage import TRACK_END_FRAMES, box_rows
from stages.gallery.store import TrackEnds
from stages.model_files import models_available

log = logging.getLogger(__name__)

FRONT_END_OVERRIDES = ["gallery.enabled=false", "attributes.enabled=false"]  # reid embeds every window by default
# The fit replays auto-enrolment in the windows' order: caches from before the runner merged its files
# by video time (no "order" in their versions) hold one racing order of many and are re-run.
WINDOW_ORDER = "video-time"
# What each window keeps besides its embeddings: caches from before the group share, the new frames or the
# end boxes were kept are re-run, so that the fit's replays leave group tracks unenrolled, count the frames
# that may start an identity, and see handovers in place, as the gallery does.
WINDOW_FIELDS = "group-share,new-frames,end-boxes"
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class SiteWindows:
    """All windows of one site in emission order. N windows; P, C gait parts/channels; D appearance dim.

    camera, track_id, window_index, final, t_start, t_end: (N,) provenance.
    gait: (N, P, C) float32 (zeros where has_gait is False); appearance: (N, D) likewise.
    identity: (N,) truth identity of the window's track (-1: no walker overlaps it); outfit: (N,).
    purity: (N,) share of the track's frames that overlap that walker (below 1: the tracker also
        followed someone else, or nobody, for part of the track).
    group_share: (N,) the window's ``group_share`` (share of its track's boxes so far that hold several
        people; NaN where it was not judged), which decides whether the gallery may enrol the track.
    versions: {"gait": ..., "reid": ...} embedding model versions, "front_end": the other stages'
        configuration (``front_end_fingerprint``), "order": the order the windows were emitted in,
        "fields": what they keep besides embeddings (``WINDOW_FIELDS``).
    first_boxes, last_boxes: (N, K, 5) float64, (t, x0, y0, x1, y1) of the window's first and last K =
        ``TRACK_END_FRAMES`` new frames with a box (NaN rows where it has fewer; None: not kept), from
        which the replay gives the gallery each track's end boxes (``replayed_track_ends``).
    """

    site: str
    camera: np.ndarray
    track_id: np.ndarray
    window_index: np.ndarray
    final: np.ndarray
    t_start: np.ndarray
    t_end: np.ndarray
    has_gait: np.ndarray
    gait: np.ndarray
    has_appearance: np.ndarray
    appearance: np.ndarray
    identity: np.ndarray
    outfit: np.ndarray
    purity: np.ndarray
    group_share: np.ndarray
    new_frames: np.ndarray
    versions: dict[str, str]
    first_boxes: np.ndarray | None = None
    last_boxes: np.ndarray | None = None

    def save(self, path: Path) -> None:
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("site", "versions") and getattr(self, f.name) is not None}
        np.savez_compressed(path, site=np.asarray(self.site), versions=np.asarray(json.dumps(self.versions)), **arrays)

    @classmethod
    def load(cls, path: Path) -> SiteWindows:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        data.setdefault("purity", np.ones(len(data["camera"]), np.float32))  # caches made before purity was kept
        data.setdefault("group_share", np.full(len(data["camera"]), np.nan, np.float32))  # and before the group share
        data.setdefault("new_frames", np.zeros(len(data["camera"]), np.int64))  # and before new frames (re-run)
        return cls(**{**data, "site": str(data["site"]), "versions": json.loads(str(data["versions"]))})

    def in_order(self, order: np.ndarray) -> SiteWindows:
        """The same windows in another emission order (rows ``order``)."""
        rows = len(self.camera)
        moved = {f.name: getattr(self, f.name)[order] for f in dataclasses.fields(self)
                 if isinstance(getattr(self, f.name), np.ndarray) and len(getattr(self, f.name)) == rows}
        return dataclasses.replace(self, **moved)

    def track_keys(self) -> list[tuple[str, int]]:
        return list(dict.fromkeys(zip(self.camera.tolist(), self.track_id.tolist())))


def label_tracks(windows: list[TrackWindow], truth: dict, min_iou: float = 0.5) -> dict[tuple[str, int], tuple[int, float]]:
    """(source, track id) -> (visit of the walker whose boxes the track overlaps in most frames (-1:
    none), share of the track's frames that overlap that walker)."""
    boxes: dict[tuple[str, int], dict[int, np.ndarray]] = {}
    for w in windows:
        per = boxes.setdefault((w.source_id, int(w.track_id)), {})
        for index, box in zip(w.sequence.frame_indices.tolist(), w.sequence.boxes):
            per[int(index)] = box
    out = {}
    for (source, track), per in boxes.items():
        frames = truth["frames"][camera_of(source)]
        votes: Counter[int] = Counter()
        for index, box in per.items():
            people = frames[index] if index < len(frames) else []
            if not people:
                continue
            overlap = box_iou(np.asarray(box, np.float64), np.asarray([p["box"] for p in people], np.float64))
            best = int(np.argmax(overlap))
            if overlap[best] >= min_iou:
                votes[people[best]["visit"]] += 1
        visit, count = votes.most_common(1)[0] if votes else (-1, 0)
        out[(source, track)] = (visit, count / max(len(per), 1))
    return out


def camera_of(source: str) -> str:
    return Path(source).stem


def run_front_end(videos: list[str], overrides: list[str]) -> list[TrackWindow]:
    """Every window (intermediate and final) of the stages before the gallery, crops dropped."""
    from pipeline.app import build_stages, load, set_compute_threads
    from pipeline.config import options_from
    from pipeline.runner import Runner, RunnerOptions
    from pipeline.sources import SourceOptions, expand_sources, open_source

    config = load(None, [*FRONT_END_OVERRIDES, *overrides])
    source_options = options_from(SourceOptions, config.source, "source")
    runner_options = options_from(RunnerOptions, {**config.runner, "progress": False}, "runner")
    set_compute_threads(runner_options)
    built = build_stages(config)
    windows: list[TrackWindow] = []

    def keep(w: TrackWindow) -> None:
        windows.append(dataclasses.replace(w, sequence=dataclasses.replace(w.sequence, crops=None)))

    def on_event(event) -> None:
        if event.kind == "error":
            log.error("%s: %s", event.source_id, event.message)

    runner = Runner(built.frame_stages, built.assembler, built.track_stages, runner_options)
    try:
        runner.run((open_source(s, source_options) for s in expand_sources(videos)), on_window=keep, on_event=on_event)
    finally:
        built.close()
    return windows


def to_site_windows(site: str, windows: list[TrackWindow], truth: dict) -> SiteWindows:
    visits = {v["visit"]: v for v in truth["visits"]}
    labels = label_tracks(windows, truth)
    g_shape = next((w.gait_embedding.shape for w in windows if w.gait_embedding is not None), (1, 1))
    a_dim = next((len(w.appearance_embedding) for w in windows if w.appearance_embedding is not None), 1)
    n = len(windows)
    gait = np.zeros((n, *g_shape), np.float32)
    app = np.zeros((n, a_dim), np.float32)
    for i, w in enumerate(windows):
        if w.gait_embedding is not None:
            gait[i] = w.gait_embedding
        if w.appearance_embedding is not None:
            app[i] = w.appearance_embedding
    visit = [labels[(w.source_id, int(w.track_id))][0] for w in windows]
    first, last = window_end_boxes(windows)
    versions = {k: next((w.model_versions[k] for w in windows if k in w.model_versions), "") for k in ("gait", "reid")}
    return SiteWindows(
        site=site,
        camera=np.asarray([camera_of(w.source_id) for w in windows]),
        track_id=np.asarray([int(w.track_id) for w in windows], np.int64),
        window_index=np.asarray([w.window_index for w in windows], np.int64),
        final=np.asarray([w.is_final for w in windows]),
        t_start=np.asarray([float(w.sequence.pts_s[0]) for w in windows]),
        t_end=np.asarray([float(w.sequence.pts_s[-1]) for w in windows]),
        has_gait=np.asarray([w.gait_embedding is not None for w in windows]),
        gait=gait,
        has_appearance=np.asarray([w.appearance_embedding is not None for w in windows]),
        appearance=app,
        identity=np.asarray([visits[v]["identity"] if v >= 0 else -1 for v in visit], np.int64),
        outfit=np.asarray([visits[v]["outfit"] if v >= 0 else -1 for v in visit], np.int64),
        purity=np.asarray([labels[(w.source_id, int(w.track_id))][1] for w in windows], np.float32),
        group_share=np.asarray([np.nan if w.group_share is None else w.group_share for w in windows], np.float32),
        new_frames=count_new_frames(windows),
        versions=versions,
        first_boxes=first, last_boxes=last,
    )


def new_frame_masks(windows: list[TrackWindow]) -> list[np.ndarray]:
    """Each window's frames after the last frame of its track's windows before it (emission order), as a mask."""
    last: dict[tuple[str, int], int] = {}
    masks = []
    for w in windows:
        key = (w.source_id, int(w.track_id))
        indices = w.sequence.frame_indices
        masks.append(indices > last.get(key, -1))
        if len(indices):
            last[key] = max(last.get(key, -1), int(indices[-1]))
    return masks


def count_new_frames(windows: list[TrackWindow]) -> np.ndarray:
    """(N,) each window's new frames (``new_frame_masks``)."""
    return np.asarray([int(mask.sum()) for mask in new_frame_masks(windows)], np.int64)


def window_end_boxes(windows: list[TrackWindow]) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, 5) twice: each window's first and last K = ``TRACK_END_FRAMES`` new frames (``new_frame_masks``)
    that have a box, as (t, x0, y0, x1, y1); NaN rows where fewer."""
    first = np.full((len(windows), TRACK_END_FRAMES, 5), np.nan)
    last = np.full((len(windows), TRACK_END_FRAMES, 5), np.nan)
    for i, (w, new) in enumerate(zip(windows, new_frame_masks(windows))):
        rows = np.asarray(box_rows(w.sequence.pts_s[new], w.sequence.boxes[new]), np.float64).reshape(-1, 5)
        n = min(len(rows), TRACK_END_FRAMES)
        if n:
            first[i, :n], last[i, TRACK_END_FRAMES - n:] = rows[:n], rows[len(rows) - n:]
    return first, last


def replayed_track_ends(site: SiteWindows) -> dict[tuple[str, int], TrackEnds]:
    """Each track's boxes on its first and last frames, as the gallery keeps them (``TrackEvidence.ends``),
    from its windows' end boxes (none where the cache kept none)."""
    if site.first_boxes is None or site.last_boxes is None:
        return {}
    firsts: dict[tuple[str, int], list] = {}
    lasts: dict[tuple[str, int], list] = {}
    for r in range(len(site.camera)):
        key = (str(site.camera[r]), int(site.track_id[r]))
        firsts.setdefault(key, []).extend(tuple(row) for row in site.first_boxes[r].tolist() if not np.isnan(row[0]))
        lasts.setdefault(key, []).extend(tuple(row) for row in site.last_boxes[r].tolist() if not np.isnan(row[0]))
    return {key: TrackEnds(tuple(firsts[key][:TRACK_END_FRAMES]), tuple(lasts[key][-TRACK_END_FRAMES:]))
            for key in firsts if firsts[key] or lasts[key]}


def embedding_versions(overrides: list[str] | None = None) -> dict[str, str]:
    """The versions the configured gait and appearance stages would stamp on windows ({"gait", "reid"};
    the stages are built, their models loaded, but run on nothing) and ``front_end``: a fingerprint of
    the other stages' configuration (detector, tracker, segmenter, ...), so that windows cached before
    a change of the tracker's settings are made again too."""
    from pipeline.app import build_stage, chosen_config, load

    config = load(None, [*FRONT_END_OVERRIDES, *(overrides or [])])
    chosen = chosen_config(config)  # the detector chosen once, not once per stage built
    versions = {section: build_stage(chosen, section)[0].version
                for section in ("gait", "reid") if section in chosen.stages}
    return {**versions, "front_end": front_end_fingerprint(config)}


def detector_in_use(overrides: list[str] | None = None) -> str:
    """The detector the fitting sites' front end runs with these overrides: the configured backend, or
    the one ``detect: auto`` picks from the models directory's files (and why), for the manifest."""
    from pipeline.app import load
    from stages.detect import detector_candidates

    config = load(None, [*FRONT_END_OVERRIDES, *(overrides or [])])
    spec = config.stages["detect"]
    if spec.backend != "auto":
        backend, reason = spec.backend, ""
    else:
        choice = detector_candidates(spec.params.get("weights"), spec.params.get("models_dir"))[0]
        backend, reason = choice.backend, choice.reason
    changed = config.changed_by_settings(backend)
    notes = [n for n in (reason, changed and f"with its detector settings for {', '.join(changed)}") if n]
    return f"{backend} ({'; '.join(notes)})" if notes else backend


def front_end_fingerprint(config) -> str:
    """A short hash of the configuration of every stage but the embedding ones (gait, reid), of the
    front end's code (``front_end_code_digest``) and of the model files its ``auto`` backends choose
    from (``models_available``)."""
    front = {kind: spec for kind, spec in config.stages.items() if kind not in ("gait", "reid")}
    others = {kind: [spec.backend, spec.params] for kind, spec in front.items()}
    if config.detector_settings:  # the stages a detector found by auto runs with
        others["detector_settings"] = {backend: {kind: [spec.backend, spec.params] for kind, spec in stages.items()
                                                 if kind not in ("gait", "reid")}
                                       for backend, stages in config.detector_settings.items()}
    others["code"] = front_end_code_digest()
    others["models"] = models_available([spec.params.get("models_dir") for spec in front.values()])
    return hashlib.sha1(json.dumps(others, sort_keys=True, default=str).encode()).hexdigest()[:12]


def front_end_code_digest(root: Path = REPO_ROOT) -> str:
    """A hash of the source of every stage before the gallery and of the runner: windows cached before
    a change of that code (a detector that finds more people, a new tracker rule) are made again, as
    after a change of its settings. The gallery's own code does not change the windows."""
    return files_digest([*front_end_stage_files(root), root / "pipeline" / "runner.py"], root)[:12]


def site_fps(site_config: str | Path) -> float:
    """Frame rate of a rendered site (its config's ``fps``, 25 by default)."""
    return float((yaml.safe_load(Path(site_config).read_text()) or {}).get("fps", 25.0))


def site_windows(site_config: str | Path, cache_dir: str | Path, expected_versions: dict[str, str] | None = None,
                 overrides: list[str] | None = None) -> SiteWindows:
    """Render (once) and run (once per embedding models) a site; cached under ``cache_dir``.
    Windows run with ``overrides`` are kept apart from the default ones (one render, a windows file
    per setting), so fits for other models do not evict each other's windows."""
    site_config = Path(site_config)
    cache_dir = Path(cache_dir).expanduser() / site_config.stem
    setting = hashlib.sha1(json.dumps(sorted(overrides)).encode()).hexdigest()[:12] if overrides else ""
    cache = cache_dir / (f"windows-{setting}.npz" if setting else "windows.npz")
    if cache.is_file():
        cached = SiteWindows.load(cache)
        current = {**(expected_versions or {}), "order": WINDOW_ORDER, "fields": WINDOW_FIELDS}
        if all(cached.versions.get(k) == v for k, v in current.items()):
            return cached
        log.info("%s: cached windows come from %s; re-running", site_config.stem, cached.versions)
    scene = rendered_scene(site_config, cache_dir.parent)
    truth = json.loads((scene / "groundtruth.json").read_text())
    videos = sorted(str(p) for p in scene.glob("*.mp4"))
    log.info("running the front end over %d camera(s) of %s", len(videos), site_config.stem)
    from pipeline.app import load

    result = to_site_windows(site_config.stem, run_front_end(videos, overrides or []), truth)
    result.versions["front_end"] = front_end_fingerprint(load(None, [*FRONT_END_OVERRIDES, *(overrides or [])]))
    result.versions["order"] = WINDOW_ORDER
    result.versions["fields"] = WINDOW_FIELDS
    result.save(cache)
    return result


def rendered_scene(site_config: str | Path, cache_dir: str | Path) -> Path:
    """The folder of a site's rendered videos and ``groundtruth.json``, ``cache_dir/<site>/scene``,
    rendered first when absent."""
    from synth.scene import SiteConfig, write_site

    site_config = Path(site_config)
    scene = Path(cache_dir).expanduser() / site_config.stem / "scene"
    if not (scene / "groundtruth.json").is_file():
        log.info("rendering %s -> %s", site_config, scene)
        write_site(SiteConfig.from_dict(yaml.safe_load(site_config.read_text()) or {}), scene)
    return scene


def track_windows(site: SiteWindows, fps: float) -> list[TrackWindow]:
    """The site's windows as the gallery stage receives them (emission order; embeddings, group shares,
    times at ``fps``, and frame indices that hold as many new frames of the track as the window had;
    no silhouettes or crops), for replaying auto-enrolment."""
    from evaluation.identity.runs import empty_silhouettes

    out = []
    last: dict[tuple[str, int], int] = {}
    for r in range(len(site.camera)):
        key = (str(site.camera[r]), int(site.track_id[r]))
        start, end = (int(round(t * fps)) for t in (site.t_start[r], site.t_end[r]))
        indices = replayed_frame_indices(start, end, int(site.new_frames[r]), last.get(key, -1))
        last[key] = max(last.get(key, -1), int(indices[-1]))
        t = len(indices)
        sequence = SilhouetteSequence(silhouettes=empty_silhouettes(t), ratios=np.ones(t, np.float32),
                                      boxes=np.zeros((t, 4), np.float32), frame_indices=indices,
                                      pts_s=np.linspace(site.t_start[r], site.t_end[r], t), frame_size=(1, 1))
        window = TrackWindow(str(site.camera[r]), int(site.track_id[r]), int(site.window_index[r]), bool(site.final[r]),
                             sequence, gait_embedding=site.gait[r] if site.has_gait[r] else None,
                             appearance_embedding=site.appearance[r] if site.has_appearance[r] else None,
                             group_share=None if np.isnan(site.group_share[r]) else float(site.group_share[r]))
        window.model_versions.update({k: v for k, v in site.versions.items() if k in ("gait", "reid")})
        out.append(window)
    return out


def replayed_frame_indices(start: int, end: int, new: int, last: int) -> np.ndarray:
    """Frame indices from ``start`` to ``end`` of which exactly ``new`` come after ``last`` (the track's
    last frame so far, -1: none): the window's first frame, then its new frames at its end."""
    first_is_new = start > last  # a track's first window, or one after a gap
    tail = np.arange(end - (new - first_is_new) + 1, end + 1)
    if not len(tail) and not first_is_new:
        tail = np.array([min(end, last)])  # no new frame: still the window's end, for its end time
    return np.concatenate([[start], tail]).astype(np.int64)
