"""Parallel prefill (the teacher's encoder carried by the student): the state equals the teacher's memory of the
prompt's last Tc tokens, generate() continues from it exactly like a hand-written loop, left padding and
save/load keep it exact, and misuse raises an error that names the fix."""

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import tiny_student_config, tiny_teacher_config
from smt_hf import SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherModel

TC = 8


@pytest.fixture
def pair(student, teacher):
    student.add_prefill_encoder(teacher, context_length=TC)
    return student, teacher


def greedy_from(student, memory, n):
    toks = []
    for _ in range(n):
        nxt = student.readout(memory).argmax(-1)  # (B,)
        toks.append(nxt)
        memory = student.step(memory, nxt)
    return torch.stack(toks, 1)  # (B, n)


@torch.no_grad()
@pytest.mark.parametrize("T", [3, TC, 21])
def test_prefill_memory_is_teacher_memory_of_last_tc_tokens(pair, T):
    student, teacher = pair
    x = torch.randint(0, 16, (4, T))
    assert torch.equal(student.prefill_memory(x), teacher.encode(x[:, -TC:]))


@torch.no_grad()
def test_parallel_generate_equals_manual_loop(pair):
    student, teacher = pair
    x = torch.randint(0, 16, (3, 20))
    out = student.generate(x, max_new_tokens=7, do_sample=False, prefill="parallel", pad_token_id=0)
    assert torch.equal(out[:, 20:], greedy_from(student, teacher.encode(x[:, -TC:]), 7))


@torch.no_grad()
def test_parallel_prefill_left_padded_batch_matches_each_prompt(pair):
    student, _ = pair
    a, b = torch.randint(1, 16, (1, 5)), torch.randint(1, 16, (1, 12))
    ids = torch.cat([torch.cat([torch.zeros(1, 7, dtype=torch.long), a], 1), b])  # (2, 12), row 0 left-padded
    mask = torch.cat([torch.cat([torch.zeros(1, 7), torch.ones(1, 5)], 1), torch.ones(1, 12)]).long()
    m = student.prefill_memory(ids, mask)
    torch.testing.assert_close(m[:1], student.prefill_memory(a), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m[1:], student.prefill_memory(b), rtol=1e-5, atol=1e-5)
    out = student.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, prefill="parallel", pad_token_id=0)
    assert torch.equal(out[0, 12:], student.generate(a, max_new_tokens=5, do_sample=False, prefill="parallel",
                                                     pad_token_id=0)[0, 5:])


@torch.no_grad()
def test_prefill_encoder_saves_and_reloads_bit_exact(pair, tmp_path):
    student, _ = pair
    student.config.prefill = "parallel"
    student.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.prefill == "parallel" and loaded.config.prefill_encoder.context_length == TC
    sd, ld = student.state_dict(), loaded.state_dict()
    assert any(k.startswith("prefill_encoder.") for k in sd) and sd.keys() == ld.keys()
    assert all(torch.equal(sd[k], ld[k]) for k in sd)
    x = torch.randint(0, 16, (2, 30))
    assert torch.equal(student.generate(x, max_new_tokens=6, do_sample=False, pad_token_id=0),
                       loaded.generate(x, max_new_tokens=6, do_sample=False, pad_token_id=0))  # config default


def test_prefill_encoder_is_one_sub_config_that_round_trips(pair, tmp_path):
    """`add_prefill_encoder` sets one sub-config (`SMTMemoryEncoderConfig.from_teacher`); config.json holds it as one
    nested entry (the diff against its defaults) and AutoConfig / to_dict / from_dict give it back."""
    from transformers import AutoConfig

    from smt_hf import SMTMemoryEncoderConfig

    student, teacher = pair
    enc = student.config.prefill_encoder
    assert isinstance(enc, SMTMemoryEncoderConfig)
    assert enc.to_dict() == SMTMemoryEncoderConfig.from_teacher(teacher.config, TC).to_dict()
    tc = teacher.config
    assert (enc.num_layers, enc.context_length, enc.intermediate_size, enc.causal) == (
        tc.num_encoder_layers, TC, tc.intermediate_size, tc.encoder_causal)
    student.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert not [k for k in saved if k.startswith("prefill_") and k != "prefill_encoder"]
    assert saved["prefill_encoder"]["context_length"] == TC and saved["prefill_encoder"]["model_type"] == "smt_memory_encoder"
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert loaded.prefill_encoder.to_dict() == enc.to_dict()
    assert SMTRecurrentConfig.from_dict(loaded.to_dict()).prefill_encoder.to_dict() == enc.to_dict()
    assert SMTRecurrentConfig.from_dict(loaded.to_diff_dict()).to_diff_dict() == loaded.to_diff_dict()
    with pytest.raises(ValueError, match=r"context_length must be in \[1, "):
        SMTMemoryEncoderConfig.from_teacher(teacher.config, teacher.config.max_context_length + 1)


def test_prefill_mode_checked_by_one_validator(student):
    """The config field and the per-call `prefill=` argument are checked by `check_prefill`: one exact message."""
    from smt_hf.configuration_smt import PREFILL_MODES, check_prefill

    msg = "prefill must be 'recurrent' or 'parallel', got 'fast'."
    assert PREFILL_MODES == ("recurrent", "parallel") and check_prefill("parallel") == "parallel"
    for call in (lambda: check_prefill("fast"), lambda: tiny_student_config(prefill="fast"),
                 lambda: student.prefill_mode("fast"), lambda: student(torch.randint(0, 16, (2, 3)), prefill="fast")):
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == msg
    assert student.prefill_mode() == student.config.prefill == "recurrent"


def test_misuse_raises_naming_the_fix(student, teacher):
    x = torch.randint(0, 16, (2, 6))
    with pytest.raises(ValueError, match="add_prefill_encoder"):
        student(x, prefill="parallel")
    with pytest.raises(ValueError, match="add_prefill_encoder"):
        SMTRecurrentConfig.from_teacher(tiny_teacher_config(), prefill="parallel")
    with pytest.raises(ValueError, match="prefill must be"):
        tiny_student_config(prefill="fast")
    other = SMTTeacherModel(tiny_teacher_config(hidden_size=48, num_attention_heads=4))
    with pytest.raises(ValueError, match="hidden_size"):
        student.add_prefill_encoder(other)
    with pytest.raises(ValueError, match="context_length"):
        student.add_prefill_encoder(teacher, context_length=10**6)
    student.add_prefill_encoder(teacher, context_length=TC)
    with pytest.raises(ValueError, match="prefill='recurrent'"):
        student(x, labels=x, prefill="parallel")
    with pytest.raises(ValueError, match="vocab"):
        student.prefill_memory(torch.full((1, 4), 99))


@torch.no_grad()
def test_parallel_forward_returns_last_position_readout_of_teacher_memory(pair):
    student, teacher = pair
    x = torch.randint(0, 16, (2, 13))
    out = student(x, prefill="parallel")
    assert out.logits.shape == (2, 1, 16) and out.cache.get_seq_length() == 13
    assert torch.equal(out.logits[:, 0], student.readout(teacher.encode(x[:, -TC:])))
    assert torch.equal(out.cache.memory, teacher.encode(x[:, -TC:]))
    # continuing from the returned cache recurs from the teacher's memory
    nxt = torch.randint(0, 16, (2, 1))
    assert torch.equal(student(nxt, cache=out.cache).logits[:, 0],
                       student.readout(student.step(teacher.encode(x[:, -TC:]), nxt[:, 0])))


def test_prefill_encoder_takes_the_students_dtype(pair):
    """A bf16 student given an fp32 teacher: the carried encoder is cast to bf16 and parallel prefill runs."""
    student, teacher = pair
    student = copy.deepcopy(student).to(torch.bfloat16)
    student.add_prefill_encoder(teacher, context_length=TC)
    assert next(student.prefill_encoder.parameters()).dtype == torch.bfloat16
    x = torch.randint(1, 16, (2, 3 * TC))
    out = student.generate(x, max_new_tokens=4, do_sample=False, prefill="parallel", pad_token_id=0)
    assert out.shape == (2, 3 * TC + 4)
    with torch.no_grad():  # and a bf16 teacher reads an fp32 memory
        assert copy.deepcopy(teacher).to(torch.bfloat16).readout(torch.randn(2, *student.initial_memory(1).shape[1:])).shape == (2, 16)


def test_one_encoder_config_shared_by_two_student_configs_gets_each_ones_default():
    """The student config fills the encoder's missing intermediate_size (4 * its hidden_size) in its own copy, not in
    the caller's object: one SMTMemoryEncoderConfig given to students of width 16 then 32 gives 64 and 128."""
    from smt_hf import SMTMemoryEncoderConfig

    enc = SMTMemoryEncoderConfig(num_layers=1, context_length=TC)
    small = SMTRecurrentConfig(vocab_size=16, hidden_size=16, memory_tokens=2, num_attention_heads=2, prefill_encoder=enc)
    large = SMTRecurrentConfig(vocab_size=16, hidden_size=32, memory_tokens=2, num_attention_heads=2, prefill_encoder=enc)
    assert (small.prefill_encoder.intermediate_size, large.prefill_encoder.intermediate_size) == (64, 128)
    assert enc.intermediate_size is None and small.prefill_encoder is not enc
