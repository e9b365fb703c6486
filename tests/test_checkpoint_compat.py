"""Checkpoints written by older code load unchanged: `tests/fixtures/checkpoint_v0/` was saved by the package at
71887b4 (before the memory encoder got its own module; `make_fixture.py` there wrote it). Loading it must need no
key map (the state-dict keys are the same) and give the outputs recorded then, bit for bit."""

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from smt_hf import SMTRecurrentForCausalLM, SMTTeacherModel

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_v0"


def _saved_keys(folder: Path) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return set(f.keys())


@torch.no_grad()
def test_old_teacher_and_student_checkpoints_load_with_the_same_keys_and_outputs():
    exp = load_file(str(FIXTURE / "expected.safetensors"))
    x, mask = exp["input_ids"], exp["attention_mask"]
    teacher = SMTTeacherModel.from_pretrained(FIXTURE / "teacher").eval()
    student = SMTRecurrentForCausalLM.from_pretrained(FIXTURE / "student").eval()
    assert set(teacher.state_dict()) == _saved_keys(FIXTURE / "teacher")
    assert set(student.state_dict()) == _saved_keys(FIXTURE / "student")
    assert torch.equal(teacher.encode(x, mask), exp["memory"])
    assert torch.equal(teacher.encode_prefixes(x), exp["prefixes"])
    assert torch.equal(teacher(x, mask, future_ids=x[:, :4]).logits, exp["logits"])
    assert torch.equal(student.prefill_memory(x, mask), exp["prefill_memory"])
    assert torch.equal(student(x).logits, exp["student_logits"])
