"""The Transformers model contract, one harness run for every backbone (issue 14).

Each standard `PreTrainedModel` / `GenerationMixin` flag either behaves as in transformers or is refused with a
clear error. Tiny config as transformers' own recurrent-model tests: vocab 99, width 32, K 2, 4 heads, 1 layer.
"""

import copy

import pytest
import torch
from conftest import BACKBONES

import smt_hf
from smt_hf import (SMTMemoryCache, SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherConfig, SMTTeacherModel,
                    SMTTrainingArguments)

V, D, K = 99, 32, 2


def teacher_config(**kw):
    base = dict(vocab_size=V, hidden_size=D, memory_tokens=K, num_attention_heads=4, num_encoder_layers=1,
                num_decoder_layers=1, intermediate_size=64, max_context_length=16)
    base.update(kw)
    return SMTTeacherConfig(**base)


def student_config(backbone, **kw):
    base = dict(updater_layers=1, updater_intermediate_size=64)
    base.update(kw)
    return SMTRecurrentConfig.from_teacher(teacher_config(), backbone=backbone, **base)


@pytest.fixture(params=BACKBONES)
def model(request):
    torch.manual_seed(0)
    return SMTRecurrentForCausalLM(student_config(request.param)).eval()


@pytest.fixture
def teacher():
    torch.manual_seed(1)
    return SMTTeacherModel(teacher_config()).eval()


def ids_(B=2, T=6, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- 1. hidden states and attentions
@torch.no_grad()
def test_forward_hidden_states_are_the_flattened_memories(model):
    x = ids_()
    out = model(x, output_hidden_states=True, output_memories=True)
    assert isinstance(out.hidden_states, tuple) and len(out.hidden_states) == 1
    assert out.hidden_states[0].shape == (2, 6, K * D)
    close(out.hidden_states[0], out.memories.flatten(2))
    assert model(x).hidden_states is None
    model.config.output_hidden_states = True  # the config default is honoured too
    close(model(x).hidden_states[0], out.hidden_states[0])


@pytest.mark.parametrize("mode", ["greedy", "sample", "beam", "beam_sample"])
@torch.no_grad()
def test_generate_dict_outputs(model, mode):
    x, n = ids_(T=4), 3
    kw = dict(do_sample=mode in ("sample", "beam_sample"), num_beams=2 if mode.startswith("beam") else 1)
    torch.manual_seed(0)
    out = model.generate(x, max_new_tokens=n, return_dict_in_generate=True, output_hidden_states=True,
                         output_scores=True, output_logits=True, top_k=5, **kw)
    rows = 2 * kw["num_beams"]
    assert len(out.scores) == len(out.logits) == len(out.hidden_states) == n
    assert out.hidden_states[0][0].shape == (rows, 4, K * D)  # the prompt, every position
    assert all(h[0].shape == (rows, 1, K * D) for h in out.hidden_states[1:])  # one new token per step
    assert all(s.shape == (rows, V) for s in out.scores)
    if mode in ("greedy", "sample"):  # the step-i outputs are those of the full sequence up to step i
        seq = out.sequences
        full = model(seq[:, :-1], output_hidden_states=True)
        for i in range(n):
            close(out.logits[i], full.logits[:, 3 + i])
            close(out.hidden_states[i][0][:, -1], full.hidden_states[0][:, 3 + i])


def test_output_attentions_is_refused(model):
    x = ids_()
    with pytest.raises(ValueError, match="output_attentions is not supported.*output_hidden_states=True"):
        model(x, output_attentions=True)
    with pytest.raises(ValueError, match="output_attentions is not supported"):
        model.generate(x, max_new_tokens=2, return_dict_in_generate=True, output_attentions=True)
    for flag in ("output_attentions", "output_hidden_states"):  # the base model accepted both and ignored them
        with pytest.raises(ValueError, match=f"{flag}=True is not supported by SMTRecurrentModel.*`memories`"):
            model.model(x, **{flag: True})
    assert model.model(x, output_hidden_states=False).memories.shape[:2] == x.shape


def test_logits_to_keep_takes_positions_as_a_tensor(model):
    """As transformers' causal LMs: an int keeps the last positions, a 1-D tensor the positions it names (it was a
    "Boolean value of Tensor ... is ambiguous" RuntimeError)."""
    x = ids_()
    full = model(x).logits
    assert torch.equal(model(x, logits_to_keep=torch.tensor([0, 2])).logits, full[:, [0, 2]])
    assert torch.equal(model(x, logits_to_keep=2).logits, full[:, -2:])
    with pytest.raises(ValueError, match="1-D tensor of positions"):
        model(x, logits_to_keep=torch.tensor([[0]]))


def test_assisted_generation_is_refused(model):
    """assistant_model / prompt_lookup_num_tokens roll the state back past rejected drafts: refused by name (it failed
    inside transformers with "Assisted decoding requires a cache", though the model has one)."""
    x = ids_()
    for kwargs in ({"prompt_lookup_num_tokens": 2}, {"assistant_model": copy.deepcopy(model)},
                   {"assistant_early_exit": 1}):
        with pytest.raises(ValueError, match="Assisted generation .* is not supported .* cannot be rolled back"):
            model.generate(x, max_new_tokens=4, **kwargs)


# ---------------------------------------------------------------- 2. return_dict=False
@torch.no_grad()
def test_return_dict_false_gives_tuples(model):
    x = ids_()
    ref = model(x, labels=x)
    out = model(x, labels=x, return_dict=False)
    assert type(out) is tuple and len(out) == 3  # loss, logits, cache
    close(out[0], ref.loss)
    close(out[1], ref.logits)
    assert isinstance(out[2], SMTMemoryCache)
    model.config.return_dict = False
    out = model(x, use_cache=False)
    assert type(out) is tuple and len(out) == 1
    close(out[0], ref.logits)
    base = model.model(x)
    assert type(base) is tuple  # the base model honours it too: memories, cache, last memory


@torch.no_grad()
def test_teacher_return_dict_false_and_refused_flags(teacher):
    x, fut = ids_(T=5), ids_(T=3, seed=1)
    ref = teacher(x, future_ids=fut, labels=fut)
    out = teacher(x, future_ids=fut, labels=fut, return_dict=False)
    assert type(out) is tuple and len(out) == 3
    close(out[0], ref.loss)
    close(out[1], ref.logits)
    close(out[2], ref.memory)
    for flag in ("output_attentions", "output_hidden_states"):
        with pytest.raises(ValueError, match=f"{flag} is not supported by SMTTeacherModel"):
            teacher(x, **{flag: True})


@torch.no_grad()
def test_teacher_refuses_misshaped_labels_and_futures(teacher):
    """labels longer than the decoder's outputs were cut silently (and without future_ids only labels[:, :1] was
    used); shorter ones, a future of another batch size and inputs_embeds raised torch's own errors. Each now raises
    ValueError naming the expected shape or input."""
    x, fut = ids_(T=5), ids_(T=3, seed=1)
    for labels, kw in ((ids_(T=5, seed=2), {"future_ids": fut}), (ids_(T=3, seed=2), {}), (fut[:, :2], {"future_ids": fut})):
        with pytest.raises(ValueError, match=r"`labels` must have shape \(batch, Tf\)"):
            teacher(x, labels=labels, **kw)
    with pytest.raises(ValueError, match="`future_ids` has batch size 1 but `input_ids` has"):
        teacher(x, future_ids=fut[:1])
    with pytest.raises(ValueError, match="needs `input_ids`.*inputs_embeds"):
        teacher(inputs_embeds=torch.zeros(1, 5, teacher.config.hidden_size))
    assert teacher(x, labels=fut[:, :1]).loss.isfinite()  # without future_ids: one target, (batch, 1)


# ---------------------------------------------------------------- 3. resize_token_embeddings
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@torch.no_grad()
def test_resize_token_embeddings(tmp_path, tied):
    torch.manual_seed(0)
    model = SMTRecurrentForCausalLM(student_config("gru", tie_word_embeddings=tied)).eval()
    old_emb = model.get_input_embeddings().weight.clone()
    old_head = model.get_output_embeddings().weight.clone()
    model.resize_token_embeddings(120)
    assert model.get_input_embeddings().weight.shape == (120, D)
    assert model.get_output_embeddings().weight.shape == (120, D)
    assert model.config.vocab_size == 120
    assert torch.equal(model.get_input_embeddings().weight[:V], old_emb)
    assert torch.equal(model.get_output_embeddings().weight[:V], old_head)
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    x = torch.tensor([[1, 119, 5]])
    logits = model(x).logits
    assert logits.shape == (1, 3, 120)
    model.save_pretrained(tmp_path)
    loaded = SMTRecurrentForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.vocab_size == 120
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())  # weights bit for bit
    # outputs up to float32 rounding: with equal weights, BLAS (MKL on some CPUs) may round differently per memory
    # alignment of the freshly loaded tensors (seen on an AMD EPYC: 7e-7)
    torch.testing.assert_close(loaded(x).logits, logits, rtol=0, atol=1e-5)
    assert (loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight) == tied


@torch.no_grad()
def test_resize_also_resizes_the_prefill_encoder(teacher):
    torch.manual_seed(0)
    model = SMTRecurrentForCausalLM(student_config("gru")).eval()
    model.add_prefill_encoder(teacher)
    model.resize_token_embeddings(104)
    assert model.prefill_encoder.embed_tokens.weight.shape == (104, D)
    assert model(torch.tensor([[3, 103]]), prefill="parallel").logits.shape == (1, 1, 104)


# ---------------------------------------------------------------- 4. past_key_values is the cache
@torch.no_grad()
def test_past_key_values_is_an_alias_of_cache(model):
    x = ids_(T=7)
    full = model(x).logits
    prefix = model(x[:, :-1], use_cache=True).cache
    close(model(x[:, -1:], past_key_values=prefix).logits[:, -1], full[:, -1])
    prefix = model(x[:, :-1]).cache
    close(model(x[:, -1:], cache_params=prefix).logits[:, -1], full[:, -1])
    with pytest.raises(ValueError, match="both `cache` and `past_key_values`"):
        model(x[:, -1:], cache=model(x[:, :-1]).cache, past_key_values=model(x[:, :-1]).cache)
    from transformers import DynamicCache

    with pytest.raises(TypeError, match="SMTMemoryCache"):
        model(x, past_key_values=DynamicCache())


# ---------------------------------------------------------------- 5. compile / export
@torch.no_grad()
def test_compile_fullgraph_and_export(model):
    """No data-dependent branch on the mask (one graph), and the cache is a pytree node. backend='eager' keeps
    the test fast: the graph capture (dynamo, fullgraph) is what used to fail, not the code generation."""
    x = ids_(T=4)
    mask = torch.ones_like(x)
    mask[0, 0] = 0  # a padded row and a full row in one batch
    ref = model(x, attention_mask=mask)
    torch._dynamo.reset()
    got = torch.compile(model, fullgraph=True, backend="eager")(x, attention_mask=torch.ones_like(x))
    close(got.logits, model(x, attention_mask=torch.ones_like(x)).logits)
    program = torch.export.export(model, (), {"input_ids": x, "attention_mask": mask})
    out = program.module()(input_ids=x, attention_mask=mask)
    close(out.logits, ref.logits)
    assert isinstance(out.cache, SMTMemoryCache) and out.cache.seen_tokens == 4
    close(out.cache.memory, ref.cache.memory)


# ---------------------------------------------------------------- 6. empty prompt
@torch.no_grad()
def test_generate_from_an_empty_prompt_starts_at_m0(model):
    got = model.generate(torch.zeros(2, 0, dtype=torch.long), max_new_tokens=4, do_sample=False)
    m, toks = model.initial_memory(2), []
    for _ in range(4):
        toks.append(model.readout(m).argmax(-1))
        m = model.step(m, toks[-1])
    assert torch.equal(got, torch.stack(toks, 1))
    from smt_hf import FastGenerator

    assert torch.equal(got, FastGenerator(model).generate(torch.zeros(2, 0, dtype=torch.long), 4))


# ---------------------------------------------------------------- 7. memory dtype
@torch.no_grad()
def test_memory_of_another_dtype_is_cast_to_the_model_dtype(model, teacher):
    model = model.to(torch.bfloat16)
    x = ids_(T=8)
    m = teacher.encode(x[:, :4])  # fp32
    assert m.dtype == torch.float32
    mb = m.to(torch.bfloat16)
    assert torch.equal(model.step(m, x[:, 4]), model.step(mb, x[:, 4]))
    assert torch.equal(model.readout(m), model.readout(mb))
    assert torch.equal(model.readout(m[:, None]), model.readout(mb[:, None]))
    assert torch.equal(model(x[:, 4:], memory=m).logits, model(x[:, 4:], memory=mb).logits)
    mask = torch.ones_like(x)  # the whole sequence: x[:, 4:] are the new tokens after the 4 the caches have read
    a = model.generate(x[:, 4:], cache=SMTMemoryCache(m, 4), attention_mask=mask, max_new_tokens=3, do_sample=False)
    b = model.generate(x[:, 4:], cache=SMTMemoryCache(mb, 4), attention_mask=mask, max_new_tokens=3, do_sample=False)
    assert torch.equal(a, b)
    from smt_hf import evaluate_smt

    with_teacher = evaluate_smt(model, teacher, x, x, context_length=4, eval_positions=2, drift_stride=4)
    alone = evaluate_smt(model, None, x, x, context_length=4, eval_positions=2, drift_stride=4)
    assert with_teacher["student_nll_sum"] == alone["student_nll_sum"] and with_teacher["probe_targets"] == 4


# ---------------------------------------------------------------- 8. parallel prefill needs the cache in generate
@torch.no_grad()
def test_parallel_prefill_without_cache_is_refused_in_generate(model, teacher, tmp_path):
    model.add_prefill_encoder(teacher)
    x = ids_()
    with pytest.raises(ValueError, match="prefill='parallel' needs use_cache=True"):
        model.generate(x, prefill="parallel", use_cache=False, max_new_tokens=2)
    model.config.prefill = "parallel"
    model.generation_config.use_cache = False
    model.save_pretrained(tmp_path)
    loaded = SMTRecurrentForCausalLM.from_pretrained(tmp_path).eval()
    with pytest.raises(ValueError, match="needs use_cache=True"):
        loaded.generate(x, max_new_tokens=2)
    # with the cache it runs the recurrence after the one-pass prefill
    got = loaded.generate(x, max_new_tokens=3, do_sample=False, use_cache=True)
    m, toks = loaded.prefill_memory(x), []
    for _ in range(3):
        toks.append(loaded.readout(m).argmax(-1))
        m = loaded.step(m, toks[-1])
    assert torch.equal(got[:, 6:], torch.stack(toks, 1))
    # recurrent prefill without a cache recomputes the recurrence from m_0 (exact, as transformers does)
    rec = loaded.generate(x, max_new_tokens=3, do_sample=False, prefill="recurrent", use_cache=False)
    assert torch.equal(rec, loaded.generate(x, max_new_tokens=3, do_sample=False, prefill="recurrent", use_cache=True))


# ---------------------------------------------------------------- inputs_embeds
@torch.no_grad()
def test_inputs_embeds_equal_the_input_ids_path(model):
    x = ids_()
    emb = model.get_input_embeddings()(x)
    mask = torch.ones_like(x)
    mask[1, :2] = 0
    close(model(inputs_embeds=emb, attention_mask=mask).logits, model(x, attention_mask=mask).logits)
    a = model.generate(x, max_new_tokens=5, do_sample=False, return_dict_in_generate=True, output_logits=True)
    b = model.generate(inputs_embeds=emb, max_new_tokens=5, do_sample=False, return_dict_in_generate=True,
                       output_logits=True)
    assert torch.equal(b.sequences, a.sequences[:, 6:])
    for la, lb in zip(a.logits, b.logits):
        close(la, lb)
    with pytest.raises(ValueError, match="exactly one of `input_ids`"):
        model(x, inputs_embeds=emb)
    with pytest.raises(ValueError, match="hidden_size=32"):
        model(inputs_embeds=emb[..., :8])


# ---------------------------------------------------------------- 9. activation checkpointing
@pytest.mark.parametrize("mode", ["joint", "bptt"])
def test_activation_checkpointing_gives_the_plain_losses_and_gradients(tmp_path, mode):
    from smt_hf import SMTTrainingModule

    x = ids_(B=4, T=12)
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        teacher = SMTTeacherModel(teacher_config())
        student = SMTRecurrentForCausalLM(student_config("transformer"))
        args = SMTTrainingArguments(output_dir=str(tmp_path), mode=mode, context_length=8, future_length=4,
                                    split="last", report_to="none", use_cpu=True)
        module = SMTTrainingModule(student, teacher, args).train()
        calls = []
        if checkpointing:
            module.gradient_checkpointing_enable()
            for m in module.modules():
                if getattr(m, "gradient_checkpointing", False):
                    fn = m._gradient_checkpointing_func
                    m._gradient_checkpointing_func = lambda *a, fn=fn, **k: calls.append(1) or fn(*a, **k)
        torch.manual_seed(1)
        parts = module(input_ids=x, labels=x)
        sum(parts.values()).backward()
        assert bool(calls) == checkpointing  # the blocks were recomputed, not only flagged
        results.append((parts, {n: p.grad for n, p in module.named_parameters() if p.grad is not None}))
    (plain, g0), (ckpt, g1) = results
    for k in plain:
        close(ckpt[k], plain[k])
    assert g0.keys() == g1.keys() and g0
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-5, atol=1e-6)


def test_trainer_gradient_checkpointing_argument(tmp_path):
    from smt_hf import SMTTrainer

    torch.manual_seed(0)
    teacher = SMTTeacherModel(teacher_config())
    data = [{"input_ids": ids_(1, 12, seed=i)[0].tolist(), "labels": ids_(1, 12, seed=i)[0].tolist()} for i in range(4)]
    for backbone in BACKBONES:
        student = SMTRecurrentForCausalLM(student_config(backbone))
        args = SMTTrainingArguments(output_dir=str(tmp_path), mode="joint", context_length=8, future_length=4,
                                    split="last", gradient_checkpointing=True, max_steps=1,
                                    per_device_train_batch_size=2, report_to="none", use_cpu=True, save_strategy="no",
                                    disable_tqdm=True)
        trainer = SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=data)
        trainer.train()  # enables it on the training module, which delegates to both models
        assert student.is_activation_checkpointing and teacher.is_activation_checkpointing
        assert trainer.state.global_step == 1


# ---------------------------------------------------------------- config fields survive save/load
def test_every_config_field_survives_save_load(tmp_path, teacher):
    cfg = SMTRecurrentConfig(backbone="mlp", vocab_size=V, hidden_size=D, memory_tokens=3, num_attention_heads=2,
                             updater_layers=2, updater_intermediate_size=48, readout_layers=2,
                             readout_intermediate_size=40, rope_theta=500.0, dropout=0.1, initializer_range=0.05,
                             rms_norm_eps=1e-5, use_cache=False, tie_word_embeddings=True, pad_token_id=0,
                             bos_token_id=1, eos_token_id=2)
    cfg.save_pretrained(tmp_path)
    loaded = SMTRecurrentConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == cfg.to_dict()
    model = SMTRecurrentForCausalLM(cfg)
    assert model.readout_head.lm_head.weight is model.model.embed_tokens.weight  # tie_word_embeddings takes effect
    assert model.readout_head.decoder.rotary.theta == 500.0 and model.model.updater.in_proj.out_features == 48
    assert model(ids_()).cache is None  # use_cache=False takes effect in forward


def test_top_level_public_api_is_lazy():
    import subprocess
    import sys

    code = ("import sys, smt_hf; assert 'smt_hf.trainer' not in sys.modules; "
            "from smt_hf import SMTTrainer, SMTTrainingArguments, make_task, export_for_hub, evaluate_smt, FastGenerator; "
            "assert 'matplotlib' not in sys.modules; print(SMTTrainer.__module__, make_task.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["smt_hf.trainer", "smt_hf.data.tasks"]
    assert {"SMTTrainer", "SMTTrainingArguments", "make_task", "export_for_hub"} <= set(smt_hf.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        smt_hf.nope


@torch.no_grad()
def test_peft_prompt_tuning_runs_on_inputs_embeds():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = SMTRecurrentForCausalLM(student_config("gru")).eval()
    tuned = peft.get_peft_model(model, peft.PromptTuningConfig(task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=3,
                                                               num_layers=1, token_dim=D, num_attention_heads=4))
    x = ids_(T=5)
    soft = tuned.get_prompt(2)  # (B, 3, d) the learned virtual tokens
    embeds = torch.cat([soft, model.get_input_embeddings()(x)], 1)
    close(tuned(input_ids=x).logits, model(inputs_embeds=embeds).logits)
    got = tuned.generate(input_ids=x, max_new_tokens=3, do_sample=False)
    assert torch.equal(got[:, 5:], model.generate(inputs_embeds=embeds, max_new_tokens=3, do_sample=False))
