"""Auto-enrolment links a person's tracks across cameras: the whole chain on a rendered two-camera site.

Three people walk once each across a small square seen by two cameras facing each other (other
backgrounds, other colour casts). The default configuration runs with a fresh auto-enrolling
gallery; each pipeline track is matched to the walker whose ground-truth boxes it overlaps. Every
person must end up with one identity that holds tracks of both cameras, no identity may hold two
people, and there may not be many more identities than people.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from pipeline import app
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
    people_of_identity: dict[str, set[int]] = defaultdict(set)
    cameras_of: dict[tuple[int, str], set[str]] = defaultdict(set)
    for (source, _), track in tracks.items():
        camera = Path(source).stem
        person = walker_of(track["boxes"], truth["frames"][camera])
        if person is None or track.get("identity") is None:
            continue
        people_of_identity[track["identity"]].add(person)
        cameras_of[(person, track["identity"])].add(camera)
    people = {p["identity"] for frames in truth["frames"].values() for f in frames for p in f}
    assert len(people) == 3
    mixed = {name: who for name, who in people_of_identity.items() if len(who) > 1}
    assert not mixed, f"identities holding several people: {mixed}"
    linked = {person for (person, _), cams in cameras_of.items() if len(cams) == 2}
    assert linked == people, f"people whose tracks were linked across the two cameras: {sorted(linked)} of {sorted(people)}"
    assert len(people_of_identity) <= 2 * len(people)
