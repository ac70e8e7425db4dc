"""Calibrated, fused match scores: each modality's distance -> log-likelihood ratio -> fused log-odds.

Every modality's distance (gait: the per-part metric or CarGait's re-ranked distance; appearance:
cosine) is mapped to a log-likelihood ratio ``llr = intercept + slope * distance`` by a logistic
regression fitted with the two classes weighted equally on labelled pairs (same person / not), so
the scores of different modalities and scorers are on one scale. The fusion is a second logistic
regression on the LLRs of the modalities a window has::

    fused = bias + sum_m present_m * (w_agree_m * max(llr_m, 0) + w_disagree_m * min(llr_m, 0))
                 + sum_m (1 - present_m) * missing_m

Agreement and disagreement get separate weights because they are not equally trustworthy: fitted
on sites where people come back in other clothes, appearance disagreement earns a small weight and
gait can carry the decision. A missing modality contributes a fitted constant, not a guess.
``fused`` is a log-odds with equal priors; ``sigmoid(fused)`` is the confidence. The open-set
threshold on ``fused`` is set at a target false-accept rate on deployment-like (rendered site)
data, per modality mode and gait scorer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FUSION_FORMAT = "gaitscope-score-fusion-1"
MODALITIES = ("gait", "appearance")
MODES = ("fused", "gait", "appearance")
AGGREGATES = ("best", "mean")
CONSOLIDATE = "consolidate"  # threshold key prefix: fused log-odds two identities give each other to be merged
MIXED_SPREAD = "spread:appearance"  # threshold key: appearance spread above which a track shows several people
ENROL_FRAMES = "enrol_frames"  # threshold key prefix: the fewest frames of a track that may start an identity


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(z, np.float64), -60, 60)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-4, iterations: int = 100) -> np.ndarray:
    """Weights (bias first) of P(y=1|x) = sigmoid(w0 + x @ w), classes weighted equally (Newton).

    x: (N, K) features; y: (N,) 0/1. Features are standardised for the solve and the weights mapped
    back, so the result applies to raw x. A small L2 penalty keeps separable data finite.
    """
    x = np.asarray(x, np.float64).reshape(len(y), -1)
    y = np.asarray(y, np.float64)
    if y.min() == y.max():
        raise ValueError("a logistic fit needs examples of both classes")
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    xs = np.column_stack([np.ones(len(x)), (x - mu) / sd])
    weight = np.where(y == 1, 0.5 / y.sum(), 0.5 / (1 - y).sum())
    w = np.zeros(xs.shape[1])
    penalty = l2 * np.eye(len(w))
    penalty[0, 0] = 0.0
    for _ in range(iterations):
        p = sigmoid(xs @ w)
        grad = xs.T @ (weight * (p - y)) + penalty @ w
        hess = (xs * (weight * p * (1 - p))[:, None]).T @ xs + penalty + 1e-12 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    raw = w[1:] / sd
    return np.concatenate([[w[0] - float(raw @ mu)], raw])


@dataclass(frozen=True)
class ModalityScore:
    """distance -> LLR for one modality, scorer ("euc", "cos", "cargait:<sha256[:12]>") and aggregate."""

    slope: float
    intercept: float
    genuine: int = 0
    impostor: int = 0

    def llr(self, distance: np.ndarray | float) -> np.ndarray:
        return self.intercept + self.slope * np.asarray(distance, np.float64)

    @classmethod
    def fit(cls, genuine: np.ndarray, impostor: np.ndarray) -> ModalityScore:
        g, i = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
        if len(g) == 0 or len(i) == 0:
            raise ValueError("a distance calibration needs both genuine and impostor distances")
        x = np.concatenate([g, i])[:, None]
        y = np.concatenate([np.ones(len(g)), np.zeros(len(i))])
        w = fit_logistic(x, y)
        return cls(float(w[1]), float(w[0]), len(g), len(i))


def fusion_features(llr: dict[str, np.ndarray | None], n: int) -> np.ndarray:
    """(n, 3 * len(MODALITIES)) features: per modality [agree part, disagree part, missing flag]."""
    cols = []
    for m in MODALITIES:
        v = llr.get(m)
        if v is None:
            v = np.full(n, np.nan)
        v = np.asarray(v, np.float64)
        present = np.isfinite(v)
        z = np.where(present, v, 0.0)
        cols += [np.maximum(z, 0.0), np.minimum(z, 0.0), (~present).astype(np.float64)]
    return np.column_stack(cols)


@dataclass(frozen=True)
class Fusion:
    """Weights of the fused log-odds (see the module docstring), keyed by modality."""

    bias: float
    agree: dict[str, float]
    disagree: dict[str, float]
    missing: dict[str, float]

    def score(self, llr: dict[str, np.ndarray | float | None]) -> np.ndarray:
        """Fused log-odds; ``llr[m]`` None or NaN where modality m is absent."""
        values = {m: (None if v is None else np.atleast_1d(np.asarray(v, np.float64))) for m, v in llr.items()}
        n = max((len(v) for v in values.values() if v is not None), default=1)
        f = fusion_features(values, n)
        w = np.concatenate([[self.agree[m], self.disagree[m], self.missing[m]] for m in MODALITIES])
        return self.bias + f @ w

    @classmethod
    def fit(cls, llr: dict[str, np.ndarray], same: np.ndarray) -> Fusion:
        """Logistic regression of ``same`` (0/1) on the fusion features of per-modality LLRs (NaN = absent).

        Modality dropout: every pair that has both modalities is also presented with each one
        removed, so the decision with a modality missing is learned from the same people, however
        rarely it is missing in the data.
        """
        same = np.asarray(same)
        values = {m: np.asarray(llr[m], np.float64) for m in MODALITIES}
        both = np.all([np.isfinite(v) for v in values.values()], axis=0)
        rows, labels = [values], [same]
        for dropped in MODALITIES:
            rows.append({m: (np.full(both.sum(), np.nan) if m == dropped else v[both]) for m, v in values.items()})
            labels.append(same[both])
        stacked = {m: np.concatenate([r[m] for r in rows]) for m in MODALITIES}
        w = fit_logistic(fusion_features(stacked, sum(len(x) for x in labels)), np.concatenate(labels))
        out = {"agree": {}, "disagree": {}, "missing": {}}
        for k, m in enumerate(MODALITIES):
            a, d, miss = w[1 + 3 * k : 4 + 3 * k]
            out["agree"][m], out["disagree"][m], out["missing"][m] = float(a), float(d), float(miss)
        return cls(float(w[0]), **out)

    @classmethod
    def single(cls, modality: str) -> Fusion:
        """The score of one modality alone (its LLR), for ``modalities: gait|appearance``."""
        return cls(0.0, {m: float(m == modality) for m in MODALITIES}, {m: float(m == modality) for m in MODALITIES},
                   {m: 0.0 for m in MODALITIES})


@dataclass(frozen=True)
class ScoreModel:
    """Everything the matcher needs to turn distances into decisions, as shipped in weights/.

    scores: "<modality>/<scorer>/<aggregate>" -> ModalityScore. fusions: "<gait scorer>/<aggregate>"
    -> the fusion fitted on those LLRs.
    thresholds: "<mode>/<gait scorer>/<aggregate>" -> fused log-odds above which a candidate is
    accepted (set at ``target_far`` false accepts on the fitting sites); "link:<same>" -> the
    auto-enrol linking threshold; "enrol:<same>" -> the score at or below which an unmatched track
    is a new identity; "enrol_frames:<same>" -> the fewest frames of a track that may start one (absent:
    the matcher's default); MIXED_SPREAD -> the appearance spread of a mixed track. models: embedding model
    versions the distances were measured with ({"gait": ..., "appearance": ...}). source_prior: the
    per-source appearance centring the distances were measured with (None: raw embeddings).
    """

    scores: dict[str, ModalityScore]
    fusions: dict[str, Fusion]
    thresholds: dict[str, float]
    target_far: float
    models: dict[str, str]
    source_prior: float | None = None
    format: str = FUSION_FORMAT

    @staticmethod
    def score_key(modality: str, scorer: str, aggregate: str) -> str:
        return f"{modality}/{scorer}/{aggregate}"

    @staticmethod
    def threshold_key(mode: str, gait_scorer: str, aggregate: str) -> str:
        return f"{mode}/{gait_scorer}/{aggregate}"

    def modality_score(self, modality: str, scorer: str, aggregate: str) -> ModalityScore | None:
        return self.scores.get(self.score_key(modality, scorer, aggregate))

    def fusion_for(self, mode: str, gait_scorer: str, aggregate: str) -> Fusion | None:
        """The fusion of ``mode`` ("fused": the fitted one, None when not fitted; else one modality alone)."""
        if mode != "fused":
            return Fusion.single(mode)
        return self.fusions.get(f"{gait_scorer}/{aggregate}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scores"] = {k: asdict(v) for k, v in self.scores.items()}
        d["fusions"] = {k: asdict(v) for k, v in self.fusions.items()}
        return d

    def save(self, path: str | Path) -> str:
        """Write as JSON; returns its sha256."""
        text = json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"
        Path(path).write_text(text)
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def from_dict(cls, d: dict) -> ScoreModel:
        if d.get("format") != FUSION_FORMAT:
            raise ValueError(f"not a score-fusion file (format {d.get('format')!r}, expected {FUSION_FORMAT!r})")
        return cls(
            scores={k: ModalityScore(**v) for k, v in d["scores"].items()},
            fusions={k: Fusion(**v) for k, v in d["fusions"].items()},
            thresholds={k: float(v) for k, v in d["thresholds"].items()},
            target_far=float(d["target_far"]),
            models=dict(d["models"]),
            source_prior=d.get("source_prior"),
        )

    @classmethod
    def load(cls, path: str | Path) -> ScoreModel:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"score-fusion parameters not found: {path} (fit them with python -m training.fusion)")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: unreadable score-fusion parameters ({e})") from e


def threshold_at_far(impostor_scores: np.ndarray, target_far: float) -> float:
    """Smallest fused score that accepts at most ``target_far`` of the impostor scores."""
    s = np.sort(np.asarray(impostor_scores, np.float64))[::-1]
    if len(s) == 0:
        raise ValueError("no impostor scores to set a threshold on")
    allowed = int(np.floor(target_far * len(s)))
    # accept when score > threshold: put the threshold at the (allowed+1)-th highest impostor score
    return float(s[min(allowed, len(s) - 1)])
