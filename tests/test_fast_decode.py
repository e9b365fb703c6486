"""`model.generate()` on the fast path (smt_hf.fast_decode): the standard loop's tokens exactly, or the standard loop.

The fast path is checked to have run (or not) with a spy on `FastGenerator.decode`; the eager generator (compile=False,
chunked or not) is used, the compiled one only with SMT_SLOW_TESTS=1 (a compile takes ~30-60 s on CPU).
"""

import os

import pytest
import torch
from conftest import BACKBONES, tiny_student_config, tiny_teacher_config
from transformers import LogitsProcessorList, StoppingCriteriaList
from transformers.generation.logits_process import MinLengthLogitsProcessor, SuppressTokensLogitsProcessor
from transformers.generation.stopping_criteria import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from smt_hf import SMTRecurrentForCausalLM, SMTTeacherModel
from smt_hf.cache import SMTMemoryCache
from smt_hf.fast import FastGenerator

SLOW = os.environ.get("SMT_SLOW_TESTS") == "1"


@pytest.fixture
def fast_calls(monkeypatch):
    """How many times FastGenerator.decode ran (the fast path) since the test began."""
    calls = []
    decode = FastGenerator.decode

    def spy(self, *args, **kwargs):
        calls.append(1)
        return decode(self, *args, **kwargs)

    monkeypatch.setattr(FastGenerator, "decode", spy)
    return calls


def model_for(backbone="transformer"):
    torch.manual_seed(0)
    return SMTRecurrentForCausalLM(tiny_student_config(backbone, initializer_range=0.3)).eval()


def standard(model, *args, **kwargs):
    """model.generate with fast decode off (the reference)."""
    saved = model.__dict__.pop("_fast_decode", None)
    try:
        return model.generate(*args, **kwargs)
    finally:
        if saved is not None:
            model._fast_decode = saved


# ---------------------------------------------------------------- the fast path: same tokens
@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("chunk", [1, 4])
def test_greedy_generate_on_the_fast_path_equals_the_standard_loop(backbone, chunk, fast_calls):
    model = model_for(backbone)
    prompt = torch.randint(0, 16, (3, 5))
    ref = model.generate(prompt, max_new_tokens=10, do_sample=False)
    assert not fast_calls  # off by default
    model.enable_fast_decode(compile=False, decode_chunk=chunk, strict=True)
    assert torch.equal(model.generate(prompt, max_new_tokens=10, do_sample=False), ref)
    assert torch.equal(model.generate(prompt, max_length=15), ref)  # max_length, greedy from the generation config
    assert len(fast_calls) == 2


@pytest.mark.parametrize("chunk", [1, 4])
def test_eos_pad_min_new_tokens_and_min_length_equal_the_standard_loop(chunk, fast_calls):
    """eos cuts the output and pads finished rows; min_new_tokens / min_length ban eos in the first steps (they change
    the tokens here, and the fast path follows); left padding and a pad id inside the prompt (generate() infers the
    mask) read as in the standard loop."""
    model = model_for()
    prompt = torch.randint(0, 15, (3, 5))
    eos = int(model.generate(prompt, max_new_tokens=10, do_sample=False)[0, 5 + 2])
    model.enable_fast_decode(compile=False, decode_chunk=chunk, strict=True)
    mask = torch.ones_like(prompt)
    mask[1, :2] = 0
    padded = prompt.clone()
    padded[2, 1] = 15
    cases = [dict(), dict(min_new_tokens=6), dict(min_length=9), dict(attention_mask=mask),
             dict(min_new_tokens=4, attention_mask=mask), dict(inputs=padded)]
    outs = []
    for kw in cases:
        kw = dict(dict(inputs=prompt, max_new_tokens=20, do_sample=False, eos_token_id=eos, pad_token_id=15), **kw)
        ref = standard(model, **kw)
        got = model.generate(**kw)
        assert torch.equal(got, ref), kw
        outs.append(ref)
    assert len(fast_calls) == len(cases)
    assert outs[0].shape[1] < 5 + 20 and (outs[0][0, 5 + 3:] == 15).all()  # cut after every row met eos, rows padded
    assert not torch.equal(outs[1][:, :outs[0].shape[1]], outs[0])  # min_new_tokens mattered


def test_fast_generator_implements_min_new_tokens():
    """FastGenerator bans eos before `min_new_tokens` (argument or generation config; min_length counts the prompt) as
    model.generate does; it refused such a config before."""
    model = model_for()
    prompt = torch.randint(0, 15, (2, 5))
    eos = int(model.generate(prompt, max_new_tokens=10, do_sample=False)[0, 5 + 1])
    kw = dict(eos_token_id=eos, pad_token_id=15)
    ref = model.generate(prompt, max_new_tokens=20, do_sample=False, min_new_tokens=5, **kw)
    assert torch.equal(FastGenerator(model, min_new_tokens=5, **kw).generate(prompt, 20), ref)
    assert torch.equal(FastGenerator(model, min_new_tokens=5, decode_chunk=3, **kw).generate(prompt, 20), ref)
    model.generation_config.min_length = 10
    ref = model.generate(prompt, max_new_tokens=20, do_sample=False, **kw)
    assert torch.equal(FastGenerator(model, **kw).generate(prompt, 20), ref)


def test_sampling_on_the_uncompiled_fast_path_draws_what_generate_draws(fast_calls):
    """do_sample with temperature / top_k (and num_return_sequences): the same tokens under one seed, and the same
    random-number state after the call (exactly as many draws)."""
    model = model_for()
    prompt = torch.randint(0, 16, (2, 5))
    kw = dict(max_new_tokens=12, do_sample=True, temperature=0.7, top_k=5, num_return_sequences=2)
    torch.manual_seed(1)
    ref = model.generate(prompt, **kw)
    ref_state = torch.get_rng_state()
    model.enable_fast_decode(compile=False, strict=True)
    torch.manual_seed(1)
    assert torch.equal(model.generate(prompt, **kw), ref)
    assert torch.equal(torch.get_rng_state(), ref_state) and len(fast_calls) == 1


def test_parallel_prefill_on_the_fast_path():
    torch.manual_seed(0)
    model = model_for()
    model.add_prefill_encoder(SMTTeacherModel(tiny_teacher_config()), context_length=8, use_by_default=True)
    ids = torch.randint(1, 16, (2, 12))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    ref = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    with pytest.raises(ValueError, match="a torch.compile mode"):  # a typo failed in the next generate()
        model.enable_fast_decode(compile="nonsense")
    model.enable_fast_decode(compile=False, strict=True)
    assert torch.equal(model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False), ref)
    assert torch.equal(model.generate(ids, attention_mask=mask, max_new_tokens=8, prefill="recurrent"),
                       standard(model, ids, attention_mask=mask, max_new_tokens=8, prefill="recurrent"))
    # the default changed after a first call: the fast path follows config.prefill (it kept the first call's)
    for default in ("recurrent", "parallel"):
        model.config.prefill = default
        assert torch.equal(model.generate(ids, attention_mask=mask, max_new_tokens=8),
                           standard(model, ids, attention_mask=mask, max_new_tokens=8))


def test_kept_generators_are_bounded_and_reused(fast_calls):
    """One generator per (eos, pad, temperature, ...) setting was kept without bound: at most MAX_KEPT_GENERATORS now,
    the least recently used dropped first; a kept one is reused (same object), and every call equals generate()."""
    from smt_hf.fast_decode import MAX_KEPT_GENERATORS

    model = model_for()
    model.enable_fast_decode(compile=False, strict=True)
    ids = torch.randint(1, 16, (2, 6))
    kept = model._fast_decode["generators"]
    for eos in range(1, MAX_KEPT_GENERATORS + 3):
        assert torch.equal(model.generate(ids, max_new_tokens=5, eos_token_id=eos, pad_token_id=0),
                           standard(model, ids, max_new_tokens=5, eos_token_id=eos, pad_token_id=0))
        if eos == 3:
            third = next(g for k, g in kept.items() if k[3] == (3,))
            model.generate(ids, max_new_tokens=5, eos_token_id=1, pad_token_id=0)  # eos 1: used again, kept
    assert len(kept) == MAX_KEPT_GENERATORS and len(fast_calls) == MAX_KEPT_GENERATORS + 3
    assert {k[3] for k in kept} == {(1,)} | {(e,) for e in range(4, MAX_KEPT_GENERATORS + 3)}  # 2 and 3 dropped
    model.generate(ids, max_new_tokens=5, eos_token_id=4, pad_token_id=0)
    assert next(reversed(kept))[3] == (4,)  # the most recently used last
    assert third not in kept.values()


# ---------------------------------------------------------------- outside the supported set: the standard loop
class Collect(BaseStreamer):
    def __init__(self):
        self.tokens = []

    def put(self, value):
        self.tokens.append(value)

    def end(self):
        pass


class StopAfter(StoppingCriteria):
    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), input_ids.shape[1] >= 8, dtype=torch.bool)


def unsupported_calls(model, prompt):
    """(name, generate kwargs) the fast path cannot run exactly; `streamer` and `cache` are built per call."""
    eos = int(standard(model, prompt, max_new_tokens=6, do_sample=False)[0, -1])
    return [
        ("RepetitionPenaltyLogitsProcessor", dict(repetition_penalty=1.5)),
        ("NoRepeatNGramLogitsProcessor", dict(no_repeat_ngram_size=1)),
        ("TopPLogitsWarper", dict(do_sample=True, top_p=0.8)),
        ("return_dict_in_generate=True", dict(return_dict_in_generate=True, output_scores=True)),
        ("a streamer", dict(streamer=None)),
        ("MaxTimeCriteria", dict(max_time=60.0)),
        ("MinLengthLogitsProcessor with eos ids", dict(logits_processor=LogitsProcessorList(
            [MinLengthLogitsProcessor(8, eos)]))),  # an eos the stopping criteria do not know
        ("the logits processor SuppressTokensLogitsProcessor", dict(logits_processor=LogitsProcessorList(
            [SuppressTokensLogitsProcessor([eos])]))),
        ("the stopping criterion StopAfter", dict(stopping_criteria=StoppingCriteriaList([StopAfter()]))),
        ("sampling with an eos id", dict(do_sample=True, eos_token_id=eos, pad_token_id=15)),
        ("use_cache=False", dict(use_cache=False)),
        ("inputs_embeds", dict(inputs=None, inputs_embeds=model.get_input_embeddings()(prompt))),
        ("a cache passed in", dict(cache=None)),
    ]


@pytest.mark.parametrize("case", range(13))
def test_unsupported_calls_run_the_standard_loop_or_raise_when_strict(case, fast_calls):
    """Policy: a call outside the supported set runs the standard loop unchanged (same output as fast decode off);
    with strict=True it raises a ValueError naming the setting and the supported set."""
    model = model_for()
    prompt = torch.randint(0, 16, (2, 5))
    name, kw = unsupported_calls(model, prompt)[case]
    kw = dict(dict(inputs=prompt, max_new_tokens=8), **kw)

    def run(**extra):
        torch.manual_seed(3)
        if "streamer" in kw:
            kw["streamer"] = Collect()
        if "cache" in kw:  # generate() advances the cache passed in
            kw["cache"] = SMTMemoryCache(model.initial_memory(prompt.shape[0]).clone())
        out = model.generate(**kw, **extra)
        if "streamer" in kw:
            assert len(kw["streamer"].tokens) == 1 + 8  # the prompt, then every new token: it did stream
        return out.sequences if hasattr(out, "sequences") else out

    ref = run()
    model.enable_fast_decode(compile=False, decode_chunk=4)
    assert torch.equal(run(), ref)
    model.enable_fast_decode(compile=False, decode_chunk=4, strict=True)
    with pytest.raises(ValueError, match=f"(?s){name}.*It supports greedy decoding"):
        run()
    assert not fast_calls


def test_prefill_chunk_size_is_refused_on_the_fast_path_too(fast_calls):
    """The standard loop refuses prefill_chunk_size; the fast path, which never calls _prefill, ignored it."""
    model, prompt = model_for(), torch.randint(0, 16, (2, 5))
    model.enable_fast_decode(compile=False)
    with pytest.raises(ValueError, match="prefill_chunk_size=2 is not supported"):
        model.generate(prompt, max_new_tokens=3, prefill_chunk_size=2)
    model.enable_fast_decode(compile=False, strict=True)
    with pytest.raises(ValueError, match="prefill_chunk_size"):
        model.generate(prompt, max_new_tokens=3, prefill_chunk_size=2)
    assert not fast_calls


def test_compiled_or_chunked_sampling_and_beam_search_stay_on_the_standard_loop(fast_calls):
    model = model_for()
    prompt = torch.randint(0, 16, (2, 5))
    model.enable_fast_decode(compile=False, decode_chunk=4, strict=True)
    with pytest.raises(ValueError, match="sampling with a compiled, CUDA-graphed or chunked decode"):
        model.generate(prompt, max_new_tokens=8, do_sample=True)
    # beam search is another decoding method: generate() never hands it to the fast path, strict or not
    ref = standard(model, prompt, max_new_tokens=8, num_beams=2, do_sample=False)
    assert torch.equal(model.generate(prompt, max_new_tokens=8, num_beams=2, do_sample=False), ref)
    assert not fast_calls
    model.disable_fast_decode()
    assert "_fast_decode" not in model.__dict__
    with pytest.raises(ValueError, match="decode_chunk"):
        model.enable_fast_decode(decode_chunk=0)


@pytest.mark.skipif(not SLOW, reason="compiles a decode chunk (~30-60 s on CPU); SMT_SLOW_TESTS=1")
def test_compiled_fast_decode_greedy_equals_generate(fast_calls):
    model = model_for("gru")
    prompt = torch.randint(0, 15, (2, 5))
    ref = model.generate(prompt, max_new_tokens=20, do_sample=False)
    eos = int(ref[0, 5 + 3])
    ref_eos = model.generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=eos, pad_token_id=15)
    model.enable_fast_decode(strict=True)  # the default: compiled CPU chunks of 8 steps
    assert torch.equal(model.generate(prompt, max_new_tokens=20, do_sample=False), ref)
    assert torch.equal(model.generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=eos, pad_token_id=15),
                       ref_eos)
    assert len(fast_calls) == 2
