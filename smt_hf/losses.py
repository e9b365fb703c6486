"""SMT / DMT / BPTT losses as pure functions of tensors. No model imports: the trainer gathers the tensors
and calls these. Shapes: B batch, Tf future horizon, T steps, K memory tokens, d width, V vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def decoder_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """L_dec: masked mean over the future positions of gamma^j * CE(logits[:, j], labels[:, j]).

    logits (B, Tf, V), labels (B, Tf) with -100 = no target. The mean is over target positions (weights
    gamma^j included), so gamma = 1 is the plain token-mean cross-entropy.
    """
    B, Tf, V = logits.shape
    ce = F.cross_entropy(logits.reshape(-1, V).float(), labels.reshape(-1), ignore_index=-100, reduction="none")
    ce = ce.view(B, Tf)
    valid = (labels != -100).float()
    weights = valid * (gamma ** torch.arange(Tf, device=logits.device, dtype=torch.float32))  # (B, Tf)
    return (ce * weights).sum() / weights.sum().clamp_min(1e-8)


def dynamics_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_dyn: mean squared error between predicted and target memories, mean over batch and all Z entries.

    predicted, target (..., K, d); mask (...) optional, 1 = a real pair: then the mean is over the masked pairs
    only (each pair's error averaged over its K*d entries); 0 when no pair is real.
    """
    if mask is None:
        return F.mse_loss(predicted.float(), target.float())
    err = (predicted.float() - target.float()).pow(2).flatten(mask.dim()).mean(-1)  # (...) per pair
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp_min(1.0)


def uniformity_loss(
    memory: torch.Tensor, num_samples: int = 512, t: float = 2.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """L_unif (Wang & Isola): log mean_{i<j} exp(-t ||u_i - u_j||^2) over unit-normalised memory tokens.

    memory (B, K, d) or (N, d): the B*K tokens are pooled and up to `num_samples` drawn without replacement.
    0 for identical vectors (collapse), about -4 for uniformly spread 256-d unit vectors (t = 2).
    """
    u = F.normalize(memory.reshape(-1, memory.shape[-1]).float(), dim=-1)  # (N, d)
    if u.shape[0] > num_samples:
        idx = torch.randperm(u.shape[0], device=u.device, generator=generator)[:num_samples]
        u = u[idx]
    n = u.shape[0]
    if n < 2:
        return u.new_zeros(())
    sq = torch.pdist(u, p=2).pow(2)  # (n(n-1)/2,) pairs i<j
    return torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel())


def readout_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of aligned predictions: logits (..., V) predict labels (...); -100 ignored; mean over the
    targets, 0 when there is none (e.g. a DMT window before a task's only target), not NaN.
    (No shift here: callers align logits[t] with the target it predicts.)"""
    labels = labels.reshape(-1)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels, ignore_index=-100, reduction="sum")
    return ce / (labels != -100).sum().clamp_min(1)


def combine(parts: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """sum_k weights[k] * parts[k] over the parts present (a part with weight 0 is skipped)."""
    total = None
    for name, value in parts.items():
        w = weights.get(name, 0.0)
        if w:
            total = w * value if total is None else total + w * value
    if total is None:
        raise ValueError(f"No loss part with a non-zero weight among {sorted(parts)}; check the lambda_* arguments.")
    return total


__all__ = ["decoder_loss", "dynamics_loss", "uniformity_loss", "readout_loss", "combine"]
