"""`lambda_encoder_lm`: deep supervision of a causal-context teacher's token stream. The token states are exactly
the ones inside `encode` (registers never feed tokens), causal (a state never reads a later token), the loss part
is the CE of the teacher's LM head on them against the next position's label, and it is refused where it cannot
mean that (a bidirectional encoder, DMT/BPTT, a layer the encoder does not have)."""

import pytest
import torch
import torch.nn.functional as F
from test_prefix_teacher import T, args, models

from smt_hf import losses
from smt_hf.modeling_encoder import causal_context_mask
from smt_hf.modeling_layers import rms_normalize
from smt_hf.training_args import SMTTrainingArguments
from smt_hf.training_module import SMTTrainingModule


@torch.no_grad()
def test_token_states_are_the_encoders_own_token_states_and_causal():
    _, teacher = models()
    teacher.eval()
    x = torch.randint(0, 16, (2, T))
    K = teacher.config.memory_tokens
    h = torch.cat([teacher.embed_tokens(x), teacher.registers.expand(2, K, -1)], 1)
    full = teacher.encoder(h, attn_mask=causal_context_mask(T, K, None, x.device))  # (2, T+K, d), all blocks
    states = teacher.token_states(x)
    torch.testing.assert_close(states, full[:, :T], rtol=1e-5, atol=1e-5)
    # the registers read these very states: same final block output as the memory path
    torch.testing.assert_close(rms_normalize(full[:, T:], teacher.eps), teacher.encode(x), rtol=1e-5, atol=1e-5)
    # causal: the state at i does not change when tokens after i change; left padding is ignored
    y = x.clone()
    y[:, 5:] = (y[:, 5:] + 1) % 16
    assert torch.equal(teacher.token_states(x, num_layers=1)[:, :5], teacher.token_states(y, num_layers=1)[:, :5])
    padded = torch.cat([torch.zeros(2, 3, dtype=torch.long), x], 1)
    mask = torch.cat([torch.zeros(2, 3), torch.ones(2, T)], 1).long()
    torch.testing.assert_close(teacher.token_states(padded, mask)[:, 3:], states, rtol=1e-5, atol=1e-5)


def test_token_states_refuse_a_bidirectional_encoder_and_a_missing_layer():
    _, teacher = models(causal=False)
    with pytest.raises(ValueError, match="causal-context"):
        teacher.token_states(torch.zeros(1, 4, dtype=torch.long))
    _, teacher = models()
    for n in (0, teacher.config.num_encoder_layers + 1):
        with pytest.raises(ValueError, match="num_layers must be in 1.."):
            teacher.token_states(torch.zeros(1, 4, dtype=torch.long), num_layers=n)


def test_encoder_lm_part_is_the_next_label_cross_entropy(tmp_path):
    student, teacher = models()
    a = args(tmp_path, smt_all_prefixes=False, lambda_encoder_lm=0.5, encoder_lm_layer=1)
    mod = SMTTrainingModule(student, teacher, a)
    x = torch.randint(0, 16, (3, T))
    labels = torch.randint(0, 16, (3, T))
    labels[:, ::3] = -100
    mask = torch.ones(3, T, dtype=torch.long)
    mask[0, 9:] = 0  # right padding: no target there
    got = mod.encoder_lm_part(x, labels, mask)
    logits = teacher.lm_head(teacher.token_states(x, mask, 1))[:, :-1]  # state i predicts labels[i+1]
    target = labels[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    want = F.cross_entropy(logits.reshape(-1, 16), target.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(got, want)
    # it is one more weighted part of the SMT loss; 0 = off (no part, the reference loss)
    parts = mod(input_ids=x, labels=labels, attention_mask=mask)
    assert set(parts) == {"decoder", "uniformity", "dynamics", "encoder_lm"}
    assert mod.weights()["encoder_lm"] == 0.5
    off = SMTTrainingModule(student, teacher, args(tmp_path, smt_all_prefixes=False))
    assert "encoder_lm" not in off(input_ids=x, labels=labels, attention_mask=mask)
    # the all-prefix path adds the same part
    pre = SMTTrainingModule(student, teacher, args(tmp_path, lambda_encoder_lm=1.0))
    assert "encoder_lm" in pre(input_ids=x, labels=labels)
    total = losses.combine(parts, mod.weights())
    assert total.requires_grad


def test_encoder_lm_default_layer_leaves_one_block_for_the_registers(tmp_path):
    student, teacher = models()  # tiny teacher: 2 encoder blocks
    mod = SMTTrainingModule(student, teacher, args(tmp_path, smt_all_prefixes=False, lambda_encoder_lm=1.0))
    x = torch.randint(0, 16, (2, T))
    labels = torch.randint(0, 16, (2, T))
    with torch.no_grad():
        want = F.cross_entropy(teacher.lm_head(teacher.token_states(x, None, 1))[:, :-1].reshape(-1, 16),
                               labels[:, 1:].reshape(-1))
        torch.testing.assert_close(mod.encoder_lm_part(x, labels), want)


def test_encoder_lm_is_refused_where_it_cannot_apply(tmp_path):
    student, teacher = models(causal=False)
    with pytest.raises(ValueError, match="causal-context teacher"):
        SMTTrainingModule(student, teacher, args(tmp_path, smt_all_prefixes=False, lambda_encoder_lm=1.0))
    student, teacher = models()
    with pytest.raises(ValueError, match="exceeds the teacher's 2 encoder layers"):
        SMTTrainingModule(student, teacher, args(tmp_path, smt_all_prefixes=False, lambda_encoder_lm=1.0,
                                                 encoder_lm_layer=3))
    with pytest.raises(ValueError, match="applies to mode 'smt' or 'joint'"):
        SMTTrainingArguments(output_dir=str(tmp_path), mode="dmt", lambda_encoder_lm=1.0)
    with pytest.raises(ValueError, match="encoder_lm_layer"):
        SMTTrainingArguments(output_dir=str(tmp_path), encoder_lm_layer=0)
    with pytest.raises(ValueError, match="lambda_encoder_lm"):
        SMTTrainingArguments(output_dir=str(tmp_path), lambda_encoder_lm=-1.0)


def test_dense_first_step_part_reads_every_prefix_memory(tmp_path):
    student, teacher = models()
    mod = SMTTrainingModule(student, teacher, args(tmp_path, lambda_first_step=2.0))
    x = torch.randint(0, 16, (3, T))
    labels = torch.randint(0, 16, (3, T))
    labels[:, ::2] = -100
    parts = mod(input_ids=x, labels=labels)
    with torch.no_grad():  # m_t = E(x[:t]) predicts labels[t], one prefix at a time
        logits = torch.stack([teacher.readout(teacher.encode(x[:, :t])) for t in range(T)], 1)  # (3, T, V)
        want = F.cross_entropy(logits.reshape(-1, 16), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(parts["first_step"].detach(), want, rtol=1e-4, atol=1e-5)
    assert mod.weights()["first_step"] == 2.0
    assert "first_step" not in SMTTrainingModule(student, teacher, args(tmp_path))(input_ids=x, labels=labels)
    with pytest.raises(ValueError, match="needs smt_all_prefixes=True"):
        args(tmp_path, smt_all_prefixes=False, lambda_first_step=1.0)
