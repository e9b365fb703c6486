"""recipes/configs/tinystories_gru_gpu.yaml (the card's GRU-on-TinyStories example) loads through the recipe,
builds a GRU student matching its teacher, has valid phase arguments, and its model card
(model_cards/tinystories_gru.json + a run's summary.json) renders with the repo id and the run's numbers."""

import json
import sys
from pathlib import Path

import torch
from conftest import load_generate_card
from huggingface_hub import metadata_load

from smt_hf.training_args import SMTTrainingArguments

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
import smt as recipe  # noqa: E402

CONFIG = ROOT / "recipes" / "configs" / "tinystories_gru_gpu.yaml"
CARD = ROOT / "model_cards" / "tinystories_gru.json"


def test_yaml_builds_a_gru_student_of_its_teacher():
    config = recipe.load_config(str(CONFIG))
    assert config["data"]["task"] == "text" and config["data"]["source"] == "tinystories"
    seq_len = config["data"]["seq_len"]
    with torch.device("meta"):  # configs and shapes only, no weights
        student, teacher = recipe.build_models(config, 256, seq_len)
    sc, tc = student.config, teacher.config
    assert sc.backbone == "gru" and sc.model_type == "smt_recurrent"
    assert (sc.vocab_size, sc.hidden_size, sc.memory_tokens, sc.readout_layers) == (256, 256, 16, 4)
    assert (tc.vocab_size, tc.hidden_size, tc.memory_tokens, tc.num_decoder_layers) == (256, 256, 16, 4)
    card_config = json.loads(CARD.read_text())["config"]  # the card's config table (when no model is passed)
    assert card_config == {k: getattr(sc, k) for k in card_config}
    assert config["common"]["hub_model_id"] == "org/smt-gru-tinystories" and config["common"]["bf16"] is True
    for phase in config["phases"]:
        kw = {**config["common"], **phase, "output_dir": "unused", "bf16": False, "use_cpu": True}  # bf16 needs a GPU
        args = SMTTrainingArguments(**kw)
        assert args.min_sequence_length() <= seq_len and args.context_length <= tc.max_context_length
    assert [p["mode"] for p in config["phases"]] == ["joint", "dmt"]


def test_card_merges_the_run_summary(tmp_path):
    summary = {  # the structure recipes/smt.py writes
        "machine": "1x NVIDIA H200",
        "phases": [{"mode": "joint", "steps": 5000, "seconds": 3000.0, "eval": {"student_loss": 0.9, "teacher_acc": 0.7}},
                   {"mode": "dmt", "steps": 1000, "seconds": 600.0,
                    "eval": {"student_loss": 0.8, "student_acc": 0.75, "drift_curve": [0.1, 0.2]}}],
        "sample": {"prompt": [79, 110], "continuation": [99, 101], "text": "Once"},
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    gen = load_generate_card()
    assert gen.main([str(CARD), "--summary", str(tmp_path / "summary.json"), "--run-info-out",
                     str(tmp_path / "run_info.json"), "-o", str(tmp_path / "README.md")]) == 0
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["eval"] == {"student_loss": 0.8, "student_acc": 0.75}
    assert info["training"]["stages"] == [{"mode": "joint", "steps": 5000}, {"mode": "dmt", "steps": 1000}]
    assert (info["training"]["steps"], info["training"]["wall_time"], info["hardware"]) == (6000, "60.0 min", "1x NVIDIA H200")
    card = (tmp_path / "README.md").read_text()
    assert "org/smt-gru-tinystories" in card and "Once" in card
    meta = metadata_load(tmp_path / "README.md")
    assert meta["model-index"][0]["name"] == "smt-gru-tinystories" and meta["datasets"] == ["roneneldan/TinyStories"]
    values = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert values["Standalone student loss (nats/token, teacher-forced rollout from m_0)"] == 0.8
