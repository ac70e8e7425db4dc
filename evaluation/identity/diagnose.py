"""Where the chain loses identities on the benchmark's sites: ``python -m evaluation.identity.diagnose``.

The benchmark says how well a variant identifies people; this says which tracks cost it. For one
variant (its front-end runs are read from the benchmark's cache when there) it reports:

- **open set**: the never-enrolled probes that score highest against the gallery (they set the
  threshold at the target false-accept rate, so a handful of them decide DIR), each with the share
  of its frames whose box also overlaps someone else (``others``: two people in one box, a track
  that moved to another person) and whether the gallery track it matched shows the probe's person;
  and DIR again with the two-person probes (``others`` >= ``two_person``) left out on both sides:
  what the open-set rate would be if the front end kept people apart.
- **identities**: auto-enrol's identities by what their tracks follow (one person, several, or
  only tracks that follow nobody), and the people spread over several identities.
- **views**: how well gait and appearance tell the same person from others between two windows of
  different tracks, split by how far apart the two walks' viewing angles are (same view group,
  neighbouring groups, head-on against side-on): ROC AUC over window pairs of tracks that follow
  their person in at least ``clean_purity`` of their frames.

    python -m evaluation.identity.diagnose --out out/diagnose
    python -m evaluation.identity.diagnose --variant split_groups --sites station --out out/diagnose
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from evaluation.identity.metrics import rounded
from evaluation.identity.protocol import Probe, by_track, track_decision
from evaluation.identity.truth import TrackKey, TrackTruth, box_iou, camera_name, track_boxes
from pipeline.messages import TrackWindow

OTHER_IOU = 0.3  # a box "shows" a person when their visible box overlaps it this much
VIEW_RELATIONS = ("same group", "neighbouring groups", "front/back vs side")


@dataclass(frozen=True)
class ProbeOutcome:
    """One probe track against one open-set fold's gallery: its best gallery track and score.

    known: the gallery holds the probe's person. score: the negated rank key of the best gallery
    track (higher = more alike; None when nothing was ranked).
    """

    site: str
    probe: TrackKey
    person: int
    known: bool
    score: float | None
    gallery_track: TrackKey | None
    gallery_person: int | None


def people_in_boxes(windows: Sequence[TrackWindow], truth: dict,
                    min_iou: float = OTHER_IOU) -> dict[TrackKey, dict[int, float]]:
    """Per track: person -> share of the track's frames whose box overlaps that person's visible box
    with IoU >= min_iou."""
    out = {}
    for key, boxes in track_boxes(windows).items():
        frames = truth["frames"][camera_name(key[0])]
        seen: Counter[int] = Counter()
        for index, box in boxes.items():
            people = frames[index] if 0 <= index < len(frames) else []
            if people:
                iou = box_iou(box, np.array([p["box"] for p in people]))
                seen.update({int(p["identity"]) for p, v in zip(people, iou) if v >= min_iou})
        out[key] = {person: count / len(boxes) for person, count in seen.items()}
    return out


def others_share(shown: dict[int, float], person: int | None) -> float:
    """Largest share of frames a track's box shows one person other than its own."""
    return max((share for p, share in shown.items() if p != person), default=0.0)


def fold_outcomes(site: str, probes: Sequence[Probe], tracks: dict[TrackKey, TrackTruth],
                  enrolled: set[int]) -> list[ProbeOutcome]:
    """The benchmark's two open-set folds (``benchmark.open_set_folds``) with track keys kept."""
    from evaluation.identity.benchmark import open_set_folds

    def without(p: Probe, held: set[int]) -> Probe:
        return Probe(p.track, [(k, d) for k, d in p.ranked if tracks[k].identity not in held])

    known, unknown = open_set_folds(list(probes), enrolled, identity=lambda p: int(p.track.identity), without=without)
    return [_outcome(site, p, tracks, is_known) for group, is_known in ((known, True), (unknown, False)) for p in group]


def _outcome(site: str, p: Probe, tracks: dict[TrackKey, TrackTruth], known: bool) -> ProbeOutcome:
    best = p.ranked[0] if p.ranked else None
    return ProbeOutcome(site, p.track.key, int(p.track.identity), known, None if best is None else -float(best[1]),
                        None if best is None else best[0], None if best is None else tracks[best[0]].identity)


def dir_at_far(outcomes: Sequence[ProbeOutcome], far: float) -> tuple[float | None, float | None]:
    """(threshold, DIR) as ``metrics.open_set`` computes them: the threshold accepts at most
    floor(far * unknown) never-enrolled probes; DIR is the share of known probes above it whose
    best gallery track is their person."""
    known = [o for o in outcomes if o.known]
    unknown = [o for o in outcomes if not o.known]
    if not known or not unknown:
        return None, None
    scores = np.sort([-math.inf if o.score is None else o.score for o in unknown])[::-1]
    allowed = math.floor(far * len(scores) + 1e-9)
    threshold = float(scores[allowed]) if allowed < len(scores) else -math.inf
    hits = [o.score is not None and o.score > threshold and o.gallery_person == o.person for o in known]
    return threshold, float(np.mean(hits))


def open_set_report(outcomes: Sequence[ProbeOutcome], shown: dict[TrackKey, dict[int, float]], far: float,
                    two_person: float = 0.5, top: int = 10) -> dict:
    """The highest-scoring never-enrolled probes, and DIR with and without the two-person probes."""
    def others(o: ProbeOutcome) -> float:
        return others_share(shown.get(o.probe, {}), o.person)

    threshold, rate = dir_at_far(outcomes, far)
    unknown = sorted((o for o in outcomes if not o.known and o.score is not None), key=lambda o: -o.score)
    setters = [o for o in unknown if threshold is not None and o.score >= threshold]
    single = [o for o in outcomes if others(o) < two_person]
    single_threshold, single_rate = dir_at_far(single, far)
    rows = [{"site": o.site, "camera": camera_name(o.probe[0]), "track": o.probe[1], "person": o.person,
             "score": round(o.score, 3), "others": round(others(o), 3),
             "gallery": None if o.gallery_track is None else
             {"camera": camera_name(o.gallery_track[0]), "track": o.gallery_track[1], "person": o.gallery_person,
              "shows_probe_person": round(shown.get(o.gallery_track, {}).get(o.person, 0.0), 3),
              "others": round(others_share(shown.get(o.gallery_track, {}), o.gallery_person), 3)}}
            for o in unknown[:top]]
    return {"far": far, "known": sum(o.known for o in outcomes), "unknown": sum(not o.known for o in outcomes),
            "threshold": rounded(threshold), "dir": rounded(rate),
            "threshold_setters": len(setters),
            "threshold_setters_two_person": sum(others(o) >= two_person for o in setters),
            "by_site": {site: _open_set_row([o for o in outcomes if o.site == site], far)
                        for site in sorted({o.site for o in outcomes})},
            "two_person": two_person, "two_person_probes": len(outcomes) - len(single),
            "without_two_person": {"known": sum(o.known for o in single), "unknown": sum(not o.known for o in single),
                                   "threshold": rounded(single_threshold), "dir": rounded(single_rate)},
            "top_unknown": rows}


def _open_set_row(outcomes: Sequence[ProbeOutcome], far: float) -> dict:
    threshold, rate = dir_at_far(outcomes, far)
    return {"threshold": rounded(threshold), "dir": rounded(rate)}


def identity_composition(decided: Sequence[TrackWindow], tracks: dict[TrackKey, TrackTruth]) -> dict:
    """Auto-enrol's identities by the people their tracks follow (None: a track that follows nobody)."""
    members: dict[str, Counter] = defaultdict(Counter)
    frames: dict[str, int] = Counter()
    spread: dict[int, set[str]] = defaultdict(set)
    for key, windows in by_track(decided).items():
        name = track_decision(windows)
        if name is None:
            continue
        truth = tracks[key]
        members[name][truth.identity] += 1
        frames[name] += truth.frames
        if truth.identity is not None:
            spread[truth.identity].add(name)
    kinds = Counter()
    identities = []
    for name, count in sorted(members.items()):
        people = {p for p in count if p is not None}
        kind = "nobody" if not people else ("one person" if len(people) == 1 else "several people")
        kinds[kind] += 1
        identities.append({"identity": name, "kind": kind, "frames": frames[name],
                           "tracks": {("nobody" if p is None else str(p)): n for p, n in count.most_common()}})
    return {"identities": len(members), **{k: kinds[k] for k in ("one person", "several people", "nobody")},
            "people": len({t.identity for t in tracks.values() if t.identity is not None}),
            "people_over_several_identities": sum(len(v) > 1 for v in spread.values()), "by_identity": identities}


def view_group_of(view_deg: float) -> int:
    """Index into ``synth.realism.VIEW_GROUPS`` of a viewing angle (0: walks at the camera, 90: side-on,
    180: away)."""
    from synth.realism import VIEW_GROUPS, view_group  # the renderer's module: imported when used

    return list(VIEW_GROUPS).index(view_group(view_deg))


def window_views(windows: Sequence[TrackWindow], tracks: dict[TrackKey, TrackTruth], truth: dict) -> list[int | None]:
    """Per window: the view group its person is seen from in most of its frames (None: unknown)."""
    out = []
    for w in windows:
        t = tracks.get((w.source_id, int(w.track_id)))
        frames = truth["frames"].get(camera_name(w.source_id), [])
        groups = Counter(view_group_of(p["view_deg"]) for i in w.sequence.frame_indices
                         if 0 <= int(i) < len(frames) for p in frames[int(i)]
                         if t is not None and t.visit is not None and int(p["visit"]) == t.visit)
        out.append(groups.most_common(1)[0][0] if groups else None)
    return out


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float | None:
    """P(a genuine distance < an impostor distance), ties counted half (None without both)."""
    g, i = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
    if len(g) == 0 or len(i) == 0:
        return None
    ranks = _average_ranks(np.concatenate([g, i]))
    return float(1.0 - (ranks[: len(g)].sum() - len(g) * (len(g) + 1) / 2) / (len(g) * len(i)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    values, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


@dataclass(frozen=True)
class ViewedWindow:
    """A window's embeddings with its track, person, clothes and view group (diagnostics only)."""

    track: TrackKey
    person: int
    clothes: tuple[int, bool] | None
    view: int
    gait: np.ndarray | None
    appearance: np.ndarray | None


def viewed_windows(windows: Sequence[TrackWindow], tracks: dict[TrackKey, TrackTruth], truth: dict,
                   clean_purity: float) -> list[ViewedWindow]:
    views = window_views(windows, tracks, truth)
    out = []
    for w, view in zip(windows, views):
        t = tracks.get((w.source_id, int(w.track_id)))
        if t is None or t.identity is None or t.purity < clean_purity or view is None:
            continue
        out.append(ViewedWindow(t.key, int(t.identity), t.clothes, view, w.gait_embedding, w.appearance_embedding))
    return out


def view_separation(sites: Sequence[list[ViewedWindow]], metric: str = "euc") -> dict:
    """Gait and appearance ROC AUC between windows of different tracks of one site, per view relation
    (``VIEW_RELATIONS``: the two windows' view groups equal, neighbouring, or head-on against side-on);
    also over the genuine pairs whose clothes differ."""
    from stages.gait.distance import part_distance

    pairs: dict[str, dict[str, list[np.ndarray]]] = {m: defaultdict(list) for m in ("gait", "appearance")}
    for windows in sites:
        for modality in ("gait", "appearance"):
            chosen = [w for w in windows if getattr(w, modality) is not None]
            if len(chosen) < 2:
                continue
            x = np.stack([np.asarray(getattr(w, modality), np.float32) for w in chosen])
            if modality == "gait":
                d = np.concatenate([part_distance(x[i : i + 1], x, metric) for i in range(len(x))])
            else:
                u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
                d = 1.0 - u @ u.T
            a, b = np.triu_indices(len(chosen), 1)
            track = np.array([hash(w.track) for w in chosen])
            person = np.array([w.person for w in chosen])
            clothes = np.array([hash(w.clothes) for w in chosen])
            view = np.array([w.view for w in chosen])
            keep = track[a] != track[b]
            a, b = a[keep], b[keep]
            relation = np.abs(view[a] - view[b])
            same = person[a] == person[b]
            changed = same & (clothes[a] != clothes[b])
            for r in range(len(VIEW_RELATIONS)):
                m = relation == r
                pairs[modality][f"{r}:genuine"].append(d[a, b][m & same])
                pairs[modality][f"{r}:changed"].append(d[a, b][m & changed])
                pairs[modality][f"{r}:impostor"].append(d[a, b][m & ~same])
    out = {}
    for r, relation in enumerate(VIEW_RELATIONS):
        row = {}
        for modality, found in pairs.items():
            def cat(kind: str) -> np.ndarray:
                return np.concatenate(found.get(f"{r}:{kind}") or [np.zeros(0)])
            genuine, changed, impostor = cat("genuine"), cat("changed"), cat("impostor")
            row[modality] = {"genuine": len(genuine), "impostor": len(impostor),
                             "auc": rounded(roc_auc(genuine, impostor)),
                             "changed_clothes": len(changed),
                             "auc_changed_clothes": rounded(roc_auc(changed, impostor))}
        out[relation] = row
    return out


def diagnose(bench, variant_name: str = "default", site_names: list[str] | None = None, cache=None,
             two_person: float = 0.5, top: int = 10) -> dict:
    """Run (or read from the cache) the variant's front end on the sites and diagnose it (module docstring)."""
    from evaluation.identity.benchmark import run_site_front_end
    from evaluation.identity.protocol import closed_set_probes
    from evaluation.identity.runs import replay_gallery
    from evaluation.identity.sites import DEFAULT_CACHE, render_site

    variant = next((v for v in bench.variants if v.name == variant_name), None)
    if variant is None:
        raise ValueError(f"unknown variant {variant_name!r}; the config has {[v.name for v in bench.variants]}")
    every = dict((*bench.sites, *bench.quick_sites))
    names = site_names or [n for n, _ in bench.sites]
    unknown = sorted(set(names) - set(every))
    if unknown:
        raise ValueError(f"unknown site(s) {unknown}; the config has {sorted(every)}")
    outcomes, shown, composition, viewed = [], {}, {}, []
    for name in names:
        rendered = render_site(name, every[name], cache or DEFAULT_CACHE)
        truth = rendered.truth()
        config, run, tracks = run_site_front_end(bench, variant, rendered, truth)
        shown.update(people_in_boxes(run.windows, truth))
        for camera in [c["name"] for c in truth["cameras"]]:
            probes = closed_set_probes(config, run.windows, tracks, camera, ("system",), run.batch_size)["system"]
            enrolled = {t.identity for t in tracks.values() if t.camera == camera and t.identity is not None}
            outcomes += fold_outcomes(name, probes, tracks, enrolled)
        decided, _ = replay_gallery(config, run, auto_enrol=True)
        composition[name] = identity_composition(decided, tracks)
        viewed.append(viewed_windows(run.windows, tracks, truth, bench.clean_purity))
    return {"format": "gaitscope-identity-diagnosis/1", "variant": variant_name, "sites": names,
            "open_set": open_set_report(outcomes, shown, bench.far, two_person, top),
            "identities": composition, "views": view_separation(viewed),
            "settings": {"other_iou": OTHER_IOU, "clean_purity": bench.clean_purity, **asdict(variant)}}


def summary_lines(result: dict) -> list[str]:
    o = result["open_set"]
    lines = [f"variant {result['variant']}, sites {', '.join(result['sites'])}",
             f"open set: DIR@{o['far']:g}FAR {o['dir']} (threshold {o['threshold']}; {o['known']} known, "
             f"{o['unknown']} never-enrolled probes); {o['threshold_setters_two_person']} of the "
             f"{o['threshold_setters']} never-enrolled probes at or above the threshold show a second person in "
             f">= {o['two_person']:g} of their frames",
             f"  without the {o['two_person_probes']} two-person probes: DIR {o['without_two_person']['dir']} "
             f"(threshold {o['without_two_person']['threshold']})",
             "  per site: " + ", ".join(f"{site} DIR {v['dir']} (threshold {v['threshold']})"
                                        for site, v in o["by_site"].items()),
             "  highest never-enrolled probes (score, probe camera#track person, others; gallery camera#track person, "
             "shows the probe's person):"]
    for r in o["top_unknown"]:
        g = r["gallery"] or {}
        lines.append(f"    {r['score']:7.2f}  {r['site']}/{r['camera']}#{r['track']} person {r['person']} "
                     f"others {r['others']:.2f}  -> {g.get('camera')}#{g.get('track')} person {g.get('person')} "
                     f"shows {g.get('shows_probe_person', 0):.2f}")
    for site, c in result["identities"].items():
        lines.append(f"identities {site}: {c['identities']} for {c['people']} people: {c['one person']} of one person, "
                     f"{c['several people']} of several, {c['nobody']} of tracks that follow nobody; "
                     f"{c['people_over_several_identities']} people over several identities")
    lines.append("views (ROC AUC of window pairs of clean tracks; gait / appearance; changed clothes in brackets):")
    for relation, row in result["views"].items():
        g, a = row["gait"], row["appearance"]
        lines.append(f"  {relation:20s} gait {g['auc']} ({g['auc_changed_clothes']})  appearance {a['auc']} "
                     f"({a['auc_changed_clothes']})  genuine pairs {g['genuine']}, impostor {g['impostor']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    from evaluation.identity.benchmark import DEFAULT_BENCH, BenchConfig
    from evaluation.identity.sites import DEFAULT_CACHE

    parser = argparse.ArgumentParser(prog="python -m evaluation.identity.diagnose", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for diagnosis.json")
    parser.add_argument("--config", default=str(DEFAULT_BENCH), help="benchmark config (sites and variants)")
    parser.add_argument("--variant", default="default", help="the benchmark variant to diagnose")
    parser.add_argument("--sites", default=None, help="comma-separated site names (default: the config's sites)")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="where rendered sites are kept between runs")
    parser.add_argument("--two-person", type=float, default=0.5,
                        help="share of frames showing a second person from which a probe counts as two-person")
    parser.add_argument("--top", type=int, default=10, help="never-enrolled probes to list")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        bench = BenchConfig.load(args.config)
        sites = [s.strip() for s in args.sites.split(",") if s.strip()] if args.sites else None
        result = diagnose(bench, args.variant, sites, args.cache, args.two_person, args.top)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnosis.json").write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    print("\n".join(summary_lines(result)))
    print(f"-> {out / 'diagnosis.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
