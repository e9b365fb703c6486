"""The memory encoder E: registers + context -> K RMS-normalised memory tokens, the central object of SMT.

    m_t = E(x[t-Tc+1 .. t])        (B, K, d)

K learned registers are appended to the embedded context, a Transformer encoder reads [x ; R], and the register
outputs, RMS-normalised without a gain, are the memory (SMT, Sec. 3: https://arxiv.org/abs/2606.06479).
Two attention patterns:

    bidirectional    every position sees every non-padding position (the reference)
    causal-context   token i sees tokens <= i; registers see every token and each other
                     (`causal_context_mask`). Then the memory of every prefix x[:t], t = 0..T, comes out of ONE
                     pass (`encode_prefixes`), which SMT uses to encode all T+1 contexts of a window at once.

Who holds one: the teacher IS a memory encoder with a decoder on top (`SMTTeacherModel` subclasses
`MemoryEncoder`), and the student's carried parallel-prefill encoder (`SMTPrefillEncoder`) is one copied from
it. Both keep this module's layout, `embed_tokens`, `registers`, `encoder.*`, as top-level state-dict keys, so
checkpoints written before this module existed load unchanged (tests/test_checkpoint_compat.py) and no load-time
key map is needed (a nested `memory_encoder.` prefix would have needed one for from_pretrained, resume and the
remote-code export alike). Notation: B batch, Tc context length, K memory tokens, d width.
"""

from __future__ import annotations

import torch
from torch import nn

from .modeling_layers import TransformerStack, rms_normalize


def causal_context_mask(Tc: int, K: int, attention_mask: torch.Tensor | None, device) -> torch.Tensor:
    """Query-key mask of a causal-context encoder over [tokens (Tc) ; registers (K)]: token i sees tokens <= i,
    registers see every token and each other; padding is never a key (a query always sees itself, so a padded
    row stays finite). -> (B or 1, 1, Tc+K, Tc+K) bool."""
    L = Tc + K
    allow = torch.zeros(L, L, dtype=torch.bool, device=device)
    allow[:Tc, :Tc] = torch.ones(Tc, Tc, dtype=torch.bool, device=device).tril()
    allow[Tc:] = True
    allow = allow[None, None]  # (1, 1, L, L)
    if attention_mask is not None:
        keys = torch.cat([attention_mask.to(torch.bool), torch.ones(attention_mask.shape[0], K, dtype=torch.bool,
                                                                     device=device)], 1)  # (B, L)
        allow = (allow & keys[:, None, None, :]) | torch.eye(L, dtype=torch.bool, device=device)
    return allow


class MemoryEncoder(nn.Module):
    """E: token embedding + K learned registers + Transformer encoder -> memory (B, K, d).

    Build with `MemoryEncoder(config, num_layers, intermediate_size, causal)` (config: any SMT config, for
    vocab_size, hidden_size, memory_tokens, heads, dropout, rms_norm_eps, rope_theta), or, in a class that also
    derives from another base (the teacher), call `build_memory_encoder(...)` from its `__init__`.

    Attributes: embed_tokens (V, d), registers (K, d), encoder (TransformerStack), eps, causal.
    """

    def __init__(self, config=None, num_layers: int = 0, intermediate_size: int | None = None, causal: bool = False):
        super().__init__()
        if config is not None:
            self.build_memory_encoder(config, num_layers, intermediate_size, causal)

    def build_memory_encoder(self, config, num_layers: int, intermediate_size: int | None, causal: bool) -> None:
        """Create the parameters (registers start at zero; `SMTPreTrainedModel._init_weights` draws them)."""
        d = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, d)
        self.registers = nn.Parameter(torch.zeros(config.memory_tokens, d))
        self.encoder = TransformerStack.from_config(config, num_layers, intermediate_size or 4 * d)
        self.eps = config.rms_norm_eps
        self.causal = bool(causal)

    def encode(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """E(x): input_ids/attention_mask (B, Tc) (mask 1 = token, 0 = padding; Tc may be 0) -> memory (B, K, d).

        Bidirectional, or causal-context when `self.causal`. No validation here: the teacher's `encode` checks
        ids, shapes and the context length first.

        Rotary positions: the registers sit at Tc..Tc+K-1 and a row's tokens right before them, in order, wherever
        its padding is: left padding keeps positions 0..Tc-1 (bit for bit the unmasked layout), and a right-padded
        row or one with holes gets the memory of its tokens alone (it got another memory before: the registers'
        distance to the tokens grew with the padding)."""
        B, Tc = input_ids.shape
        K = self.registers.shape[0]
        x = self.embed_tokens(input_ids)  # (B, Tc, d)
        regs = self.registers.unsqueeze(0).expand(B, K, -1).to(x.dtype)  # (B, K, d)
        x = torch.cat([x, regs], dim=1)  # (B, Tc+K, d)
        positions = None
        if attention_mask is not None:
            kept = attention_mask.to(torch.long)  # (B, Tc)
            tokens = Tc - kept.sum(1, keepdim=True) + kept.cumsum(1) - 1  # (B, Tc): the n tokens at Tc-n..Tc-1
            positions = torch.cat([tokens, torch.arange(Tc, Tc + K, device=x.device).expand(B, K)], 1)  # (B, Tc+K)
        if self.causal:
            h = self.encoder(x, attn_mask=causal_context_mask(Tc, K, attention_mask, x.device),
                             positions=positions)  # (B, Tc+K, d)
            return rms_normalize(h[:, Tc:], self.eps)
        key_mask = None
        if attention_mask is not None:
            ones = torch.ones(B, K, dtype=torch.bool, device=x.device)
            key_mask = torch.cat([attention_mask.to(torch.bool), ones], dim=1)  # (B, Tc+K)
        h = self.encoder(x, key_mask=key_mask, positions=positions)  # (B, Tc+K, d)
        return rms_normalize(h[:, Tc:], self.eps)  # (B, K, d)

    def encode_prefixes(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """The causal-context encoder's memories of every prefix x[:t], t = 0..T, in one pass.

        Layout [x_1..x_T ; R_0 ; R_1 ; ... ; R_T] with R_t a copy of the K registers: tokens attend causally to
        tokens, group R_t attends to x_1..x_t and to itself, at rotary positions t..t+K-1 - exactly where
        `encode(x[:t])` puts its registers, so group t's output equals E(x[:t]). input_ids (B, T) -> memories
        (B, T+1, K, d). Cost: one pass over T + (T+1)K positions instead of T+1 passes. Raises ValueError for a
        bidirectional encoder (its memory of x[:t] depends on how the context ends).
        """
        if not self.causal:
            raise ValueError("encode_prefixes needs a causal-context memory encoder (causal=True); a bidirectional "
                             "encoder's memory of x[:t] depends on how the context ends.")
        B, T = input_ids.shape
        K = self.registers.shape[0]
        dev = input_ids.device
        x = self.embed_tokens(input_ids)  # (B, T, d)
        regs = self.registers.to(x.dtype).repeat(T + 1, 1).unsqueeze(0).expand(B, -1, -1)  # (B, (T+1)K, d)
        h = torch.cat([x, regs], dim=1)  # (B, T+(T+1)K, d)
        L = T + (T + 1) * K
        group = torch.arange(T + 1, device=dev).repeat_interleave(K)  # (T+1)K: prefix length of each register
        allow = torch.zeros(L, L, dtype=torch.bool, device=dev)
        allow[:T, :T] = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
        allow[T:, :T] = torch.arange(T, device=dev)[None, :] < group[:, None]  # R_t sees x_1..x_t
        allow[T:, T:] = group[:, None] == group[None, :]  # and its own registers
        positions = torch.cat([torch.arange(T, device=dev), group + torch.arange(K, device=dev).repeat(T + 1)])
        out = self.encoder(h, attn_mask=allow[None, None], positions=positions)  # (B, L, d)
        return rms_normalize(out[:, T:].reshape(B, T + 1, K, -1), self.eps)  # (B, T+1, K, d)

    def token_states(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                     num_layers: int | None = None) -> torch.Tensor:
        """The causal-context encoder's token stream after its first `num_layers` blocks (default: all), passed
        through the stack's final RMSNorm: input_ids/attention_mask (B, Tc) (left padding allowed) -> (B, Tc, d).

        Tokens attend only to tokens <= themselves, never to registers, so these are exactly the token states
        inside `encode` (same rotary positions 0..Tc-1; with a left-padded mask or none: other padding moves the
        tokens' positions in `encode`) and position i has read x[:i+1] only: an LM head on them is
        a causal LM (`SMTTrainingArguments.lambda_encoder_lm`). Raises ValueError for a bidirectional encoder (its
        tokens see the future) or `num_layers` outside 1..depth.
        """
        if not self.causal:
            raise ValueError("token_states needs a causal-context encoder (encoder_causal=True): a bidirectional "
                             "encoder's token states have read the whole context, so they cannot predict its next token.")
        layers = self.encoder.layers
        n = len(layers) if num_layers is None else int(num_layers)
        if not 1 <= n <= len(layers):
            raise ValueError(f"num_layers must be in 1..{len(layers)} (the encoder depth), got {num_layers}.")
        x = self.embed_tokens(input_ids)  # (B, Tc, d)
        Tc = input_ids.shape[1]
        mask = causal_context_mask(Tc, 0, attention_mask, x.device)  # tokens only
        cos, sin = self.encoder.rotary(Tc, x.device, x.dtype)
        for layer in layers[:n]:
            x = layer(x, cos, sin, attn_mask=mask)
        return self.encoder.norm(x)  # (B, Tc, d)

    @torch.no_grad()
    def load_memory_encoder(self, other: "MemoryEncoder") -> None:
        """Copy another memory encoder's embedding, registers and encoder (shapes are checked by `load_state_dict`)
        and its attention pattern."""
        self.embed_tokens.load_state_dict(other.embed_tokens.state_dict())
        self.registers.copy_(other.registers)
        self.encoder.load_state_dict(other.encoder.state_dict())
        self.causal = other.causal


__all__ = ["MemoryEncoder", "causal_context_mask"]
