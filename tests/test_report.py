"""The HTML report on a rendered two-camera site: identities, pictures, sightings against the records.

The site is rendered and encoded by the synthetic walker generator and runs through the whole
default chain with an auto-enrolling gallery; the page is parsed and, where Debian's Chromium is
installed, rendered headless and checked to be a real picture.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections import defaultdict
from html.parser import HTMLParser

import cv2
import jsonschema
import numpy as np
import pytest

from cli.main import main as cli_main
from pipeline import app
from pipeline.export import SCHEMA_PATH
from pipeline.report import ReportLimits, load_report_data, write_report
from tests.helpers import PROJECT_ROOT


class ReportPage(HTMLParser):
    """Cards, sighting rows, images and outside references of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, str]] = []
        self.sightings: list[dict[str, str]] = []
        self.images: list[tuple[str, str]] = []  # (card identity, src)
        self.sources: int = 0
        self.external: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "div" and "card" in classes:
            self.cards.append(a)
        elif tag == "tr" and "sighting" in classes:
            self.sightings.append(a)
        elif tag == "tr" and "source" in classes:
            self.sources += 1
        elif tag == "img":
            self.images.append((self.cards[-1].get("data-identity", ""), a.get("src", "")))
        elif tag == "script":
            self.scripts += 1
            if a.get("src"):
                self.external.append(a["src"])
        for key in ("href", "src"):
            value = a.get(key) or ""
            if value.startswith(("http:", "https:", "//")):
                self.external.append(value)


@pytest.fixture(scope="module")
def site_run(tmp_path_factory):
    import yaml

    from synth.scene import SiteConfig, write_site

    folder = tmp_path_factory.mktemp("site")
    site = SiteConfig.from_dict(
        yaml.safe_load((PROJECT_ROOT / "configs" / "synth" / "two_camera_site.yaml").read_text())
    )
    write_site(site, folder / "scene")
    out = folder / "out"
    config = app.load(
        "default", [f"gallery.gallery={folder / 'gallery'}", "gallery.auto_enrol=true", "runner.progress=false"]
    )
    app.run([str(folder / "scene")], out, config, report=True)
    return out


def track_records(out):
    return [
        json.loads(line)
        for path in sorted((out / "tracks").glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if '"type":"track"' in line
    ]


def test_report_shows_every_track_of_the_records_with_decodable_pictures(site_run):
    out = site_run
    page_path = out / "report.html"
    assert page_path.is_file()
    page = ReportPage()
    page.feed(page_path.read_text(encoding="utf-8"))
    assert not page.external, f"the report refers to the network: {page.external[:3]}"
    assert page.scripts == 1 and page.sources == 2

    records = track_records(out)
    schema = json.loads(SCHEMA_PATH.read_text())
    for record in records:
        jsonschema.validate(record, schema)
    by_track = defaultdict(list)
    for r in records:
        by_track[(r["source"], r["track_id"])].append(r)
    assert by_track, "no person was tracked on the rendered site"

    # One sighting row per track, with the final record's identity and the track's time span.
    rows = {(row["data-source"], int(row["data-track"])): row for row in page.sightings}
    assert len(rows) == len(page.sightings) == len(by_track)
    for key, recs in by_track.items():
        final = next(r for r in recs if r["final"])
        row = rows[key]
        assert row["data-identity"] == ((final["identity"] or {}).get("id") or "")
        assert float(row["data-start"]) == min(r["time_s"]["start"] for r in recs)
        assert float(row["data-end"]) == max(r["time_s"]["end"] for r in recs)

    # A card per identity and one per unknown track.
    identities = {(next(r for r in recs if r["final"])["identity"] or {}).get("id") for recs in by_track.values()}
    named = sorted(i for i in identities if i)
    assert named, "auto-enrol named nobody"
    cards = [c.get("data-identity", "") for c in page.cards]
    assert sorted(c for c in cards if c) == named
    unknown_tracks = sum(
        1 for recs in by_track.values() if not (next(r for r in recs if r["final"])["identity"] or {}).get("id")
    )
    assert cards.count("") == unknown_tracks

    # Every identity card carries crops and a silhouette strip, all decodable images.
    per_card = defaultdict(list)
    for identity, src in page.images:
        assert src.startswith(("data:image/jpeg;base64,", "data:image/png;base64,"))
        image = cv2.imdecode(np.frombuffer(base64.b64decode(src.split(",", 1)[1]), np.uint8), cv2.IMREAD_UNCHANGED)
        assert image is not None and image.size > 0 and image.std() > 0
        per_card[identity].append(image.shape)
    for name in named:
        shapes = per_card[name]
        assert any(s[:2] == (128, 64) for s in shapes), f"{name}: no appearance crop"
        assert any(s[0] == 68 for s in shapes), f"{name}: no silhouette strip"  # 64 px + padding
        assert len([s for s in shapes if s[:2] == (128, 64)]) <= ReportLimits().crops_per_identity


def test_report_verb_rebuilds_the_page_and_limits_pictures(site_run, tmp_path, capsys):
    target = tmp_path / "small.html"
    assert (
        cli_main(
            [
                "report",
                str(site_run),
                "--output",
                str(target),
                "--crops-per-identity",
                "1",
                "--strips-per-identity",
                "0",
                "--unknown-with-pictures",
                "0",
            ]
        )
        == 0
    )
    assert "report:" in capsys.readouterr().out
    page = ReportPage()
    page.feed(target.read_text(encoding="utf-8"))
    named = {c["data-identity"] for c in page.cards if c.get("data-identity")}
    assert {identity for identity, _ in page.images} == named  # unknown cards carry none
    assert len(page.images) == len(named)
    data = load_report_data(site_run)
    assert len(page.sightings) == len(data.sightings)
    assert cli_main(["report", str(tmp_path / "nothing-here")]) == 2


def test_report_reads_identity_fields_it_does_not_know(tmp_path):
    """Records with extra identity fields (per-modality scores) or no identity at all still report."""
    tracks = tmp_path / "tracks"
    tracks.mkdir()
    base = {
        "type": "track",
        "schema_version": "1.0",
        "source": "/v/cam1.mp4",
        "window_index": 0,
        "final": True,
        "frames": {"first": 0, "last": 9, "count": 10},
        "frame_size": [240, 320],
        "ratio_mean": 1.5,
        "gait": None,
        "attributes": None,
        "model_versions": {},
        "errors": [],
    }
    fused = dict(
        base,
        track_id=1,
        time_s={"start": 0.0, "end": 2.0},
        identity={
            "id": "ann",
            "modality": "fused",
            "confidence": 0.9,
            "distance": 0.2,
            "enrolled": False,
            "candidates": [],
            "scores": {"gait": 0.7, "appearance": 0.4},
        },
    )
    unknown = dict(base, track_id=2, time_s={"start": 1.0, "end": 3.0}, identity=None)
    (tracks / "cam1-0000.jsonl").write_text("\n".join(json.dumps(r) for r in (fused, unknown)) + "\n")
    page_text = write_report(tmp_path).read_text()
    page = ReportPage()
    page.feed(page_text)
    assert [c.get("data-identity") for c in page.cards] == ["ann", ""]
    assert "fused" in page_text and "scores" in page_text and "appearance" in page_text


def test_headless_chromium_renders_a_real_page(site_run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,1600",
            f"--screenshot={shot}",
            (site_run / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    image = cv2.imread(str(shot))
    assert image is not None, "Chromium wrote no screenshot"
    assert image.shape[:2] == (1600, 1280)
    assert image.std() > 20  # not a blank page
    colours = np.unique(image.reshape(-1, 3) // 16, axis=0)
    assert len(colours) > 100  # text, pictures and coloured bars, not a flat error page


def test_filter_box_narrows_the_cards_in_chromium(site_run):
    """The inline script hides the cards that do not match (the filter can come from the URL's #fragment)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    page = ReportPage()
    page.feed((site_run / "report.html").read_text(encoding="utf-8"))
    name = next(c["data-identity"] for c in page.cards if c.get("data-identity"))
    uri = (site_run / "report.html").as_uri() + "#" + name
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", uri],
                         capture_output=True, text=True, timeout=120, check=False).stdout
    rendered = ReportPage()
    rendered.feed(dom)
    visible = [c.get("data-identity") for c in rendered.cards if "hidden" not in c.get("class", "").split()]
    assert visible == [name]
    assert len(rendered.cards) == len(page.cards)


def test_report_lists_tracks_under_the_identity_a_merge_kept(tmp_path):
    """A track decided as an identity that was later merged away (by another track, or when the run
    ended) is shown on the card of the identity it lives on in."""
    from pipeline.report import load_report_data

    tracks = tmp_path / "tracks"
    tracks.mkdir()

    def record(track: int, identity: str, merged: list[str]) -> dict:
        return {"type": "track", "source": "/v/cam1.mp4", "track_id": track, "window_index": 0, "final": True,
                "time_s": {"start": float(track), "end": track + 1.0},
                "identity": {"id": identity, "modality": "fused", "confidence": 0.9, "merged": merged}}

    records = [record(1, "person-1", []), record(2, "person-2", []), record(3, "person-1", ["person-3"]),
               record(4, "person-3", []), record(5, "person-4", [])]
    (tracks / "cam1-0000.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    summary = {"outcomes": {"gallery": {"merged": [{"kept": "person-1", "absorbed": "person-2", "score": 3.1}]}}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    data = load_report_data(tmp_path)
    assert {name: sorted(s.track_id for s in sightings) for name, sightings in data.identities().items()} == {
        "person-1": [1, 2, 3, 4], "person-4": [5]}
