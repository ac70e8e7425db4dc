"""The run report: one self-contained HTML page of who was seen where, built from a run's output folder.

Everything comes from what the run wrote: the JSON Lines records (``tracks/*.jsonl``, and
``*.jsonl.partial`` of unfinished sources, marked as such), ``summary.json`` and the pictures the
records point to (``media/``). Images are embedded as data URIs and the page needs no network, so
it opens from disk or as a mail attachment.

One card per identity: its best crops, a silhouette strip, where and when it was seen (a timeline
per camera), every sighting (camera, time, track, how it was matched and how sure, the re-ranked
shortlist) and its attributes. A track that was never identified gets a card of its own as an
unknown track. A section per source gives its status, gaps and errors; a filter box narrows the
cards by identity, camera or attribute.

Limits that keep the page small on long runs (pictures only; every sighting is always listed):
`ReportLimits`.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.messages import merged_names

log = logging.getLogger("gaitscope")

# Identity fields shown in their own columns; any other field (e.g. per-modality scores) is listed as-is.
_KNOWN_IDENTITY_FIELDS = {"id", "modality", "confidence", "distance", "enrolled", "candidates"}


@dataclass(frozen=True)
class ReportLimits:
    """How many pictures the report embeds.

    crops_per_identity: appearance crops on an identity's card (from its sightings with the largest boxes).
    strips_per_identity: silhouette strips on an identity's card.
    unknown_cards_with_pictures: unknown tracks whose cards carry pictures (the longest first); the
        rest are listed without pictures.
    shortlist: candidates shown per sighting.
    """

    crops_per_identity: int = 6
    strips_per_identity: int = 2
    unknown_cards_with_pictures: int = 200
    shortlist: int = 5


@dataclass
class Sighting:
    """One track of one source, as its records describe it (the final record decides)."""

    source: str
    camera: str
    track_id: int
    start_s: float
    end_s: float
    identity: str | None
    match: dict[str, Any] | None  # the deciding record's "identity" object, as written
    window_ids: Counter  # identity decisions over all windows of the track (None = unknown)
    windows: int
    final: bool
    route: str | None
    walking_fraction: float | None
    attributes: dict[str, dict[str, Any]]
    crops: list[str] = field(default_factory=list)
    silhouettes: str | None = None
    ratio_mean: float = 0.0


@dataclass
class SourceStatus:
    source: str
    camera: str
    status: str
    frames: int | None
    tracks: int
    gaps: list[str]
    errors: list[str]


@dataclass
class ReportData:
    sightings: list[Sighting]
    sources: list[SourceStatus]
    summary: dict[str, Any]

    def identities(self) -> dict[str, list[Sighting]]:
        by: dict[str, list[Sighting]] = defaultdict(list)
        for s in self.sightings:
            if s.identity:
                by[s.identity].append(s)
        return {name: sorted(v, key=lambda s: (s.start_s, s.camera, s.track_id)) for name, v in sorted(by.items())}

    def unknown(self) -> list[Sighting]:
        return [s for s in self.sightings if not s.identity]


def camera_name(source: str) -> str:
    """A short name for a source: the file's stem, or a stream's host and path."""
    if "://" in source:
        rest = source.split("://", 1)[1].split("?")[0]
        return rest.split("@")[-1]
    return Path(source).stem or source


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def load_report_data(out_dir: str | Path) -> ReportData:
    """Read a run's output folder: records, events, summary."""
    out_dir = Path(out_dir)
    tracks_dir = out_dir / "tracks"
    if not tracks_dir.is_dir():
        raise FileNotFoundError(f"{out_dir} holds no run output (no tracks/ folder)")
    summary_path = out_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    by_track: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    partial_sources: set[str] = set()
    seen_sources: list[str] = []
    files = sorted(tracks_dir.glob("*.jsonl")) + sorted(tracks_dir.glob("*.jsonl.partial"))
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("report: %s line %d is not JSON; skipped", path.name, number)
                continue
            source = str(record.get("source", ""))
            if source not in seen_sources:
                seen_sources.append(source)
            if path.name.endswith(".partial"):
                partial_sources.add(source)
            if record.get("type") == "track":
                by_track[(source, int(record.get("track_id", -1)))].append(record)
            elif record.get("type") == "event":
                events[source].append(record)
    sightings = [_sighting(source, track_id, records) for (source, track_id), records in by_track.items()]
    renamed = merged_names(_merges(by_track.values(), summary))
    sightings = [dataclasses.replace(s, identity=renamed.get(s.identity, s.identity)) for s in sightings]
    sightings.sort(key=lambda s: (s.camera, s.start_s, s.track_id))

    statuses: list[SourceStatus] = []
    listed = {entry.get("source"): entry for entry in summary.get("sources", []) if isinstance(entry, dict)}
    for source in list(listed) + [s for s in seen_sources if s not in listed]:
        entry = listed.get(source, {})
        status = entry.get("status") or ("incomplete (.partial)" if source in partial_sources else "done")
        source_events = events.get(source, [])
        errors = list(entry.get("errors") or [e.get("message", "") for e in source_events if e.get("kind") == "error"])
        statuses.append(
            SourceStatus(
                source=source,
                camera=camera_name(source),
                status=status,
                frames=entry.get("frames"),
                tracks=sum(1 for s in sightings if s.source == source),
                gaps=[e.get("message", "") for e in source_events if e.get("kind") in ("gap", "reconnected")],
                errors=errors,
            )
        )
    return ReportData(sightings, statuses, summary)


def _merges(tracks: Iterable[list[dict[str, Any]]], summary: dict[str, Any]) -> list[dict[str, str]]:
    """Identity merges of the run: those a track caused (its records' ``identity.merged``), then
    those made when the run ended (the summary's ``outcomes.gallery.merged``)."""
    merges = []
    for records in tracks:
        for r in records:
            match = r.get("identity") if isinstance(r.get("identity"), dict) else {}
            merges += [{"kept": match["id"], "absorbed": a} for a in match.get("merged") or [] if match.get("id")]
    outcome = ((summary.get("outcomes") or {}).get("gallery") or {}).get("merged") or []
    return merges + [m for m in outcome if isinstance(m, dict) and "kept" in m and "absorbed" in m]


def _sighting(source: str, track_id: int, records: list[dict[str, Any]]) -> Sighting:
    records = sorted(records, key=lambda r: (bool(r.get("final")), r.get("window_index", 0)))
    deciding = records[-1]  # the final record when there is one
    starts = [t["start"] for r in records if isinstance(t := r.get("time_s"), dict) and "start" in t]
    ends = [t["end"] for r in records if isinstance(t := r.get("time_s"), dict) and "end" in t]
    match = deciding.get("identity") if isinstance(deciding.get("identity"), dict) else None
    window_ids = Counter(
        (r["identity"] or {}).get("id") if isinstance(r.get("identity"), dict) else None for r in records
    )
    gait = deciding.get("gait") if isinstance(deciding.get("gait"), dict) else {}
    media = next((r["media"] for r in reversed(records) if isinstance(r.get("media"), dict)), {})
    attributes = deciding.get("attributes") if isinstance(deciding.get("attributes"), dict) else {}
    return Sighting(
        source=source,
        camera=camera_name(source),
        track_id=track_id,
        start_s=min(starts, default=0.0),
        end_s=max(ends, default=0.0),
        identity=(match or {}).get("id") or None,
        match=match,
        window_ids=window_ids,
        windows=len(records),
        final=bool(deciding.get("final")),
        route=gait.get("route"),
        walking_fraction=_float(gait.get("walking_fraction")),
        attributes=attributes,
        crops=[c for c in media.get("crops", []) if isinstance(c, str)],
        silhouettes=media.get("silhouettes") if isinstance(media.get("silhouettes"), str) else None,
        ratio_mean=_float(deciding.get("ratio_mean")) or 0.0,
    )


def mean_attributes(sightings: list[Sighting]) -> dict[str, tuple[str, float]]:
    """Per attribute: the label with the highest mean probability over the sightings, and that mean."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: Counter = Counter()
    for s in sightings:
        for name, prediction in s.attributes.items():
            if not isinstance(prediction, dict):
                continue
            probabilities = prediction.get("probabilities") or {prediction.get("label"): prediction.get("probability")}
            counts[name] += 1
            for label, p in probabilities.items():
                if label is not None and _float(p) is not None:
                    sums[name][str(label)] += float(p)
    result = {}
    for name, per_label in sorted(sums.items()):
        label, total = max(per_label.items(), key=lambda kv: kv[1])
        result[name] = (label, total / counts[name])
    return result


# -- HTML -----------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f4f6;color:#222}
header{background:#1f2430;color:#fff;padding:12px 20px;position:sticky;top:0;z-index:2}
header h1{font-size:18px;margin:0 0 6px}
header input[type=search]{width:min(520px,90%);padding:6px 8px;font-size:14px;border-radius:4px;border:0}
header label{margin-left:12px;font-size:13px}
main{padding:12px 20px}
.stats{color:#ccd;font-size:12px;margin-top:4px}
.card{background:#fff;border-radius:6px;box-shadow:0 1px 3px #0002;margin:0 0 14px;padding:12px 14px;
  border-left:8px solid var(--c)}
.card h2{font-size:16px;margin:0 0 6px}
.card.unknown{border-left-style:dashed}
.pics{display:flex;gap:6px;align-items:flex-end;flex-wrap:wrap;margin:6px 0}
.pics img.crop{height:128px;image-rendering:auto;border:1px solid #ccc}
.pics img.sil{height:64px;image-rendering:pixelated;border:1px solid #ccc;background:#000}
.chips span{display:inline-block;background:#eef;border-radius:10px;padding:1px 8px;margin:2px;font-size:12px}
table{border-collapse:collapse;font-size:12px;margin-top:6px;width:100%}
th,td{border-bottom:1px solid #e4e4e8;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#fafafc}
.muted{color:#888}
svg.timeline{display:block;margin:6px 0;background:#fafafc;border:1px solid #e4e4e8}
.hidden{display:none}
section h2{font-size:17px}
"""

_JS = """
const box=document.getElementById('filter'), unk=document.getElementById('show-unknown');
function apply(){
  const terms=box.value.toLowerCase().split(/\\s+/).filter(t=>t);
  let shown=0;
  for(const card of document.querySelectorAll('.card')){
    const text=card.dataset.filter||'';
    const ok=terms.every(t=>text.includes(t)) && (unk.checked || !card.classList.contains('unknown'));
    card.classList.toggle('hidden',!ok); if(ok) shown++;
  }
  document.getElementById('shown').textContent=shown;
}
if(location.hash.length>1) box.value=decodeURIComponent(location.hash.slice(1));  // report.html#female links a filter
box.addEventListener('input',apply); unk.addEventListener('change',apply); apply();
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _color(name: str | None) -> str:
    from pipeline.video_writer import UNKNOWN_COLOR, identity_color

    b, g, r = identity_color(name) if name else UNKNOWN_COLOR
    return f"#{r:02x}{g:02x}{b:02x}"


class _Images:
    """Embeds the pictures the records point to (read once; a missing file is left out with a note)."""

    _MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir.resolve()
        self.missing = 0
        self.embedded = 0

    def tag(self, relative: str, css_class: str, title: str) -> str:
        path = (self.out_dir / relative).resolve()
        mime = self._MIME.get(path.suffix.lower())
        if mime is None or not path.is_relative_to(self.out_dir) or not path.is_file():
            self.missing += 1
            return ""
        self.embedded += 1
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img class="{css_class}" src="data:{mime};base64,{data}" alt="{_esc(title)}" title="{_esc(title)}">'


def _fmt_time(seconds: float) -> str:
    minutes, secs = divmod(max(0.0, seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}"


def _timeline(sightings: list[Sighting], cameras: list[str], horizon_s: float, color: str) -> str:
    """An SVG strip per camera with a bar per sighting (times are seconds from each source's start)."""
    row, label_w, width = 16, 110, 640
    height = row * len(cameras) + 16
    scale = (width - label_w - 10) / max(horizon_s, 1e-6)
    parts = [f'<svg class="timeline" width="{width}" height="{height}" role="img" aria-label="timeline">']
    for i, camera in enumerate(cameras):
        y = i * row + 2
        parts.append(f'<text x="4" y="{y + 11}" font-size="11" fill="#555">{_esc(camera[:16])}</text>')
        parts.append(f'<line x1="{label_w}" y1="{y + 7}" x2="{width - 10}" y2="{y + 7}" stroke="#ddd"/>')
    for s in sightings:
        y = cameras.index(s.camera) * row + 2
        x = label_w + s.start_s * scale
        w = max(2.0, (s.end_s - s.start_s) * scale)
        parts.append(
            f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="10" rx="2" fill="{color}" '
            f'stroke="#333" stroke-width="0.5"><title>{_esc(s.camera)} #{s.track_id} '
            f"{_fmt_time(s.start_s)}-{_fmt_time(s.end_s)}</title></rect>"
        )
    axis_y = len(cameras) * row + 12
    for k in range(5):
        t = horizon_s * k / 4
        anchor = ("start", "middle", "middle", "middle", "end")[k]
        parts.append(
            f'<text x="{label_w + t * scale:.1f}" y="{axis_y}" font-size="10" fill="#888" '
            f'text-anchor="{anchor}">{_fmt_time(t)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _shortlist(match: dict[str, Any] | None, limit: int) -> str:
    if not match or not isinstance(match.get("candidates"), list):
        return '<span class="muted">-</span>'
    items = []
    for rank, c in enumerate(match["candidates"][:limit]):
        if not isinstance(c, dict):
            continue
        distance = _float(c.get("distance"))
        moved = c.get("initial_rank")
        arrow = f" (was {int(moved) + 1})" if isinstance(moved, int) and moved != rank else ""
        items.append(f"{rank + 1}. {_esc(c.get('id'))} {'' if distance is None else f'{distance:.3f}'}{arrow}")
    return "<br>".join(items) or '<span class="muted">empty</span>'


def _extras(match: dict[str, Any] | None) -> str:
    """Identity fields beyond the known ones (e.g. per-modality scores), shown as written."""
    if not match:
        return ""
    extra = {k: v for k, v in match.items() if k not in _KNOWN_IDENTITY_FIELDS}
    if not extra:
        return ""
    return "<br>".join(
        f"{_esc(k)}: {_esc(json.dumps(v, separators=(',', ':')))[:200]}" for k, v in sorted(extra.items())
    )


def _sighting_rows(sightings: list[Sighting], limits: ReportLimits) -> str:
    rows = [
        "<table><tr><th>camera</th><th>start</th><th>end</th><th>track</th><th>matched by</th><th>confidence</th>"
        "<th>shortlist (re-ranked)</th><th>windows</th><th>route</th><th>more</th></tr>"
    ]
    for s in sightings:
        m = s.match or {}
        confidence = _float(m.get("confidence"))
        how = _esc(m.get("modality") or "-") + (" (enrolled here)" if m.get("enrolled") else "")
        decisions = ", ".join(f"{_esc(k or 'unknown')}&times;{n}" for k, n in s.window_ids.most_common())
        route = _esc(s.route or "-") + ("" if s.walking_fraction is None else f" ({s.walking_fraction:.0%} walking)")
        rows.append(
            f'<tr class="sighting" data-source="{_esc(s.source)}" data-track="{s.track_id}" '
            f'data-identity="{_esc(s.identity or "")}" data-start="{s.start_s}" data-end="{s.end_s}">'
            f"<td>{_esc(s.camera)}</td><td>{_fmt_time(s.start_s)}</td><td>{_fmt_time(s.end_s)}</td>"
            f"<td>#{s.track_id}{'' if s.final else ' <span class=muted>(open)</span>'}</td><td>{how}</td>"
            f"<td>{'-' if confidence is None else f'{confidence:.2f}'}</td>"
            f"<td>{_shortlist(s.match, limits.shortlist)}</td>"
            f"<td>{s.windows}: {decisions}</td><td>{route}</td><td>{_extras(s.match)}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _card(
    title: str,
    identity: str | None,
    sightings: list[Sighting],
    cameras: list[str],
    horizon_s: float,
    images: _Images,
    limits: ReportLimits,
    pictures: bool,
) -> str:
    color = _color(identity)
    attributes = mean_attributes(sightings)
    pics: list[str] = []
    if pictures:
        by_size = sorted(sightings, key=lambda s: -s.ratio_mean)
        crops = [(c, s) for s in by_size for c in s.crops][: limits.crops_per_identity]
        pics += [images.tag(c, "crop", f"{s.camera} #{s.track_id}") for c, s in crops]
        walkers = sorted((s for s in sightings if s.silhouettes), key=lambda s: -(s.walking_fraction or 0.0))
        pics += [
            images.tag(s.silhouettes, "sil", f"silhouettes {s.camera} #{s.track_id}")
            for s in walkers[: limits.strips_per_identity]
        ]
    chips = "".join(f"<span>{_esc(name)}: {_esc(label)} {p:.2f}</span>" for name, (label, p) in attributes.items())
    seen_on = sorted({s.camera for s in sightings})
    filter_text = " ".join(
        [identity or "unknown", *seen_on, *(f"{n}:{lab} {n}={lab} {lab}" for n, (lab, _) in attributes.items())]
    )
    kind = "identity" if identity else "unknown"
    first, last = min(s.start_s for s in sightings), max(s.end_s for s in sightings)
    return (
        f'<div class="card {kind}" style="--c:{color}" data-identity="{_esc(identity or "")}" '
        f'data-filter="{_esc(filter_text.lower())}">'
        f"<h2>{_esc(title)}</h2>"
        f'<div class="muted">{len(sightings)} sighting(s) on {len(seen_on)} camera(s): {_esc(", ".join(seen_on))}; '
        f"{_fmt_time(first)} to {_fmt_time(last)}</div>"
        f'<div class="pics">{"".join(pics)}</div>'
        f'<div class="chips">{chips or "<span class=muted>no attributes</span>"}</div>'
        f"{_timeline(sightings, cameras, horizon_s, color)}"
        f"{_sighting_rows(sightings, limits)}</div>"
    )


def _sources_table(sources: list[SourceStatus]) -> str:
    rows = ["<table><tr><th>source</th><th>status</th><th>frames</th><th>tracks</th><th>gaps</th><th>errors</th></tr>"]
    for s in sources:
        rows.append(
            f'<tr class="source"><td title="{_esc(s.source)}">{_esc(s.camera)}</td><td>{_esc(s.status)}</td>'
            f"<td>{'-' if s.frames is None else s.frames}</td><td>{s.tracks}</td>"
            f"<td>{'<br>'.join(map(_esc, s.gaps)) or '-'}</td><td>{'<br>'.join(map(_esc, s.errors)) or '-'}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def render_report(data: ReportData, out_dir: Path, limits: ReportLimits | None = None) -> str:
    """The report page for ``data`` (images from ``out_dir``)."""
    limits = limits or ReportLimits()
    images = _Images(out_dir)
    cameras = sorted({s.camera for s in data.sightings} | {s.camera for s in data.sources})
    horizon = max((s.end_s for s in data.sightings), default=1.0)
    identities = data.identities()
    cards = [
        _card(name, name, sightings, cameras, horizon, images, limits, True) for name, sightings in identities.items()
    ]
    unknown = sorted(data.unknown(), key=lambda s: -(s.end_s - s.start_s))
    for i, s in enumerate(unknown):
        cards.append(
            _card(
                f"unknown track: {s.camera} #{s.track_id}",
                None,
                [s],
                cameras,
                horizon,
                images,
                limits,
                i < limits.unknown_cards_with_pictures,
            )
        )
    summary = data.summary
    run_line = (
        f"{len(identities)} identities, {len(unknown)} unknown track(s), {len(data.sightings)} sighting(s), "
        f"{len(data.sources)} source(s)"
    )
    if summary.get("frames_total") is not None:
        run_line += f"; {summary['frames_total']} frames in {summary.get('seconds', 0):.0f} s"
    note = (
        f'<p class="muted">{images.missing} picture(s) named in the records were not found.</p>'
        if images.missing
        else ""
    )
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>gaitscope report: {_esc(out_dir.name)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>gaitscope report &mdash; {_esc(out_dir.name)}</h1>"
        '<input id="filter" type="search" placeholder="filter: identity, camera, attribute (e.g. female backpack)">'
        '<label><input id="show-unknown" type="checkbox" checked> unknown tracks</label>'
        f'<div class="stats">{_esc(run_line)}; showing <span id="shown"></span> card(s). '
        "Times are seconds from the start of each source.</div></header><main>"
        f'<section id="sources"><h2>Sources</h2>{_sources_table(data.sources)}</section>'
        f'<section id="people"><h2>People</h2>{note}{"".join(cards) or "<p>No person was tracked.</p>"}</section>'
        f"</main><script>{_JS}</script></body></html>"
    )


def write_report(out_dir: str | Path, path: str | Path | None = None, limits: ReportLimits | None = None) -> Path:
    """Write ``out_dir/report.html`` (or ``path``) for a run's output folder; returns its path."""
    out_dir = Path(out_dir)
    data = load_report_data(out_dir)
    target = Path(path) if path is not None else out_dir / "report.html"
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(render_report(data, out_dir, limits), encoding="utf-8")
    tmp.replace(target)
    return target
