"""On a CUDA device the training and inference paths give what they give on CPU, and the decode loop makes no
host-device syncs. Skipped without a GPU (CI); `recipes/gpu_session.sh bench` runs them on the lent GPU first.

`SMT_TEST_DEVICE=cpu` runs the same tests with CPU as the "device" (checks the test code itself, not CUDA).
"""

import copy
import os

import pytest
import torch
from conftest import smt_split_batch, tiny_student_config, tiny_teacher_config

from smt_hf import SMTRecurrentForCausalLM, SMTTeacherModel
from smt_hf.data.collator import SMTDataCollator
from smt_hf.fast import FastGenerator, compile_step, restore_step
from smt_hf.training_args import SMTTrainingArguments
from smt_hf.training_module import SMTTrainingModule

DEVICE = torch.device(os.environ.get("SMT_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def exact_fp32_matmuls():
    """TF32 off, so fp32 on the GPU is comparable with fp32 on CPU."""
    if DEVICE.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def module_and_batch(mode, tmp_path, **kw):
    torch.manual_seed(0)
    teacher = SMTTeacherModel(tiny_teacher_config())
    student = SMTRecurrentForCausalLM(tiny_student_config("transformer"))
    args = SMTTrainingArguments(output_dir=str(tmp_path), mode=mode, context_length=16, future_length=8,
                                rollout_length=16, dmt_stride=4, uniformity_samples=64, report_to=[], **kw)
    module = SMTTrainingModule(student, teacher if mode != "bptt" else None, args).eval()  # eval: no dropout
    g = torch.Generator().manual_seed(1)
    feats = [{"input_ids": torch.randint(0, 16, (40,), generator=g)} for _ in range(4)]
    if mode in ("smt", "joint"):
        batch = smt_split_batch(feats, 16, 8, generator=torch.Generator().manual_seed(2))
    else:
        batch = SMTDataCollator(mode=mode)(feats)
    return module, batch


def on(device, batch):
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def named_grads(module):
    """{parameter name: its gradient on CPU, as float}; a torch.compile wrapper's `_orig_mod.` prefix dropped."""
    return {n.removeprefix("_orig_mod."): p.grad.detach().float().cpu() for n, p in module.named_parameters()
            if p.grad is not None}


def losses_and_grads(module, batch, autocast=None):
    """Loss parts (one forward, under `autocast` dtype if given) and the gradients of their sum."""
    torch.manual_seed(0)  # the uniformity subsample
    with torch.autocast(DEVICE.type, dtype=autocast, enabled=autocast is not None):
        parts = module(**batch)
    module.zero_grad(set_to_none=True)
    sum(parts.values()).backward()
    return {k: v.detach().float().cpu() for k, v in parts.items()}, named_grads(module)


@pytest.mark.parametrize("mode", ["joint", "smt", "dmt", "bptt"])
def test_losses_and_gradients_on_device_match_cpu(tmp_path, mode):
    module, batch = module_and_batch(mode, tmp_path)
    ref_parts, ref_grads = losses_and_grads(module, batch)
    gpu = copy.deepcopy(module).to(DEVICE)
    parts, grads = losses_and_grads(gpu, on(DEVICE, batch))
    assert parts.keys() == ref_parts.keys() and grads.keys() == ref_grads.keys()
    for k in ref_parts:
        torch.testing.assert_close(parts[k], ref_parts[k], rtol=1e-4, atol=1e-5)
    for n in ref_grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("mode", ["joint", "dmt"])
def test_bf16_autocast_on_device_stays_near_fp32(tmp_path, mode):
    module, batch = module_and_batch(mode, tmp_path)
    module, batch = module.to(DEVICE), on(DEVICE, batch)
    with torch.no_grad():
        torch.manual_seed(0)
        ref = module(**batch)
        torch.manual_seed(0)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            got = module(**batch)
    for k in ref:
        assert got[k].dtype == torch.float32
        torch.testing.assert_close(got[k], ref[k], rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("gradient", ["one_step", "full_rollout"])
def test_sync_free_dmt_step_on_device_equals_plain(tmp_path, gradient):
    module, batch = module_and_batch("dmt", tmp_path, dmt_gradient=gradient)
    module, batch = module.to(DEVICE), on(DEVICE, batch)
    ref_parts, ref_grads = losses_and_grads(module, batch)
    compile_step(module.student, mode=None)
    try:
        parts, grads = losses_and_grads(module, batch)
    finally:
        restore_step(module.student)
    for k in ref_parts:
        torch.testing.assert_close(parts[k], ref_parts[k], rtol=0, atol=0)
    for n in ref_grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=0, atol=0)


def test_parallel_prefill_on_device_matches_cpu():
    torch.manual_seed(0)
    teacher = SMTTeacherModel(tiny_teacher_config())
    student = SMTRecurrentForCausalLM(tiny_student_config("gru")).eval()
    student.add_prefill_encoder(teacher, context_length=16)
    ids = torch.randint(1, 16, (3, 40))
    mask = torch.ones_like(ids)
    mask[0, :30] = 0  # a short, left-padded prompt
    with torch.no_grad():
        ref = student.prefill_memory(ids, mask)
        got = copy.deepcopy(student).to(DEVICE).prefill_memory(ids.to(DEVICE), mask.to(DEVICE))
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-4, atol=1e-5)


def test_decode_loop_makes_no_host_device_sync():
    """After warm-up (graph capture), N decode steps run without a single host-device synchronisation."""
    torch.manual_seed(0)
    model = SMTRecurrentForCausalLM(tiny_student_config("transformer")).to(DEVICE).eval()
    gen = FastGenerator(model)
    prompt = torch.randint(0, 16, (4, 9), device=DEVICE)
    memory = gen.prefill(prompt)
    ref_tokens, _ = gen.decode(memory.clone(), 24)  # warm-up: capture the graph for this batch size and N
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        tokens, _ = gen.decode(memory.clone(), 24)
    finally:
        if DEVICE.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(tokens, ref_tokens)
    with torch.no_grad():
        plain = model.generate(prompt, max_new_tokens=24, do_sample=False)[:, 9:]
    assert torch.equal(tokens, plain)


def nonfinite_report(module, batch):
    """Which loss part gives non-finite gradients, and where (for the failure message)."""
    out = []
    for key in ("decoder", "dynamics", "uniformity"):
        torch.manual_seed(0)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            parts = module(**batch)
        if key not in parts:
            continue
        module.zero_grad(set_to_none=True)
        parts[key].backward()
        bad = [n for n, g in named_grads(module).items() if not torch.isfinite(g).all()]
        out.append(f"{key}: {float(parts[key]):.4g}, non-finite grads in {len(bad)} tensors {bad[:4]}")
    return "; ".join(out)


@pytest.mark.parametrize("size", ["tiny", "bench"])
def test_compiled_joint_step_on_device_equals_eager(tmp_path, size):
    """The whole joint-SMT training module under torch.compile (what `recipes/bench.py`'s smt_step 'compiled' and
    `torch_compile=True` run), bf16 autocast, gives eager's loss parts and finite gradients close to eager's
    (`bench`: the bench GPU preset's model, batch 8)."""
    from smt_hf.fast import compile_module

    if size == "tiny":
        module, batch = module_and_batch("joint", tmp_path)
    else:
        if DEVICE.type != "cuda":
            pytest.skip("the bench-size model is for the GPU")
        from smt_hf.benchmark_sections import build_models

        mc = dict(V=256, d=256, K=16, H=8, enc=8, dec=4, upd=8, ffn=1024)  # recipes/configs/bench/gpu.yaml
        teacher, student = build_models(mc, 256, torch.device("cpu"))
        args = SMTTrainingArguments(output_dir=str(tmp_path), mode="joint", context_length=256, future_length=64,
                                    split="last", report_to=[])
        module = SMTTrainingModule(student, teacher, args)
        g = torch.Generator().manual_seed(1)
        feats = [{"input_ids": torch.randint(0, 256, (320,), generator=g)} for _ in range(8)]
        batch = smt_split_batch(feats, 256, 64, split="last")
    module, batch = module.to(DEVICE).train(), on(DEVICE, batch)
    ref_parts, ref_grads = losses_and_grads(module, batch, torch.bfloat16)
    assert all(torch.isfinite(g).all() for g in ref_grads.values()), "eager: " + nonfinite_report(module, batch)
    compiled = compile_module(module)
    parts, grads = losses_and_grads(compiled, batch, torch.bfloat16)
    bad = [n for n, g in grads.items() if not torch.isfinite(g).all()]
    assert not bad, f"compiled: non-finite grads in {bad[:6]}; per part: {nonfinite_report(compiled, batch)}"
    for k in ref_parts:
        torch.testing.assert_close(parts[k], ref_parts[k], rtol=3e-2, atol=3e-2)
    g_ref = torch.cat([ref_grads[n].flatten() for n in ref_grads])
    g_got = torch.cat([grads[n].flatten() for n in ref_grads])
    assert (g_got - g_ref).norm() <= 0.05 * g_ref.norm()
