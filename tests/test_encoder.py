"""The memory encoder has one home (`smt_hf.modeling_encoder.MemoryEncoder`): the teacher is one, the student's
carried prefill encoder is one, and a stand-alone copy of the teacher's encodes exactly as the teacher does."""

import pytest
import torch

from conftest import tiny_student_config, tiny_teacher_config
from smt_hf import SMTRecurrentForCausalLM, SMTTeacherModel
from smt_hf.modeling_encoder import MemoryEncoder


@torch.no_grad()
@pytest.mark.parametrize("causal", [False, True])
def test_teacher_and_prefill_encoder_share_one_memory_encoder(causal):
    torch.manual_seed(0)
    teacher = SMTTeacherModel(tiny_teacher_config(encoder_causal=causal)).eval()
    student = SMTRecurrentForCausalLM(tiny_student_config()).eval()
    student.add_prefill_encoder(teacher, context_length=8)
    assert isinstance(teacher, MemoryEncoder) and isinstance(student.prefill_encoder, MemoryEncoder)
    enc = MemoryEncoder(teacher.config, teacher.config.num_encoder_layers, teacher.config.intermediate_size, causal)
    enc.load_memory_encoder(teacher)
    x = torch.randint(0, 16, (3, 8))
    mask = torch.ones_like(x)
    mask[0, :5] = 0
    assert torch.equal(enc.encode(x, mask), teacher.encode(x, mask))
    assert torch.equal(student.prefill_encoder.encode(x, mask), teacher.encode(x, mask))
    assert enc.encode(x).shape == (3, teacher.config.memory_tokens, teacher.config.hidden_size)
    if causal:
        assert torch.equal(enc.encode_prefixes(x), teacher.encode_prefixes(x))
    else:
        with pytest.raises(ValueError, match="causal-context"):
            enc.encode_prefixes(x)
