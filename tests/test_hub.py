"""push_to_hub (model.push_to_hub and export_for_hub(push_to_hub=True)) up to the upload, and model cards.

No network: `HfApi.create_repo` and `HfApi.create_commit` (the calls transformers' PushToHubMixin and
smt_hf.hub.push_folder make) are replaced by fakes that copy the committed files to a folder (conftest's `hub`).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tiny ops: one thread is ~100x faster than two on a loaded 2-core box
from conftest import load_generate_card, tiny_student_config, tiny_teacher_config  # noqa: E402
from huggingface_hub import ModelCard, metadata_load  # noqa: E402
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, GenerationConfig  # noqa: E402

from smt_hf import SMTByteTokenizer, SMTRecurrentForCausalLM, SMTTeacherModel  # noqa: E402
from smt_hf.export import export_for_hub  # noqa: E402
from smt_hf.hub import TEMPLATE_PATH, make_model_card  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "model_cards" / "examples" / "run_info_tinystories_gru.json"


def _student(backbone="gru"):
    torch.manual_seed(0)
    return SMTRecurrentForCausalLM(tiny_student_config(backbone, vocab_size=256)).eval()


def test_model_push_to_hub_uploads_loadable_weights(hub):
    student = _student("transformer")
    student.push_to_hub("me/smt-student", commit_message="test push")
    folder = hub.repos["me/smt-student"]
    assert [(r, kw.get("private")) for r, kw in hub.created] == [("me/smt-student", None)]
    assert hub.commits[0]["message"] == "test push"
    assert {"config.json", "model.safetensors", "generation_config.json", "README.md"} <= {p.name for p in folder.iterdir()}
    assert ModelCard.load(folder / "README.md").data.library_name == "transformers"
    loaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    x = torch.randint(0, 256, (2, 7))
    assert torch.equal(loaded(x).logits, student(x).logits)


def test_tokenizer_push_to_hub(hub):
    SMTByteTokenizer().push_to_hub("me/smt-tok")
    folder = hub.repos["me/smt-tok"]
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "SMTByteTokenizer"
    assert SMTByteTokenizer.from_pretrained(folder)("hé")["input_ids"] == list("hé".encode())


def test_export_push_contains_everything_and_reloads(hub, tmp_path):
    student = _student("gru")
    gen = GenerationConfig(max_new_tokens=5, do_sample=False)
    run_info = json.loads(EXAMPLE.read_text())
    run_info.update(plots=[], run_dir=str(tmp_path))
    result = export_for_hub(
        student, tmp_path / "export", tokenizer=SMTByteTokenizer(), generation_config=gen, run_info=run_info,
        push_to_hub=True, repo_id="me/smt-gru", private=True,
    )
    assert [(r, kw.get("private")) for r, kw in hub.created] == [("me/smt-gru", True)] and result.commit.oid == "0" * 40
    folder = hub.repos["me/smt-gru"]
    pushed = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    local = sorted(p.relative_to(result.path).as_posix() for p in result.path.rglob("*") if p.is_file())
    assert pushed == local == hub.commits[0]["files"]
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json", "README.md",
            "modeling_recurrent.py", "backbones_gru.py", "tokenization_smt.py"} <= set(pushed)
    # weights, tokenizer and generation config round-trip from the pushed files
    loaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    x = torch.randint(0, 256, (3, 8))
    assert torch.equal(loaded(x).logits, student(x).logits)
    assert loaded.generation_config.max_new_tokens == 5
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("abc", return_tensors="pt").input_ids
    assert torch.equal(loaded.generate(ids), student.generate(ids, max_new_tokens=5, do_sample=False))
    # the model card's YAML parses and carries the eval results
    meta = metadata_load(folder / "README.md")
    assert meta["library_name"] == "transformers" and "backbone-gru" in meta["tags"]
    results = meta["model-index"][0]["results"]
    assert results[0]["dataset"]["type"] == "roneneldan/TinyStories"
    values = {m["type"] + ":" + m["name"]: m["value"] for m in results[0]["metrics"]}
    assert values["bits_per_byte:Standalone student bits per byte"] == pytest.approx(0.8945)
    card = ModelCard.load(folder / "README.md")
    assert "backbone" in card.text and "`gru`" in card.text  # config table from the real model, not run_info


def test_teacher_export_push(hub, tmp_path):
    torch.manual_seed(0)
    teacher = SMTTeacherModel(tiny_teacher_config()).eval()
    export_for_hub(teacher, tmp_path / "t", push_to_hub=True, repo_id="me/smt-teacher")
    folder = hub.repos["me/smt-teacher"]
    loaded = AutoModel.from_pretrained(folder).eval()
    x = torch.randint(0, 16, (2, 6))
    assert torch.equal(loaded.encode(x), teacher.encode(x))
    card = ModelCard.load(folder / "README.md")
    assert "smt-teacher" in card.data.tags and "not a `generate()` language model" in card.text


# ---------------------------------------------------------------- model cards
def test_card_renders_and_metadata_round_trips(tmp_path):
    gen = load_generate_card()
    run_info = json.loads(EXAMPLE.read_text())
    card = gen.make_card(run_info, tmp_path / "README.md")
    reloaded = ModelCard.load(tmp_path / "README.md")
    assert reloaded.data.to_dict() == card.data.to_dict()
    evals = reloaded.data.eval_results
    numeric = {k: v for k, v in run_info["eval"].items() if not isinstance(v, list)}
    assert len(evals) == len(numeric) == 5
    assert [e.metric_value for e in evals] == list(numeric.values())
    assert {e.dataset_split for e in evals} == {"validation"} and reloaded.data.model_name == run_info["model_name"]
    text = reloaded.text
    for expected in (
        "TinyStories", "https://huggingface.co/datasets/roneneldan/TinyStories", "smt+dmt", "6000",
        "stage `dmt`: 1000 steps", "1x NVIDIA H200", "![Rollout drift 1-R^2 per step](plots/drift.png)",
        "Once upon a time, there was a little girl", "Needs the teacher only for training",
        "Trained on children's stories only",
    ):
        assert expected in text, expected
    assert "{{" not in text and "{%" not in text


def test_card_warns_about_run_info_keys_it_does_not_read():
    """A misspelt or foreign key was dropped from the card without a word; the example summary has none."""
    with pytest.warns(UserWarning, match=r"does not read: evaluation, hardwear \(it reads: config, dataset"):
        card = make_model_card({"evaluation": {"acc": 1.0}, "hardwear": "1x H200", "eval": {"student_acc": 0.5}},
                               kind="student")
    assert "0.5" in card.text and "1x H200" not in card.text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_model_card(json.loads(EXAMPLE.read_text()))
        make_model_card({"run_dir": ".", "plots": []}, kind="teacher")


def test_card_cli_and_templates_in_sync(tmp_path):
    gen = load_generate_card()
    assert gen.main([str(EXAMPLE), "-o", str(tmp_path / "card.md")]) == 0
    assert metadata_load(tmp_path / "card.md")["model-index"][0]["name"] == "smt-gru-tinystories-bytes"
    # one template: the CLI renders the packaged one export_for_hub uses (no copy under model_cards/)
    assert not (ROOT / "model_cards" / "template.md").exists() and gen.TEMPLATE == TEMPLATE_PATH
    assert (tmp_path / "card.md").read_text() == str(make_model_card(json.loads(EXAMPLE.read_text())))


def test_minimal_card_and_fences(tmp_path):
    card = make_model_card({"samples": [{"prompt": "a`b", "output": "code ``` inside"}]}, model=_student("mlp"))
    assert card.data.eval_results is None and card.data.model_name == "smt-mlp-student"
    assert "````text\ncode ``` inside\n````" in card.text  # fence longer than any run inside the sample
    assert "Not recorded." in card.text and "No evaluation results" in card.text
    with pytest.raises(ValueError, match="relative to the card"):
        make_model_card({"plots": [{"path": "https://x.org/a.png"}]}, kind="student")


def test_card_documents_the_carried_prefill_encoder():
    student = _student("gru")
    assert 'prefill="parallel"' not in make_model_card({}, model=student).text
    teacher = SMTTeacherModel(tiny_teacher_config(vocab_size=256))
    student.add_prefill_encoder(teacher, context_length=24)
    text = make_model_card({}, model=student).text
    assert 'model.generate(ids, prefill="parallel", ...)' in text and "last\n24 tokens in one parallel pass" in text
    assert "{{" not in text and "{%" not in text
    assert "| `prefill_encoder.context_length` | `24` |" in text  # the sub-config's fields, one row each
    # the card's default and limits follow the model (it said recurrent and "no parallel prefill" regardless)
    assert 'default is `prefill="recurrent"`' in text and "no parallel prefill" not in text
    assert "the parallel prefill reads only the prompt's last" in text
    student.config.prefill = "parallel"
    assert 'default is `prefill="parallel"`' in make_model_card({}, model=student).text
    # a run summary written before the sub-config (flat prefill_* keys) gives the same card section
    old = {"config": {"prefill_layers": 2, "prefill_context_length": 24, "prefill_causal": False}}
    assert "last\n24 tokens in one parallel pass" in make_model_card(old, kind="student").text


def test_export_copies_plots(tmp_path):
    (tmp_path / "run" / "plots").mkdir(parents=True)
    (tmp_path / "run" / "plots" / "loss.png").write_bytes(b"\x89PNG fake")
    run_info = {"run_dir": str(tmp_path / "run"), "plots": [{"path": "plots/loss.png", "caption": "loss"}]}
    out = export_for_hub(_student("gru"), tmp_path / "out", run_info=run_info).path
    assert (out / "plots" / "loss.png").read_bytes() == b"\x89PNG fake"
    assert "![loss](plots/loss.png)" in (out / "README.md").read_text()
    with pytest.raises(FileNotFoundError, match="run_dir"):
        export_for_hub(_student("gru"), tmp_path / "out2", run_info={"plots": ["missing.png"]})
    assert not (tmp_path / "out2").exists()  # checked before anything is written (it left a half export)
    (tmp_path / "escaped.png").write_bytes(b"\x89PNG fake")  # '..' was copied outside the export, linked from the card
    with pytest.raises(ValueError, match="not a URL"):  # ("does not exist" for the URL read as a path)
        export_for_hub(_student("gru"), tmp_path / "out4", run_info={"plots": ["https://x.org/a.png"]})
    with pytest.raises(ValueError, match="leaves the export folder"):
        export_for_hub(_student("gru"), tmp_path / "out3", run_info={"run_dir": str(tmp_path / "run"),
                                                                     "plots": ["../escaped.png"]})


def test_trainer_push_to_hub_uploads_standalone_student_and_teacher(hub, tmp_path):
    from test_trainer import data, models, targs

    from smt_hf.trainer import SMTTrainer

    student, teacher = models()
    trainer = SMTTrainer(model=student, teacher=teacher, args=targs(tmp_path, mode="joint", max_steps=2),
                         train_dataset=data(), eval_dataset=data(16, seed=3))
    trainer.train()
    trainer.evaluate()
    trainer.push_to_hub("me/smt-needle", push_teacher=True)
    folder = hub.repos["me/smt-needle"]
    assert {"config.json", "model.safetensors", "generation_config.json", "README.md"} <= {p.name for p in folder.iterdir()}
    assert "auto_map" in json.loads((folder / "config.json").read_text())
    meta = metadata_load(folder / "README.md")
    assert meta["model-index"][0]["results"]
    loaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    x = torch.randint(0, 16, (2, 6))
    assert torch.equal(loaded(x).logits, student.eval()(x).logits)
    assert AutoModel.from_pretrained(hub.repos["me/smt-needle-teacher"]).config.model_type == "smt_teacher"


def test_card_names_the_dmt_gradient_setting():
    info = {"training": {"mode": "smt+dmt", "steps": 30, "stages": [
        {"mode": "joint", "steps": 20}, {"mode": "dmt", "dmt_gradient": "one_step", "steps": 10}]}}
    text = make_model_card(info, model=_student("mlp")).text
    assert "stage `dmt`: 10 steps (dmt_gradient=one_step: no gradient across steps, no BPTT)" in text
    info["training"]["stages"][1]["dmt_gradient"] = "full_rollout"
    assert "truncated BPTT" in make_model_card(info, model=_student("mlp")).text


def test_card_of_an_e2e_run_names_its_rows_settings_and_plot(tmp_path):
    """model_cards/generate_card.py --e2e: the card of a recipes/needle_e2e.py run takes the one-step DMT row's
    metrics, both stages' steps and wall-clock, the DMT settings and the drift plot next to the JSON."""
    import json

    gc = load_generate_card()
    run = {"task": "string_copy", "task_kwargs": {}, "seq_len": 32, "seed": 1, "machine": "cpu x",
           "settings": {"dmt": {"mode": "dmt", "dmt_matched_steps": 8}},
           "rows": [{"run": "joint SMT", "steps": 100, "seconds": 60.0, "student_acc": 0.3},
                    {"run": "SMT -> DMT one_step", "steps": 40, "seconds": 30.4, "student_acc": 0.875,
                     "teacher_acc": 0.99, "onestep_acc": 0.9, "drift_mean": None},
                    {"run": "BPTT (4x wall-clock)", "steps": 36, "seconds": 360, "student_acc": 0.5},
                    {"run": "BPTT (same wall-clock)", "steps": 9, "seconds": 90, "student_acc": 0.25}]}
    info = gc.run_info_from_e2e(run, "x_drift.png")
    assert info["model_name"] == "smt-string-copy-T32-transformer"
    assert info["eval"] == {"teacher_acc": 0.99, "onestep_acc": 0.9, "student_acc": 0.875}
    assert info["training"]["stages"] == [{"mode": "joint", "steps": 100},
                                          {"mode": "dmt", "dmt_gradient": "one_step", "steps": 40}]
    assert info["training"]["wall_time"] == "90 s" and info["hardware"] == "cpu x"
    assert "{'dmt_matched_steps': 8}" in info["description"] and "reached 0.250" in info["description"]
    assert info["plots"][0]["path"] == "x_drift.png" and info["dataset"]["split"].endswith("(seed 1000001)")
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "run_drift.png").write_bytes(b"")
    out = tmp_path / "cards" / "card.md"
    assert gc.main([str(tmp_path / "run.json"), "--e2e", "-o", str(out)]) == 0
    text = out.read_text()
    assert "0.875" in text and "](../run_drift.png)" in text
    assert "(transformer updater)" in text and "joint SMT then one-step DMT" in text


def test_card_of_an_e2e_run_names_its_smt_mode_and_student():
    """A run whose SMT phase ran detached (mode 'smt', as several Fig 3 families) with a GRU student: the card said
    "joint SMT", "-transformer" and, without --model, "(None updater) ... K tokens of width d"."""
    gc = load_generate_card()
    run = {"task": "parity", "task_kwargs": {}, "seq_len": 32, "seed": 0, "machine": "cpu x",
           "model": {"teacher": {"hidden_size": 64, "memory_tokens": 8}, "student": {"backbone": "gru"}},
           "settings": {"smt": {"mode": "smt"}, "dmt": {"mode": "dmt"}},
           "rows": [{"run": "joint SMT", "steps": 100, "seconds": 60.0, "student_acc": 0.3},
                    {"run": "SMT -> DMT one_step", "steps": 40, "seconds": 30.4, "student_acc": 0.875}]}
    info = gc.run_info_from_e2e(run)
    assert info["model_name"] == "smt-parity-T32-gru" and info["training"]["stages"][0] == {"mode": "smt", "steps": 100}
    assert "with SMT (mode 'smt'" in info["description"] and "joint" not in info["description"]
    text = make_model_card(info).text
    assert "(gru updater)" in text and "a memory of 8 tokens of width 64" in text
