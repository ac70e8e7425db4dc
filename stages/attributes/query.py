"""Attribute filters: what an analyst asks for ("limping=yes,height=tall|very tall").

    filt = parse_attribute_filter("limping=yes,height=tall|very-tall")
    matches(window.attributes, filt, min_probability=0.6)

Syntax: comma-separated ``attribute=class`` terms, all of which must hold; ``|`` separates
alternative classes of one attribute. Names and labels are checked against the RA-GAR table
(:mod:`stages.attributes.table`); spelling is forgiving ("body_mass", "very-tall", "Toe_In"). An
unknown attribute or class is a one-line ValueError naming the valid ones.

A term holds when the predicted label is one of its classes and the probability mass of its
classes is at least ``min_probability``. Attributes may be :class:`AttributePrediction` objects or
their exported JSON form (``{"label", "probability", "probabilities"}``).

The ``query`` command (:mod:`cli.query`) applies a filter to exported JSON Lines tracks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.messages import AttributePrediction
from stages.attributes.table import attribute


@dataclass(frozen=True)
class AttributeTerm:
    """``attribute`` must be one of ``classes`` (table spellings)."""

    attribute: str
    classes: frozenset[str]


@dataclass(frozen=True)
class AttributeFilter:
    terms: tuple[AttributeTerm, ...]

    def __str__(self) -> str:
        return ",".join(f"{t.attribute}={'|'.join(sorted(t.classes))}" for t in self.terms)


def parse_attribute_filter(text: str) -> AttributeFilter:
    """Parse ``"name=class[|class...],..."``; ValueError for bad syntax, unknown attributes or classes."""
    terms: dict[str, set[str]] = {}
    for raw in text.split(","):
        if not raw.strip():
            continue
        if raw.count("=") != 1:
            raise ValueError(f"bad attribute filter term {raw.strip()!r}: expected attribute=class")
        name, values = (part.strip() for part in raw.split("="))
        attr = attribute(name)
        labels = {attr.labels[attr.index(v)] for v in values.split("|") if v.strip()}
        if not labels:
            raise ValueError(f"attribute filter term {raw.strip()!r} names no class")
        if attr.name in terms:  # "a=x,a=y" means both must hold: only classes in both can
            labels &= terms[attr.name]
            if not labels:
                raise ValueError(f"attribute filter asks {attr.name!r} to be two different classes at once")
        terms[attr.name] = labels
    if not terms:
        raise ValueError("empty attribute filter: expected attribute=class[,attribute=class...]")
    return AttributeFilter(tuple(AttributeTerm(n, frozenset(c)) for n, c in terms.items()))


def _label_and_probs(pred: AttributePrediction | Mapping[str, Any]) -> tuple[str, Mapping[str, float], float]:
    if isinstance(pred, AttributePrediction):
        return pred.label, pred.probabilities, pred.probability
    return pred["label"], pred.get("probabilities") or {}, float(pred.get("probability", 1.0))


def matches(
    attributes: Mapping[str, AttributePrediction | Mapping[str, Any]] | None,
    filt: AttributeFilter,
    min_probability: float = 0.0,
) -> bool:
    """True when every term holds (see module doc); False when ``attributes`` is None or lacks one."""
    if not attributes:
        return False
    for term in filt.terms:
        pred = attributes.get(term.attribute)
        if pred is None:
            return False
        label, probs, probability = _label_and_probs(pred)
        if label not in term.classes:
            return False
        mass = sum(float(probs.get(c, 0.0)) for c in term.classes) if probs else probability
        if mass < min_probability:
            return False
    return True


def filter_records(lines: Iterable[str], filt: AttributeFilter, min_probability: float = 0.0) -> Iterable[str]:
    """JSON Lines records whose ``attributes`` match; blank lines skipped, bad JSON a ValueError with the line number."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number}: not JSON ({exc.msg})") from None
        if matches(record.get("attributes"), filt, min_probability):
            yield line if line.endswith("\n") else line + "\n"
