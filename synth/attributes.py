"""The 15 RA-GAR gait attributes (table 1 of RA-GAR) and how each class drives the walker.

``ATTRIBUTES`` is the ordered table ``(name, [class labels])`` with the paper's names and class
counts (7 binary, 8 multi-class). The paper publishes names and counts only; the class labels are
ours and each one is tied to explicit body or motion parameters (``BodyParams``, ``GaitParams`` in
``synth.body``) so that it shows in a silhouette. The mapping (also in docs/synth.md):

=========================  =====================================  ==========================================
attribute                  classes                                parameters it drives
=========================  =====================================  ==========================================
gender                     male, female                           shoulder/hip width ratio, stature, pelvis
                                                                  sway and rotation, hair prior
age                        young, middle-aged, elderly            cadence, stride, knee flexion, trunk lean,
                                                                  arm swing, belly (middle-aged)
height                     very short .. very tall (5)            stature bins <155, 155-165, 165-175,
                                                                  175-185, >=185 cm (box height = ratios);
                                                                  head-to-body proportion
body mass                  thin, normal, overweight, obese        torso/limb radii, belly ellipsoid, hips
hair                       bald, short, long, bun                 hair ellipsoids on the head
forward head position      no, yes                                neck flexion 0-6 deg vs 22-32 deg
uneven shoulders           level, left higher, right higher       shoulder height offset 3.5-6 cm, trunk roll
humpback                   no, yes                                thoracic flexion 0-5 vs 25-35 deg, back bulge
hands                      natural, in pockets, behind back,      fixed shoulder/elbow pose, wrists at hips,
                           crossed in front                       behind the pelvis or at the chest
arm swing direction        back and forth, mostly forward,        swing centre (shoulder flexion offset) and
                           mostly backward, inward, outward       swing plane yaw / abduction
arm swing amplitude range  small, large                           shoulder swing amplitude 4-12 vs 22-32 deg
upper arm movement         moving, static                         upper arm swing gain 1 vs 0.15 (the forearm
                                                                  then swings from the elbow instead)
toe                        straight, toe in, toe out              foot yaw 4 +-3, -26..-16, +18..+28 deg;
                                                                  the leg's swing plane turns by half of it
drag feet                  no, yes                                swing knee flexion x0.45, foot clearance,
                                                                  stride x0.8, plantar flexion removed
limping                    no, yes                                one leg: stance shortened, knee locked,
                                                                  pelvis drop and trunk lean towards it
=========================  =====================================  ==========================================

Hands other than "natural" hold the arms, so for them the swing classes are set to
"back and forth" / "small" / "static": labels never contradict the rendered motion.
"""

from __future__ import annotations

import numpy as np

ATTRIBUTES: list[tuple[str, list[str]]] = [
    ("gender", ["male", "female"]),
    ("age", ["young", "middle-aged", "elderly"]),
    ("height", ["very short", "short", "medium", "tall", "very tall"]),
    ("body mass", ["thin", "normal", "overweight", "obese"]),
    ("hair", ["bald", "short", "long", "bun"]),
    ("forward head position", ["no", "yes"]),
    ("uneven shoulders", ["level", "left higher", "right higher"]),
    ("humpback", ["no", "yes"]),
    ("hands", ["natural", "in pockets", "behind back", "crossed in front"]),
    ("arm swing direction", ["back and forth", "mostly forward", "mostly backward", "inward", "outward"]),
    ("arm swing amplitude range", ["small", "large"]),
    ("upper arm movement", ["moving", "static"]),
    ("toe", ["straight", "toe in", "toe out"]),
    ("drag feet", ["no", "yes"]),
    ("limping", ["no", "yes"]),
]

ATTRIBUTE_NAMES: list[str] = [name for name, _ in ATTRIBUTES]
NUM_CLASSES: dict[str, int] = {name: len(labels) for name, labels in ATTRIBUTES}

# Stature bins of the "height" attribute, metres (lower edges of classes 1..4).
HEIGHT_EDGES_M = (1.55, 1.65, 1.75, 1.85)

# Prior class probabilities: common classes dominate, rare ones stay frequent enough to learn.
_PRIORS: dict[str, list[float]] = {
    "gender": [0.5, 0.5],
    "age": [0.45, 0.35, 0.2],
    "height": [0.1, 0.25, 0.3, 0.25, 0.1],
    "body mass": [0.2, 0.45, 0.25, 0.1],
    "hair": [0.1, 0.45, 0.3, 0.15],
    "forward head position": [0.7, 0.3],
    "uneven shoulders": [0.7, 0.15, 0.15],
    "humpback": [0.8, 0.2],
    "hands": [0.7, 0.1, 0.1, 0.1],
    "arm swing direction": [0.6, 0.1, 0.1, 0.1, 0.1],
    "arm swing amplitude range": [0.5, 0.5],
    "upper arm movement": [0.75, 0.25],
    "toe": [0.6, 0.2, 0.2],
    "drag feet": [0.8, 0.2],
    "limping": [0.85, 0.15],
}


# The most common class of each attribute: what a population of look-alikes shares.
TYPICAL: dict[str, int] = {name: int(np.argmax(p)) for name, p in _PRIORS.items()}


def sample_attributes(rng: np.random.Generator, spread: float = 1.0) -> dict[str, int]:
    """Draw one identity's attribute classes (name -> class index), mutually consistent.

    spread in [0, 1]: each attribute keeps its drawn class with this probability and is the
    TYPICAL class otherwise (0: everybody typical, the hardest population to tell apart).
    """
    out = {name: int(rng.choice(len(labels), p=_PRIORS[name])) for name, labels in ATTRIBUTES}
    # Correlations seen in people: hair and stature follow gender, humpback follows age and
    # forward head follows humpback.
    if out["gender"] == 1:
        out["hair"] = int(rng.choice(4, p=[0.03, 0.27, 0.45, 0.25]))
        out["height"] = int(rng.choice(5, p=[0.2, 0.35, 0.3, 0.12, 0.03]))
    else:
        out["hair"] = int(rng.choice(4, p=[0.2, 0.65, 0.1, 0.05]))
        out["height"] = int(rng.choice(5, p=[0.03, 0.12, 0.3, 0.35, 0.2]))
    if out["age"] == 2 and rng.random() < 0.3:
        out["humpback"] = 1
    if out["humpback"] == 1 and rng.random() < 0.5:
        out["forward head position"] = 1
    keep = rng.random(len(out)) < spread
    out = {name: (value if k else TYPICAL[name]) for (name, value), k in zip(out.items(), keep)}
    if out["hands"] != 0:
        out["arm swing direction"] = 0
        out["arm swing amplitude range"] = 0
        out["upper arm movement"] = 1
    return out


def attribute_labels(classes: dict[str, int]) -> dict[str, str]:
    """Class indices -> class labels, in table order."""
    return {name: labels[classes[name]] for name, labels in ATTRIBUTES}
