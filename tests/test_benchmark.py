"""smt_hf.benchmark: the training-step timing harness (the trainer's own step) and the eager-vs-compiled comparison
(same losses asserted), on a tiny model; no timing is asserted."""

import pytest
import torch

from smt_hf import SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherConfig, SMTTeacherModel
from smt_hf.benchmark import TrainStep, compare_compiled, random_seqs
from smt_hf.training_args import SMTTrainingArguments

CPU = torch.device("cpu")


def make_step(tmp_path, mode="dmt", lr=1e-3):
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
        step = TrainStep(student, teacher, args, random_seqs(2, 16, 16), CPU, None)
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
