"""smt_hf.benchmark: the training-step timing harness (the trainer's own step) and the eager-vs-compiled comparison
(same losses asserted), on a tiny model; no timing is asserted."""

import pytest
import torch

from smt_hf import SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherConfig, SMTTeacherModel
from smt_hf.benchmark import TrainStep, compare_compiled, loss_rtol, random_seqs
from smt_hf.training_args import SMTTrainingArguments

CPU = torch.device("cpu")


def make_step(tmp_path, mode="dmt", lr=1e-3, autocast=None):
    def make(recurrent_step_compile):
        torch.manual_seed(0)
        tc = SMTTeacherConfig(vocab_size=16, hidden_size=16, memory_tokens=2, num_encoder_layers=1,
                              num_decoder_layers=1, num_attention_heads=2, intermediate_size=32, max_context_length=8)
        teacher = SMTTeacherModel(tc)
        student = SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(tc, updater_layers=1,
                                                                          updater_intermediate_size=32))
        kw = dict(context_length=8, rollout_length=8, dmt_stride=4) if mode == "dmt" else dict(context_length=8)
        args = SMTTrainingArguments(output_dir=str(tmp_path), mode=mode, report_to=[], use_cpu=True, learning_rate=lr, warmup_steps=0,
                                    recurrent_step_compile=recurrent_step_compile, **kw)
        step = TrainStep(student, teacher, args, random_seqs(2, 16, 16), CPU, autocast)
        step.student = student
        return step
    return make


def test_train_step_returns_the_loss_it_trains_on(tmp_path):
    step = make_step(tmp_path, "bptt")(None)
    before = float(step.loss(eager=True))
    assert step() == pytest.approx(before, rel=1e-6)
    assert step() != pytest.approx(before, rel=1e-6)  # the optimizer step changed the weights


@pytest.mark.parametrize("mode", ["dmt", "bptt"])
def test_compare_compiled_runs_both_paths_with_the_same_losses(tmp_path, mode):
    """'none' = the installed sync-free eager step (no compile, so the test is fast): same losses, step by step."""
    built = []

    def make(c):
        built.append(c)
        step = make_step(tmp_path, mode)(c)
        # the argument passed a step to the training module; the student itself is never patched
        assert (step.module.step_fn is not None) == (c is not None) and "_step" not in vars(step.student.model)
        return step

    r = compare_compiled(make, "none", CPU, iters=2)
    assert built == [None, "none"]
    assert len(r["losses"]["eager"]) == len(r["losses"]["compiled"]) == 3
    assert r["losses"]["eager"] == pytest.approx(r["losses"]["compiled"], rel=1e-6)
    assert r["ratio"] == pytest.approx(r["eager_ms"] / r["compiled_ms"])


def test_compare_compiled_rejects_different_losses(tmp_path):
    def make(c):  # the "compiled" path trains at another learning rate: its second loss differs
        return make_step(tmp_path, "bptt", lr=1e-3 if c is None else 1e-1)(c)

    with pytest.raises(AssertionError, match="changed the loss at step"):
        compare_compiled(make, "none", CPU, iters=1)


def test_compare_compiled_tolerance_follows_the_autocast_dtype(tmp_path):
    """Two paths that differ only by bf16 rounding (one under bf16 autocast, one in fp32): loss_rtol(bfloat16) accepts
    them, fp32's tolerance does not (the bench's train_compile section failed on an H200 with fp32's tolerance for
    bf16 losses 0.02-0.3% apart); a different learning rate is still rejected at the bf16 tolerance."""
    def make(c, lr=1e-3):
        return make_step(tmp_path, "bptt", lr=lr, autocast=torch.bfloat16 if c is None else None)(c)

    r = compare_compiled(make, "none", CPU, iters=2, rtol=loss_rtol(torch.bfloat16))
    assert 0 < r["max_loss_diff"]
    with pytest.raises(AssertionError, match="changed the loss at step"):
        compare_compiled(make, "none", CPU, iters=2, rtol=loss_rtol(None))
    with pytest.raises(AssertionError, match="changed the loss at step"):
        compare_compiled(lambda c: make(c, lr=1e-3 if c is None else 3e-1), "none", CPU, iters=2,
                         rtol=loss_rtol(torch.bfloat16))


# ----------------------------------------------------------------------------- smt_hf.benchmark_sections
def test_sections_summary_ratios_and_targets():
    """summarize: each ratio is two numbers of one section divided; check_targets: None on CPU, each GPU target
    compared in its direction (tokens/s at least, ms and ratios at most)."""
    from smt_hf.benchmark_sections import TARGETS, check_targets, summarize

    res = {"machine": {"device": "cpu"},
           "smt_step": {"setting": {}, "eager": {"ms": 30.0}, "compiled": {"ms": 20.0}},
           "dmt": [{"ms": 900.0}, {"error": "OOM"}],
           "train_sweep": [{"mode": "smt", "T": 128, "ms": 10.0}, {"mode": "bptt", "T": 128, "ms": 40.0},
                           {"mode": "smt", "T": 512, "ms": 20.0}, {"mode": "bptt", "T": 512, "ms": 200.0}],
           "generation": [{"model": "student fast", "B": 1, "context": 256, "ms_per_token": 1.0, "tokens_per_s": 1000.0,
                           "state_bytes": 100},
                          {"model": "student fast", "B": 1, "context": 1024, "ms_per_token": 1.0, "tokens_per_s": 2000.0,
                           "state_bytes": 100}],
           "prefixes": [{"T": 16, "path": "one split per sequence", "transitions_per_s": 100.0, "ms": 5.0},
                        {"T": 16, "path": "all prefixes", "transitions_per_s": 800.0, "ms": 10.0}]}
    s = summarize(res)
    assert s["smt_step_ms_best"] == 20.0 and s["dmt_step_ms_best"] == 900.0
    assert s["smt_time_ratio_Tmax_Tmin"] == 2.0 and s["bptt_time_ratio_Tmax_Tmin"] == 5.0 and s["bptt_over_smt_at_Tmax"] == 10.0
    assert s["student_B1_1024v256_latency_ratio"] == 1.0 and s["student_B1_1024v256_memory_ratio"] == 1.0
    assert s["student_B1_tokens_per_s_min"] == 1000.0
    assert s["prefixes_T16_transitions_per_s_ratio"] == 8.0 and s["prefixes_T16_step_time_ratio"] == 2.0
    assert check_targets(res, s) is None
    t = check_targets(dict(res, machine={"device": "cuda"}), s)
    assert t["smt_step_ms"] == {"value": 20.0, "target": TARGETS["smt_step_ms"], "ok": True}
    assert t["gen_b1_tok_s"] == {"value": 1000.0, "target": TARGETS["gen_b1_tok_s"], "ok": False}
    assert t["student_B1_memory_ratio"]["ok"] and t["student_B1_latency_ratio"]["ok"]


def test_prefixes_section_counts_transitions_per_path():
    """bench_prefixes on a tiny preset: the all-prefix path supervises T transitions per sequence, the split path 1."""
    from smt_hf.benchmark_sections import bench_prefixes

    P = {"model": {"V": 16, "d": 16, "K": 2, "H": 2, "enc": 1, "dec": 1, "upd": 1, "ffn": 32},
         "prefixes": {"B": 2, "Ts": [4], "Tf": 2}, "autocast": None}
    res = {}
    bench_prefixes(P, CPU, res)
    assert [(r["T"], r["path"], r["transitions_per_step"]) for r in res["prefixes"]] == [
        (4, "one split per sequence", 2), (4, "all prefixes", 8)]


def test_sections_markdown_has_one_table_per_measured_section():
    from smt_hf.benchmark_sections import markdown

    res = {"preset": "cpu", "dry_run": True, "total_s": 3.0, "config": {"autocast": "None", "compile": False},
           "machine": {"device": "cpu", "name": "X", "cpu_count": 2, "torch": "t", "transformers": "tf", "threads": 1},
           "dmt": [{"setting": "cpu", "B": 8, "Td": 64, "k": 8, "variant": "plain", "ms": 12.25, "first_call_s": 0.5}],
           "summary": {"dmt_step_ms_best": 12.25, "smt_step_ms_best": None}, "targets": None}
    md = markdown(res)
    assert md.startswith("# SMT benchmark, preset `cpu` (dry run)\n\nMachine: X (2 cores, shared);")
    # the title names the sections measured, so two reports of one preset (a --sections run) are told apart
    md = markdown({**res, "section_s": {"dmt": 1.0, "train_compile": 2.0, "prefill": 0.1}, "errors": {"prefill": "E"}})
    assert md.startswith("# SMT benchmark, preset `cpu` (dry run): dmt, train_compile\n\nMachine: X")
    assert "## DMT training step\n\n| setting | B | Td | k | variant | ms | first call s |" in md
    assert "| cpu | 8 | 64 | 8 | plain | 12.2 | 0.5 |" in md and "| dmt_step_ms_best | 12.2 |" in md
    assert "smt_step_ms_best" not in md and "## Generation" not in md and "## Targets" not in md


# ----------------------------------------------------------------------------- decode timing (recipes/decode_cpu.py)
def _student():
    torch.manual_seed(0)
    tc = SMTTeacherConfig(vocab_size=16, hidden_size=16, memory_tokens=2, num_encoder_layers=1, num_decoder_layers=1,
                          num_attention_heads=2, intermediate_size=32, max_context_length=8)
    return SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(tc, updater_layers=1, updater_intermediate_size=32)).eval()


def test_mamba_like_holds_the_students_state_size():
    from types import SimpleNamespace

    from smt_hf.benchmark import mamba_like

    m = mamba_like(SimpleNamespace(vocab_size=16, memory_tokens=4, hidden_size=64))  # the bench CPU student
    c = m.config
    assert c.num_hidden_layers * c.expand * c.hidden_size * c.state_size == 4 * 64 and not m.training
    with pytest.raises(ValueError, match=r"= 256, but the student's memory holds memory_tokens \* hidden_size = 32"):
        mamba_like(SimpleNamespace(vocab_size=16, memory_tokens=2, hidden_size=16))


def test_hf_decode_seconds_differences_out_the_prefill():
    """(t(N+1 new) - t(1 new)) / N: after one warm-up call, each repeat generates exactly N+1 then exactly 1 token."""
    from smt_hf.benchmark import hf_decode_seconds

    calls = []

    class Model:
        def generate(self, prompt, max_new_tokens, min_new_tokens, do_sample):
            calls.append((max_new_tokens, min_new_tokens, do_sample))

    hf_decode_seconds(Model(), torch.zeros(1, 4, dtype=torch.long), N=3, repeats=2)
    assert calls == [(2, 2, False), (4, 4, False), (1, 1, False), (4, 4, False), (1, 1, False)]


def test_interleaved_decode_asserts_every_generator_writes_the_same_tokens():
    from smt_hf.benchmark import interleaved_decode_seconds
    from smt_hf.fast import FastGenerator

    student = _student()
    eager = FastGenerator(student)
    mem = eager.prefill(torch.randint(0, 16, (2, 5), generator=torch.Generator().manual_seed(0)))
    best = interleaved_decode_seconds({"eager": eager, "again": FastGenerator(student)}, mem, 4, repeats=2)
    assert list(best) == ["eager", "again"]

    class Off:
        def decode(self, memory, n):
            out = eager.decode(memory, n)
            return (out[0] + 1,) + tuple(out[1:])

    with pytest.raises(AssertionError, match="off: tokens differ from eager"):
        interleaved_decode_seconds({"eager": eager, "off": Off()}, mem, 4, repeats=1)


def test_fast_generate_seconds_checks_tokens_and_restores_the_standard_loop():
    from smt_hf.benchmark import fast_generate_seconds

    student = _student()
    prompt = torch.randint(0, 16, (2, 5), generator=torch.Generator().manual_seed(1))
    fast_generate_seconds(student, prompt, 4, chunk=None, compile=False)
    assert "_fast_decode" not in student.__dict__  # disabled again: generate() runs the standard loop
