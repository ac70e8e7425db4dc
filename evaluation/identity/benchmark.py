"""The end-to-end identity benchmark: sites x variants, scored against ground truth.

A benchmark config (``configs/bench/identity.yaml``) names the pipeline config, overrides for
every variant, the sites and the variants (``_base_``: a benchmark config merged under it, section by
section, as with pipeline configs). Each variant is a list of ``section.key=value``
overrides (as on the command line) plus the closed-set scorers to report; a new ablation is one
line. Variants that differ only in gallery keys share one front-end run per site, and variants
that differ only in gait-stage keys re-run just those stages on it (see ``runs``).

Auto-enrolment decides each track against the gallery as it is when the track ends, so its links
depend on the order in which the cameras' tracks arrive. ``enrol_orders`` (or ``--orders N``)
replays every variant's gallery in N more orders, each camera's clock shifted by a random offset of
up to ``max_offset_s`` (the same shifts for every variant), and reports the link F1 and identity
count over all orders beside the emitted order's: differences between variants smaller than that
spread are noise.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

from evaluation.identity.front_cache import front_end_run
from evaluation.identity.metrics import LinkScores, ProbeRanking, closed_set, open_set
from evaluation.identity.protocol import (
    SCORERS,
    auto_enrol_links,
    by_track,
    clean_only,
    closed_set_probes,
    probe_rankings,
    track_decision,
)
from evaluation.identity.runs import (
    EnrolOrders,
    FrontEndRun,
    follow_merges,
    gait_replayable,
    named_late,
    replay_gallery,
    rerun_gait_stages,
    split_overrides,
    with_shifted_clocks,
)
from evaluation.identity.sites import DEFAULT_CACHE, load_site, render_site
from evaluation.identity.truth import TrackKey, TrackTruth, match_tracks, people_seen, tracking_quality
from pipeline.config import read_yaml
from pipeline.messages import TrackWindow

log = logging.getLogger(__name__)
R = TypeVar("R")  # a probe's ranking: metrics.ProbeRanking, or protocol.Probe with its track keys

DEFAULT_BENCH = Path(__file__).resolve().parents[2] / "configs" / "bench" / "identity.yaml"
MASK_SOURCES = ("segmenter", "truth")
CLEAN_PURITY = 0.9  # least share of a track's frames on its person for the clean-track scores


@dataclass(frozen=True)
class Variant:
    """One row group of the table: overrides on top of the benchmark's, and the scorers to report.
    masks: "segmenter" (the configured segmentation stage) or "truth" (the site's ground-truth
    masks in its place: what perfect segmentation would give, ``truth_masks``)."""

    name: str
    overrides: tuple[str, ...] = ()
    closed_set: tuple[str, ...] = ("system",)
    masks: str = "segmenter"


@dataclass(frozen=True)
class BenchConfig:
    """pipeline: config name or path; overrides: applied to every variant; sites / quick_sites:
    (name, site config) pairs; far: open-set false-accept rate; min_iou / min_share: track matching;
    clean_purity: the least share of a track's frames on its person for the clean-track scores (what
    the matcher gives where the front end kept people apart); enrol_orders: auto-enrol replayed in
    other camera-clock orders."""

    pipeline: str
    overrides: tuple[str, ...]
    sites: tuple[tuple[str, dict], ...]
    quick_sites: tuple[tuple[str, dict], ...]
    variants: tuple[Variant, ...]
    far: float = 0.01
    min_iou: float = 0.5
    min_share: float = 0.5
    enrol_orders: EnrolOrders = EnrolOrders()
    clean_purity: float = CLEAN_PURITY

    @staticmethod
    def load(path: str | Path) -> BenchConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"benchmark config not found: {path}")
        data = read_yaml(path)  # a ``_base_`` file is merged under it, as with pipeline configs
        known = {"pipeline", "overrides", "sites", "quick_sites", "variants", "far", "track_match", "enrol_orders"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; expected some of {sorted(known)}")

        def sites(key: str) -> tuple[tuple[str, dict], ...]:
            return tuple((Path(s).stem, load_site(path.parent / s)) for s in data.get(key) or [])

        variants = []
        for i, v in enumerate(data.get("variants") or []):
            extra = sorted(set(v) - {"name", "overrides", "closed_set", "masks"})
            if extra or "name" not in v:
                raise ValueError(f"{path}: variants[{i}] needs a name and takes overrides, closed_set, masks "
                                 f"(got {sorted(v)})")
            masks = str(v.get("masks", "segmenter"))
            if masks not in MASK_SOURCES:
                raise ValueError(f"{path}: variants[{i}].masks: {masks!r}; choose from {list(MASK_SOURCES)}")
            scorers = tuple(v.get("closed_set") or ("system",))
            bad = sorted(set(scorers) - set(SCORERS))
            if bad:
                raise ValueError(f"{path}: variants[{i}].closed_set: unknown {bad}; choose from {list(SCORERS)}")
            variants.append(Variant(str(v["name"]), tuple(v.get("overrides") or ()), scorers, masks))
        if not variants:
            raise ValueError(f"{path}: no variants")
        match = data.get("track_match") or {}
        extra = sorted(set(match) - {"min_iou", "min_share", "clean_purity"})
        if extra:
            raise ValueError(f"{path}: track_match: unknown key(s) {extra}; expected min_iou, min_share, clean_purity")
        clean_purity = float(match.get("clean_purity", CLEAN_PURITY))
        if not 0.0 < clean_purity <= 1.0:
            raise ValueError(f"{path}: track_match.clean_purity must be in (0, 1], got {clean_purity}")
        return BenchConfig(str(data.get("pipeline") or "default"), tuple(data.get("overrides") or ()), sites("sites"),
                           sites("quick_sites"), tuple(variants), float(data.get("far", 0.01)),
                           float(match.get("min_iou", 0.5)), float(match.get("min_share", 0.5)),
                           EnrolOrders.from_dict(data.get("enrol_orders") or {}), clean_purity)


@dataclass
class Pool:
    """Probe rankings of one variant and scorer, pooled over sites, enrol cameras and folds."""

    closed: list[ProbeRanking] = field(default_factory=list)
    changed: list[ProbeRanking] = field(default_factory=list)
    known: list[ProbeRanking] = field(default_factory=list)
    unknown: list[ProbeRanking] = field(default_factory=list)

    def add(self, rankings: list[ProbeRanking], changed: list[ProbeRanking], enrolled: set[int]) -> None:
        """One enrol camera's probe rankings (``probe_rankings``) against a gallery of ``enrolled``."""
        self.closed.extend(p for p in rankings if p.identity in enrolled)
        self.changed.extend(changed)
        known, unknown = open_set_folds(rankings, enrolled)
        self.known.extend(known)
        self.unknown.extend(unknown)

    @staticmethod
    def merged(pools: list[Pool]) -> Pool:
        return Pool(*([p for pool in pools for p in getattr(pool, f.name)] for f in dataclasses.fields(Pool)))

    def same_clothes(self) -> list[ProbeRanking]:
        return [p for p in self.closed if not p.changed_clothes and p.relevant]


def open_set_folds(rankings: list[R], enrolled: set[int], identity: Callable[[R], int] = attrgetter("identity"),
                   without: Callable[[R, set[int]], R] = lambda p, held: p.without(held)) -> tuple[list[R], list[R]]:
    """(known, unknown) probes of two folds: each fold leaves half of the enrolled identities out of
    the gallery (by parity), so every probe is once known and once never enrolled; probes whose
    person the enrol camera never saw are never-enrolled probes too (counted once). identity: a
    probe's person; without: the probe ranked against the gallery without those people."""
    known, unknown = [], []
    natural = [p for p in rankings if identity(p) not in enrolled]
    for fold in (0, 1):
        held = {i for i in enrolled if i % 2 == fold}
        for p in rankings:
            if identity(p) in enrolled:
                (unknown if identity(p) in held else known).append(without(p, held))
        if fold == 0:
            unknown.extend(without(p, held) for p in natural)
    return known, unknown


@dataclass
class SiteScores:
    """One variant on one site: pooled probe rankings per scorer, auto-enrol links, the tracks' truth."""

    pools: dict[str, Pool]
    clean: dict[str, Pool]  # the same over the clean tracks alone
    links: LinkScores
    tracks: dict[TrackKey, TrackTruth]


def score_site(config, windows: list[TrackWindow], decided: list[TrackWindow], truth: dict, scorers: tuple[str, ...],
               tracks: dict[TrackKey, TrackTruth], batch_size: int = 8,
               clean_purity: float = CLEAN_PURITY) -> SiteScores:
    """Score one site: ``windows`` are the run's windows with embeddings (enrolled and probed
    through ``config``'s gallery stage, each camera in turn the enrol camera), ``decided`` the same
    windows with the identities the run decided online (auto-enrol links). The clean pools hold the
    same scores over the tracks that follow their person in at least ``clean_purity`` of their frames."""
    pools, clean_pools = {s: Pool() for s in scorers}, {s: Pool() for s in scorers}
    for camera in [c["name"] for c in truth["cameras"]]:
        probes = closed_set_probes(config, windows, tracks, camera, scorers, batch_size)
        gallery_keys = [k for k, t in tracks.items() if t.camera == camera and t.identity is not None]
        for scorer, found in probes.items():
            pools[scorer].add(*probe_rankings(found, tracks, gallery_keys), {tracks[k].identity for k in gallery_keys})
            clean, clean_keys = clean_only(found, tracks, gallery_keys, clean_purity)
            clean_pools[scorer].add(*probe_rankings(clean, tracks, clean_keys), {tracks[k].identity for k in clean_keys})
    return SiteScores(pools, clean_pools, auto_enrol_links(decided, tracks), tracks)


def _sum_links(scores: list[LinkScores]) -> dict[str, Any]:
    true = sum(s.pairs_true for s in scores)
    linked = sum(s.pairs_linked for s in scores)
    right = sum(s.pairs_right for s in scores)
    p = right / linked if linked else None
    r = right / true if true else None
    f1 = None if r is None else (0.0 if not p or not r else 2 * p * r / (p + r))
    return {"tracks": sum(s.tracks for s in scores), "pairs_true": true, "pairs_linked": linked, "pairs_right": right,
            "precision": _round(p), "recall": _round(r), "f1": _round(f1), "unnamed": sum(s.unnamed for s in scores)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": round(float(sum(values) / len(values)), 4), "min": min(values), "max": max(values)}


def order_spread(per_site: list[list[tuple[LinkScores, int]]]) -> dict[str, Any]:
    """Auto-enrol over emission orders: ``per_site[s][k]`` is site s's (links, identities) in order k
    (k = 0 as emitted); each order's links are pooled over the sites, then spread over the orders."""
    orders = [[site[k] for site in per_site] for k in range(min(len(site) for site in per_site))]
    pooled = [{**_sum_links([links for links, _ in order]), "identities": sum(n for _, n in order)} for order in orders]
    f1s = [p["f1"] for p in pooled if p["f1"] is not None]
    return {"count": len(pooled), "f1": _spread(f1s) if f1s else None,
            "identities": _spread([p["identities"] for p in pooled]), "per_order": pooled}


def summarise(name: str, overrides: list[str], sites: list[SiteScores], identities: int, people: int,
              far: float, masks: str = "segmenter",
              orders: list[list[tuple[LinkScores, int]]] | None = None) -> dict[str, Any]:
    """A variant's row group: closed-set and open-set scores per scorer, auto-enrol links, pooled over
    sites (and over emission orders, when ``orders`` has each site's replays in them)."""
    scorers = {}
    for scorer in sites[0].pools if sites else []:
        pool = Pool.merged([s.pools[scorer] for s in sites])
        clean = Pool.merged([s.clean[scorer] for s in sites])
        scorers[scorer] = {
            "same_clothes": closed_set(pool.same_clothes()).as_dict(),
            "changed_clothes": closed_set(pool.changed).as_dict(),
            "all": closed_set(pool.closed).as_dict(),
            "open_set": open_set(pool.known, pool.unknown, far).as_dict(),
            "clean_tracks": {
                "same_clothes": closed_set(clean.same_clothes()).as_dict(),
                "open_set": open_set(clean.known, clean.unknown, far).as_dict(),
            },
        }
    auto_enrol = {**_sum_links([s.links for s in sites]), "identities": identities, "people": people}
    if orders and len(orders[0]) > 1:
        auto_enrol["orders"] = order_spread(orders)
    return {"name": name, "overrides": overrides, "masks": masks, "closed_set": scorers, "auto_enrol": auto_enrol}


def run_site_front_end(bench: BenchConfig, variant: Variant, rendered, truth: dict,
                       reuse: bool = True) -> tuple[Any, FrontEndRun, dict[TrackKey, TrackTruth]]:
    """(config, front-end run, tracks matched to the truth) of one variant on one rendered site, the
    front end read from the cache when kept there (the whole chain before the gallery runs with the
    variant's settings; ``run_benchmark`` shares one front end between variants instead)."""
    from pipeline import app

    config = app.chosen_config(app.load(bench.pipeline, [*bench.overrides, *variant.overrides]))
    truth_masks = rendered.truth_path if variant.masks == "truth" else None
    run, _ = front_end_run(config, [str(v) for v in rendered.videos], rendered.folder, truth_masks, reuse=reuse)
    return config, run, match_tracks(run.windows, truth, bench.min_iou, bench.min_share)


def run_benchmark(bench: BenchConfig, quick: bool = False, cache: str | Path = DEFAULT_CACHE,
                  variants: list[str] | None = None, site_names: list[str] | None = None,
                  enrol_orders: EnrolOrders | None = None, reuse_front_end: bool = True) -> dict[str, Any]:
    """Render (or reuse) the sites, run every variant, score it; the result is JSON-ready.
    variants / site_names: run only those (None: all of the config, or its quick sites);
    enrol_orders: in place of the config's; reuse_front_end: read front-end runs kept by an earlier
    benchmark run with the same front end (``evaluation.identity.front_cache``); False runs them again."""
    from pipeline import app

    started = time.time()
    sites = bench.quick_sites if quick and bench.quick_sites else bench.sites
    if site_names is not None:
        every = {n: s for n, s in (*bench.sites, *bench.quick_sites)}
        unknown = sorted(set(site_names) - set(every))
        if unknown:
            raise ValueError(f"unknown site(s) {unknown}; the config has {sorted(every)}")
        sites = tuple((n, every[n]) for n in site_names)
    if not sites:
        raise ValueError("the benchmark config lists no sites")
    chosen = [v for v in bench.variants if variants is None or v.name in variants]
    missing = sorted(set(variants or []) - {v.name for v in bench.variants})
    if missing:
        raise ValueError(f"unknown variant(s) {missing}; the config has {[v.name for v in bench.variants]}")
    configs = {v.name: app.load(bench.pipeline, [*bench.overrides, *v.overrides]) for v in chosen}  # fail early
    # The detector each variant runs with (and its detector settings), chosen as a run chooses it.
    configs = {name: app.chosen_config(config) for name, config in configs.items()}
    orders = bench.enrol_orders if enrol_orders is None else enrol_orders
    scores: dict[str, list[SiteScores]] = defaultdict(list)
    identities: dict[str, int] = defaultdict(int)
    order_links: dict[str, list[list[tuple[LinkScores, int]]]] = defaultdict(list)
    site_rows = []
    for name, site in sites:
        t0 = time.time()
        rendered = render_site(name, site, cache)
        truth = rendered.truth()
        seen = people_seen(truth)
        shifts = orders.shifts([c["name"] for c in truth["cameras"]])
        row: dict[str, Any] = {"site": name, "folder": str(rendered.folder), "cameras": len(truth["cameras"]),
                               "people": len(seen), "visits": len(truth["visits"]), "frames": truth["n_frames"],
                               "render_or_load_s": round(time.time() - t0, 1), "front_end": [], "variants": {}}
        fronts: dict[tuple[str, ...], tuple[FrontEndRun, tuple[str, ...], dict[TrackKey, TrackTruth]]] = {}
        runs: dict[tuple[tuple[str, ...], tuple[str, ...]], FrontEndRun] = {}
        for variant in chosen:
            config = configs[variant.name]
            front_over, gait_over, _ = split_overrides([*bench.overrides, *variant.overrides])
            front_key = tuple(front_over) if gait_replayable(config) else (*front_over, *gait_over)
            if variant.masks == "truth":
                front_key = (*front_key, "masks=truth")
            if front_key not in fronts:
                log.info("site %s: front end %s", name, [*front_key, *gait_over] or "(defaults)")
                truth_masks = rendered.truth_path if variant.masks == "truth" else None
                run, cached = front_end_run(config, [str(v) for v in rendered.videos], rendered.folder, truth_masks,
                                            reuse=reuse_front_end)
                tracks = match_tracks(run.windows, truth, bench.min_iou, bench.min_share)
                fronts[front_key] = (run, tuple(gait_over), tracks)
                runs[(front_key, tuple(gait_over))] = run
                row["front_end"].append({"overrides": [*front_key, *gait_over], "cached": cached,
                                         "seconds": round(run.seconds, 1),
                                         "frames": run.frames, "windows": len(run.windows), "tracks": len(tracks),
                                         "tracks_matched": sum(t.identity is not None for t in tracks.values()),
                                         **tracking_quality(tracks.values()), "errors": run.errors})
            base, _, tracks = fronts[front_key]
            if (front_key, tuple(gait_over)) not in runs:
                log.info("site %s: gait stages again with %s", name, gait_over or "(defaults)")
                t1 = time.time()
                runs[(front_key, tuple(gait_over))] = rerun_gait_stages(config, base)
                row["front_end"].append({"overrides": [*front_key, *gait_over], "gait_stages_only": True,
                                         "seconds": round(time.time() - t1, 1)})
            run = runs[(front_key, tuple(gait_over))]
            t1 = time.time()
            decided, n_identities = replay_gallery(config, run, auto_enrol=True)
            site_scores = score_site(config, run.windows, decided, truth, variant.closed_set, tracks, run.batch_size,
                                     bench.clean_purity)
            scores[variant.name].append(site_scores)
            identities[variant.name] += n_identities
            row["variants"][variant.name] = {"links": site_scores.links.as_dict(), "identities": n_identities,
                                             "gallery_s": round(time.time() - t1, 1)}
            replays = [(site_scores.links, n_identities)]
            for offsets in shifts:
                shifted, n_shifted = replay_gallery(config, with_shifted_clocks(run, offsets), auto_enrol=True)
                replays.append((auto_enrol_links(shifted, tracks), n_shifted))
            order_links[variant.name].append(replays)
            if shifts:
                row["variants"][variant.name]["orders"] = [
                    {"offsets_s": {c: round(o, 2) for c, o in offsets.items()}, "f1": links.f1, "identities": n}
                    for offsets, (links, n) in zip([{}, *shifts], replays)]
            log.info("site %s, variant %s: link F1 %s, %d identities for %d people (%.0f s)", name, variant.name,
                     site_scores.links.f1, n_identities, len(seen), time.time() - t1)
        site_rows.append(row)
    people = sum(r["people"] for r in site_rows)
    results = [summarise(v.name, [*bench.overrides, *v.overrides], scores[v.name], identities[v.name], people, bench.far,
                         v.masks, order_links[v.name]) for v in chosen]
    return {"format": "gaitscope-identity-benchmark/1", "quick": quick, "pipeline": bench.pipeline, "far": bench.far,
            "track_match": {"min_iou": bench.min_iou, "min_share": bench.min_share, "clean_purity": bench.clean_purity},
            "enrol_orders": dataclasses.asdict(orders), "seconds": round(time.time() - started, 1),
            "sites": site_rows, "variants": results}


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _over_orders(orders: dict | None, key: str, digits: int) -> str:
    """mean (min-max) over the emission orders; identity counts are whole numbers at the ends."""
    spread = (orders or {}).get(key)
    if not spread:
        return "-"
    ends = digits if key == "f1" else 0
    return f"{spread['mean']:.{digits}f} ({spread['min']:.{ends}f}-{spread['max']:.{ends}f})"


def _clean_cell(clean: dict) -> str:
    same, opened = clean["same_clothes"], clean["open_set"]
    return f"{_f(same['rank1'])} ({same['probes']}), {_f(opened['dir'])}"


def markdown_table(result: dict[str, Any]) -> str:
    """One row per variant and closed-set scorer; the auto-enrol columns on each variant's first row."""
    far = result["far"]
    clean = result["track_match"]["clean_purity"]
    head = ["variant", "scorer", "R1 same", "mAP same", "R1 changed", "mAP changed", f"DIR@{far:g}FAR",
            f"clean tracks (>= {clean:g}): R1 same, DIR", "coverage",
            "link P", "link R", "link F1", "identities / people", "unnamed tracks"]
    with_orders = any("orders" in v["auto_enrol"] for v in result["variants"])
    if with_orders:
        count = max(v["auto_enrol"].get("orders", {}).get("count", 0) for v in result["variants"])
        head += [f"link F1, {count} orders", f"identities, {count} orders"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in result["variants"]:
        a = v["auto_enrol"]
        for i, (scorer, s) in enumerate(v["closed_set"].items()):
            same, changed, opened = s["same_clothes"], s["changed_clothes"], s["open_set"]
            cells = [v["name"] if i == 0 else "", scorer,
                     f"{_f(same['rank1'])} ({same['probes']})", _f(same["map"]),
                     f"{_f(changed['rank1'])} ({changed['probes']})", _f(changed["map"]),
                     _f(opened["dir"]), _clean_cell(s["clean_tracks"]), _f(s["all"]["coverage"])]
            cells += ([_f(a["precision"]), _f(a["recall"]), _f(a["f1"]), f"{a['identities']} / {a['people']}",
                       f"{a['unnamed']} / {a['tracks']}"] if i == 0 else [""] * 5)
            if with_orders:
                cells += [_over_orders(a.get("orders"), "f1", 2), _over_orders(a.get("orders"), "identities", 1)] \
                    if i == 0 else ["", ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def score_run(config, track_files: list[Path], truth: dict, scorers: tuple[str, ...] = ("system", "gait", "appearance"),
              far: float = 0.01, min_iou: float = 0.5, min_share: float = 0.5, name: str = "run",
              merges: list[dict] | None = None, named: list[dict] | None = None,
              clean_purity: float = CLEAN_PURITY) -> dict[str, Any]:
    """Score a finished run's records (made with ``export.save_embeddings=true``) against a rendered
    site's ground truth, as one benchmark variant: auto-enrol links from the identities the run
    decided (with the tracks it ``named`` on a second look, as the run summary's
    ``outcomes.gallery.named`` lists them, followed through the gallery's ``merges``, as
    ``Gallery.merges`` lists them), closed and open set through ``config``'s gallery stage on fresh
    galleries."""
    from evaluation.identity.records import windows_from_records

    windows = follow_merges(named_late(windows_from_records(track_files), named or []), merges or [])
    tracks = match_tracks(windows, truth, min_iou, min_share)
    site = score_site(config, windows, windows, truth, scorers, tracks, clean_purity=clean_purity)
    decided = {track_decision(ws) for ws in by_track(windows).values()} - {None}
    result = summarise(name, [], [site], len(decided), len(people_seen(truth)), far)
    return {"far": far, "track_match": {"min_iou": min_iou, "min_share": min_share, "clean_purity": clean_purity},
            "variants": [result], "tracks": len(tracks),
            "tracks_matched": sum(t.identity is not None for t in tracks.values())}
