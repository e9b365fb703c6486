"""Window functions: pure functions of (token ids, window ends / split points), vectorised, no randomness.

Notation: B batch, L sequence length, S split points per sequence, N = B * S, Tc context length,
Tf future (decoder) horizon, n number of prefix ends.

Label convention (same as :mod:`smt_hf.data.tasks`): ``labels[t]`` is the target of the prediction
made after reading ``input_ids[:t]`` (HF causal-LM alignment; for plain LM ``labels == input_ids``).

SMT windows for a sequence ``x`` (labels ``y``) and split point ``c`` in ``0..L-1``
(``m_c`` = memory after reading ``x[:c]``; ``c = 0`` is the empty context), built by `smt_windows`::

    context_ids       x[max(0, c-Tc) : c]        left-padded to Tc     -> teacher memory m_c
    next_context_ids  x[max(0, c+1-Tc) : c+1]    left-padded to Tc     -> teacher memory m_{c+1}
    next_token        x[c]                                              the token f reads: m_c -> m_{c+1}
    future_ids        x[c : c+Tf]                right-padded (pad id)  decoder inputs
    future_labels     y[c : c+Tf]                right-padded (-100)    future_labels[0] from m_c alone

The split points themselves are drawn by `smt_hf.data.sampling.SplitSampler` (owned by the training module).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .tasks import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "left_windows", "right_windows", "prefix_contexts", "smt_windows"]


def _window_index(ends: torch.Tensor, width: int, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions ``e - width .. e - 1`` of each end ``e`` of ``ends`` (n,): (n, W) bool "exists" (>= 0) and the
    positions clamped into ``0..L-1`` for gathering. The one window rule of `left_windows` and `prefix_contexts`."""
    idx = ends.view(-1, 1) - width + torch.arange(width, device=ends.device).view(1, width)  # (n, W)
    return idx >= 0, idx.clamp(0, max(L - 1, 0))


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
    ok, safe = _window_index(ends.view(N), width, L)  # (N, W)
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
        ends: (n,) exclusive ends in ``0..L`` shared by all rows (LongTensor or list of ints), or (B, n): each
            row its own ends.
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
    ends = torch.as_tensor(ends, dtype=torch.long, device=input_ids.device)
    per_row = ends.dim() == 2  # (B, n): each row its own ends; else (n,) shared by all rows
    ends = ends if per_row else ends.view(-1)
    if ends.numel() and (int(ends.min()) < 0 or int(ends.max()) > L):
        raise ValueError(f"prefix_contexts: ends must lie in 0..L={L}, got {ends.tolist()}")
    ok, safe = _window_index(ends.flatten(), context_length, L)  # (n or B*n, Tc), the same windows as left_windows
    if per_row:
        safe, ok = safe.view(B, -1, context_length), ok.view(B, -1, context_length)  # (B, n, Tc)
        ids = input_ids.gather(1, safe.flatten(1)).view_as(safe)
    else:
        ids = input_ids[:, safe]  # (B, n, Tc)
        ok = ok.unsqueeze(0).expand(B, -1, -1)  # (B, n, Tc)
    if attention_mask is not None:
        ok = ok & (attention_mask.bool().gather(1, safe.flatten(1)).view_as(safe) if per_row else attention_mask.bool()[:, safe])
    ids = torch.where(ok, ids, torch.full_like(ids, pad_token_id))
    return ids, ok.long()


def smt_windows(
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    lengths: torch.Tensor,
    split_points: torch.Tensor,
    context_length: int,
    future_length: int,
    pad_token_id: int = 0,
    check: bool = True,
) -> dict[str, torch.Tensor]:
    """The SMT / joint-SMT tensors of a right-padded sequence batch at given split points (module docstring).

    Args:
        input_ids, labels: (B, L) right-padded tokens and targets.
        lengths: (B,) real length of each row.
        split_points: (B, S) split points, ``0 <= c < lengths[b]``; the S rows of a sequence are adjacent.
        context_length: Tc; future_length: Tf; pad_token_id: id written at padded input positions.
        check: verify the split-point range (one host-device sync); the training step skips it for
            points drawn by `SplitSampler`, which lie in range by construction.
    Returns:
        (N = B * S, long) ``context_ids`` / ``context_mask`` / ``next_context_ids`` / ``next_context_mask``
        (N, Tc), ``next_token`` (N,), ``future_ids`` / ``future_labels`` (N, Tf), ``split_points`` (N,).
    Raises:
        ValueError: a split point outside ``0..lengths[b]-1`` (with ``check``).
    """
    B = input_ids.shape[0]
    Tc, Tf, pad = int(context_length), int(future_length), int(pad_token_id)
    c = torch.as_tensor(split_points, dtype=torch.long, device=input_ids.device).view(B, -1)  # (B, S)
    lengths = lengths.to(input_ids.device)
    if check and (bool((c < 0).any()) or bool((c >= lengths.view(B, 1)).any())):
        raise ValueError("smt_windows: split_points must lie in 0..L-1 for each sequence")
    S = c.shape[1]
    # 1. one row per (sequence, split): repeat each sequence S times (rows of a sequence adjacent)
    x = input_ids.repeat_interleave(S, dim=0)  # (N, L)
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
