"""SeqFLOPs: the FLOPs on the longest *sequential* dependency chain of one training step, per sequence.

The paper (Fig 6) plots loss against sequential compute; it does not define the count, so this module does
(spec.md, "SeqFLOPs", refined here). Forward FLOPs of one call per module are counted with
`torch.utils.flop_counter.FlopCounterMode` (matmuls and attention) at batch 1; a backward pass is counted as
2x its forward, so forward + backward = 3x. Calls that do not depend on each other (the teacher encoding of
DMT targets and the student's rollout; the readouts of different steps) run in parallel and count once, as
the longer branch.

    F_E  teacher encoder over Tc tokens       F_D  teacher decoder over K + Tf positions
    F_f  one student transition               F_g  one student readout

    joint / smt          3 * (F_E + max(F_f, F_D))                the encoder, then the updater or decoder branch
    dmt, one_step        max(F_E, (Td-1) F_f) + 3 * max(F_f, F_g)  a no-grad rollout, then one batched step
    dmt, full_rollout    max(F_E, 3 Td F_f) + 3 F_g                 forward and backward through Td transitions
    bptt                 3 * (T F_f + F_g)                          forward and backward through T transitions

Units: FLOPs per sequence (multiply-add = 2 FLOPs).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def forward_flops(fn, *args, **kwargs) -> int:
    """FLOPs of one call `fn(*args, **kwargs)` under `FlopCounterMode` (no gradient)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def component_flops(student, teacher=None, context_length: int = 1, future_length: int = 1) -> dict[str, int]:
    """Forward FLOPs per sequence of F_f and F_g (student) and F_E, F_D (teacher, when given).

    context_length: Tc tokens the encoder reads; future_length: Tf tokens the decoder reads after the memory."""
    c = student.config
    device = next(student.parameters()).device
    m = torch.zeros(1, c.memory_tokens, c.hidden_size, device=device, dtype=next(student.parameters()).dtype)
    x = torch.zeros(1, dtype=torch.long, device=device)
    out = {"F_f": forward_flops(student.step, m, x), "F_g": forward_flops(student.readout, m)}
    if teacher is not None:
        ctx = torch.zeros(1, context_length, dtype=torch.long, device=device)
        fut = torch.zeros(1, future_length, dtype=torch.long, device=device)
        out["F_E"] = forward_flops(teacher.encode, ctx)
        out["F_D"] = forward_flops(teacher.decode, teacher.encode(ctx), fut)
    return out


def seq_flops(mode: str, flops: dict[str, int], seq_len: int | None = None, rollout_length: int | None = None,
              dmt_gradient: str = "one_step") -> int:
    """SeqFLOPs of one training step of `mode` from `component_flops` (see the module docstring).

    seq_len: T for 'bptt'; rollout_length: Td for 'dmt'. Raises ValueError for an unknown mode or gradient."""
    f, g = flops["F_f"], flops["F_g"]
    if mode in ("joint", "smt"):
        return 3 * (flops["F_E"] + max(f, flops["F_D"]))
    if mode == "dmt":
        if dmt_gradient == "one_step":
            return max(flops["F_E"], (rollout_length - 1) * f) + 3 * max(f, g)
        if dmt_gradient == "full_rollout":
            return max(flops["F_E"], 3 * rollout_length * f) + 3 * g
        raise ValueError(f"dmt_gradient must be 'one_step' or 'full_rollout', got {dmt_gradient!r}")
    if mode == "bptt":
        return 3 * (seq_len * f + g)
    raise ValueError(f"mode must be one of 'joint', 'smt', 'dmt', 'bptt', got {mode!r}")


__all__ = ["forward_flops", "component_flops", "seq_flops"]
