"""Checkpoints written by older code load unchanged: `tests/fixtures/checkpoint_v0/` was saved by the package at
71887b4 (before the memory encoder got its own module, and before the student config's flat `prefill_*` fields became
the `prefill_encoder` sub-config; `make_fixture.py` there wrote it). Loading it must need no key map (the state-dict
keys are the same), load the saved weights bit for bit, and give the outputs recorded then (up to float32 rounding:
`assert_recorded`)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoConfig

from conftest import tiny_student_config, tiny_teacher_config
from smt_hf import SMTMemoryEncoderConfig, SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherModel

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_v0"


def assert_recorded(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding (absolute 1e-5; observed <= 1e-6): the outputs were recorded on another CPU, and
    BLAS kernels (MKL's code path per CPU vendor and per memory alignment) may round the last bits differently. The
    weights themselves load bit for bit (the tests check that exactly); a wrong key map or init gives O(1) errors."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


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
    for model, folder in ((teacher, "teacher"), (student, "student")):  # the weights, bit for bit
        saved = load_file(str(FIXTURE / folder / "model.safetensors"))
        assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert_recorded(teacher.encode(x, mask), exp["memory"])
    assert_recorded(teacher.encode_prefixes(x), exp["prefixes"])
    assert_recorded(teacher(x, mask, future_ids=x[:, :4]).logits, exp["logits"])
    assert_recorded(student.prefill_memory(x, mask), exp["prefill_memory"])
    assert_recorded(student(x).logits, exp["student_logits"])


@torch.no_grad()
def test_old_flat_prefill_config_loads_into_the_sub_config_and_resaves_in_the_new_format(tmp_path):
    """The fixture's config.json has the flat keys prefill_layers / prefill_context_length / prefill_intermediate_size
    / prefill_causal: they become `prefill_encoder`, and a re-save writes the sub-config only, with the same model."""
    old = json.loads((FIXTURE / "student" / "config.json").read_text())
    assert old["prefill_layers"] == 1 and "prefill_encoder" not in old  # the fixture is in the old format
    expected = SMTMemoryEncoderConfig(num_layers=1, context_length=6, intermediate_size=32, causal=True).to_diff_dict()
    student = SMTRecurrentForCausalLM.from_pretrained(FIXTURE / "student").eval()
    assert {**student.config.prefill_encoder.to_diff_dict(), "dtype": None} == {**expected, "dtype": None}
    assert AutoConfig.from_pretrained(FIXTURE / "student").prefill_encoder.to_diff_dict() == expected
    student.save_pretrained(tmp_path)
    new = json.loads((tmp_path / "config.json").read_text())
    assert not {"prefill_layers", "prefill_context_length", "prefill_intermediate_size", "prefill_causal"} & set(new)
    assert {k: v for k, v in new["prefill_encoder"].items() if k != "dtype"} == {
        "model_type": "smt_memory_encoder", "num_layers": 1, "context_length": 6, "intermediate_size": 32, "causal": True}
    again = SMTRecurrentForCausalLM.from_pretrained(tmp_path).eval()
    exp = load_file(str(FIXTURE / "expected.safetensors"))
    assert_recorded(again.prefill_memory(exp["input_ids"], exp["attention_mask"]), exp["prefill_memory"])
    assert_recorded(again(exp["input_ids"]).logits, exp["student_logits"])


def test_old_flat_prefill_keys_as_a_literal_dict():
    """What a pre-sub-config config.json held, as keyword arguments: no encoder (prefill_layers=0, the old default,
    written with prefill_intermediate_size filled in) gives None; old and new keys together are refused."""
    base = dict(vocab_size=16, hidden_size=16, memory_tokens=2, num_attention_heads=2)
    none = SMTRecurrentConfig(**base, prefill="recurrent", prefill_layers=0, prefill_context_length=0,
                              prefill_intermediate_size=64, prefill_causal=False)
    assert none.prefill_encoder is None and "prefill_layers" not in none.to_dict()
    old = SMTRecurrentConfig(**base, prefill="parallel", prefill_layers=3, prefill_context_length=12,
                             prefill_causal=False)
    assert (old.prefill, old.prefill_encoder.num_layers, old.prefill_encoder.context_length) == ("parallel", 3, 12)
    assert old.prefill_encoder.intermediate_size == 64  # the old default, 4 * hidden_size
    new = SMTRecurrentConfig(**base, prefill="parallel", prefill_encoder={"num_layers": 3, "context_length": 12})
    assert new.to_diff_dict() == old.to_diff_dict()
    with pytest.raises(ValueError, match="pass `prefill_encoder` only"):
        SMTRecurrentConfig(**base, prefill_encoder={"num_layers": 1}, prefill_layers=1, prefill_context_length=4)
    with pytest.raises(ValueError, match="context_length"):  # an encoder without a context, as before
        SMTRecurrentConfig(**base, prefill_layers=1, prefill_context_length=0)
    with pytest.raises(ValueError, match="context_length"):  # the key missing: the old default 0, not a silent 256
        SMTRecurrentConfig(**base, prefill_layers=2)
    with pytest.raises(ValueError, match="context_length"):  # as a config.json dict, through from_dict
        SMTRecurrentConfig.from_dict({**base, "model_type": "smt_recurrent", "prefill_layers": 2})


def _pickled_only_folder(model, folder):
    model.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # what another library might have written
    return folder


@pytest.mark.parametrize("auto", [False, True])
def test_pickled_only_checkpoints_are_refused_never_unpickled(tmp_path, monkeypatch, auto):
    from transformers import AutoModel, AutoModelForCausalLM

    torch.manual_seed(0)
    student = SMTRecurrentForCausalLM(tiny_student_config()).eval()
    teacher = SMTTeacherModel(tiny_teacher_config()).eval()
    s_dir = _pickled_only_folder(student, tmp_path / "student")
    t_dir = _pickled_only_folder(teacher, tmp_path / "teacher")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a user file")

    monkeypatch.setattr(torch, "load", no_unpickling)
    s_cls, t_cls = (AutoModelForCausalLM, AutoModel) if auto else (SMTRecurrentForCausalLM, SMTTeacherModel)
    for cls, folder in ((s_cls, s_dir), (t_cls, t_dir)):
        with pytest.raises(OSError, match=r"pickled weights only \(pytorch_model.bin\).*safetensors checkpoints only"):
            cls.from_pretrained(folder)
        with pytest.raises(ValueError, match="use_safetensors=False is not supported"):
            cls.from_pretrained(folder, use_safetensors=False)
    # a config.json naming a pickled weights file (transformers reads the file it names, even with use_safetensors)
    student.save_pretrained(tmp_path / "named")
    torch.save(student.state_dict(), tmp_path / "named" / "weights.bin")
    config = json.loads((tmp_path / "named" / "config.json").read_text())
    (tmp_path / "named" / "config.json").write_text(json.dumps({**config, "transformers_weights": "weights.bin"}))
    with pytest.raises(ValueError, match="transformers_weights='weights.bin' names a pickled weights file"):
        s_cls.from_pretrained(tmp_path / "named")
    assert tiny_teacher_config(transformers_weights="model.safetensors").transformers_weights == "model.safetensors"
    # a folder with safetensors still loads, bit-exact, and explicitly asking for safetensors is fine
    student.save_pretrained(tmp_path / "ok")
    back = s_cls.from_pretrained(tmp_path / "ok", use_safetensors=True)
    for (name, a), (_, b) in zip(student.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name


def test_hub_repos_are_read_as_safetensors_only(monkeypatch):
    """A repo id (not a local folder) goes to transformers with use_safetensors=True: its error for a repo without
    model.safetensors is transformers' own, and a pytorch_model.bin is never downloaded and unpickled."""
    from transformers import PreTrainedModel

    seen = {}

    def record(cls, name, *args, **kwargs):
        seen.update(kwargs, name=name)
        return "loaded"

    # transformers' from_pretrained is replaced, so nothing is looked up or downloaded: the test runs offline
    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(record))
    repo_id = "org/not-a-local-folder"
    assert SMTRecurrentForCausalLM.from_pretrained(repo_id, revision="main") == "loaded"
    assert seen == {"name": repo_id, "revision": "main", "use_safetensors": True}
