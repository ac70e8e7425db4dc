"""Auto-enrolment links a person's tracks across cameras: the whole chain on a rendered two-camera site.

Three people walk once each across a small square seen by two cameras facing each other (other
backgrounds, other colour casts). The default configuration runs with a fresh auto-enrolling
gallery; each pipeline track is matched to the walker whose ground-truth boxes it overlaps. Every
person must end up with an identity that holds tracks of both cameras, the links made must be
right (precision 0.9 or more), and there may not be many more identities than people. (Before
fused, calibrated, track-level matching no track was linked across the cameras; with the first
fitted fusion two of the three people were.)
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from pipeline import app
from pipeline.messages import merged_names
from stages.gallery.store import Gallery
from tests.helpers import PROJECT_ROOT
from training.site_windows import box_iou


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    import yaml

    from synth.scene import SiteConfig, write_site

    folder = tmp_path_factory.mktemp("site")
    config = SiteConfig.from_dict(yaml.safe_load((PROJECT_ROOT / "configs" / "synth" / "ci_two_cameras.yaml").read_text()))
    truth = json.loads(write_site(config, folder).read_text())
    return sorted(str(p) for p in folder.glob("*.mp4")), truth


def walker_of(boxes: list[list[float]], frames: list[list[dict]]) -> int | None:
    """Identity of the walker whose ground-truth box the track overlaps (IoU >= 0.5) in most frames."""
    votes: Counter[int] = Counter()
    for index, *box in boxes:
        people = frames[int(index)]
        if people:
            overlap = box_iou(np.asarray(box), np.asarray([p["box"] for p in people]))
            if overlap.max() >= 0.5:
                votes[people[int(overlap.argmax())]["identity"]] += 1
    return votes.most_common(1)[0][0] if votes else None


def test_auto_enrol_links_each_person_across_two_cameras(site, tmp_path):
    videos, truth = site
    config = app.load("default", [f"gallery.gallery={tmp_path / 'gallery'}", "gallery.auto_enrol=true", "runner.progress=false"])
    outputs = app.run(videos, tmp_path / "out", config)
    tracks: dict[tuple[str, int], dict] = {}
    for path in outputs.track_files:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["type"] != "track":
                continue
            track = tracks.setdefault((record["source"], record["track_id"]), {"boxes": []})
            track["boxes"] += record["boxes"]
            if record["final"]:
                track["identity"] = (record["identity"] or {}).get("id")
    with Gallery(tmp_path / "gallery", create=False) as gallery:
        merges = gallery.merges()
    renamed = merged_names(merges)  # a track's identity is the one it lives on in at the end of the run
    at_end = [(m["kept"], m["absorbed"]) for m in outputs.summary["outcomes"]["gallery"]["merged"]]
    assert at_end == [(m["kept"], m["absorbed"]) for m in merges if "consolidated" in m["evidence"]]
    for track in tracks.values():
        track["identity"] = renamed.get(track.get("identity"), track.get("identity"))
    named = []  # (person, camera, identity) of each labelled, named track
    for (source, _), track in tracks.items():
        camera = Path(source).stem
        person = walker_of(track["boxes"], truth["frames"][camera])
        if person is not None and track.get("identity") is not None:
            named.append((person, camera, track["identity"]))
    people = {p["identity"] for frames in truth["frames"].values() for f in frames for p in f}
    assert len(people) == 3
    cameras_of: dict[tuple[int, str], set[str]] = defaultdict(set)
    for person, camera, identity in named:
        cameras_of[(person, identity)].add(camera)
    linked = {person for (person, _), cams in cameras_of.items() if len(cams) == 2}
    assert linked == people, f"people linked across the two cameras: {sorted(linked)} of {sorted(people)}"
    pairs = [(a[0] == b[0], a[2] == b[2]) for i, a in enumerate(named) for b in named[i + 1 :]]
    true_links = sum(same and linked_ for same, linked_ in pairs)
    links = sum(linked_ for _, linked_ in pairs)
    assert links and true_links / links >= 0.9, f"link precision {true_links}/{links}"
    assert len({identity for _, _, identity in named}) <= 2 * len(people)
