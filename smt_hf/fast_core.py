"""The fused, static-shaped step functions of the fast paths (`smt_hf/fast.py`): one decode step (read-out, token
choice, update), one masked prefill step, and a chunk of decode steps for CPU, plus the lookups of the modules they
call. Notation: B batch, K memory tokens, d width, V vocabulary.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import transition

__all__ = ["base_model", "recurrent_core", "eager_step", "make_core", "make_chunk", "module_parts", "same_parts",
           "CPU_DECODE_OPTIONS"]


def base_model(model: nn.Module) -> nn.Module:
    """The `SMTRecurrentForCausalLM` under a PEFT wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def recurrent_core(model: nn.Module) -> nn.Module:
    """The `SMTRecurrentModel` (embedding + updater + m_0) of a student, a PEFT-wrapped student, or itself."""
    base = base_model(model)
    core = getattr(base, "model", base)
    if not hasattr(core, "updater") or not hasattr(core, "embed_tokens"):
        raise TypeError(f"Expected an SMTRecurrentForCausalLM / SMTRecurrentModel, got {type(model).__name__}.")
    return core


def module_parts(model: nn.Module) -> tuple:
    """What a generator's fused functions call: every module and parameter storage of the embedding, updater,
    read-out and output head, and their train/eval and adapter state. A generator built on other parts is stale:
    `set_input_embeddings`, `resize_token_embeddings`, LoRA injected inside the updater, an adapter disabled, switched
    or merged, weights loaded with `assign=True` or a dtype change (compiled functions would run, and CUDA graphs
    replay, what was there before)."""
    base, core = base_model(model), recurrent_core(model)
    parts = (core.embed_tokens, core.updater, base.readout_head, base.get_output_embeddings())
    modules = tuple(m for p in parts for m in p.modules())
    # and the state that changes what a module computes without changing it: train/eval, and PEFT's adapter switches
    # (disable_adapter, set_adapter, merge_adapter / unmerge_adapter)
    states = tuple((m.training, getattr(m, "merged", None), getattr(m, "disable_adapters", None),
                    tuple(getattr(m, "active_adapters", None) or ())) for m in modules)
    return modules, tuple(t.data_ptr() for p in parts for t in p.parameters()), states


def same_parts(a: tuple, b: tuple) -> bool:
    """`module_parts` of the same modules (by identity) over the same parameter storage."""
    return len(a[0]) == len(b[0]) and all(x is y for x, y in zip(a[0], b[0])) and a[1:] == b[1:]


def eager_step(core: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The class-level (never the installed) transition: (B, K, d), (B, d) -> (B, K, d)."""
    eps = core.config.rms_norm_eps
    updater = core.updater

    def step(memory: torch.Tensor, token_embedding: torch.Tensor) -> torch.Tensor:
        return transition(updater, memory, token_embedding, eps)  # (B, K, d), as SMTRecurrentModel._step

    return step


def _filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """HF order: temperature, then top-k (-inf below the k-th largest). logits (B, V) float32."""
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and top_k > 0:
        k = min(int(top_k), logits.shape[-1])
        kth = torch.topk(logits, k)[0][..., -1, None]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits


def make_core(model: nn.Module, do_sample: bool, temperature: float, top_k: int | None):
    """The fused static-shaped functions of one decode step and one prefill step.

    decode(memory (B, K, d), noise (B, V) or None, done (B,) bool or None, pad (,) or None, ban (V,) bool or None)
        -> (next memory (B, K, d), token (B,))
        logits = g(m), -inf where `ban` (the eos ids before min_new_tokens, as HF's min-length processors);
        token = argmax (greedy) | multinomial (noise None) | argmax(p / noise) (noise ~ Exp(1),
        the exponential race: same distribution as multinomial, but graph/compile-safe); rows already `done`
        (met eos) take the `pad` token, as in HF generate; m' = f(m, token).
    prefill(memory (B, K, d), ids (B,), keep (B,) bool) -> memory (B, K, d): one masked update.
    """
    base = base_model(model)
    core = recurrent_core(model)
    step = eager_step(core)
    embed, head = core.embed_tokens, base.readout_head

    def decode(memory: torch.Tensor, noise: torch.Tensor | None = None, done: torch.Tensor | None = None,
               pad: torch.Tensor | None = None, ban: torch.Tensor | None = None):
        logits = head(memory).float()  # (B, V)
        if ban is not None:
            logits = logits.masked_fill(ban, float("-inf"))  # (B, V)
        if do_sample:
            probs = F.softmax(_filter_logits(logits, temperature, top_k), dim=-1)  # (B, V)
            if noise is None:
                tok = torch.multinomial(probs, num_samples=1).squeeze(1)  # (B,)
            else:
                tok = (probs / noise).argmax(-1)  # (B,)
        else:
            tok = logits.argmax(-1)  # (B,)
        if done is not None:
            tok = torch.where(done, pad, tok)  # finished rows read the pad token they emit
        return step(memory, embed(tok)).to(memory.dtype), tok

    def prefill(memory: torch.Tensor, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        new = step(memory, embed(ids)).to(memory.dtype)  # (B, K, d)
        return torch.where(keep[:, None, None], new, memory)

    return decode, prefill


# inductor options for the CPU decode chunk: the C++ wrapper calls kernels and GEMMs from C++ (the default Python
# wrapper spends more time per step than the kernels of a small model do)
CPU_DECODE_OPTIONS = {"cpp_wrapper": True}


def make_chunk(decode: Callable, steps: int):
    """`steps` decode steps in one static-shaped function (compiled as one graph on CPU: one Python call, one
    guard check and one wrapper per `steps` tokens instead of per token).

    chunk(memory, m_cut (B, K, d), done (B,) bool, pad (,) long, limit (1,) long, noise (steps, B, V) or None,
          eos (E,) long or None, eos_mask (V,) bool or None, min_left (1,) long or None)
        -> (memory, m_cut, done, tokens (B, steps), all_done (steps,) bool or None)
    Step i runs only when i < limit (the memory, m_cut and done of later steps are left unchanged, their tokens
    are to be dropped), so one compiled function also serves the last, shorter chunk. With eos: rows that met
    eos take the pad token, `all_done[i]` = every row has finished after step i, and m_cut = the memory after
    the last step at which some row was still running (as `FastGenerator._decode_body`). With eos_mask: step i
    bans the eos ids while i < min_left (min_new_tokens not yet reached).
    """

    def chunk(memory, m_cut, done, pad, limit, noise=None, eos=None, eos_mask=None, min_left=None):
        tokens, finished = [], []
        for i in range(steps):
            live = limit > i  # (1,) bool
            if eos is None:
                new_m, tok = decode(memory, None if noise is None else noise[i])
            else:
                all_before = done.all()
                ban = None if eos_mask is None else eos_mask & (min_left > i)  # (V,)
                new_m, tok = decode(memory, None if noise is None else noise[i], done, pad, ban)
                done = torch.where(live, done | (tok[:, None] == eos[None, :]).any(-1), done)  # (B,)
                finished.append(done.all())
                m_cut = torch.where(live.view(1, 1, 1) & ~all_before, new_m, m_cut)
            memory = torch.where(live.view(1, 1, 1), new_m, memory)  # (B, K, d)
            tokens.append(tok)
        return memory, m_cut, done, torch.stack(tokens, 1), (torch.stack(finished) if finished else None)

    return chunk
