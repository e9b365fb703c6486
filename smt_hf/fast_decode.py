"""`model.generate()` on the fast path: transformers' greedy / sampling loop run by `FastGenerator` where its
tokens are exactly the standard loop's, the standard loop everywhere else.

    student.enable_fast_decode()                      # opt in, per model instance (not saved with the model)
    student.generate(ids, max_new_tokens=64)          # FastGenerator: compiled decode chunks on CPU
    student.disable_fast_decode()                     # back to the standard loop only

Where it hooks in. `GenerationMixin.generate` prepares everything first (generation config, special tokens,
attention mask, num_return_sequences expansion, max/min length, logits processors, stopping criteria), then
calls the decoding method of the generation mode (`GENERATION_MODES_MAPPING`: greedy and sampling ->
`_sample`). `SMTRecurrentForCausalLM._sample` hands that fully prepared call to `fast_sample`, which reads the
prepared logits processors and stopping criteria, not the raw arguments, so any way of setting them (argument,
generation config, a user `logits_processor` list) is seen. Beam search and assisted decoding never reach it.
HF's per-call hook, `generate(custom_generate=callable)`, is not used: a callable is handed no streamer,
tokenizer or assistant model, and it replaces the decoding method of every mode, beam search included.

The fast path runs when the call is (the "supported set"):
    greedy (do_sample=False), or sampling with temperature / top_k only when the generator is uncompiled, takes
        one step per call and no eos is set (then `torch.multinomial` draws exactly the standard loop's random
        numbers, no more: the fast loop does not stop early, so with eos it would draw more);
    max_new_tokens / max_length; eos_token_id and pad_token_id; min_new_tokens / min_length;
    attention_mask (left padding; the prompt's pad ids masked as generate() infers them); prefill;
    num_return_sequences; no cache passed in; returns the sequences tensor (B, T + N').
Anything else (return_dict_in_generate, a streamer, any other logits processor or stopping criterion -
repetition_penalty, top_p, bad_words_ids, stop_strings, max_time, ... -, any other generation setting that
changes the tokens (`smt_hf/fast_settings.py`), eos / pad ids outside the vocabulary, inputs_embeds, a `memory`
to start from, a cache passed in, use_cache=False, synced_gpus) runs the standard loop unchanged, and the reason is logged once
(`enable_fast_decode(strict=True)`: a ValueError naming it instead).

Exactness: the uncompiled generator gives the standard loop's tokens bit for bit (tests/test_fast_decode.py).
A compiled one (inductor C++ kernels) computes the same function with other floating-point rounding: greedy
tokens are the same except where two logits tie within rounding (asserted equal on the bench model by
recipes/decode_cpu.py); sampling never runs compiled here.
"""

from __future__ import annotations

import copy

import torch
from transformers import GenerationMixin
from transformers.generation.logits_process import (
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)
from transformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria
from transformers.utils import logging

from .fast import FastGenerator
from .fast_settings import unsupported_settings

logger = logging.get_logger(__name__)

__all__ = ["enable_fast_decode", "disable_fast_decode", "fast_sample", "SUPPORTED"]

SUPPORTED = ("greedy decoding (sampling only uncompiled, decode_chunk 1, without eos), max_new_tokens / max_length, "
             "eos_token_id / pad_token_id, min_new_tokens / min_length, attention_mask, prefill, "
             "num_return_sequences, and the sequences tensor as output")
_MODEL_KWARGS = ("attention_mask", "logits_to_keep", "prefill", "use_cache")  # what the fast path reads or may ignore


class _Unsupported(Exception):
    """The call is not one the fast path runs exactly; the message names what."""


def enable_fast_decode(model, compile: bool | str = "default", decode_chunk: int | None = None,
                       strict: bool = False) -> None:
    """Route `model.generate()`'s greedy / sampling loop through `FastGenerator` where exact (see the module).

    compile, decode_chunk: as `FastGenerator` (default: the compiled CPU path, chunks of 8 steps; each new batch
        size compiles once, ~40 s on the bench CPU model). compile=False runs the eager generator (sampling can
        then use the fast path too, with decode_chunk 1).
    strict: raise ValueError for a call the fast path cannot run exactly, instead of running the standard loop.
    Generators are kept on the model per setting (do_sample, temperature, top_k, eos, pad, prefill) and reused (at most
    `MAX_KEPT_GENERATORS`, the least recently used dropped first).
    """
    from torch._inductor import list_mode_options

    modes = tuple(list_mode_options())  # torch.compile's modes (default, reduce-overhead, max-autotune, ...)
    if not (compile is False or compile is True or compile in modes):  # (a typo failed in the next generate())
        raise ValueError(f"`compile` must be False, True or a torch.compile mode {modes}, got {compile!r}.")
    if decode_chunk is not None and int(decode_chunk) < 1:
        raise ValueError(f"`decode_chunk` must be >= 1, got {decode_chunk}.")
    model._fast_decode = dict(compile=compile, decode_chunk=decode_chunk, strict=bool(strict), generators={})


def disable_fast_decode(model) -> None:
    """Undo `enable_fast_decode`: every `generate()` call runs the standard loop (the kept generators are freed)."""
    model.__dict__.pop("_fast_decode", None)


def _plan(model, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus, streamer,
          model_kwargs) -> dict:
    """The FastGenerator settings that reproduce this prepared `_sample` call, or `_Unsupported(reason)`."""
    if streamer is not None:
        raise _Unsupported("a streamer")
    if synced_gpus:
        raise _Unsupported("synced_gpus=True")
    if generation_config.return_dict_in_generate:
        raise _Unsupported("return_dict_in_generate=True")
    if getattr(generation_config, "is_assistant", False):
        raise _Unsupported("use as an assistant model")
    if getattr(generation_config, "prefill_chunk_size", None) is not None:  # the standard loop refuses it
        raise _Unsupported("prefill_chunk_size")
    for key, value in model_kwargs.items():
        if key not in _MODEL_KWARGS and value is not None:
            raise _Unsupported(f"the model input `{key}`" + (" (a cache passed in)" if key == "cache" else ""))
    if model_kwargs.get("use_cache") is False:
        raise _Unsupported("use_cache=False")
    T = input_ids.shape[1]
    max_length, eos = None, None
    for crit in stopping_criteria:
        if type(crit) is MaxLengthCriteria:
            max_length = crit.max_length if max_length is None else min(max_length, crit.max_length)
        elif type(crit) is EosTokenCriteria and eos is None:
            eos = sorted({int(i) for i in torch.as_tensor(crit.eos_token_id).view(-1).tolist()})
        else:
            raise _Unsupported(f"the stopping criterion {type(crit).__name__}")
    if max_length is None or max_length <= T:
        raise _Unsupported(f"max_length={max_length} for a prompt of {T} tokens")
    do_sample = bool(generation_config.do_sample)
    n_min, temperature, top_k, stage = 0, 1.0, 0, 0  # stage: the HF order min-length -> temperature -> top_k
    for proc in logits_processor:
        kind = type(proc)
        if kind in (MinLengthLogitsProcessor, MinNewTokensLengthLogitsProcessor) and stage == 0:
            ids = sorted({int(i) for i in torch.as_tensor(proc.eos_token_id).view(-1).tolist()})
            if ids != eos:
                raise _Unsupported(f"{kind.__name__} with eos ids {ids} other than the stopping eos {eos}")
            # step n (0-based) bans eos while T + n < min_length, or T + n - prompt < min_new_tokens
            n = (proc.min_length - T if kind is MinLengthLogitsProcessor
                 else proc.min_new_tokens + proc.prompt_length_to_skip - T)
            n_min = max(n_min, n)
        elif kind is TemperatureLogitsWarper and do_sample and stage < 1:
            temperature, stage = float(proc.temperature), 1
        elif kind is TopKLogitsWarper and do_sample and stage < 2 and proc.filter_value == float("-inf"):
            top_k, stage = int(proc.top_k), 2
        else:
            raise _Unsupported(f"the logits processor {kind.__name__}")
    if do_sample and eos is not None:
        raise _Unsupported("sampling with an eos id (the fast loop runs every step, so it would draw more random "
                           "numbers than generate())")
    pad = generation_config._pad_token_tensor
    return dict(do_sample=do_sample, temperature=temperature, top_k=top_k, eos=None if eos is None else tuple(eos),
                # resolved now: a generator kept under "None" kept the config.prefill of its first call
                pad=None if pad is None else int(pad), prefill=model.prefill_mode(model_kwargs.get("prefill")),
                N=max_length - T,
                n_min=max(n_min, 0))


MAX_KEPT_GENERATORS = 8  # settings kept at once; the least recently used is dropped (one per eos/pad/temperature grew)


def _generator(model, plan: dict, generation_config) -> FastGenerator:
    """The kept FastGenerator for these settings (built once: its compiled functions are reused); at most
    MAX_KEPT_GENERATORS are kept, the least recently used dropped first."""
    opts = model._fast_decode
    key = tuple(plan[k] for k in ("do_sample", "temperature", "top_k", "eos", "pad", "prefill"))
    config = copy.copy(generation_config)
    config.num_return_sequences = 1  # generate() has already repeated the prompts
    bad = unsupported_settings(config, plan["do_sample"])  # every call: a kept generator was checked when built
    if bad:
        raise _Unsupported(f"the generation setting{'s' if len(bad) > 1 else ''} {', '.join(bad)}")
    gen = opts["generators"].pop(key, None)  # re-inserted below: the dict's order is the order of use
    if gen is not None and gen.stale:  # a module or weight it calls changed (set_input_embeddings, LoRA, ...): rebuild
        gen = None
    if gen is None:
        try:
            gen = FastGenerator(model, do_sample=plan["do_sample"], temperature=plan["temperature"], top_k=plan["top_k"],
                                compile=opts["compile"], eos_token_id=None if plan["eos"] is None else list(plan["eos"]),
                                pad_token_id=plan["pad"], prefill=plan["prefill"], decode_chunk=opts["decode_chunk"],
                                min_new_tokens=0, generation_config=config,
                                sampler="multinomial" if plan["do_sample"] else None)
        except ValueError as err:  # (e.g. an eos / pad id outside the vocabulary)
            raise _Unsupported(f"settings FastGenerator refuses ({err})") from err
        while len(opts["generators"]) >= MAX_KEPT_GENERATORS:
            opts["generators"].pop(next(iter(opts["generators"])))
    opts["generators"][key] = gen
    if plan["do_sample"] and (gen.compiled or gen.cuda_graph or gen.decode_chunk != 1):
        raise _Unsupported("sampling with a compiled, CUDA-graphed or chunked decode (its random draws differ from "
                           "generate()'s); enable_fast_decode(compile=False) samples on the fast path")
    return gen


def fast_sample(model, input_ids: torch.LongTensor, logits_processor, stopping_criteria, generation_config,
                synced_gpus: bool = False, streamer=None, **model_kwargs) -> torch.LongTensor:
    """`GenerationMixin._sample` (greedy / sampling, as prepared by `generate()`) on `FastGenerator` when exact, else
    `GenerationMixin._sample` itself. input_ids (B, T) -> sequences (B, T + N'), N' <= max_length - T (cut after
    the step where every row met eos). With `strict`, a call outside the supported set raises ValueError."""
    opts = getattr(model, "_fast_decode", None)
    try:
        if opts is None:
            raise _Unsupported("fast decode is not enabled (model.enable_fast_decode())")
        plan = _plan(model, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus, streamer,
                     model_kwargs)
        gen = _generator(model, plan, generation_config)
    except _Unsupported as why:
        if opts is not None and opts["strict"]:
            raise ValueError(f"model.generate() on the fast path (enable_fast_decode(strict=True)) cannot run a call "
                             f"with {why} exactly. It supports {SUPPORTED}. Drop that setting, or call enable_fast_decode("
                             "strict=False) to run such calls on the standard loop.") from None
        logger.warning_once(f"generate(): {why} is outside the fast path's supported set; running the standard loop.")
        return GenerationMixin._sample(model, input_ids, logits_processor, stopping_criteria, generation_config,
                                       synced_gpus=synced_gpus, streamer=streamer, **model_kwargs)
    memory = gen.prefill(input_ids, model_kwargs.get("attention_mask"))  # (B, K, d)
    new, _ = gen.decode(memory, plan["N"], min_new_tokens=plan["n_min"])  # (B, N')
    return torch.cat([input_ids, new.to(input_ids.device)], dim=1)
