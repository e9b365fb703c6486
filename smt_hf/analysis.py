"""Analysis tools for SMT students and teachers: gradient norms per timestep, completion after a teacher prefix, and
the bigram baseline (paper Fig 11, Fig 4/5 and Fig 6/7 at small scale; the archived results in
recipes/results/archive/ were made with them); no plots here
(they are in `smt_hf.viz`), so importing this module never imports matplotlib.

Sources: SMT, arXiv 2606.06479 (Fig 11: ||dL/dm_t|| at initialisation, BPTT vs SMT; Fig 4/5: the teacher encodes a
prefix, the student writes the rest).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .data.windows import IGNORE_INDEX, smt_windows


def bptt_gradient_norms(student, input_ids: torch.LongTensor, target: torch.LongTensor) -> list[float]:
    """||dL/dm_t|| for BPTT: the student reads `input_ids[:, :T-1]` from m_0 and the memory after T-1 tokens predicts
    `target` (cross-entropy of `student.readout`). Accumulates gradients into the student's parameters.

    Args:
        student: an `SMTRecurrentForCausalLM` (anything with `initial_memory`, `step`, `readout`).
        input_ids: (B, T) token ids.
        target: (B,) the token predicted after `input_ids[:, :T-1]` (e.g. `input_ids[:, -1]` for the needle task).

    Returns:
        T-1 floats: entry t is the batch mean of ||dL/dm_{t+1}||, the memory after reading token t.
    """
    B, T = input_ids.shape
    mem = student.initial_memory(B)
    mems = []
    for t in range(T - 1):
        mem = student.step(mem, input_ids[:, t])
        mem.retain_grad()
        mems.append(mem)
    F.cross_entropy(student.readout(mem), target).backward()
    return [float(mt.grad.flatten(1).norm(dim=1).mean()) for mt in mems]


def smt_gradient_norms(student, teacher, input_ids: torch.LongTensor, labels: torch.LongTensor) -> list[float]:
    """||dL/dm_t|| for SMT: every split point t = 0..T-2 of every sequence in one batch, m_t = E(x[:t]) detached from
    the encoder, L = L_dec(D(m_t, x[t:]), labels[t:]) + L_dyn(f(m_t, x_t), sg(E(x[:t+1]))) per split (row losses
    summed, so each row's gradient is that of its own loss). Accumulates gradients into the parameters.

    Args:
        student: an `SMTRecurrentForCausalLM`; teacher: an `SMTTeacherModel` with `max_context_length >= T`.
        input_ids: (B, T) token ids; labels: (B, T) targets, `IGNORE_INDEX` (-100) where not supervised.

    Returns:
        T-1 floats: entry t is the batch mean of ||dL/dm_t|| at split point t.
    """
    B, T = input_ids.shape
    c = torch.arange(T - 1, device=input_ids.device).repeat(B)  # split points 0..T-2 per sequence
    rows, lab = input_ids.repeat_interleave(T - 1, 0), labels.repeat_interleave(T - 1, 0)
    b = smt_windows(rows, lab, torch.full((rows.shape[0],), T, device=input_ids.device), c.view(-1, 1), T, T)
    m_t = teacher.encode(b["context_ids"], b["context_mask"]).detach().requires_grad_(True)
    with torch.no_grad():
        m_next = teacher.encode(b["next_context_ids"], b["next_context_mask"])
    logits = teacher.decode(m_t, b["future_ids"])
    ce = F.cross_entropy(logits.flatten(0, 1), b["future_labels"].flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    dyn = ((student.step(m_t, b["next_token"]) - m_next) ** 2).mean(dim=(1, 2)).sum()
    (ce + dyn).backward()
    return m_t.grad.flatten(1).norm(dim=1).view(B, T - 1).mean(0).tolist()


def _prefix_memory(student, prefix: torch.LongTensor, teacher=None) -> torch.Tensor:
    """The memory after `prefix` (N, P): m_0 for P = 0, else the teacher's encoding (SMT's prefill) when `teacher` is
    given, else the student's own recurrence from m_0. Returns (N, K, d)."""
    if prefix.shape[1] == 0:
        return student.initial_memory(prefix.shape[0])
    if teacher is not None:
        return teacher.encode(prefix, torch.ones_like(prefix))
    return student(prefix, use_cache=False, output_memories=True).memories[:, -1]


@torch.no_grad()
def complete_after_prefix(student, prefix: torch.LongTensor, total: int, teacher=None, seed: int = 0,
                          temperature: float = 1.0) -> torch.LongTensor:
    """Sample a continuation of `prefix` up to `total` tokens: the memory of the prefix comes from the teacher's
    encoder (`teacher.encode`, SMT's prefill) when `teacher` is given, else from the student's own recurrence (m_0
    for an empty prefix); then the student samples from its readout one step at a time. Sampling runs on CPU with a
    generator seeded by `seed`, so the result does not depend on the device.

    Args:
        prefix: (N, P) token ids, P >= 0 (P <= the teacher's max_context_length with a teacher).
        total: length of each returned sequence (>= P).

    Returns:
        (N, total) token ids on CPU: the prefix, then `total - P` sampled tokens.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    N, P = prefix.shape
    m = _prefix_memory(student, prefix, teacher)
    out = [prefix]
    for _ in range(total - P):
        p = torch.softmax(student.readout(m).float().cpu() / temperature, -1)
        x = torch.multinomial(p, 1, generator=g).view(N).to(prefix.device)
        out.append(x[:, None])
        m = student.step(m, x)
    return torch.cat(out, 1).cpu()


@torch.no_grad()
def continuation_bits(student, input_ids: torch.LongTensor, prefix_length: int, teacher=None) -> float:
    """Bits per token of `input_ids[:, P:]` under the standalone student, true tokens fed in (teacher forcing),
    P = `prefix_length`. The memory before token P comes from the teacher's encoder `teacher.encode(x[:, :P])` (SMT's
    prefill, how the paper scores its students) when `teacher` is given, else from the student's own recurrence over
    x[:, :P] from m_0 (m_0 itself for P = 0). Paper: SMT, arXiv 2606.06479, Sec. 5 (prefill by the teacher).

    Args:
        student: an `SMTRecurrentForCausalLM`; teacher: an `SMTTeacherModel` with `max_context_length >= P`, or None.
        input_ids: (N, L) token ids; prefix_length: P in [0, L) (>= 1 with a teacher).

    Returns:
        mean of -log2 p(x_t | memory after x[:t]) over t = P..L-1 and the N rows.

    Raises:
        ValueError: P outside [0, L), or P = 0 with a teacher (the empty-context memory is the student's m_0).
    """
    N, L = input_ids.shape
    P = prefix_length
    if not 0 <= P < L or (teacher is not None and P == 0):
        raise ValueError(f"prefix_length={P} must be in [{int(teacher is not None)}, {L}) for sequences of length {L}"
                         + (" with a teacher (P = 0 is the student's m_0: pass teacher=None)" if teacher is not None else ""))
    m = _prefix_memory(student, input_ids[:, :P], teacher)
    nll = 0.0
    for t in range(P, L):
        nll += float(F.cross_entropy(student.readout(m).float(), input_ids[:, t], reduction="sum"))
        if t + 1 < L:
            m = student.step(m, input_ids[:, t])
    return nll / (N * (L - P)) / float(np.log(2))


@torch.no_grad()
def memory_spread(memories: torch.Tensor) -> float:
    """How much a set of memories varies across sequences: sum over entries of the variance across the N memories,
    divided by the mean squared norm (1 - ||mean m||^2 / mean ||m||^2). 0 when every sequence gets the same memory
    (collapse), 1 when the mean memory is 0. The uniformity loss pools the K tokens of each memory, so it can look
    healthy while every sequence has the same K tokens; this cannot.

    Args:
        memories: (N, K, d) or (N, Z) memories of N >= 2 different sequences.

    Returns:
        a float in [0, 1].
    """
    m = memories.reshape(memories.shape[0], -1).double()
    energy = float(m.pow(2).sum(1).mean())
    return float(m.var(0, unbiased=False).sum()) / max(energy, 1e-30)


def bigram_bits(train_tokens, eval_ids, vocab_size: int = 256, smoothing: float = 0.1) -> float:
    """Bits per token of an add-`smoothing` bigram model counted on `train_tokens`, scored on every next-token pair of
    `eval_ids`.

    Args:
        train_tokens: 1-D sequence of ints in [0, vocab_size) (a token stream).
        eval_ids: (N, L) ints (windows); pairs (eval_ids[:, i], eval_ids[:, i+1]) for i < L-1 are scored.

    Returns:
        mean of -log2 p(next | previous) over the scored pairs.
    """
    toks = np.asarray(train_tokens, dtype=np.int64)
    counts = np.full((vocab_size, vocab_size), smoothing)
    np.add.at(counts, (toks[:-1], toks[1:]), 1)
    probs = counts / counts.sum(1, keepdims=True)
    ev = np.asarray(eval_ids)
    return float(-np.log2(probs[ev[:, :-1], ev[:, 1:]]).mean())
