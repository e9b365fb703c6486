"""generate() and the fast paths on the inputs a break-it pass found mishandled: a starting `memory`, generation
settings the fast generator does not implement, modules replaced after a generator was built, masks and memories
of the wrong shape or dtype, and special ids outside the vocabulary. Each test fails on the code before the fix."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smt_hf import SMTMemoryCache, SMTRecurrentConfig, SMTRecurrentForCausalLM
from smt_hf.fast import FastGenerator

BACKBONES = ["transformer", "mlp", "gru"]


def student(backbone="gru", seed=0):
    torch.manual_seed(seed)
    return SMTRecurrentForCausalLM(SMTRecurrentConfig(backbone=backbone, vocab_size=32, hidden_size=16, memory_tokens=2,
                                                      num_attention_heads=2, updater_layers=1, readout_layers=1)).eval()


def prompt(B=2, T=6):
    return torch.randint(1, 32, (B, T), generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def greedy_from(model, memory, ids, n):
    """The reference: read `ids` from `memory` with `step`, then n greedy tokens from `readout`."""
    for t in range(ids.shape[1]):
        memory = model.step(memory, ids[:, t])
    toks = []
    for _ in range(n):
        tok = model.readout(memory).argmax(-1)
        toks.append(tok)
        memory = model.step(memory, tok)
    return torch.stack(toks, 1)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_generate_from_a_given_memory_goes_on_from_the_cache(backbone):
    """generate(memory=m) with the cache on: every step after the first restarted from `m` and read only the last
    token (only the first new token was right); now it equals the recurrence from `m`, as use_cache=False and a
    cache holding `m` do."""
    model, ids = student(backbone), prompt()
    memory = F.normalize(torch.randn(2, 2, 16, generator=torch.Generator().manual_seed(1)), dim=-1) * 4
    ref = greedy_from(model, memory, ids, 6)
    assert torch.equal(model.generate(ids, memory=memory, max_new_tokens=6, do_sample=False)[:, 6:], ref)
    assert torch.equal(model.generate(ids, memory=memory, max_new_tokens=6, use_cache=False)[:, 6:], ref)
    assert torch.equal(model.generate(ids, cache=SMTMemoryCache(memory.clone()), max_new_tokens=6)[:, 6:], ref)
    with pytest.raises(ValueError, match="both `memory` and a cache holding a memory"):
        model.generate(ids, memory=memory, cache=SMTMemoryCache(memory.clone()), max_new_tokens=2)


@pytest.mark.parametrize("setting,do_sample", [
    ({"guidance_scale": 3.0}, False), ({"num_beams": 3}, False), ({"num_return_sequences": 2}, False),
    ({"watermarking_config": {"greenlist_ratio": 0.5, "bias": 10.0}}, False), ({"top_h": 0.3}, True)])
def test_fast_generator_refuses_every_setting_it_does_not_implement(setting, do_sample):
    """These settings change model.generate's tokens or rows and were accepted and ignored (a deny-list missed them);
    the check is now an allow-list over the settings that differ from transformers' defaults."""
    model = student()
    for k, v in setting.items():
        setattr(model.generation_config, k, v)
    name = next(iter(setting))
    with pytest.raises(ValueError, match=f"{name}=.*which FastGenerator does not implement"):
        FastGenerator(model, do_sample=do_sample)
    setattr(model.generation_config, name, None)  # unset: accepted
    FastGenerator(model, do_sample=do_sample)


def test_fast_decode_still_runs_num_return_sequences():
    """generate() repeats the prompts itself, so the fast path (strict: it raises where it would fall back) still runs
    num_return_sequences, token for token as the standard loop."""
    model, ids = student(), prompt()
    torch.manual_seed(3)
    ref = model.generate(ids, max_new_tokens=5, num_return_sequences=2, do_sample=True)
    model.enable_fast_decode(compile=False, strict=True)
    torch.manual_seed(3)
    assert torch.equal(model.generate(ids, max_new_tokens=5, num_return_sequences=2, do_sample=True), ref)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_generators_notice_a_replaced_embedding(backbone):
    """A kept generator called the embedding it was built with after set_input_embeddings: the fast path stopped
    matching the standard loop. A kept generator is now rebuilt; a FastGenerator held by the user refuses."""
    model, ids = student(backbone), prompt()
    model.enable_fast_decode(compile=False)
    model.generate(ids, max_new_tokens=4)  # builds and keeps a generator
    held = FastGenerator(model)
    model.set_input_embeddings(nn.Embedding(32, 16))
    ref = copy.deepcopy(model)
    ref.disable_fast_decode()
    assert torch.equal(model.generate(ids, max_new_tokens=8), ref.generate(ids, max_new_tokens=8))
    with pytest.raises(ValueError, match="Build a new FastGenerator"):
        held.generate(ids, 4)
    assert torch.equal(FastGenerator(model).generate(ids, 8), ref.generate(ids, max_new_tokens=8))


def test_fast_paths_check_the_attention_mask_shape():
    """A (1, T) mask for a batch of 2 was broadcast to both rows on the fast path (the standard loop refuses it), and
    a mask shorter than the prompt failed with a bare IndexError."""
    model, ids = student(), prompt()
    bad = torch.tensor([[0, 0, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match=r"attention_mask` must be \(batch, >= length\) = \(2, >=6\)"):
        model.generate(ids, attention_mask=bad, max_new_tokens=4)
    model.enable_fast_decode(compile=False)
    with pytest.raises(ValueError, match=r"attention_mask` must be \(batch, >= length\) = \(2, >=6\)"):
        model.generate(ids, attention_mask=bad, max_new_tokens=4)
    with pytest.raises(ValueError, match=r"= \(2, >=6\), got \(2, 3\)"):
        FastGenerator(model).generate(ids, 4, attention_mask=torch.ones(2, 3, dtype=torch.long))


def test_memories_are_cast_and_checked_on_every_path():
    """A float32 memory (what a teacher gives) into a bfloat16 student: cast by forward, but a dtype error in
    FastGenerator.prefill / decode; a memory of the wrong K passed prefill; a memory of the wrong batch failed
    inside the recurrence."""
    model, ids = student("transformer").to(torch.bfloat16), prompt()
    memory = torch.randn(2, 2, 16, generator=torch.Generator().manual_seed(2))
    gen = FastGenerator(model)
    with torch.no_grad():
        state = model(ids, memory=memory).cache.memory
        torch.testing.assert_close(gen.prefill(ids, memory=memory), state)
        toks, _ = gen.decode(memory, 3)
    assert torch.equal(toks, greedy_from(model, memory.to(torch.bfloat16), ids[:, :0], 3))
    with pytest.raises(ValueError, match="memory_tokens=2"):
        gen.prefill(ids, memory=torch.randn(2, 3, 16, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="`memory` holds 1 sequences but the input has 2 rows"):
        gen.prefill(ids, memory=memory[:1])
    with pytest.raises(ValueError, match="`memory` holds 1 sequences but the input has 2 rows"):
        model(ids, memory=model.initial_memory(1))


def test_special_ids_outside_the_vocabulary():
    """An eos id the model cannot emit (>= vocab_size) is harmless to the standard loop; the fast path crashed with
    an IndexError. model.generate now falls back to the standard loop (its tokens), FastGenerator refuses by name."""
    model, ids = student(), prompt()
    ref = model.generate(ids, max_new_tokens=8, eos_token_id=40, min_new_tokens=3)
    model.enable_fast_decode(compile=False)
    assert torch.equal(model.generate(ids, max_new_tokens=8, eos_token_id=40, min_new_tokens=3), ref)
    with pytest.raises(ValueError, match=r"eos_token_id=40 is outside the model's vocabulary \[0, 31\]"):
        FastGenerator(model, eos_token_id=40)
    with pytest.raises(ValueError, match=r"pad_token_id=40 is outside"):
        FastGenerator(model, eos_token_id=3, pad_token_id=40)


def test_settings_transformers_ignores_or_that_change_nothing_keep_the_fast_path():
    """A key GenerationConfig does not define (a Hub generation_config.json's `chat_format`) and no-op values
    (`penalty_alpha=0.0`) are not refused; the settings are checked on every call, not only when a kept generator
    is built (a refused call ran fast after an ordinary one)."""
    model, ids = student(), prompt()
    model.generation_config.chat_format = "chatml"
    ref = model.generate(ids, max_new_tokens=4)
    FastGenerator(model)
    model.enable_fast_decode(compile=False, strict=True)
    assert torch.equal(model.generate(ids, max_new_tokens=4), ref)
    assert torch.equal(model.generate(ids, max_new_tokens=4, penalty_alpha=0.0), ref)
    with pytest.raises(ValueError, match="Guidance"):  # (caught by the prepared call before the settings check)
        model.generate(ids, max_new_tokens=4, guidance_scale=3.0)


def test_a_generator_notices_lora_injected_inside_the_updater():
    """LoRA layers added inside the updater leave the top-level modules in place; a held generator (on a GPU: CUDA
    graphs of the old kernels) must still count as stale."""
    from peft import get_peft_model

    from smt_hf.peft_utils import lora_config_for

    model, ids = student("transformer"), prompt()
    held = FastGenerator(model)
    peft_model = get_peft_model(model, lora_config_for(model, r=2, init_lora_weights=False))
    assert held.stale
    with pytest.raises(ValueError, match="Build a new FastGenerator"):
        held.generate(ids, 4)
    assert torch.equal(FastGenerator(peft_model).generate(ids, 6), peft_model.generate(input_ids=ids, max_new_tokens=6))


def test_parallel_prefill_checks_the_attention_mask_shape():
    from smt_hf import SMTTeacherConfig, SMTTeacherModel

    model, ids = student("transformer"), prompt()
    teacher = SMTTeacherModel(SMTTeacherConfig(vocab_size=32, hidden_size=16, memory_tokens=2, num_attention_heads=2,
                                               num_encoder_layers=1, num_decoder_layers=1, max_context_length=8))
    model.add_prefill_encoder(teacher, context_length=8)
    with pytest.raises(ValueError, match=r"= \(2, >=6\), got \(1, 6\)"):
        model(ids, attention_mask=torch.ones(1, 6, dtype=torch.long), prefill="parallel")


def test_the_fast_decode_settings_check_runs_on_every_call():
    """A kept generator was checked only when built: a call whose config the allow-list refuses ran on it."""
    from smt_hf import fast_decode

    model, ids = student(), prompt()
    model.enable_fast_decode(compile=False)
    model.generate(ids, max_new_tokens=4)  # keeps a generator for these settings
    (key, gen), = model._fast_decode["generators"].items()
    plan = dict(zip(("do_sample", "temperature", "top_k", "eos", "pad", "prefill"), key), N=4, n_min=0)
    config = copy.copy(model.generation_config)
    config.guidance_scale = 3.0
    with pytest.raises(fast_decode._Unsupported, match="guidance_scale=3.0"):
        fast_decode._generator(model, plan, config)


def test_a_generator_notices_adapter_switches():
    """disable_adapter / merge_adapter change what the modules compute without replacing them: a held generator (on a
    GPU: CUDA graphs of the adapter-on kernels) must count as stale, and fresh again once switched back."""
    from peft import get_peft_model

    from smt_hf.peft_utils import lora_config_for

    model = student("transformer")
    peft_model = get_peft_model(model, lora_config_for(model, r=2, init_lora_weights=False))
    held = FastGenerator(peft_model)
    with peft_model.disable_adapter():
        assert held.stale
    assert not held.stale
    peft_model.merge_adapter()
    assert held.stale
    peft_model.unmerge_adapter()
    assert not held.stale
