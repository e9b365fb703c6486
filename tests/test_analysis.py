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


@pytest.mark.parametrize("P", [0, 1, 4])
def test_continuation_bits_from_own_recurrence_equals_the_forward_logits(P):
    # P = 0: readout(m_0) predicts x_0, then the forward pass's logits[:, t] predict x_{t+1}
    student, _ = _pair()
    student.eval()
    x = torch.randint(0, 16, (3, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = student(x, use_cache=False).logits.float()  # (3, 7, V): logits[:, t] predict x[:, t+1]
        first = student.readout(student.initial_memory(3)).float()[:, None]
    all_logits = torch.cat([first, logits[:, :-1]], 1)  # all_logits[:, t] predicts x[:, t]
    ce = F.cross_entropy(all_logits[:, P:].reshape(-1, all_logits.shape[-1]), x[:, P:].reshape(-1))
    from smt_hf.analysis import continuation_bits

    assert continuation_bits(student, x, P) == pytest.approx(float(ce) / math.log(2), rel=1e-5)


def test_continuation_bits_after_teacher_prefill_starts_from_the_teacher_memory():
    from smt_hf.analysis import continuation_bits

    student, teacher = _pair()
    student.eval(), teacher.eval()
    x = torch.randint(0, 16, (3, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        m = teacher.encode(x[:, :4], torch.ones_like(x[:, :4]))
        nll = F.cross_entropy(student.readout(m).float(), x[:, 4], reduction="sum")
        for t in (5, 6):
            m = student.step(m, x[:, t - 1])
            nll += F.cross_entropy(student.readout(m).float(), x[:, t], reduction="sum")
    assert continuation_bits(student, x, 4, teacher) == pytest.approx(float(nll) / 9 / math.log(2), rel=1e-5)
    # and it differs from the student's own prefill (the memories are not the same)
    assert continuation_bits(student, x, 4) != pytest.approx(continuation_bits(student, x, 4, teacher), rel=1e-3)
    with pytest.raises(ValueError, match="P = 0 is the student's m_0"):
        continuation_bits(student, x, 0, teacher)
    with pytest.raises(ValueError, match="prefix_length=7"):
        continuation_bits(student, x, 7)


def test_memory_spread_is_zero_for_one_memory_and_one_for_zero_mean():
    from smt_hf.analysis import memory_spread

    m = torch.randn(1, 3, 4).expand(5, 3, 4)  # every sequence the same memory (collapse)
    assert memory_spread(m) == pytest.approx(0.0, abs=1e-12)
    pm = torch.randn(4, 2, 3)
    assert memory_spread(torch.cat([pm, -pm])) == pytest.approx(1.0)  # mean memory 0
    a, b = torch.zeros(2, 1, 2), torch.tensor([[1.0, 0.0]]).view(1, 1, 2)
    # memories (0,0) and (2,0): variance 1, mean squared norm 2 -> 0.5
    assert memory_spread(torch.cat([a[:1], 2 * b])) == pytest.approx(0.5)
