"""`SMTDataCollator`: right-pads a list of sequence features into one batch (the only thing it does).

Every training mode reads whole sequences: DMT and BPTT directly, SMT / joint SMT through split points that
`SMTTrainingModule` draws inside the training step (`smt_hf.data.sampling.SplitSampler`) and windows built by the
pure `smt_hf.data.windows.smt_windows`. So one collator serves training and evaluation.

Label convention (same as :mod:`smt_hf.data.tasks`): ``labels[t]`` is the target of the prediction
made after reading ``input_ids[:t]``; features without labels use their input_ids (plain LM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .windows import IGNORE_INDEX

__all__ = ["SMTDataCollator"]

_MODES = ("dmt", "bptt", "eval")


def _as_long(v: Any, what: str) -> torch.Tensor:
    t = torch.as_tensor(v)
    if t.dim() > 1:
        raise ValueError(f"SMTDataCollator: {what} of shape {tuple(t.shape)}; each feature holds one sequence (L,): "
                         "split a batch into one feature per row")
    if t.numel() and (t.is_floating_point() or t.is_complex()):  # ([] is float32: left to the emptiness check)
        raise ValueError(f"SMTDataCollator: {what} must be integer token ids, got dtype {t.dtype}")
    t = t.to(torch.long).view(-1)  # (L,)
    if t.numel() == 0:
        raise ValueError(f"SMTDataCollator: empty {what}; every feature needs at least one token")
    return t


def _mask(v: Any, i: int) -> torch.Tensor:
    """An attention_mask (L,) of 0/1 values (ints, bools or floats) as long; ValueError for any other value."""
    t = torch.as_tensor(v)
    if t.dim() != 1 or not bool(((t == 0) | (t == 1)).all()):
        raise ValueError(f"SMTDataCollator: feature {i}'s attention_mask must be one sequence (L,) of 0/1 values "
                         "(1 = token, 0 = padding)")
    return t.to(torch.long)


def _unpad(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens of a left- or right-padded feature: the positions where `mask` (L,) is 1, which must be one block."""
    if mask.numel() != x.numel():
        raise ValueError(f"SMTDataCollator: feature {i} has {x.numel()} input_ids but an attention_mask of "
                         f"{mask.numel()}")
    keep = mask.nonzero().view(-1)
    if keep.numel() == 0:
        raise ValueError(f"SMTDataCollator: feature {i} has an all-zero attention_mask (no token to train on)")
    first, last = int(keep[0]), int(keep[-1])
    if last - first + 1 != keep.numel():  # (`_mask` allows 0/1 only: contiguous 1s are the one block)
        raise ValueError(f"SMTDataCollator: feature {i}'s attention_mask is not one block of 1s (left or right "
                         "padding only): a recurrent model reads every token of its sequence in order")
    return x[first:last + 1], y[first:last + 1]


@dataclass
class SMTDataCollator:
    """Right-pad a list of ``{"input_ids", "labels"?, "attention_mask"?}`` features to (B, L_max).

    A feature with an ``attention_mask`` (e.g. from a tokenizer's ``padding=...``) keeps only its tokens: the
    positions where the mask is 1, one block (left or right padding), before the batch is padded again.

    Args:
        mode: ``"eval"`` (default), ``"dmt"`` or ``"bptt"``: the same padded sequences (the name documents the use).
        pad_token_id: id written at padded input positions (labels are padded with -100).

    Returns (``__call__``): ``input_ids`` (B, L_max), ``labels`` (B, L_max), ``attention_mask`` (B, L_max), long.

    Raises:
        ValueError: mode "smt"/"joint" (split points are drawn in the training step: pass sequence batches to
            `SMTTrainer`, or build split-point windows with `smt_hf.data.windows.smt_windows`), an unknown mode,
            an empty list, a feature without ``input_ids`` or with labels of another length, an attention_mask of
            another length, all zero, or not one block of 1s.
    """

    mode: str = "eval"
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.mode in ("smt", "joint"):
            raise ValueError(
                f"SMTDataCollator: mode={self.mode!r} is gone: the collator only pads sequences, and split points are "
                "drawn inside the training step (SMTTrainer takes sequence batches in every mode). Use "
                "SMTDataCollator(mode='eval'), or build split-point windows with smt_hf.data.windows.smt_windows."
            )
        if self.mode not in _MODES:
            raise ValueError(f"SMTDataCollator: mode={self.mode!r} is not one of {list(_MODES)}")

    def _pad_batch(self, features: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-pad to (B, L_max): input_ids (pad id), labels (-100) and lengths (B,)."""
        if not features:
            raise ValueError("SMTDataCollator: got an empty list of features")
        xs, ys = [], []
        for i, f in enumerate(features):
            if "input_ids" not in f:
                raise ValueError(f"SMTDataCollator: feature {i} has no 'input_ids' (keys: {sorted(f)})")
            x = _as_long(f["input_ids"], "input_ids")
            y = _as_long(f["labels"], "labels") if f.get("labels") is not None else x.clone()
            if y.numel() != x.numel():
                raise ValueError(
                    f"SMTDataCollator: feature {i} has {x.numel()} input_ids but {y.numel()} labels; "
                    "labels must be aligned with input_ids (use -100 where there is no target)"
                )
            if f.get("attention_mask") is not None:  # a pre-padded feature (a tokenizer's padding=...): its tokens
                x, y = _unpad(x, y, _mask(f["attention_mask"], i), i)
            xs.append(x)
            ys.append(y)
        lengths = torch.tensor([x.numel() for x in xs], dtype=torch.long)  # (B,)
        B, L = len(xs), int(lengths.max())
        ids = torch.full((B, L), int(self.pad_token_id), dtype=torch.long)
        labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
        for b, (x, y) in enumerate(zip(xs, ys)):
            ids[b, : x.numel()] = x
            labels[b, : y.numel()] = y
        return ids, labels, lengths

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """Right-pad ``features``: input_ids, labels, attention_mask, each (B, L_max)."""
        ids, labels, lengths = self._pad_batch(features)  # (B, L), (B, L), (B,)
        L = ids.shape[1]
        mask = (torch.arange(L).view(1, L) < lengths.view(-1, 1)).long()  # (B, L)
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
