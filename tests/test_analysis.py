"""smt_hf.analysis and smt_hf.callbacks: the analysis tools a user calls (gradient probe, completion after a
teacher prefix, bigram baseline, time budget), tested by identities on tiny models."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_student_config, tiny_teacher_config

from smt_hf import SMTRecurrentForCausalLM, SMTTeacherModel, SMTTrainer, SMTTrainingArguments, make_task
from smt_hf.analysis import bigram_bits, bptt_gradient_norms, complete_after_prefix, smt_gradient_norms
from smt_hf.callbacks import TimeBudget


def _pair(backbone="transformer"):
    torch.manual_seed(0)
    return SMTRecurrentForCausalLM(tiny_student_config(backbone)), SMTTeacherModel(tiny_teacher_config())


def test_bigram_bits_equals_a_hand_count():
    # pairs in the stream: (0,1) x2, (1,0), (1,1); add-0.1 counts: row 0 = [0.1, 2.1], row 1 = [1.1, 1.1]
    bits = bigram_bits([0, 1, 0, 1, 1], [[0, 1, 1]], vocab_size=2, smoothing=0.1)
    assert bits == pytest.approx((-math.log2(2.1 / 2.2) - math.log2(0.5)) / 2)


@pytest.mark.parametrize("backbone", ["transformer", "gru"])
def test_bptt_gradient_norms_last_entry_is_the_readout_gradient(backbone):
    student, _ = _pair(backbone)
    x = torch.randint(0, 16, (3, 7), generator=torch.Generator().manual_seed(1))
    norms = bptt_gradient_norms(student, x, x[:, -1])
    assert len(norms) == 6 and all(n > 0 for n in norms)
    with torch.no_grad():  # the memory after 6 tokens, as a leaf: its gradient is the readout loss's alone
        m = student.initial_memory(3)
        for t in range(6):
            m = student.step(m, x[:, t])
    m.requires_grad_(True)
    F.cross_entropy(student.readout(m), x[:, -1]).backward()
    assert norms[-1] == pytest.approx(float(m.grad.flatten(1).norm(dim=1).mean()), rel=1e-5)


def test_smt_gradient_norms_are_per_row_means():
    """Each (sequence, split) row's loss is summed, so a batch's norms are the mean of its sequences' norms."""
    student, teacher = _pair()
    x = torch.randint(0, 16, (2, 6), generator=torch.Generator().manual_seed(2))
    lab = torch.full_like(x, -100)
    lab[:, -1] = x[:, -1]
    both = smt_gradient_norms(student, teacher, x, lab)
    one, two = (smt_gradient_norms(student, teacher, x[i:i + 1], lab[i:i + 1]) for i in (0, 1))
    assert len(both) == 5
    assert both == pytest.approx([(a + b) / 2 for a, b in zip(one, two)], rel=1e-5)


def test_complete_after_prefix_at_low_temperature_is_greedy_generate():
    student, teacher = _pair()
    student.eval()
    prefix = torch.randint(0, 16, (2, 4), generator=torch.Generator().manual_seed(3))
    out = complete_after_prefix(student, prefix, 9, temperature=1e-4)
    ref = student.generate(prefix, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape == (2, 9) and torch.equal(out, ref)
    a = complete_after_prefix(student, prefix, 9, teacher=teacher, seed=5)
    assert torch.equal(a[:, :4], prefix) and torch.equal(a, complete_after_prefix(student, prefix, 9, teacher=teacher, seed=5))
    assert complete_after_prefix(student, prefix[:, :0], 3, seed=1).shape == (2, 3)  # from m_0


def _trainer(tmp_path, steps, callbacks):
    torch.manual_seed(0)
    args = SMTTrainingArguments(output_dir=str(tmp_path), mode="bptt", context_length=8, max_steps=steps,
                                per_device_train_batch_size=2, report_to="none", save_strategy="no", use_cpu=True,
                                disable_tqdm=True, logging_steps=100)
    return SMTTrainer(model=SMTRecurrentForCausalLM(tiny_student_config()), args=args,
                      train_dataset=make_task("needle", 16, 8, 0, vocab_size=16), callbacks=callbacks)


def test_time_budget_stops_a_trainer(tmp_path):
    tr = _trainer(tmp_path, 50, [TimeBudget(1e-6)])
    tr.train()
    assert tr.state.global_step == 1  # the first step already used the budget
    tr = _trainer(tmp_path, 3, [TimeBudget(3600)])
    tr.train()
    assert tr.state.global_step == 3
    with pytest.raises(ValueError, match="positive number of seconds"):
        TimeBudget(0)
