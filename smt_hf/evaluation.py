"""Evaluation of a student (and its teacher) on sequences with `labels[t]` = target after reading x[:t].

    student_loss / student_acc  the standalone student from m_0, true tokens fed in (teacher-forced rollout)
    teacher_loss / teacher_acc  the teacher's first-step prediction D(E(x[:t]))[0] at target positions
    onestep_acc                 the student one step from the teacher: readout(f(E(x[:t-1]), x[t-1]))
    drift                       1 - R^2 between the student's own memories and E(x[:t]) every `stride` steps
                                (nan at a step where E(x[:t]) is the same for every sequence: collapsed memory)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data.windows import left_windows, prefix_contexts
from .metrics import drift_ratio, target_accuracy


def _target_positions(labels: torch.Tensor, per_row: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `per_row` target positions t >= 1 per row (the last ones, where long-range memory matters).
    Returns (rows (P,), positions (P,))."""
    valid = labels != -100
    valid[:, 0] = False
    rows, cols = [], []
    for b in range(labels.shape[0]):
        pos = valid[b].nonzero().flatten()[-per_row:]
        rows.append(torch.full_like(pos, b))
        cols.append(pos)
    return torch.cat(rows), torch.cat(cols)


def onestep_memories(student, teacher, input_ids, labels, context_length: int, eval_positions: int = 16,
                     attention_mask: torch.Tensor | None = None):
    """At up to `eval_positions` target positions t per row (the last ones): the teacher's memory m*_t of x[:t],
    the student's one step f(m*_{t-1}, x_{t-1}) from the teacher's memory of x[:t-1], and the targets labels[t].
    input_ids/labels (B, L). Returns m_t (P, K, d), pred (P, K, d), targets (P,). (The teacher_acc / onestep_acc of
    `evaluate_smt`; recipes/onestep_error_probe.py.)"""
    rows, pos = _target_positions(labels, eval_positions)
    x = input_ids[rows]  # (P, L)
    valid = attention_mask[rows] if attention_mask is not None else None
    ctx, ctx_mask = left_windows(x, pos, context_length, 0, valid)  # x[:t]
    prev, prev_mask = left_windows(x, pos - 1, context_length, 0, valid)  # x[:t-1]
    mem = teacher.encode(torch.cat([ctx, prev]), torch.cat([ctx_mask, prev_mask]))
    P = rows.shape[0]
    m_t, m_prev = mem[:P], mem[P:]
    return m_t, student.step(m_prev, x[torch.arange(P), pos - 1]), labels[rows, pos]


@torch.no_grad()
def evaluate_smt(
    student,
    teacher,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    context_length: int,
    eval_positions: int = 16,
    drift_stride: int = 8,
    attention_mask: torch.Tensor | None = None,
) -> dict:
    """All metrics for one batch of sequences (B, L). Returns floats, counts and the drift curve."""
    was = student.training, teacher.training if teacher is not None else None
    student.eval()
    if teacher is not None:
        teacher.eval()
    B, L = input_ids.shape
    out: dict = {}
    # 1. standalone student, teacher-forced
    res = student(input_ids, attention_mask=attention_mask, use_cache=False, output_memories=True, prefill="recurrent")
    logits, memories = res.logits[:, :-1], res.memories  # (B, L-1, V), (B, L, K, d)
    shifted = labels[:, 1:]
    n_tok = int((shifted != -100).sum())
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), shifted.reshape(-1), ignore_index=-100, reduction="sum")
    correct, total = target_accuracy(logits, shifted)
    out.update(student_nll_sum=float(ce), student_correct=correct, targets=total, tokens=n_tok)
    if teacher is not None:
        # 2. teacher first-step prediction and the student's one step from teacher memory
        m_t, pred, tgt = onestep_memories(student, teacher, input_ids, labels, context_length, eval_positions,
                                          attention_mask)
        t_logits = teacher.readout(m_t)  # (P, V)
        s_logits = student.readout(pred)
        out["teacher_nll_sum"] = float(F.cross_entropy(t_logits.float(), tgt, reduction="sum"))
        out["teacher_correct"], out["probe_targets"] = target_accuracy(t_logits, tgt)
        out["onestep_correct"], _ = target_accuracy(s_logits, tgt)
        # 3. rollout drift of the student's own memories against the teacher's, every `drift_stride` steps; per
        #    step the sums that 1 - R^2 needs, over the rows that are that long (summed over batches by summarize)
        ends = torch.arange(drift_stride, L + 1, drift_stride, device=input_ids.device)
        if len(ends):
            ctx, ctx_mask = prefix_contexts(input_ids, ends, context_length, 0, attention_mask)  # (B, n, Tc)
            target_mem = teacher.encode(ctx.flatten(0, 1), ctx_mask.flatten(0, 1)).view(B, len(ends), *memories.shape[2:])
            lengths = attention_mask.sum(1) if attention_mask is not None else torch.full((B,), L, device=input_ids.device)
            valid = (ends.view(1, -1) <= lengths.view(-1, 1)).float()  # (B, n): row b has read `end` real tokens
            y, pred = target_mem.float().flatten(2), memories[:, ends - 1].float().flatten(2)  # (B, n, Z)
            out["drift_stats"] = {
                int(e): (float(((pred[:, i] - y[:, i]).pow(2).sum(-1) * valid[:, i]).sum()),  # sum ||m_hat - m||^2
                         (y[:, i] * valid[:, i, None]).sum(0),  # (Z,) sum m
                         float((y[:, i].pow(2).sum(-1) * valid[:, i]).sum()),  # sum ||m||^2
                         float(valid[:, i].sum()))  # rows
                for i, e in enumerate(ends.tolist())
            }
    student.train(was[0])
    if teacher is not None:
        teacher.train(was[1])
    return out


STUDENT_METRICS = ("student_loss", "student_bits", "student_acc")  # student_acc: episodes with task targets
TEACHER_METRICS = ("teacher_loss", "teacher_acc", "onestep_acc", "drift_mean", "drift_last")  # with a teacher


def summarize(batches: list[dict]) -> dict[str, float]:
    """Combine per-batch results of `evaluate_smt` into the reported metrics."""
    s = lambda k: sum(b.get(k, 0) for b in batches)  # noqa: E731
    metrics = {}
    if s("tokens"):
        metrics["student_loss"] = s("student_nll_sum") / s("tokens")
        metrics["student_bits"] = metrics["student_loss"] / math.log(2)
    if s("targets"):
        metrics["student_acc"] = s("student_correct") / s("targets")
    if s("probe_targets"):
        metrics["teacher_loss"] = s("teacher_nll_sum") / s("probe_targets")
        metrics["teacher_acc"] = s("teacher_correct") / s("probe_targets")
        metrics["onestep_acc"] = s("onestep_correct") / s("probe_targets")
    # drift: 1 - R^2 per step over the whole eval set (sums merged by step, not an average of batch ratios)
    stats: dict[int, list] = {}
    for b in batches:
        for step, (err, y_sum, yy, n) in b.get("drift_stats", {}).items():
            acc = stats.setdefault(step, [0.0, torch.zeros_like(y_sum), 0.0, 0.0])
            acc[0] += err
            acc[1] = acc[1] + y_sum
            acc[2] += yy
            acc[3] += n
    steps = [t for t in sorted(stats) if stats[t][3] >= 2]  # 1 - R^2 needs the spread of >= 2 sequences
    if steps:
        curve = []
        for t in steps:
            err, y_sum, yy, n = stats[t]
            var = yy - float(y_sum.pow(2).sum()) / n  # sum_b ||m_b - mean m||^2
            # var is a difference of float32 sums: a spread below ~100 float32 ulps of yy is rounding, not spread
            curve.append(float(drift_ratio(*torch.tensor([err, var, yy], dtype=torch.float64), rtol=1e-5)))
        metrics["drift_mean"] = sum(curve) / len(curve)  # nan if any step is undefined (a collapsed memory)
        metrics["drift_last"] = curve[-1]
        metrics["drift_curve"] = curve
        metrics["drift_steps"] = steps
    return metrics


__all__ = ["evaluate_smt", "summarize", "STUDENT_METRICS", "TEACHER_METRICS"]
