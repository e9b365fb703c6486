"""Parallel prefill: the teacher's encoder carried by the student.

A recurrent prefill reads a prompt of length T in T sequential steps. The SMT teacher was trained to compress
the last Tc tokens of a context into exactly the memory the student continues from, so a student that carries
the teacher's encoder can turn a long prompt into its state in one parallel pass over the last Tc tokens
(cost independent of T), then generate token by token as usual:

    m_T = E(x[T-Tc+1 .. T])      (B, K, d)   one bidirectional pass over <= Tc tokens + K registers
    m_{t+1} = f(m_t, x_{t+1})                 the student's recurrence from there on

The memory is the teacher's, not the one the student's own recurrence would reach: after SMT->DMT the two
agree up to the drift DMT trains away (`eval_drift_*`). Attach with `student.add_prefill_encoder(teacher)`,
then `generate(..., prefill="parallel")` (or set `config.prefill = "parallel"`).

Source: the SMT teacher encoder (https://arxiv.org/abs/2606.06479, Sec. 3), carried by the student for prefill.
"""

from __future__ import annotations

import torch

from .modeling_encoder import MemoryEncoder


class SMTPrefillEncoder(MemoryEncoder):
    """A [`MemoryEncoder`] copied from the teacher (same layout, `embed_tokens`, `registers`, `encoder`, so its
    weights copy over one to one) that reads the last `context_length` tokens of a prompt.

    Built from a student config (`SMTRecurrentConfig`) whose `prefill_encoder` sub-config (`SMTMemoryEncoderConfig`)
    gives depth, Tc, FFN width and attention pattern; width, K, vocabulary and heads are the student's."""

    def __init__(self, config):
        enc = config.prefill_encoder
        super().__init__(config, enc.num_layers, enc.intermediate_size, enc.causal)
        self.context_length = enc.context_length

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The memory after a prompt: input_ids/attention_mask (B, T) (left padding allowed) -> (B, K, d), from
        the last `context_length` columns."""
        input_ids = input_ids[:, -self.context_length:]  # (B, Tc)
        if attention_mask is not None:
            attention_mask = attention_mask[:, -input_ids.shape[1]:]
            if not torch.compiler.is_compiling() and bool(attention_mask.all()):  # no data-dependent branch in a graph
                attention_mask = None
        return self.encode(input_ids, attention_mask)

    def load_teacher_encoder(self, teacher) -> None:
        """Copy the teacher's embedding, registers and encoder (`MemoryEncoder.load_memory_encoder`)."""
        self.load_memory_encoder(teacher)


__all__ = ["SMTPrefillEncoder"]
