"""Batch building for SMT / joint SMT / DMT / BPTT / evaluation (spec.md, "Batches").

Notation: B batch, L sequence length, N = B * splits_per_sequence, Tc context length,
Tf future (decoder) horizon, n number of prefix ends.

Label convention (same as :mod:`smt_hf.data.tasks`): ``labels[t]`` is the target of the prediction
made after reading ``input_ids[:t]`` (HF causal-LM alignment; for plain LM ``labels == input_ids``).

SMT batch for a sequence ``x`` (labels ``y``) and split point ``c`` in ``0..L-1``
(``m_c`` = memory after reading ``x[:c]``; ``c = 0`` is the empty context)::

    context_ids       x[max(0, c-Tc) : c]        left-padded to Tc     -> teacher memory m_c
    next_context_ids  x[max(0, c+1-Tc) : c+1]    left-padded to Tc     -> teacher memory m_{c+1}
    next_token        x[c]                                              the token f reads: m_c -> m_{c+1}
    future_ids        x[c : c+Tf]                right-padded (pad id)  decoder inputs
    future_labels     y[c : c+Tf]                right-padded (-100)    future_labels[0] from m_c alone

Determinism: split points come from ``torch.randint`` with the collator's optional
``torch.Generator``, else torch's global RNG (seeded by the HF Trainer and restored on resume).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

IGNORE_INDEX = -100
_SMT_MODES = ("smt", "joint")
_SEQ_MODES = ("dmt", "bptt", "eval")

__all__ = ["SMTDataCollator", "prefix_contexts", "left_windows", "right_windows"]


# ----------------------------------------------------------------------------- window helpers


def left_windows(
    x: torch.Tensor, ends: torch.Tensor, width: int, pad_value: int, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row windows ``x[i, max(0, e_i - width) : e_i]``, left-padded to ``width``.

    Args:
        x: (N, L) tokens.
        ends: (N,) exclusive window ends, ``0 <= e_i <= L``.
        width: window length W.
        pad_value: fill value at padded positions.
        valid: optional (N, L) bool/0-1 mask of real tokens in ``x`` (e.g. its attention mask);
            positions that are not valid are reported as padding too.
    Returns:
        ids (N, W) and mask (N, W) long tensors; mask 1 = real token.
    """
    N, L = x.shape
    idx = ends.view(N, 1) - width + torch.arange(width, device=x.device).view(1, width)  # (N, W)
    ok = idx >= 0
    safe = idx.clamp(0, max(L - 1, 0))
    if valid is not None:
        ok = ok & torch.gather(valid.bool(), 1, safe)
    ids = torch.where(ok, torch.gather(x, 1, safe), torch.full_like(safe, pad_value))
    return ids, ok.long()


def right_windows(
    x: torch.Tensor, starts: torch.Tensor, width: int, pad_value: int, lengths: torch.Tensor
) -> torch.Tensor:
    """Per-row windows ``x[i, s_i : s_i + width]`` truncated at ``lengths[i]``, right-padded.

    Args:
        x: (N, L) tokens; starts: (N,); lengths: (N,) real length of each row.
    Returns:
        (N, width) long tensor.
    """
    N, L = x.shape
    idx = starts.view(N, 1) + torch.arange(width, device=x.device).view(1, width)  # (N, W)
    ok = idx < lengths.view(N, 1)
    safe = idx.clamp(0, max(L - 1, 0))
    return torch.where(ok, torch.gather(x, 1, safe), torch.full_like(safe, pad_value))


def prefix_contexts(
    input_ids: torch.Tensor,
    ends: torch.Tensor | Sequence[int],
    context_length: int,
    pad_token_id: int = 0,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded teacher contexts ending at each of ``ends`` (used by DMT).

    For every row b and end e the window is ``input_ids[b, max(0, e-Tc) : e]`` left-padded to Tc;
    ``e = 0`` gives the empty context (all padding). Vectorised (advanced indexing, no loop over B).

    Args:
        input_ids: (B, L) tokens.
        ends: (n,) exclusive ends in ``0..L`` (LongTensor or list of ints).
        context_length: Tc.
        pad_token_id: id written at padded positions.
        attention_mask: optional (B, L) mask of real tokens (right-padded batches): tokens it marks
            as padding count as padding in the returned mask too.
    Returns:
        ids (B, n, Tc) and mask (B, n, Tc), long; mask 1 = real token.
    """
    if context_length < 1:
        raise ValueError(f"prefix_contexts: context_length must be >= 1, got {context_length}")
    if input_ids.dim() != 2:
        raise ValueError(f"prefix_contexts: input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
    B, L = input_ids.shape
    ends = torch.as_tensor(ends, dtype=torch.long, device=input_ids.device).view(-1)  # (n,)
    if ends.numel() and (int(ends.min()) < 0 or int(ends.max()) > L):
        raise ValueError(f"prefix_contexts: ends must lie in 0..L={L}, got {ends.tolist()}")
    idx = ends.view(-1, 1) - context_length + torch.arange(context_length, device=ends.device)  # (n, Tc)
    ok = idx >= 0  # (n, Tc)
    safe = idx.clamp(0, max(L - 1, 0))
    ids = input_ids[:, safe]  # (B, n, Tc)
    ok = ok.unsqueeze(0).expand(B, -1, -1)  # (B, n, Tc)
    if attention_mask is not None:
        ok = ok & attention_mask.bool()[:, safe]
    ids = torch.where(ok, ids, torch.full_like(ids, pad_token_id))
    return ids, ok.long()


# ----------------------------------------------------------------------------- collator


def _as_long(v: Any, what: str) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=torch.long).view(-1)  # (L,)
    if t.numel() == 0:
        raise ValueError(f"SMTDataCollator: empty {what}; every feature needs at least one token")
    return t


@dataclass
class SMTDataCollator:
    """Turn a list of ``{"input_ids", "labels"?}`` features into a training batch.

    Args:
        mode: ``"smt"`` / ``"joint"`` -> split-point batches (see module docstring);
            ``"dmt"`` / ``"bptt"`` / ``"eval"`` -> whole sequences, right-padded.
        context_length: Tc, teacher context window (required for smt/joint).
        future_length: Tf, decoder horizon (smt/joint).
        splits_per_sequence: split points drawn per sequence (smt/joint); batch dim N = B * this.
        split: ``"random"`` -> c uniform in ``0..L-1`` (episodes; covers the empty context);
            ``"last"`` -> c = min(Tc, L-1) (streams: a window of Tc context then the future).
        pad_token_id: id used for padding inputs (labels are padded with -100).
        generator: optional ``torch.Generator`` for the split points (default: global RNG).

    Output of smt/joint (N = B * splits_per_sequence, long): ``context_ids`` / ``context_mask`` /
    ``next_context_ids`` / ``next_context_mask`` (N, Tc), ``next_token`` (N,), ``future_ids`` /
    ``future_labels`` (N, Tf), ``split_points`` (N,). Rows of one sequence are adjacent.
    Output of dmt/bptt/eval: ``input_ids``, ``labels``, ``attention_mask`` (B, L_max).
    """

    mode: str
    context_length: int | None = None
    future_length: int = 64
    splits_per_sequence: int = 1
    split: str = "random"
    pad_token_id: int = 0
    generator: torch.Generator | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        modes = _SMT_MODES + _SEQ_MODES
        if self.mode not in modes:
            raise ValueError(f"SMTDataCollator: mode={self.mode!r} is not one of {list(modes)}")
        if self.mode in _SMT_MODES:
            if self.context_length is None or int(self.context_length) < 1:
                raise ValueError(
                    f"SMTDataCollator: mode={self.mode!r} needs context_length >= 1 (the teacher window Tc), "
                    f"got {self.context_length}"
                )
            if int(self.future_length) < 1:
                raise ValueError(f"SMTDataCollator: future_length must be >= 1, got {self.future_length}")
        if int(self.splits_per_sequence) < 1:
            raise ValueError(f"SMTDataCollator: splits_per_sequence must be >= 1, got {self.splits_per_sequence}")
        if self.split not in ("random", "last"):
            raise ValueError(f"SMTDataCollator: split={self.split!r} must be 'random' or 'last'")
        if self.split == "last" and self.splits_per_sequence != 1:
            raise ValueError(
                "SMTDataCollator: split='last' gives one split point per sequence; set splits_per_sequence=1"
            )

    # -- helpers

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

    def sample_splits(self, lengths: torch.Tensor) -> torch.Tensor:
        """Split points (B, S) for sequences of the given lengths (B,)."""
        B, S = lengths.numel(), int(self.splits_per_sequence)
        if self.split == "last":
            return torch.clamp(lengths - 1, max=int(self.context_length)).view(B, 1)
        u = torch.rand((B, S), generator=self.generator)  # (B, S) in [0, 1)
        return (u * lengths.view(B, 1).double()).long().clamp(max=lengths.view(B, 1) - 1)

    # -- entry point

    def __call__(self, features: list[dict], split_points: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Collate ``features``; ``split_points`` (B, S) optionally overrides the sampled ones (tests)."""
        ids, labels, lengths = self._pad_batch(features)  # (B, L), (B, L), (B,)
        if self.mode in _SEQ_MODES:
            L = ids.shape[1]
            mask = (torch.arange(L).view(1, L) < lengths.view(-1, 1)).long()  # (B, L)
            return {"input_ids": ids, "labels": labels, "attention_mask": mask}
        return self._smt_batch(ids, labels, lengths, split_points)

    def smt_batch_from_sequences(
        self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The smt/joint tensors built from a right-padded sequence batch (B, L), on its device.

        The trainer calls this inside the training step (split points from torch's global CPU RNG at that
        moment), so a resumed run draws exactly the split points of an uninterrupted one: the HF Trainer
        restores the RNG state only after it has already collated the first resumed batch.
        """
        B, L = input_ids.shape
        lengths = attention_mask.sum(1) if attention_mask is not None else torch.full((B,), L, device=input_ids.device)
        c = self.sample_splits(lengths.cpu()).to(input_ids.device)  # (B, S)
        return self._smt_batch(input_ids, labels, lengths.to(input_ids.device), c)

    def _smt_batch(
        self, ids: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor, split_points: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        B = ids.shape[0]
        Tc, Tf, pad = int(self.context_length), int(self.future_length), int(self.pad_token_id)
        if split_points is None:
            c = self.sample_splits(lengths)  # (B, S)
        else:
            c = torch.as_tensor(split_points, dtype=torch.long, device=ids.device).view(B, -1)
            if bool((c < 0).any()) or bool((c >= lengths.view(B, 1)).any()):
                raise ValueError("SMTDataCollator: split_points must lie in 0..L-1 for each sequence")
        S = c.shape[1]
        # 1. one row per (sequence, split): repeat each sequence S times (rows of a sequence adjacent)
        x = ids.repeat_interleave(S, dim=0)  # (N, L)
        y = labels.repeat_interleave(S, dim=0)  # (N, L)
        n_len = lengths.repeat_interleave(S)  # (N,)
        c = c.reshape(-1)  # (N,)
        # 2. teacher contexts for m_c and m_{c+1}
        ctx, ctx_mask = left_windows(x, c, Tc, pad)  # (N, Tc)
        nxt, nxt_mask = left_windows(x, c + 1, Tc, pad)  # (N, Tc)
        # 3. the token read by the RNN and the decoder's future
        next_token = torch.gather(x, 1, c.view(-1, 1)).view(-1)  # (N,)
        fut = right_windows(x, c, Tf, pad, n_len)  # (N, Tf)
        fut_lab = right_windows(y, c, Tf, IGNORE_INDEX, n_len)  # (N, Tf)
        return {
            "context_ids": ctx,
            "context_mask": ctx_mask,
            "next_context_ids": nxt,
            "next_context_mask": nxt_mask,
            "next_token": next_token,
            "future_ids": fut,
            "future_labels": fut_lab,
            "split_points": c,
        }
