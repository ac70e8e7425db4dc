"""OpenGait's training losses on per-part embeddings.

Embeddings are ``[n, p, c]`` (our layout); logits ``[n, p, class_num]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def part_distances(x: torch.Tensor) -> torch.Tensor:
    """[n, p, c] -> [p, n, n] Euclidean distance per part."""
    xp = x.permute(1, 0, 2).float()
    sq = xp.pow(2).sum(-1)
    d2 = sq.unsqueeze(2) + sq.unsqueeze(1) - 2 * xp.matmul(xp.transpose(1, 2))
    return torch.sqrt(F.relu(d2) + 1e-12)


def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> tuple[torch.Tensor, float]:
    """OpenGait's TripletLoss: every (anchor, positive, negative) triple in the batch, per part,
    hinge at ``margin``, averaged over the triples with a non-zero loss, then over parts.

    Returns (loss, fraction of non-zero triples) — the latter shows how hard the batch still is.
    """
    dist = part_distances(embeddings)  # [p, n, n]
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask = same & ~eye  # [n, n]
    neg_mask = ~same
    # [p, n, n_pos, n_neg] via broadcasting over all anchors; masks select valid triples
    diff = dist.unsqueeze(3) - dist.unsqueeze(2) + margin  # d(a,pos) - d(a,neg) + m
    valid = (pos_mask.unsqueeze(2) & neg_mask.unsqueeze(1)).unsqueeze(0).expand_as(diff)
    losses = F.relu(diff) * valid
    nonzero = (losses > 0).sum(dim=(1, 2, 3)).clamp(min=1)
    per_part = losses.sum(dim=(1, 2, 3)) / nonzero
    frac = float((losses > 0).sum()) / max(1, int(valid.sum()))
    return per_part.mean(), frac


def cross_entropy_loss(
    logits: torch.Tensor, labels: torch.Tensor, scale: float = 16.0, label_smoothing: float = 0.1
) -> tuple[torch.Tensor, float]:
    """OpenGait's CrossEntropyLoss on cosine logits scaled by ``scale``, per part, with label
    smoothing. logits: [n, p, class_num]. Returns (loss, accuracy of the part-averaged logits)."""
    n, p, k = logits.shape
    flat = (scale * logits.float()).reshape(n * p, k)
    loss = F.cross_entropy(flat, labels.repeat_interleave(p), label_smoothing=label_smoothing)
    acc = float((logits.mean(1).argmax(-1) == labels).float().mean())
    return loss, acc
