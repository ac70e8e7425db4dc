"""CarGait: cross-attention re-ranker over the body strips of a probe and a candidate.

One definition used by training and inference. Feature maps are ``(P, C)`` per sequence: P
horizontal strips (parts) of C channels each, as produced by the frozen gait model. The same
multi-head cross-attention block is applied both ways (probe attends to candidate, candidate to
probe) with residual connections, and the re-ranked distance is the mean Euclidean distance over
strips of the two conditioned maps (OpenGait's per-part "euc" metric).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def strip_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over strips of the Euclidean distance. a, b: (..., P, C) -> (...)."""
    return torch.sqrt(((a - b) ** 2).sum(-1).clamp_min(1e-12)).mean(-1)


class StripCrossAttention(nn.Module):
    """Multi-head cross-attention between two strip sequences, with a residual connection.

    Queries come from ``x`` (B, P, C), keys and values from ``y`` (B, P, C); returns
    ``x + out(attn(x, y))`` of shape (B, P, C). ``hidden`` is the attention width (all heads).
    The output projection starts at zero, so an untrained block is the identity and the
    re-ranker starts from the frozen model's feature space.
    """

    def __init__(self, channels: int, hidden: int = 256, heads: int = 8) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.heads = heads
        self.q = nn.Linear(channels, hidden)
        self.kv = nn.Linear(channels, 2 * hidden)
        self.out = nn.Linear(hidden, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head query, key and value of each strip: (B, P, C) -> 3 x (B, heads, P, hidden/heads).

        Projections depend on one sequence only, so a caller scoring one probe against many
        candidates computes them once per sequence.
        """
        b, p, _ = x.shape
        q = self.q(x)
        k, v = self.kv(x).chunk(2, dim=-1)
        split = lambda t: t.view(b, p, self.heads, -1).transpose(1, 2)
        return split(q), split(k), split(v)

    def attend(self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Residual cross-attention from projections: x (B, P, C) with q of x, k and v of the other."""
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, P, d_head)
        a = a.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return x + self.out(a)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        qx, _, _ = self.project(x)
        _, ky, vy = self.project(y)
        return self.attend(x, qx, ky, vy)


class CarGait(nn.Module):
    """Cross-attention re-ranker (CarGait) with the identity classifier used as a regulariser.

    parts, channels: the frozen gait model's feature map shape (P, C).
    num_classes: training identities (0 for an inference-only model without classifier).
    """

    def __init__(
        self,
        parts: int,
        channels: int,
        num_classes: int = 0,
        hidden: int = 256,
        heads: int = 8,
        classifier_hidden: int = 256,
    ) -> None:
        super().__init__()
        self.parts = parts
        self.channels = channels
        self.cross = StripCrossAttention(channels, hidden, heads)
        self.classifier = (
            nn.Sequential(
                nn.Flatten(1),
                nn.Linear(parts * channels, classifier_hidden),
                nn.ReLU(inplace=True),
                nn.Linear(classifier_hidden, num_classes),
            )
            if num_classes > 0
            else None
        )

    def project(self, f: torch.Tensor) -> Projected:
        """Attention projections of sequences, f: (B, P, C). Depends on one sequence only, so
        gallery entries and probes are projected once however many pairs they appear in."""
        q, k, v = self.cross.project(f)
        return Projected(f, q, k, v)

    def condition(self, a: Projected, b: Projected) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioned maps (E_a, E_b), each (B, P, C): a attends to b and b attends to a."""
        return self.cross.attend(a.f, a.q, b.k, b.v), self.cross.attend(b.f, b.q, a.k, a.v)

    def forward(self, fp: torch.Tensor, fc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Conditioned maps and re-ranked distance of pairs. fp, fc: (B, P, C).

        Returns (E_p, E_c, d) with E_* (B, P, C) and d (B,) the mean strip Euclidean distance.
        """
        ep, ec = self.condition(self.project(fp), self.project(fc))
        return ep, ec, strip_euclidean(ep, ec)

    @torch.no_grad()
    def shortlist_distances(
        self, probes: torch.Tensor, candidates: torch.Tensor, projected: Projected | None = None
    ) -> torch.Tensor:
        """Re-ranked distances of each probe to its shortlist.

        probes: (B, P, C); candidates: (B, K, P, C) -> (B, K). Same result as ``forward`` on every
        (probe, candidate) pair, but the probe's projections are broadcast over its K candidates
        instead of being copied per pair (inference is bound by memory traffic, not arithmetic).
        projected: the candidates' projections, rows in (B * K) order, when kept from enrolment.
        """
        b, k, p, c = candidates.shape
        qp, kp, vp = self.cross.project(probes)  # (B, H, P, Dh)
        h, dh = qp.shape[1], qp.shape[3]
        if projected is None:
            projected = self.project(candidates.reshape(b * k, p, c))
        qc, kc, vc = (t.view(b, k, h, p, dh) for t in projected[1:])
        scale = dh**-0.5
        # probe strips attend to each candidate's strips, and each candidate's to the probe's
        a_p = torch.softmax(torch.einsum("bhpd,bkhqd->bkhpq", qp, kc) * scale, dim=-1)
        o_p = torch.einsum("bkhpq,bkhqd->bkphd", a_p, vc).reshape(b, k, p, h * dh)
        a_c = torch.softmax(torch.einsum("bkhpd,bhqd->bkhpq", qc, kp) * scale, dim=-1)
        o_c = torch.einsum("bkhpq,bhqd->bkphd", a_c, vp).reshape(b, k, p, h * dh)
        ep = probes[:, None] + self.cross.out(o_p)
        ec = candidates + self.cross.out(o_c)
        return strip_euclidean(ep, ec)


class Projected(NamedTuple):
    """Sequences with their attention projections: f (B, P, C); q, k, v (B, heads, P, C_head)."""

    f: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor

    def take(self, index: torch.Tensor) -> Projected:
        """Rows ``index`` (N,) of each tensor."""
        return Projected(*(t.index_select(0, index) for t in self))

    def repeat(self, k: int) -> Projected:
        """Each row repeated k times in place (row i -> rows i*k .. i*k+k-1)."""
        return Projected(*(t.repeat_interleave(k, dim=0) for t in self))


def ranking_loss(d_pos: torch.Tensor, d_neg: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """CarGait eq. 1: sum of -log sigmoid(d_neg - d_pos), scaled by beta where already ranked right."""
    loss = -F.logsigmoid(d_neg - d_pos)
    scale = torch.where(d_neg >= d_pos, torch.full_like(loss, beta), torch.ones_like(loss))
    return (scale * loss).sum()


class PairClassifier(nn.Module):
    """The paper's naive baseline (its fig. 6): concatenated (F_p, F_c) -> MLP -> same-identity logit."""

    def __init__(self, parts: int, channels: int, hidden: int = 256) -> None:
        super().__init__()
        self.parts = parts
        self.channels = channels
        self.mlp = nn.Sequential(
            nn.Linear(2 * parts * channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1)
        )

    def forward(self, fp: torch.Tensor, fc: torch.Tensor) -> torch.Tensor:
        """fp, fc: (B, P, C) -> (B,) logit of "same identity"."""
        return self.mlp(torch.cat([fp.flatten(1), fc.flatten(1)], dim=1)).squeeze(1)
