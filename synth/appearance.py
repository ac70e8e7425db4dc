"""Clothing colours and textures per identity, per condition and per outfit.

An identity keeps its skin and hair colours; its clothes are drawn from ``outfit`` (0 = the usual
clothes; another number = the same person in different clothes, e.g. on another day or camera).
The coat of condition "cl" and the bag of "bg" get their own colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from synth.body import BAG, BOTTOM, HAIR, MATERIALS, NO_CARRY, SHOES, SKIN, TOP, Carry

_SKIN_TONES = np.array([[198, 214, 240], [160, 190, 228], [120, 160, 205], [90, 125, 175], [60, 85, 120], [45, 60, 90]])
_HAIR_COLOURS = np.array([[20, 20, 25], [30, 45, 70], [40, 70, 120], [90, 140, 190], [160, 160, 165]])


@dataclass(frozen=True)
class Appearance:
    """colours: (len(MATERIALS), 3) uint8 BGR; stripes: period in fractions of the body height
    (0 = plain top) with ``stripe_colour`` BGR; long_sleeves for the forearms."""

    colours: np.ndarray
    stripes: float
    stripe_colour: tuple[int, int, int]
    long_sleeves: bool

    def to_json(self) -> dict:
        return {
            "colours": {m: [int(v) for v in self.colours[i]] for i, m in enumerate(MATERIALS)},
            "stripes": self.stripes, "stripe_colour": list(self.stripe_colour),
            "long_sleeves": self.long_sleeves,
        }


def _colour(rng: np.random.Generator, dark: float = 0.0) -> np.ndarray:
    """A clothing colour: often muted, sometimes saturated (BGR)."""
    hue = rng.uniform(0, 180)
    sat = rng.choice([rng.uniform(0, 60), rng.uniform(60, 220)], p=[0.55, 0.45])
    val = rng.uniform(40, 230) * (1 - dark)
    hsv = np.array([[[hue, sat, val]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]


def make_appearance(appearance_seed: int, carry: Carry = NO_CARRY, outfit: int = 0) -> Appearance:
    """Colours for one identity (seed), wearing ``outfit`` with ``carry`` (coat colours the top)."""
    person = np.random.default_rng([appearance_seed, 0])
    clothes = np.random.default_rng([appearance_seed, 1, outfit])
    colours = np.zeros((len(MATERIALS), 3), dtype=np.uint8)
    colours[SKIN] = np.clip(_SKIN_TONES[person.integers(len(_SKIN_TONES))] + person.normal(0, 8, 3), 0, 255)
    colours[HAIR] = np.clip(_HAIR_COLOURS[person.integers(len(_HAIR_COLOURS))] + person.normal(0, 6, 3), 0, 255)
    colours[TOP] = _colour(clothes)
    colours[BOTTOM] = _colour(clothes, dark=0.3)
    colours[SHOES] = _colour(clothes, dark=0.6)
    colours[BAG] = _colour(clothes, dark=0.2)
    stripes = float(clothes.choice([0.0, clothes.uniform(0.03, 0.08)], p=[0.7, 0.3]))
    stripe_colour = tuple(int(v) for v in _colour(clothes))
    long_sleeves = bool(clothes.random() < 0.6)
    if carry.coat:
        coat = np.random.default_rng([appearance_seed, 2, outfit])
        colours[TOP] = _colour(coat, dark=0.25)
        stripes = 0.0
        long_sleeves = True
    return Appearance(colours, stripes, stripe_colour, long_sleeves)
