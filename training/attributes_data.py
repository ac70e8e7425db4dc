"""Training and evaluation clips for the attribute models, drawn from the synthetic walkers.

Real attribute labels do not exist here, so the ground truth is the synthetic identities' attribute
classes (``synth.attributes``, same table as :mod:`stages.attributes.table`). A :class:`ClipSet` is
rendered once per parameter set and cached as a plain ``.npz`` (no pickles) under
``~/.cache/gaitscope/attributes``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stages.attributes.table import ATTRIBUTE_NAMES

CACHE_DIR = Path.home() / ".cache" / "gaitscope" / "attributes"


@dataclass(frozen=True)
class SynthSpec:
    """Which synthetic sequences to render: identities ``first_identity`` .. + ``n_identities`` - 1,
    ``seqs_per_identity`` each, cycling through ``conditions`` and then ``views_deg`` (degrees,
    the list rotated per identity)."""

    first_identity: int
    n_identities: int
    seqs_per_identity: int
    frames: int
    conditions: tuple[str, ...]
    views_deg: tuple[float, ...]
    seed: int = 0
    frame_size: tuple[int, int] = (480, 640)
    cameras: str = "casia_like"  # "casia_like" (CASIA-B's camera) or "surveillance"

    def cache_key(self) -> str:
        """Changes with the spec and with the generator's code, so a stale render is never reused."""
        text = json.dumps(asdict(self), sort_keys=True) + synth_fingerprint()
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def synth_fingerprint() -> str:
    """sha256 (16 hex digits) of the synthetic generator's source files, recorded with trained weights."""
    import synth

    h = hashlib.sha256()
    for path in sorted(Path(synth.__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class ClipSet:
    """clips (N, T, 64, 44) uint8 0/255; labels (N, 15) int64 class indices in table order;
    identities (N,) int64; conditions (N,) str "nm" | "bg" | "cl"; views_deg (N,) float32."""

    clips: np.ndarray
    labels: np.ndarray
    identities: np.ndarray
    conditions: np.ndarray
    views_deg: np.ndarray

    def __len__(self) -> int:
        return len(self.clips)

    def subset(self, mask: np.ndarray) -> ClipSet:
        return ClipSet(
            self.clips[mask], self.labels[mask], self.identities[mask], self.conditions[mask], self.views_deg[mask]
        )


def render_clip_set(spec: SynthSpec) -> ClipSet:
    """Render ``spec`` with the synthetic walker generator (walking only, full body)."""
    from synth.dataset import CASIA_LIKE, SURVEILLANCE, iter_sequences

    cameras = {"casia_like": CASIA_LIKE, "surveillance": SURVEILLANCE}[spec.cameras]
    clips, labels, ids, conds, views = [], [], [], [], []
    for identity in range(spec.first_identity, spec.first_identity + spec.n_identities):
        # The generator gives sequence k the view views[k // len(conditions)]: rotating the list per
        # identity spreads every view over the identities.
        shift = identity % len(spec.views_deg)
        for seq in iter_sequences(
            1,
            spec.seqs_per_identity,
            spec.frames,
            spec.seed,
            conditions=spec.conditions,
            views=spec.views_deg[shift:] + spec.views_deg[:shift],
            behaviours=("walk",),
            frame_size=spec.frame_size,
            crops=False,
            first_identity=identity,
            cameras=cameras,
        ):
            if not (seq.visible.all() and seq.full_body.all()):
                continue  # the walker left the image in some frame: not a clean full-body clip
            clips.append(seq.silhouettes)
            labels.append([seq.attributes[name] for name in ATTRIBUTE_NAMES])
            ids.append(seq.identity)
            conds.append(seq.condition)
            views.append(seq.view_deg)
    return ClipSet(
        np.stack(clips).astype(np.uint8),
        np.asarray(labels, np.int64),
        np.asarray(ids, np.int64),
        np.asarray(conds, dtype="<U2"),
        np.asarray(views, np.float32),
    )


def load_clip_set(spec: SynthSpec, cache_dir: Path = CACHE_DIR) -> ClipSet:
    """The clips of ``spec``, from the cache when present, else rendered and cached."""
    path = cache_dir / f"synth_{spec.cache_key()}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return ClipSet(z["clips"], z["labels"], z["identities"], z["conditions"], z["views_deg"])
    clip_set = render_clip_set(spec)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        clips=clip_set.clips,
        labels=clip_set.labels,
        identities=clip_set.identities,
        conditions=clip_set.conditions,
        views_deg=clip_set.views_deg,
    )
    tmp.replace(path)
    return clip_set


def sample_windows(clips: np.ndarray, length: int, rng: np.random.Generator | None) -> np.ndarray:
    """(B, T, 64, 44) uint8 -> (B, length, 64, 44) float32 in [0, 1]: a random window per clip when
    ``rng`` is given (training), else the first ``length`` frames (evaluation)."""
    t = clips.shape[1]
    if t < length:
        raise ValueError(f"clips have {t} frames, fewer than the window length {length}")
    if rng is None:
        starts = np.zeros(len(clips), np.int64)
    else:
        starts = rng.integers(0, t - length + 1, size=len(clips))
    out = np.stack([c[s : s + length] for c, s in zip(clips, starts)])
    return out.astype(np.float32) / 255.0
