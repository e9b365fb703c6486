"""Fast paths (smt_hf.fast, bf16 autocast, batched DMT teacher memories) equal the plain paths.

Compilation with the inductor C++ backend takes tens of seconds per function on a small CPU, so the compile
tests use the cheapest backbone (GRU) by default; SMT_SLOW_TESTS=1 runs them for every backbone.
"""

import os

import pytest
import torch
from conftest import BACKBONES, smt_split_batch, tiny_student_config, tiny_teacher_config

from smt_hf import SMTRecurrentForCausalLM, SMTTeacherModel
from smt_hf.data.collator import SMTDataCollator
from smt_hf.data.windows import left_windows
from smt_hf.fast import FastGenerator, compile_step, fast_generate, recurrent_core, restore_step
from smt_hf.training_args import SMTTrainingArguments
from smt_hf.training_module import SMTTrainingModule

SLOW = os.environ.get("SMT_SLOW_TESTS") == "1"
COMPILE_BACKBONES = BACKBONES if SLOW else ["gru"]


def eager_step(model, memory, emb):
    """The class-level transition, whatever is installed on the instance."""
    core = recurrent_core(model)
    return type(core)._step(core, memory, emb)


# ---------------------------------------------------------------- generation
def test_fast_generate_greedy_equals_generate(student):
    prompt = torch.randint(0, 16, (3, 7))
    ref = student.generate(prompt, max_new_tokens=48, do_sample=False)
    out = fast_generate(student, prompt, 48)
    assert out.shape == (3, 55) and torch.equal(out, ref)


def test_fast_generate_left_padded_prompts(student):
    ids = torch.randint(1, 16, (2, 9))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    ref = student.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False)
    assert torch.equal(fast_generate(student, ids, 20, attention_mask=mask), ref)


def test_prefill_equals_forward_memory(student):
    ids = torch.randint(0, 16, (2, 11))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        ref = student(ids, attention_mask=mask).cache.memory  # (B, K, d)
    got = FastGenerator(student).prefill(ids, mask)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_sampling_multinomial_matches_generate_seeded(student):
    prompt = torch.randint(0, 16, (3, 4))
    torch.manual_seed(5)
    ref = student.generate(prompt, max_new_tokens=16, do_sample=True, top_k=5, temperature=0.7)
    torch.manual_seed(5)
    out = fast_generate(student, prompt, 16, do_sample=True, top_k=5, temperature=0.7)
    assert torch.equal(out, ref)


def test_exponential_race_sampler():
    """The graph-safe sampler: top_k=1 is greedy, and draws follow softmax(logits / temperature)."""
    torch.manual_seed(0)
    model = SMTRecurrentForCausalLM(tiny_student_config("mlp")).eval()
    prompt = torch.randint(0, 16, (2, 3))
    greedy = fast_generate(model, prompt, 12)
    assert torch.equal(fast_generate(model, prompt, 12, do_sample=True, top_k=1, sampler="exponential"), greedy)
    # one step from one memory, many rows: empirical frequencies vs softmax
    gen = FastGenerator(model, do_sample=True, temperature=2.0, sampler="exponential")
    memory = model.initial_memory(4000).clone()
    with torch.no_grad():
        probs = torch.softmax(model.readout(memory[:1]) / 2.0, -1)[0]  # (V,)
        toks, _ = gen.decode(memory, 1)
    freq = torch.bincount(toks[:, 0], minlength=16).float() / 4000
    assert (freq - probs).abs().max() < 0.03


def test_eos_padding_and_early_cut_match_generate():
    torch.manual_seed(0)
    model = SMTRecurrentForCausalLM(tiny_student_config("transformer")).eval()
    prompt = torch.randint(0, 16, (3, 5))
    free = model.generate(prompt, max_new_tokens=30, do_sample=False)
    eos = int(free[0, 5 + 3])  # a token row 0 emits early
    ref = model.generate(prompt, max_new_tokens=30, do_sample=False, eos_token_id=eos, pad_token_id=15)
    out = fast_generate(model, prompt, 30, eos_token_id=eos, pad_token_id=15)
    assert torch.equal(out, ref)
    prompt[1, 1] = 15  # a pad id inside the prompt: generate infers an attention mask (0 there); so must we
    ref = model.generate(prompt, max_new_tokens=30, do_sample=False, eos_token_id=eos, pad_token_id=15)
    assert torch.equal(fast_generate(model, prompt, 30, eos_token_id=eos, pad_token_id=15), ref)


def test_default_sampling_settings_follow_generate():
    """No temperature/top_k given: the model's generation config, else transformers' defaults (top_k 50), the
    same draws as model.generate(do_sample=True) under one seed (with V > 50 the top-k default matters)."""
    torch.manual_seed(0)
    model = SMTRecurrentForCausalLM(tiny_student_config("gru", vocab_size=256)).eval()
    prompt = torch.randint(0, 256, (3, 4))
    torch.manual_seed(7)
    ref = model.generate(prompt, max_new_tokens=12, do_sample=True)
    torch.manual_seed(7)
    assert torch.equal(fast_generate(model, prompt, 12, do_sample=True), ref)
    model.generation_config.top_k, model.generation_config.temperature = 3, 0.5
    torch.manual_seed(7)
    ref = model.generate(prompt, max_new_tokens=12, do_sample=True)
    torch.manual_seed(7)
    assert torch.equal(fast_generate(model, prompt, 12, do_sample=True), ref)
    model.generation_config.top_p = 0.9
    with pytest.raises(ValueError, match="top_p=0.9, which FastGenerator does not implement"):
        FastGenerator(model, do_sample=True)


@pytest.mark.parametrize("setting", [("repetition_penalty", 2.0), ("no_repeat_ngram_size", 1)])
def test_fast_generator_refuses_generation_settings_it_would_ignore(setting):
    """A generation config whose setting changes `model.generate`'s greedy tokens is refused, not silently ignored
    (FastGenerator implements temperature, top_k and eos only); its no-op value is accepted."""
    torch.manual_seed(0)
    model = SMTRecurrentForCausalLM(tiny_student_config("gru")).eval()
    prompt = torch.tensor([[3, 4, 5, 6, 7]])
    name, value = setting
    plain = FastGenerator(model).generate(prompt, 8)
    setattr(model.generation_config, name, value)
    assert not torch.equal(model.generate(prompt, max_new_tokens=8, do_sample=False), plain)  # the setting matters
    with pytest.raises(ValueError, match=f"{name}={value!r}, which FastGenerator does not implement"):
        FastGenerator(model)
    setattr(model.generation_config, name, {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0}[name])
    assert torch.equal(FastGenerator(model).generate(prompt, 8), model.generate(prompt, max_new_tokens=8, do_sample=False))


def test_parallel_prefill_mode_equals_generate():
    """config.prefill='parallel' (or prefill='parallel'): the fast path builds the state with the carried
    encoder, as model.generate does, token for token (left padding included)."""
    torch.manual_seed(0)
    teacher = SMTTeacherModel(tiny_teacher_config())
    model = SMTRecurrentForCausalLM(tiny_student_config("transformer")).eval()
    model.add_prefill_encoder(teacher, context_length=8, use_by_default=True)
    ids = torch.randint(1, 16, (2, 20))
    mask = torch.ones_like(ids)
    mask[0, :15] = 0
    ref = model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False)
    assert torch.equal(fast_generate(model, ids, 10, attention_mask=mask), ref)
    with torch.no_grad():
        torch.testing.assert_close(FastGenerator(model).prefill(ids, mask), model.prefill_memory(ids, mask))
        recurrent = FastGenerator(model, prefill="recurrent").prefill(ids, mask)
        torch.testing.assert_close(recurrent, model(ids, attention_mask=mask, prefill="recurrent").cache.memory)


def test_returned_memory_matches_the_cut_sequence_with_eos():
    """With eos, the returned memory is the state after reading exactly the returned tokens (finished rows
    read pad, as in HF generate), so generation can continue from it."""
    torch.manual_seed(0)
    model = SMTRecurrentForCausalLM(tiny_student_config("transformer")).eval()
    prompt = torch.randint(0, 16, (3, 5))
    free = model.generate(prompt, max_new_tokens=30, do_sample=False)
    eos = int(free[0, 5 + 2])
    gen = FastGenerator(model, eos_token_id=eos, pad_token_id=15)
    seq, memory = gen.generate(prompt, 30, return_memory=True)
    assert seq.shape[1] < 5 + 30  # cut once every row met eos
    with torch.no_grad():
        torch.testing.assert_close(memory, model(seq).cache.memory, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_chunked_decode_equals_step_by_step(student, chunk):
    """The CPU chunk function (here eager) gives the step-by-step tokens and memory, also for a last chunk
    shorter than the others (N = 10 is not a multiple of 3 or 8)."""
    prompt = torch.randint(0, 16, (3, 5))
    ref_seq, ref_m = FastGenerator(student).generate(prompt, 10, return_memory=True)
    gen = FastGenerator(student, decode_chunk=chunk)
    assert (gen._chunk_fn is None) == (chunk == 1)
    seq, m = gen.generate(prompt, 10, return_memory=True)
    assert torch.equal(seq, ref_seq) and torch.equal(seq, student.generate(prompt, max_new_tokens=10, do_sample=False))
    torch.testing.assert_close(m, ref_m, rtol=0, atol=0)


def test_chunked_decode_with_eos_cuts_and_returns_the_same_memory():
    torch.manual_seed(0)
    model = SMTRecurrentForCausalLM(tiny_student_config("transformer")).eval()
    prompt = torch.randint(0, 16, (3, 5))
    free = model.generate(prompt, max_new_tokens=30, do_sample=False)
    eos = int(free[0, 5 + 2])
    ref_seq, ref_m = FastGenerator(model, eos_token_id=eos, pad_token_id=15).generate(prompt, 30, return_memory=True)
    seq, m = FastGenerator(model, eos_token_id=eos, pad_token_id=15, decode_chunk=4).generate(prompt, 30, return_memory=True)
    assert seq.shape[1] < 5 + 30 and torch.equal(seq, ref_seq)
    torch.testing.assert_close(m, ref_m, rtol=0, atol=0)
    never = [t for t in range(16) if t not in free[:, 5:15]]  # an eos no row meets in 10 steps: nothing is cut
    kw = dict(eos_token_id=never[0], pad_token_id=15)
    ref_seq, ref_m = FastGenerator(model, **kw).generate(prompt, 10, return_memory=True)
    seq, m = FastGenerator(model, decode_chunk=4, **kw).generate(prompt, 10, return_memory=True)
    assert seq.shape[1] == 15 and torch.equal(seq, ref_seq)
    torch.testing.assert_close(m, ref_m, rtol=0, atol=0)
    with pytest.raises(ValueError, match="decode_chunk"):
        FastGenerator(model, decode_chunk=0)


@pytest.mark.skipif(not SLOW, reason="compiles a decode chunk (~30-60 s on CPU); SMT_SLOW_TESTS=1")
def test_compiled_cpu_decode_chunks_equal_eager_tokens():
    """The default CPU compiled path (chunks of 8 steps, C++ wrapper): the eager tokens, with a short last
    chunk and with eos."""
    torch.manual_seed(0)
    model = SMTRecurrentForCausalLM(tiny_student_config("transformer", initializer_range=0.3)).eval()
    prompt = torch.randint(0, 16, (2, 5))
    ref = model.generate(prompt, max_new_tokens=20, do_sample=False)
    gen = FastGenerator(model, compile="default")
    assert gen.decode_chunk == 8
    assert torch.equal(gen.generate(prompt, 20), ref)
    eos = int(ref[0, 5 + 3])
    eager_eos = FastGenerator(model, eos_token_id=eos, pad_token_id=15).generate(prompt, 20, return_memory=True)
    got = FastGenerator(model, compile="default", eos_token_id=eos, pad_token_id=15).generate(prompt, 20, return_memory=True)
    assert torch.equal(got[0], eager_eos[0])
    torch.testing.assert_close(got[1], eager_eos[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone", COMPILE_BACKBONES)
def test_compiled_step_equals_eager(backbone):
    torch.manual_seed(0)
    model = SMTRecurrentForCausalLM(tiny_student_config(backbone)).eval()
    memory, emb = model.initial_memory(3).clone(), torch.randn(3, 32)
    step = compile_step(model, mode="reduce-overhead", install=False)
    with torch.no_grad():
        torch.testing.assert_close(step(memory, emb), eager_step(model, memory, emb), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not SLOW, reason="compiles decode + prefill functions (~30 s on CPU); SMT_SLOW_TESTS=1")
def test_compiled_generator_equals_generate():
    torch.manual_seed(0)
    model = SMTRecurrentForCausalLM(tiny_student_config("gru")).eval()
    prompt = torch.randint(0, 16, (2, 5))
    ref = model.generate(prompt, max_new_tokens=24, do_sample=False)
    assert torch.equal(fast_generate(model, prompt, 24, compile="default"), ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("compile_mode,graph", [(False, True), ("default", True), ("reduce-overhead", False)])
def test_cuda_graph_generator_equals_generate(student, compile_mode, graph):
    model = student.cuda()
    prompt = torch.randint(0, 16, (4, 9), device="cuda")
    ref = model.generate(prompt, max_new_tokens=32, do_sample=False)
    gen = FastGenerator(model, compile=compile_mode, cuda_graph=graph)
    assert torch.equal(gen.generate(prompt, 32), ref)
    assert torch.equal(gen.generate(prompt, 32), ref)  # graphs replayed from the cache


def test_installed_step_runs_forward_and_restores(student):
    ids = torch.randint(0, 16, (2, 9))
    with torch.no_grad():
        ref = student(ids).logits
    compile_step(student, mode=None)  # eager, sync-free step installed on the instance
    assert "_step" in vars(recurrent_core(student)) and "step" in vars(recurrent_core(student))
    with torch.no_grad():
        torch.testing.assert_close(student(ids).logits, ref, rtol=0, atol=0)
        m = student.initial_memory(2)
        torch.testing.assert_close(student.step(m, ids[:, 0]), eager_step(student, m, student.model.embed_tokens(ids[:, 0])))
    restore_step(student)
    assert "_step" not in vars(recurrent_core(student))


# ---------------------------------------------------------------- training fast paths
def make_module(mode, tmp_path, backbone="transformer", **kw):
    torch.manual_seed(0)
    teacher = SMTTeacherModel(tiny_teacher_config())
    student = SMTRecurrentForCausalLM(tiny_student_config(backbone))
    base = dict(output_dir=str(tmp_path), mode=mode, context_length=16, future_length=8, rollout_length=16,
                dmt_stride=4, uniformity_samples=64, report_to=[])
    base.update(kw)
    args = SMTTrainingArguments(**base)
    return SMTTrainingModule(student, teacher if mode != "bptt" else None, args).train()


def make_batch(mode, B=4, L=40):
    g = torch.Generator().manual_seed(1)
    feats = [{"input_ids": torch.randint(0, 16, (L,), generator=g)} for _ in range(B)]
    if mode in ("smt", "joint"):
        return smt_split_batch(feats, 16, 8, generator=torch.Generator().manual_seed(2))
    return SMTDataCollator(mode=mode)(feats)


@pytest.mark.parametrize("start", ["teacher", "initial"])
def test_dmt_teacher_memories_batched_equal_per_step_loop(tmp_path, start):
    """dmt_parts encodes the teacher memories at start, start+k, ... in one call; a loop of encoder calls on
    the unpadded windows gives the same memories, hence the same DMT loss."""
    module = make_module("dmt", tmp_path, dmt_start=start).eval()
    batch = make_batch("dmt")
    args, teacher, student = module.args, module.teacher, module.student
    x, B = batch["input_ids"], batch["input_ids"].shape[0]
    Tc, Td, k = args.context_length, args.rollout_length, args.dmt_stride
    s = Tc if start == "teacher" else 0
    with torch.no_grad():
        parts = module(**batch)
        targets = []  # per-step loop of encoder calls on unpadded windows (end 0: the empty context)
        for end in range(s, s + Td + 1, k):
            targets.append(teacher.encode(x[:, max(0, end - Tc) : end]))
        targets = torch.stack(targets, 1)  # (B, n+1, K, d)
        m = targets[:, 0] if start == "teacher" else student.initial_memory(B)
        matched = []
        for j in range(Td):
            m = student.step(m, x[:, s + j])
            if (j + 1) % k == 0:
                matched.append(m)
        ref = torch.nn.functional.mse_loss(torch.stack(matched, 1), targets[:, 1:])
    torch.testing.assert_close(parts["dmt_dynamics"], ref, rtol=1e-5, atol=1e-6)
    # the padded windows the collator helpers build encode to the same memories as unpadded ones
    ids, mask = left_windows(x, torch.full((B,), 5), Tc, 0)
    torch.testing.assert_close(teacher.encode(ids, mask), teacher.encode(x[:, :5]), rtol=1e-5, atol=1e-5)


def test_dmt_right_padded_rows_match_only_targets_inside_the_row(tmp_path):
    """A row shorter than start + Td: matched steps whose teacher window runs past its end are masked out, so
    the loss does not depend on the pad id and equals the mean over the in-row pairs (a per-step loop)."""
    module = make_module("dmt", tmp_path).eval()
    Tc, Td, k = 16, 16, 4
    g = torch.Generator().manual_seed(3)
    feats = [{"input_ids": torch.randint(1, 16, (40,), generator=g)}, {"input_ids": torch.randint(1, 16, (22,), generator=g)}]
    with torch.no_grad():
        got = {pad: module(**SMTDataCollator(mode="dmt", pad_token_id=pad)(feats)) for pad in (0, 7)}
        assert got[0]["dmt_dynamics"] == got[7]["dmt_dynamics"] and got[0]["readout"] == got[7]["readout"]
        errs = []  # reference: each row alone, unpadded, only the ends inside it
        for f in feats:
            x = f["input_ids"][None]
            m = module.teacher.encode(x[:, :Tc])
            for j in range(min(Td, x.shape[1] - Tc)):
                m = module.student.step(m, x[:, Tc + j])
                end = Tc + j + 1
                if (j + 1) % k == 0 and end <= x.shape[1]:
                    errs.append(torch.nn.functional.mse_loss(m, module.teacher.encode(x[:, end - Tc : end])))
    assert len(errs) == 4 + 1  # row 2 (22 tokens) has one strided target inside it (end 20)
    torch.testing.assert_close(got[0]["dmt_dynamics"], torch.stack(errs).mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode,gradient", [("dmt", "one_step"), ("dmt", "full_rollout"), ("bptt", None), ("joint", None)])
def test_passed_sync_free_step_equals_plain_and_leaves_student_unpatched(tmp_path, mode, gradient):
    """`SMTTrainingModule(step_fn=compile_step(student, mode=None, install=False))`: the same losses and gradients
    as the student's own step (DMT rollouts, BPTT, SMT transitions), and the student object is not modified."""
    kw = dict(dmt_gradient=gradient) if gradient else {}
    batch = make_batch(mode)
    results = []
    for passed in (False, True):
        module = make_module(mode, tmp_path, **kw)
        step_fn = compile_step(module.student, mode=None, install=False) if passed else None
        module = SMTTrainingModule(module.student, module.teacher, module.args, step_fn=step_fn).train()
        torch.manual_seed(0)  # the uniformity subsample
        parts = module(**batch)
        sum(parts.values()).backward()
        results.append((parts, [p.grad for p in module.student.parameters() if p.grad is not None]))
        core = recurrent_core(module.student)
        assert "_step" not in vars(core) and "step" not in vars(core)  # no instance patch
        assert type(core)._step is core._step.__func__
    (ref, ref_grads), (got, grads) = results
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=0, atol=0)
    assert len(grads) == len(ref_grads) > 0
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["joint", "dmt", "bptt"])
def test_losses_under_cpu_bf16_autocast_match_fp32(tmp_path, mode):
    """What the HF Trainer's bf16=True does to the training forward: losses run under autocast (matmuls
    in bf16), come out float32, and stay within bf16 tolerance of the fp32 losses."""
    module = make_module(mode, tmp_path).eval()  # eval: no dropout; uniformity subsample seeded below
    batch = make_batch("joint" if mode == "joint" else mode)
    torch.manual_seed(0)
    with torch.no_grad():
        ref = module(**batch)
    dtypes = []
    handles = [m.register_forward_hook(lambda _m, _i, o: dtypes.append(o.dtype))
               for m in module.modules() if isinstance(m, torch.nn.Linear)]
    torch.manual_seed(0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = module(**batch)
    for h in handles:
        h.remove()
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)  # every linear layer ran in bf16
    for name in ref:
        assert got[name].dtype == torch.float32
        torch.testing.assert_close(got[name], ref[name], rtol=3e-2, atol=3e-2)


def test_bf16_autocast_training_step_backward(tmp_path):
    """A full joint step under autocast: finite loss, float32 gradients on float32 parameters."""
    module = make_module("joint", tmp_path)
    batch = make_batch("joint")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total = sum(module(**batch).values())
    total.backward()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert torch.isfinite(total) and grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
