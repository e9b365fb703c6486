"""The causal-context teacher (stretch variant): one encoder pass gives the memory of every prefix, equal to
encoding each prefix alone; `smt_all_prefixes` supervises every transition with the same decoder loss as the
split path, keeps the stop-gradient of detached SMT, and trains."""

import pytest
import torch
from conftest import tiny_teacher_config

from smt_hf import SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherModel
from smt_hf import losses
from smt_hf.data import make_task, smt_windows
from smt_hf.trainer import SMTTrainer
from smt_hf.training_args import SMTTrainingArguments
from smt_hf.training_module import SMTTrainingModule

T = 12


def models(causal=True, seed=0):
    torch.manual_seed(seed)
    tc = tiny_teacher_config(max_context_length=T, encoder_causal=causal, memory_tokens=3)
    teacher = SMTTeacherModel(tc)
    student = SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(tc, updater_layers=1))
    return student, teacher


def args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), mode="joint", context_length=T, future_length=5, smt_all_prefixes=True,
                per_device_train_batch_size=8, max_steps=3, report_to="none", save_strategy="no", use_cpu=True,
                disable_tqdm=True, seed=0, learning_rate=3e-3, logging_steps=1, lambda_dyn=1.0)
    base.update(kw)
    return SMTTrainingArguments(**base)


@torch.no_grad()
def test_all_prefix_memories_equal_per_prefix_encoding():
    _, teacher = models()
    teacher.eval()
    x = torch.randint(0, 16, (3, T))
    mems = teacher.encode_prefixes(x)  # (3, T+1, K, d)
    assert mems.shape == (3, T + 1, 3, 32)
    for t in range(T + 1):
        torch.testing.assert_close(mems[:, t], teacher.encode(x[:, :t]), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_causal_encoder_ignores_left_padding_and_the_future():
    _, teacher = models()
    teacher.eval()
    x = torch.randint(1, 16, (2, 7))
    padded = torch.cat([torch.zeros(2, 5, dtype=torch.long), x], 1)
    mask = torch.cat([torch.zeros(2, 5), torch.ones(2, 7)], 1).long()
    torch.testing.assert_close(teacher.encode(padded, mask), teacher.encode(x), rtol=1e-5, atol=1e-5)
    # the memory of x[:4] from the all-prefix pass does not change when later tokens change
    y = x.clone()
    y[:, 4:] = (y[:, 4:] + 1) % 16
    assert torch.equal(teacher.encode_prefixes(x)[:, 4], teacher.encode_prefixes(y)[:, 4])


def test_bidirectional_teacher_refuses_prefix_pass_and_bad_args(tmp_path):
    _, teacher = models(causal=False)
    with pytest.raises(ValueError, match="encoder_causal=True"):
        teacher.encode_prefixes(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="smt_all_prefixes"):
        args(tmp_path, mode="dmt")
    student, teacher = models()
    module = SMTTrainingModule(student, teacher, args(tmp_path, context_length=T - 2))
    with pytest.raises(ValueError, match="context_length"):
        module(input_ids=torch.zeros(2, T, dtype=torch.long), labels=torch.zeros(2, T, dtype=torch.long))


def _fixed_split(module, c):
    module.sampler = lambda lengths: c.view(-1, 1).to(lengths.device)


@pytest.mark.parametrize("mode", ["joint", "smt"])
def test_prefix_parts_match_split_path_and_per_transition_loop(tmp_path, mode):
    student, teacher = models()
    data = make_task("needle", 4, T, seed=0, vocab_size=16)
    x, y = torch.tensor(data["input_ids"]), torch.tensor(data["labels"])
    c = torch.tensor([0, 3, 7, T - 1])
    module = SMTTrainingModule(student, teacher, args(tmp_path, mode=mode))
    _fixed_split(module, c)
    parts = module(input_ids=x, labels=y)
    # decoder + uniformity: exactly the split path's at the same split points
    ref = module.smt_parts(**smt_windows(x, y, torch.full((4,), T), c.view(-1, 1), T, module.args.future_length))
    torch.testing.assert_close(parts["decoder"], ref["decoder"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["uniformity"], ref["uniformity"], rtol=1e-5, atol=1e-6)
    # dynamics: the mean over all T transitions, each from per-prefix encodings
    per_t = [losses.dynamics_loss(student.step(teacher.encode(x[:, :t]), x[:, t]), teacher.encode(x[:, :t + 1]))
             for t in range(T)]
    torch.testing.assert_close(parts["dynamics"], torch.stack(per_t).mean(), rtol=1e-4, atol=1e-6)
    # detached SMT: the dynamics loss sends no gradient into the teacher
    teacher.zero_grad()
    parts["dynamics"].backward()
    enc_grads = [p.grad for p in teacher.encoder.parameters()]
    if mode == "smt":
        assert all(g is None or not g.any() for g in enc_grads)
    else:
        assert any(g is not None and g.abs().sum() > 0 for g in enc_grads)


def test_all_prefix_training_lowers_the_dynamics_loss(tmp_path):
    student, teacher = models()
    data = make_task("needle", 256, T, seed=0, vocab_size=16)
    trainer = SMTTrainer(model=student, teacher=teacher, args=args(tmp_path, mode="smt", max_steps=40),
                         train_dataset=data)
    trainer.train()
    dyn = [h["dynamics_loss"] for h in trainer.state.log_history if "dynamics_loss" in h]
    assert len(dyn) >= 20 and sum(dyn[-5:]) / 5 < 0.5 * sum(dyn[:5]) / 5


@torch.no_grad()
def test_prefill_encoder_copied_from_causal_teacher_stays_causal(tmp_path):
    student, teacher = models()
    teacher.eval()
    student.eval().add_prefill_encoder(teacher, context_length=8)
    assert student.config.prefill_encoder.causal
    x = torch.randint(0, 16, (2, 20))
    assert torch.equal(student.prefill_memory(x), teacher.encode(x[:, -8:]))
    student.save_pretrained(tmp_path)
    loaded = SMTRecurrentForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.prefill_encoder.causal and torch.equal(loaded.prefill_memory(x), teacher.encode(x[:, -8:]))
