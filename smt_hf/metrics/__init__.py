"""Evaluation metrics as pure functions (the `evaluate` modules under this folder wrap them)."""

from __future__ import annotations

import math

import torch


def drift_ratio(err: torch.Tensor, var: torch.Tensor, scale: torch.Tensor, rtol: float = 0.0) -> torch.Tensor:
    """1 - R^2 = err / var, elementwise, from its sums: err = sum_b ||m_hat_b - m_b||^2, var = sum_b ||m_b - mean m||^2,
    scale = sum_b ||m_b||^2. Where the references do not vary across the batch (var <= rtol * scale: rtol small where
    var is summed directly, larger where var is a difference of float32 sums that rounding leaves that uncertain),
    1 - R^2 is undefined: nan, or 0.0 where the prediction is exact (err == 0). It used to divide by 1e-12 and report
    ~1e10 there (or a rounding-noise var); elsewhere the value is unchanged."""
    undefined = torch.where(err == 0, torch.zeros_like(err), torch.full_like(err, float("nan")))
    return torch.where(var > rtol * scale, err / var.clamp_min(1e-30), undefined)


def rollout_drift(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - R^2 per step of a rollout: predicted/target (B, T, K, d) (or (B, T, K*d)) -> (T,).

    1 - R^2_t = sum_b ||m_hat_bt - m_bt||^2 / sum_b ||m_bt - mean_b m_bt||^2
    (0 = the rollout tracks the teacher exactly, 1 = no better than the batch-mean memory). At a step where the
    target memories are the same for every sequence the ratio is undefined: nan (0.0 if the prediction equals them),
    see `drift_ratio`. Paper Fig. 12.
    """
    p, y = predicted.float().flatten(2), target.float().flatten(2)  # (B, T, Z)
    err = (p - y).pow(2).sum(dim=(0, 2))  # (T,)
    var = (y - y.mean(0, keepdim=True)).pow(2).sum(dim=(0, 2))  # (T,) summed directly: no cancellation, only
    return drift_ratio(err, var, y.pow(2).sum(dim=(0, 2)), rtol=1e-10)  # the float32 mean's rounding (~4e-15 * scale)


def target_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """Correct argmax predictions at target positions: aligned logits (..., V) and labels (...), -100 ignored.
    Returns (correct, total) so callers can sum over batches."""
    return target_accuracy_ids(logits.argmax(-1), labels)


def target_accuracy_ids(predictions: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """`target_accuracy` for predicted token ids (...) aligned with labels (...), -100 ignored: (correct, total)."""
    mask = labels != -100
    correct = (predictions == labels) & mask
    return int(correct.sum()), int(mask.sum())


def bits_per_token(nats: float) -> float:
    """Convert a mean cross-entropy in nats to bits (bits per byte for byte-level models)."""
    return nats / math.log(2)


def perplexity(nats: float) -> float:
    """exp(nats); inf where that overflows a float (a mean NLL above about 709.78 nats), nan for nan."""
    try:
        return math.exp(nats)
    except OverflowError:
        return math.inf


METRIC_MODULES = ("bits_per_byte", "target_accuracy", "rollout_drift")


def metric_path(name: str) -> str:
    """Local script path of one of the package's `evaluate` modules (`evaluate.load` it offline, no hub lookup)."""
    from pathlib import Path

    if name not in METRIC_MODULES:
        raise ValueError(f"Unknown SMT metric {name!r}; choose one of {list(METRIC_MODULES)}.")
    return str(Path(__file__).resolve().parent / name / f"{name}.py")


def load_metric(name: str, **kwargs):
    """`evaluate.load` of a packaged metric ("bits_per_byte", "target_accuracy", "rollout_drift") from its local
    script, so it needs no network (HF_HUB_OFFLINE=1 is fine). kwargs go to `evaluate.load`."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)


__all__ = ["rollout_drift", "drift_ratio", "target_accuracy", "target_accuracy_ids", "bits_per_token", "perplexity", "load_metric",
           "metric_path", "METRIC_MODULES"]
