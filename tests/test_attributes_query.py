"""Attribute filters for queries and the JSON Lines query command."""

import json

import pytest

from cli.query import main
from pipeline.messages import AttributePrediction
from stages.attributes.query import matches, parse_attribute_filter


def _pred(label, probs):
    return AttributePrediction(label=label, probability=probs[label], probabilities=probs)


ATTRS = {
    "limping": _pred("yes", {"no": 0.3, "yes": 0.7}),
    "height": _pred("tall", {"very short": 0.05, "short": 0.05, "medium": 0.1, "tall": 0.5, "very tall": 0.3}),
    "body mass": _pred("normal", {"thin": 0.2, "normal": 0.6, "overweight": 0.1, "obese": 0.1}),
}


def test_parse_validates_against_the_table():
    filt = parse_attribute_filter("limping=yes, height=tall|very-tall,body_mass=Normal")
    assert {t.attribute: set(t.classes) for t in filt.terms} == {
        "limping": {"yes"},
        "height": {"tall", "very tall"},
        "body mass": {"normal"},
    }
    assert str(parse_attribute_filter("toe=toe_in")) == "toe=toe in"
    with pytest.raises(ValueError, match="unknown attribute 'speed'"):
        parse_attribute_filter("speed=fast")
    with pytest.raises(ValueError, match="unknown class 'maybe' for attribute 'limping'"):
        parse_attribute_filter("limping=maybe")
    with pytest.raises(ValueError, match="expected attribute=class"):
        parse_attribute_filter("limping")
    with pytest.raises(ValueError, match="empty attribute filter"):
        parse_attribute_filter(" , ")
    with pytest.raises(ValueError, match="two different classes"):
        parse_attribute_filter("limping=yes,limping=no")


def test_matches_labels_and_probability_mass():
    assert matches(ATTRS, parse_attribute_filter("limping=yes,height=tall"))
    assert not matches(ATTRS, parse_attribute_filter("limping=no"))
    assert matches(ATTRS, parse_attribute_filter("limping=yes"), min_probability=0.7)
    assert not matches(ATTRS, parse_attribute_filter("limping=yes"), min_probability=0.71)
    # alternatives pool their probability: tall (0.5) + very tall (0.3)
    assert matches(ATTRS, parse_attribute_filter("height=tall|very tall"), min_probability=0.8)
    assert not matches(ATTRS, parse_attribute_filter("height=tall"), min_probability=0.8)
    assert not matches(ATTRS, parse_attribute_filter("hair=long"))  # attribute not predicted
    assert not matches(None, parse_attribute_filter("limping=yes"))


def test_matches_exported_json_form():
    exported = {
        k: {"label": v.label, "probability": v.probability, "probabilities": v.probabilities} for k, v in ATTRS.items()
    }
    assert matches(exported, parse_attribute_filter("body mass=normal"), 0.6)
    assert matches({"limping": {"label": "yes", "probability": 0.9}}, parse_attribute_filter("limping=yes"), 0.8)


def test_query_main_filters_jsonl(tmp_path, capsys):
    exported = {
        k: {"label": v.label, "probability": v.probability, "probabilities": v.probabilities} for k, v in ATTRS.items()
    }
    records = [
        {"track_id": 1, "attributes": exported},
        {"track_id": 2, "attributes": None},
        {"track_id": 3, "attributes": {**exported, "limping": {"label": "no", "probability": 0.8}}},
    ]
    src = tmp_path / "tracks.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    assert main([str(src), "--where", "limping=yes"]) == 0
    out = capsys.readouterr()
    assert [json.loads(line)["track_id"] for line in out.out.splitlines()] == [1]
    assert "1 record(s) match limping=yes" in out.err
    dst = tmp_path / "out.jsonl"
    assert main([str(src), "--where", "body_mass=normal", "--out", str(dst)]) == 0
    assert [json.loads(line)["track_id"] for line in dst.read_text().splitlines()] == [1, 3]
    with pytest.raises(SystemExit):
        main([str(src), "--where", "limping=maybe"])
    assert "unknown class 'maybe'" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json}\n")
    assert main([str(bad), "--where", "limping=yes"]) == 1
    assert "line 1: not JSON" in capsys.readouterr().err
