"""The 15 gait attributes of RA-GAR (table 1): names, classes and the CLIP-GAR template sentences.

Attribute names and class counts follow RA-GAR's table 1 (7 binary, 8 multi-class, 45 classes in
all). Each class has a short ``label`` (what predictions, filters and exports use) and a ``phrase``
that completes the paper's template "The {subject} of this pedestrian silhouette is/are {phrase}."
(e.g. "The legs of this pedestrian silhouette are limping.").

Names and labels are those of the synthetic walkers' ground truth (``synth.attributes``), in the
same order; class order is fixed: checkpoints store logits in this order, and the stored table is
compared with this one when a checkpoint is loaded. Lookups accept other spellings
("body_mass", "very-tall", "Toe_In", "middle aged"): see :func:`spelling_key`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEMPLATE = "The {subject} of this pedestrian silhouette {verb} {phrase}."


def spelling_key(text: str) -> str:
    """Lower case, "_" and "-" read as spaces, runs of spaces collapsed: how names and labels are compared."""
    return " ".join(text.lower().replace("_", " ").replace("-", " ").split())


@dataclass(frozen=True)
class AttributeClass:
    label: str
    phrase: str


@dataclass(frozen=True)
class Attribute:
    """One attribute: ``subject`` and ``verb`` ("is"/"are") fill the template with each class phrase."""

    name: str
    subject: str
    verb: str
    classes: tuple[AttributeClass, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(c.label for c in self.classes)

    def sentences(self) -> list[str]:
        return [TEMPLATE.format(subject=self.subject, verb=self.verb, phrase=c.phrase) for c in self.classes]

    def index(self, label: str) -> int:
        """Position of ``label`` among this attribute's classes; ValueError naming the valid labels."""
        try:
            return [spelling_key(x) for x in self.labels].index(spelling_key(label))
        except ValueError:
            raise ValueError(
                f"unknown class {label!r} for attribute {self.name!r}; valid: {', '.join(self.labels)}"
            ) from None


def _classes(*pairs: tuple[str, str]) -> tuple[AttributeClass, ...]:
    return tuple(AttributeClass(label, phrase) for label, phrase in pairs)


ATTRIBUTES: tuple[Attribute, ...] = (
    # Static, global (A1-A4)
    Attribute("gender", "gender", "is", _classes(("male", "male"), ("female", "female"))),
    Attribute("age", "age", "is", _classes(("young", "young"), ("middle-aged", "middle-aged"), ("elderly", "elderly"))),
    Attribute(
        "height",
        "height",
        "is",
        _classes(
            ("very short", "very short"),
            ("short", "short"),
            ("medium", "medium"),
            ("tall", "tall"),
            ("very tall", "very tall"),
        ),
    ),
    Attribute(
        "body mass",
        "body mass",
        "is",
        _classes(("thin", "thin"), ("normal", "normal"), ("overweight", "overweight"), ("obese", "obese")),
    ),
    # Static, upper body (A5-A6)
    Attribute(
        "hair", "hair", "is", _classes(("bald", "bald"), ("short", "short"), ("long", "long"), ("bun", "tied in a bun"))
    ),
    Attribute("forward head position", "head position", "is", _classes(("no", "upright"), ("yes", "forward"))),
    # Static, middle body (A7-A9)
    Attribute(
        "uneven shoulders",
        "shoulders",
        "are",
        _classes(("level", "level"), ("left higher", "higher on the left"), ("right higher", "higher on the right")),
    ),
    Attribute("humpback", "back", "is", _classes(("no", "straight"), ("yes", "hunched"))),
    Attribute(
        "hands",
        "hands",
        "are",
        _classes(
            ("natural", "hanging naturally"),
            ("in pockets", "in the pockets"),
            ("behind back", "behind the back"),
            ("crossed in front", "crossed in front"),
        ),
    ),
    # Motion, middle body (A10-A12)
    Attribute(
        "arm swing direction",
        "arm swing direction",
        "is",
        _classes(
            ("back and forth", "back and forth"),
            ("mostly forward", "mostly forward"),
            ("mostly backward", "mostly backward"),
            ("inward", "inward"),
            ("outward", "outward"),
        ),
    ),
    Attribute(
        "arm swing amplitude range", "arm swing amplitude range", "is", _classes(("small", "small"), ("large", "large"))
    ),
    Attribute("upper arm movement", "upper arms", "are", _classes(("moving", "moving"), ("static", "static"))),
    # Motion, lower body (A13-A15)
    Attribute(
        "toe",
        "toes",
        "are",
        _classes(("straight", "pointing straight"), ("toe in", "turned in"), ("toe out", "turned out")),
    ),
    Attribute("drag feet", "feet", "are", _classes(("no", "lifted"), ("yes", "dragging"))),
    Attribute("limping", "legs", "are", _classes(("no", "walking evenly"), ("yes", "limping"))),
)

ATTRIBUTE_NAMES: tuple[str, ...] = tuple(a.name for a in ATTRIBUTES)
CLASS_COUNTS: tuple[int, ...] = tuple(len(a.classes) for a in ATTRIBUTES)
NUM_CLASSES_ALL = sum(CLASS_COUNTS)  # N_all = 45
# Offsets of each attribute's classes in the flat N_all class axis.
CLASS_OFFSETS: tuple[int, ...] = tuple(int(o) for o in np.concatenate([[0], np.cumsum(CLASS_COUNTS)[:-1]]))
_BY_KEY = {spelling_key(a.name): a for a in ATTRIBUTES}


def attribute(name: str) -> Attribute:
    """The attribute called ``name`` (compared by :func:`spelling_key`); ValueError naming the valid ones."""
    try:
        return _BY_KEY[spelling_key(name)]
    except KeyError:
        raise ValueError(f"unknown attribute {name!r}; valid: {', '.join(ATTRIBUTE_NAMES)}") from None


def all_sentences() -> list[str]:
    """The N_all template sentences, attribute by attribute, classes in table order."""
    return [s for a in ATTRIBUTES for s in a.sentences()]


def table_signature() -> list[list]:
    """The table as plain lists ``[[name, [labels...]], ...]``, stored in checkpoints and compared on load."""
    return [[a.name, list(a.labels)] for a in ATTRIBUTES]


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Class indices (B, 15) int -> flat binary ground truth (B, N_all) float32."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(ATTRIBUTES):
        raise ValueError(f"labels must be (B, {len(ATTRIBUTES)}), got {labels.shape}")
    if (labels < 0).any() or (labels >= np.asarray(CLASS_COUNTS)).any():
        raise ValueError("class index out of range for some attribute")
    out = np.zeros((len(labels), NUM_CLASSES_ALL), np.float32)
    rows = np.arange(len(labels))[:, None]
    out[rows, np.asarray(CLASS_OFFSETS)[None, :] + labels] = 1.0
    return out
