"""recipes/smt.py end to end with a tiny config: phases run in order, the standalone student is saved and
reloads with no teacher, and the summary holds each phase's evaluation."""

import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "recipes"))

import smt as recipe  # noqa: E402

from smt_hf import SMTRecurrentForCausalLM, SMTTeacherModel  # noqa: E402


def tiny_config(tmp_path):
    config = recipe.load_config(os.path.join(ROOT, "recipes", "configs", "needle_cpu.yaml"),
                                ["phases.0.max_steps=3", "phases.1.max_steps=2", f"output_dir={tmp_path}",
                                 "data.num_train=256", "data.num_eval=32", "data.seq_len=16",
                                 "common.future_length=16", "common.rollout_length=16", "common.logging_steps=1",
                                 "teacher.hidden_size=32"])
    return config


def test_load_config_overrides(tmp_path):
    config = tiny_config(tmp_path)
    assert config["phases"][0]["max_steps"] == 3 and config["phases"][1]["mode"] == "dmt"
    assert config["data"]["seq_len"] == 16 and config["output_dir"] == str(tmp_path)


def test_main_runs_phases_and_saves_standalone_student(tmp_path):
    summary = recipe.main(tiny_config(tmp_path))
    assert [p["mode"] for p in summary["phases"]] == ["joint", "dmt"]
    assert [p["steps"] for p in summary["phases"]] == [3, 2]
    for p in summary["phases"]:
        assert {"teacher_acc", "onestep_acc", "student_acc", "drift_mean"} <= set(p["eval"])
    on_disk = json.load(open(tmp_path / "summary.json"))
    assert on_disk["phases"][1]["eval"]["student_acc"] == summary["phases"][1]["eval"]["student_acc"]
    student = SMTRecurrentForCausalLM.from_pretrained(tmp_path / "final" / "student").eval()
    teacher = SMTTeacherModel.from_pretrained(tmp_path / "final" / "teacher").eval()
    # DMT trains m_0 too, so compare the readout copy only through a fresh memory
    m = teacher.encode(torch.tensor([[3, 4, 0, 7]]))
    assert student.readout(m).shape == (1, 16)
    prompt = torch.tensor([summary["sample"]["prompt"]])
    again = student.generate(prompt, max_new_tokens=len(summary["sample"]["continuation"]), do_sample=False)
    assert again[0, prompt.shape[1]:].tolist() == summary["sample"]["continuation"]
