"""Labels that differ from the next input (state tracking: parity, stack) flow end to end: SMT future targets,
DMT readout loss, BPTT loss and evaluation all read `labels`, never `input_ids`, as targets."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_teacher_config

from smt_hf import SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherModel
from smt_hf.data import SMTDataCollator, make_task
from smt_hf.evaluation import evaluate_smt, summarize
from smt_hf.training_args import SMTTrainingArguments
from smt_hf.training_module import SMTTrainingModule

T = 16


def setup(tmp_path, mode, **kw):
    torch.manual_seed(0)
    tc = tiny_teacher_config(max_context_length=T, vocab_size=9)
    teacher = SMTTeacherModel(tc)
    student = SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(tc, updater_layers=1))
    args = SMTTrainingArguments(output_dir=str(tmp_path), mode=mode, context_length=T, future_length=T,
                                rollout_length=T, report_to="none", use_cpu=True, **kw)
    return student, teacher, SMTTrainingModule(student, teacher, args)


@pytest.mark.parametrize("task", ["parity", "stack"])
def test_smt_future_targets_are_the_labels(tmp_path, task):
    ds = make_task(task, 8, T, 0)
    batch = SMTDataCollator(mode="eval")([ds[i] for i in range(8)])
    ids, labels = batch["input_ids"], batch["labels"]
    _, _, module = setup(tmp_path, "joint")
    smt = module.smt_batch(ids, labels)
    for b in range(8):
        c = int(smt["split_points"][b])
        n = min(T - c, smt["future_ids"].shape[1])
        assert torch.equal(smt["future_ids"][b, :n], ids[b, c : c + n])
        assert torch.equal(smt["future_labels"][b, :n], labels[b, c : c + n])
    assert not torch.equal(smt["future_ids"], smt["future_labels"])


def test_dmt_readout_and_bptt_losses_use_labels(tmp_path):
    ds = make_task("parity", 4, T, 0)
    batch = SMTDataCollator(mode="dmt")([ds[i] for i in range(4)])
    ids, labels = batch["input_ids"], batch["labels"]
    student, _, module = setup(tmp_path, "dmt", dmt_start="initial")
    parts = module(**batch)
    # the standalone rollout from m_0: readout of the memory after x[:t] scored against labels[t]
    with torch.no_grad():
        after = student(ids, use_cache=False, output_memories=True).memories  # (B, T, K, d): after x[:t+1]
        before = torch.cat([student.initial_memory(4).unsqueeze(1), after[:, :-1]], 1)  # after x[:t]
        logits = student.readout(before)
    want = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(parts["readout"], want, rtol=1e-4, atol=1e-5)
    # BPTT: next-token CE against the shifted labels (not the shifted inputs)
    _, _, bptt = setup(tmp_path, "bptt")
    out = student(ids, labels=labels, use_cache=False)
    want = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    torch.testing.assert_close(bptt(**batch)["bptt"], want, rtol=1e-4, atol=1e-5)


def test_evaluation_scores_against_labels(tmp_path):
    ds = make_task("parity", 8, T, 0)
    batch = SMTDataCollator(mode="eval")([ds[i] for i in range(8)])
    student, teacher, _ = setup(tmp_path, "joint")
    res = summarize([evaluate_smt(student, teacher, batch["input_ids"], batch["labels"], T)])
    with torch.no_grad():
        pred = student(batch["input_ids"], use_cache=False).logits[:, :-1].argmax(-1)
    y = batch["labels"][:, 1:]
    assert res["student_acc"] == pytest.approx(float((pred == y)[y != -100].float().mean()))
