"""`lambda_onestep_readout`: the read-out (weights held constant) of the student's one step f(m_t, x_t) against
labels[t+1], gradient through that one step only. SMT: from every prefix's teacher memory; DMT (one_step): from the
rollout's memory at the matched steps. Equal to the loss written out by hand; trains the transition, never the
read-out nor the teacher; refused where it cannot apply."""

import pytest
import torch
from test_prefix_teacher import T, args, models
from test_trainer import models as dmt_models
from test_trainer import targs as dmt_args

from smt_hf import losses
from smt_hf.data import SMTDataCollator, make_task
from smt_hf.training_module import SMTTrainingModule


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_constant_weights_readout_same_logits_gradient_to_memory_only(which):
    student, teacher = models()
    model = teacher if which == "teacher" else student
    m = torch.randn(4, 3, 32, requires_grad=True)
    plain = model.readout(m)
    (g_plain,) = torch.autograd.grad(plain.square().sum(), m)
    const = model.readout(m, constant_weights=True)
    torch.testing.assert_close(const, plain, rtol=0, atol=0)
    const.square().sum().backward()
    torch.testing.assert_close(m.grad, g_plain, rtol=1e-6, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())


def test_smt_onestep_readout_equals_hand_written_loss_and_trains_only_the_transition(tmp_path):
    student, teacher = models()
    ds = make_task("associative_recall", 4, T, seed=0, n_keys=3, key_vocab=4, value_vocab=4)
    ids, labels = torch.tensor(ds["input_ids"]), torch.tensor(ds["labels"])
    module = SMTTrainingModule(student, teacher, args(tmp_path, mode="smt", lambda_onestep_readout=1.0))
    parts = module(input_ids=ids, labels=labels)
    with torch.no_grad():
        mems = teacher.encode_prefixes(ids)  # (B, T+1, K, d)
        B = len(ids)
        pred = torch.stack([student.step(mems[:, t], ids[:, t]) for t in range(T - 1)], 1)  # memory of x[:t+1]
        want = losses.readout_loss(teacher.readout(pred.flatten(0, 1)).view(B, T - 1, -1), labels[:, 1:])
    assert (labels[:, 1:] != -100).any()
    torch.testing.assert_close(parts["onestep_readout"], want, rtol=1e-5, atol=1e-6)
    parts["onestep_readout"].backward()
    assert all(p.grad is None or not p.grad.any() for p in teacher.parameters())  # smt: teacher untouched
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.model.updater.parameters())
    # off by default: no such part
    assert "onestep_readout" not in SMTTrainingModule(student, teacher, args(tmp_path, mode="smt"))(
        input_ids=ids, labels=labels)


@pytest.mark.parametrize("start", ["initial", "teacher"])
def test_dmt_onestep_readout_reads_the_matched_steps(tmp_path, start):
    """From m_0 (start 0) or from the teacher's memory of the first Tc tokens (start Tc): matched step j's
    f(m_hat_j, x[start+j]) is the memory of x[:start+j+1] and predicts labels[start+j+1] (none past the end)."""
    student, teacher = dmt_models()
    Tc, Td, n = (0, 16, 5) if start == "initial" else (6, 10, 10)
    ds = make_task("associative_recall", 4, 16, seed=0, n_keys=3, key_vocab=4, value_vocab=4)  # dense labels
    batch = SMTDataCollator(mode="dmt")([ds[i] for i in range(4)])
    ids, labels = batch["input_ids"], batch["labels"]
    L, s0 = ids.shape[1], Tc
    kw = dict(context_length=Tc) if Tc else {}
    module = SMTTrainingModule(student, teacher, dmt_args(tmp_path, mode="dmt", dmt_start=start, dmt_stride=1,
                                                          rollout_length=Td, dmt_matched_steps=n,
                                                          lambda_onestep_readout=1.0, **kw))
    torch.manual_seed(7)
    parts = module(**batch)
    torch.manual_seed(7)
    js = torch.rand(len(ids), Td).argsort(1)[:, :n].sort(1).values  # the draw dmt_parts makes first
    with torch.no_grad():
        m = student.initial_memory(len(ids)) if start == "initial" else teacher.encode(ids[:, :Tc])
        mems = []
        for j in range(Td):
            m = student.step(m, ids[:, s0 + j])
            mems.append(m)  # memory after x[:s0+j+1]: predicts labels[s0+j+1]
        rows = torch.arange(len(ids)).view(-1, 1)
        pred = torch.stack(mems, 1)[rows, js]  # (B, n, K, d)
        idx = s0 + js + 1
        tgt = labels.gather(1, idx.clamp_max(L - 1)).masked_fill(idx >= L, -100)
        want = losses.readout_loss(student.readout(pred), tgt)
    assert (tgt != -100).any()
    torch.testing.assert_close(parts["onestep_readout"], want, rtol=1e-5, atol=1e-6)
    student.zero_grad()
    parts["onestep_readout"].backward()
    assert all(p.grad is None for p in student.readout_head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.model.updater.parameters())


@pytest.mark.parametrize("kw, match", [
    (dict(mode="bptt", smt_all_prefixes=False), "mode='bptt'"),
    (dict(mode="smt", smt_all_prefixes=False), "smt_all_prefixes=False"),
    (dict(mode="dmt", smt_all_prefixes=False, dmt_gradient="full_rollout", dmt_stride=4,
          dmt_teacher_transitions=False), "full_rollout"),
    (dict(mode="smt", lambda_onestep_readout=-1.0), "must be >= 0"),
])
def test_onestep_readout_is_refused_where_it_cannot_apply(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        args(tmp_path, **{"lambda_onestep_readout": 1.0, **kw})


def test_smt_onestep_readout_with_activation_checkpointing_keeps_the_read_out_constant(tmp_path):
    """Checkpointed decoder blocks recompute in backward, after functional_call put the real weights back: the
    read-out call runs without checkpointing, so the loss and the gradients equal the plain run (was: a
    CheckpointError; with reentrant checkpointing, gradient into the teacher's decoder)."""
    ds = make_task("associative_recall", 4, T, seed=0, n_keys=3, key_vocab=4, value_vocab=4)
    batch = dict(input_ids=torch.tensor(ds["input_ids"]), labels=torch.tensor(ds["labels"]))
    grads = []
    for ckpt in (False, True):
        student, teacher = models()
        module = SMTTrainingModule(student, teacher, args(tmp_path, mode="smt", lambda_onestep_readout=1.0))
        if ckpt:
            module.activation_checkpointing_enable()
            assert any(getattr(m, "gradient_checkpointing", False) for m in teacher.decoder.modules())
        torch.manual_seed(3)
        module(**batch)["onestep_readout"].backward()
        assert all(p.grad is None or not p.grad.any() for p in teacher.parameters())
        grads.append({k: p.grad.clone() for k, p in student.named_parameters() if p.grad is not None})
        if ckpt:  # the flags are restored after the read-out call
            assert any(getattr(m, "gradient_checkpointing", False) for m in teacher.decoder.modules())
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-5, atol=1e-7)


def test_joint_onestep_readout_also_trains_the_encoder_not_the_decoder(tmp_path):
    """Joint mode does not detach the teacher's memories (as its dynamics loss): the one-step read-out loss reaches
    the encoder through m_t, but never the decoder or LM head it is read by."""
    student, teacher = models()
    ds = make_task("associative_recall", 4, T, seed=0, n_keys=3, key_vocab=4, value_vocab=4)
    module = SMTTrainingModule(student, teacher, args(tmp_path, mode="joint", lambda_onestep_readout=1.0))
    module(input_ids=torch.tensor(ds["input_ids"]), labels=torch.tensor(ds["labels"]))["onestep_readout"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in teacher.encoder.parameters())
    assert all(p.grad is None for p in [*teacher.decoder.parameters(), *teacher.lm_head.parameters()])
