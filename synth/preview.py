"""Contact sheets to look at the walkers: RGB crops and silhouette strips per identity and attribute."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from synth.attributes import ATTRIBUTES
from synth.body import Population, make_identity
from synth.dataset import SyntheticSequence, generate_identities, generate_sequences, render_sequence

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _label(image: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((16, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (3, 12), _FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, image])


def strip(seq: SyntheticSequence, n: int = 7, rgb: bool = True) -> np.ndarray:
    """One row: n evenly spaced RGB crops (64x128) above their 44x64 silhouettes (scaled to 64x93),
    with a state bar (blue walking / yellow standing) and a body bar (green full / red partial)."""
    idx = np.linspace(0, len(seq) - 1, n).round().astype(int)
    tiles = []
    for t in idx:
        sil = cv2.cvtColor(cv2.resize(seq.silhouettes[t], (64, 93), interpolation=cv2.INTER_NEAREST),
                           cv2.COLOR_GRAY2BGR)
        parts = [seq.crops[t]] if rgb and seq.crops is not None else []
        flag = (0, 160, 0) if seq.full_body[t] else (0, 0, 200)
        state = np.full((4, 64, 3), (200, 120, 0) if seq.walking[t] else (0, 200, 255), np.uint8)
        flag_bar = np.full((4, 64, 3), flag, np.uint8)
        tiles.append(np.vstack(parts + [state, flag_bar, sil]))
        tiles.append(np.full((tiles[-1].shape[0], 2, 3), 255, np.uint8))
    return np.hstack(tiles[:-1])


def contact_sheet(seed: int = 0) -> np.ndarray:
    """Identities under nm/bg/cl and all behaviours, then one row per striking attribute class."""
    rows = []
    for i, ident in enumerate(generate_identities(4, seed)):
        for k, (condition, view) in enumerate((("nm", 30.0 + 60 * i), ("bg", 90.0 + 60 * i), ("cl", 150.0 + 60 * i))):
            if (i + k) % 2:
                continue
            s = render_sequence(ident, k, condition, view % 360, "walk", 40, np.random.default_rng([seed, i, k]))
            rows.append(_label(strip(s), f"id {s.identity} {s.condition} view {s.view_deg:.0f} {s.behaviour}"))
    for b in ("stand", "walk_stand", "partial_walk", "partial_stand", "mixed"):
        (s,) = generate_sequences(1, 1, 40, seed=seed + 11, behaviours=(b,), first_identity=len(rows))
        rows.append(_label(strip(s), f"id {s.identity} {b} (top bar: walking blue / standing yellow;"
                                     f" green full body / red partial)"))
    base = {n: 0 for n, _ in ATTRIBUTES} | {"height": 2, "body mass": 1, "hair": 1, "arm swing amplitude range": 1}
    shown = [("humpback", 1, 90.0), ("forward head position", 1, 90.0), ("body mass", 3, 90.0),
             ("hands", 2, 90.0), ("hands", 3, 0.0), ("uneven shoulders", 1, 0.0), ("arm swing direction", 4, 0.0),
             ("toe", 2, 0.0), ("limping", 1, 0.0), ("drag feet", 1, 90.0), ("hair", 2, 120.0), ("gender", 1, 0.0)]
    pop = Population(spread=0.0)
    for name, cls, view in shown:
        ident = make_identity(900, np.random.default_rng(seed), pop, attributes=base | {name: cls})
        s = render_sequence(ident, 0, "nm", view, "walk", 40, np.random.default_rng(seed + 1))
        label = dict(ATTRIBUTES)[name][cls]
        rows.append(_label(strip(s), f"{name}: {label} (view {view:.0f}, other attributes at defaults)"))
    width = max(r.shape[1] for r in rows)
    rows = [cv2.copyMakeBorder(r, 0, 4, 0, width - r.shape[1], cv2.BORDER_CONSTANT, value=(255, 255, 255)) for r in rows]
    return np.vstack(rows)


def write_contact_sheet(path: str | Path, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), contact_sheet(seed), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path
