"""recipes/smt.py config checks (every key and --set override validated before training), sample printing,
fast --help of the recipes, and where recipes write by default (issue 17)."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "recipes")
sys.path.insert(0, RECIPES)

import smt as recipe  # noqa: E402
from smt_hf import recipe as recipe_module  # noqa: E402
from smt_hf.recipe_config import ConfigError  # noqa: E402

NEEDLE = os.path.join(RECIPES, "configs", "needle_cpu.yaml")


def load(*overrides):
    return recipe.load_config(NEEDLE, list(overrides))


@pytest.mark.parametrize("override, message", [
    ("max_steps=30", r"unknown key 'max_steps'.*phases\.<i>\.max_steps.*common\.max_steps"),
    ("phase.0.max_steps=30", r"unknown key 'phase'; did you mean 'phases'"),
    ("phases.0.max_step=30", r"unknown key 'phases\.0\.max_step'; did you mean 'max_steps'"),
    ("phases.0.max_steps=abc", r"phases\.0\.max_steps='abc' \(str\): SMTTrainingArguments\.max_steps expects int"),
    ("phases.2.max_steps=30", r"phases has 2 entries \(valid indices 0\.\.1\)"),
    ("phases.x.max_steps=30", r"phases is a list; index it with 0\.\.1"),
    ("common.save_strategy=sometimes", r"common\.save_strategy='sometimes'.*choose one of \['no', 'steps', 'epoch'"),
    # YAML reads an unquoted `no` as False: the message said only "expects str"
    ("common.save_strategy=no", r"save_strategy=False \(bool\).*expects str; YAML reads an unquoted no.*"
                                r"save_strategy: \"no\" in the file, --set 'common\.save_strategy=\"no\"' on the command line"),
    ("teacher.hidden_sise=32", r"unknown key 'teacher\.hidden_sise'; did you mean 'hidden_size'"),
    ("student.hidden_size=32", r"student copies hidden_size from the teacher; set teacher\.hidden_size"),
    ("data.vocab=3", r"task 'needle' got unknown argument\(s\) \['vocab'\]; valid: \['vocab_size'\]"),
    ("data.task=nope", r"data\.task='nope' is unknown; choose one of"),
    ("phases.0.output_dir=x", r"set the top-level output_dir"),
    ("seed=zero", r"seed='zero' \(str\): the config expects int"),
    ("max_steps", r"write KEY=VALUE"),
])
def test_bad_override_names_the_key_and_the_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        load(override)


def test_unknown_key_in_the_yaml_file_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {task: needle, seq_len: 16}\nphases:\n  - {mode: joint, max_stesp: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'phases\.0\.max_stesp'; did you mean 'max_steps'"):
        recipe.load_config(str(path))
    with pytest.raises(ConfigError, match="unknown key 'max_steps'"):  # main() validates dicts too
        recipe.main({"data": {"task": "needle", "seq_len": 16}, "max_steps": 3})


def test_missing_config_file_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match=r"config file 'nope\.yaml' not found.*needle_cpu\.yaml"):
        recipe.load_config("nope.yaml")


def test_good_overrides_are_applied_and_typed():
    config = load("phases.0.max_steps=30", "common.learning_rate=1e-3", "phases.1.lambda_dyn=2")
    assert config["phases"][0]["max_steps"] == 30
    assert config["common"]["learning_rate"] == 0.001  # YAML reads '1e-3' as a string; the float field converts it
    assert config["phases"][1]["lambda_dyn"] == 2.0 and isinstance(config["phases"][1]["lambda_dyn"], float)


def test_common_override_sets_every_phase_even_where_the_file_sets_it_per_phase():
    """`--set common.K=V` sets every phase (as the docs say): needle_cpu.yaml sets max_steps and learning_rate per
    phase, whose values won over common's, so the override was silently ignored (1200 + 300 steps, lr 1e-3 / 3e-4).
    Overrides apply in order: a later phases.<i>.K wins."""
    config = load("common.max_steps=2", "common.learning_rate=5e-4", "phases.1.max_steps=3")
    assert [p["max_steps"] for p in config["phases"]] == [2, 3]
    assert [p["learning_rate"] for p in config["phases"]] == [5e-4, 5e-4] == [config["common"]["learning_rate"]] * 2
    args = recipe_module.phase_arguments(config, 32, 32)
    assert [(a.max_steps, a.learning_rate) for a in args] == [(2, 5e-4), (3, 5e-4)]
    assert load("common.logging_steps=7")["phases"][0].get("logging_steps") is None  # not set per phase: common's
    whole = load("common={max_steps: 4, learning_rate: 2.0e-4, use_cpu: true}")  # the whole section, the same way
    assert [(p["max_steps"], p["learning_rate"]) for p in whole["phases"]] == [(4, 2e-4), (4, 2e-4)]


def test_cli_reports_config_errors_as_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        recipe.cli(["--config", NEEDLE, "--set", "phases.0.max_steps=abc"])
    assert e.value.code == 2 and "phases.0.max_steps='abc'" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("teacher.hidden_size=30", r"error: teacher / student: .*hidden_size"),
    ("data.vocab_size=1", r"error: data: needle: vocab_size must be >= 2"),
])
def test_cli_reports_data_and_model_errors_as_usage_errors(capsys, tmp_path, override, message):
    """A value only the data or model builder can reject ended in a traceback; now the usage-error line."""
    with pytest.raises(SystemExit) as e:
        recipe.cli(["--config", NEEDLE, "--set", override, "--set", f"output_dir={tmp_path}", "--set", "data.num_train=8",
                    "--set", "data.num_eval=8"])
    assert e.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_missing_tokenizer_folder_is_named():
    """A relative or absolute folder that does not exist was read as a hub id ("Repo id must be in the form...")."""
    from smt_hf.data import load_tokenizer

    for name in ("./missing_tok", "/tmp/no/such/tok", "missing_tok/"):
        with pytest.raises(FileNotFoundError, match=f"tokenizer folder {re.escape(repr(name))} not found"):
            load_tokenizer(name)


def test_teacher_too_small_for_the_context_says_what_to_set(tmp_path):
    config = load("teacher.max_context_length=16", f"output_dir={tmp_path}", "data.num_train=8", "data.num_eval=8")
    with pytest.raises(ConfigError, match=r"phases\.0: context_length=32 exceeds teacher\.max_context_length=16; "
                                          r"set --set teacher\.max_context_length=32"):
        recipe.main(config)
    assert not (tmp_path / "final").exists()  # nothing trained


def test_streamed_data_needs_max_steps_in_every_phase_before_training():
    """A streamed dataset has no length: transformers raised for a phase without max_steps once it was built, after
    the earlier phases had trained."""
    config = load("phases.1.max_steps=-1")
    config["data"]["streaming"] = True  # (the needle task does not stream; phase_arguments reads only the flag)
    with pytest.raises(ConfigError, match=r"phases\.1: a streamed dataset has no length.*max_steps > 0 \(got -1\)"):
        recipe_module.phase_arguments(config, 32, 32)


def test_phase_value_rejected_by_the_arguments_fails_before_training(tmp_path):
    config = load("phases.1.mode=dmx", f"output_dir={tmp_path}", "data.num_train=8", "data.num_eval=8")
    with pytest.raises(ConfigError, match=r"phases\.1: `mode` must be one of"):
        recipe.main(config)
    assert not (tmp_path / "final").exists()  # phase 0 did not run either


@pytest.mark.parametrize("override, message", [
    ("phases.1.report_to=wandbb", r"phases\.1: report_to=\['wandbb'\]: wandbb is not supported"),
    ("phases.1.label_smoothing_factor=0.1", r"phases\.1: `label_smoothing_factor` is not supported by SMTTrainer"),
    ("phases.0.gradient_accumulation_steps=2", r"phases\.0: gradient_accumulation_steps=2 is not supported in mode"),
    ("phases.1.dmt_start=teacher", r"phases\.1: mode='dmt' needs sequences of >= 64 tokens.*the data has 32"),
])
def test_a_later_phase_flag_the_trainer_cannot_honour_fails_before_training(tmp_path, override, message):
    """These failed only when their phase's trainer was built (an unknown logger) or at its first step, after the
    earlier phases had trained, or silently trained differently (gradient accumulation in joint)."""
    config = load(override, f"output_dir={tmp_path}", "data.num_train=8", "data.num_eval=8")
    with pytest.raises(ConfigError, match=message):
        recipe.main(config)
    assert not (tmp_path / "final").exists()


def test_library_context_error_names_the_fix():
    import torch  # noqa: F401

    from smt_hf import SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherConfig, SMTTeacherModel
    from smt_hf.trainer import SMTTrainer
    from smt_hf.training_args import SMTTrainingArguments

    teacher = SMTTeacherModel(SMTTeacherConfig(vocab_size=8, hidden_size=16, memory_tokens=1, num_encoder_layers=1,
                                               num_decoder_layers=1, num_attention_heads=2, max_context_length=32))
    student = SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(teacher.config, backbone="gru"))
    args = SMTTrainingArguments(output_dir="unused", use_cpu=True, report_to="none")  # context_length default 256
    with pytest.raises(ValueError, match=r"pass SMTTrainingArguments\(context_length=32\) or less.*SMTTeacherConfig\(max_context_length=256\)"):
        SMTTrainer(model=student, teacher=teacher, args=args)


# ----------------------------------------------------------------------------- samples
def test_text_sample_shows_prompt_and_generation_apart(capsys):
    summary = {"phases": [], "sample": {"prompt": [72, 105], "continuation": [32, 32], "reference": [33, 10],
                                        "prompt_text": "Hi", "continuation_text": "  ", "reference_text": "!\n"}}
    recipe.print_table(summary)
    assert "prompt: 'Hi' | generated: '  ' | reference: '!\\n'" in capsys.readouterr().out


def test_token_sample_prints_the_whole_prompt(capsys):
    prompt = list(range(31))  # the needle main job: key, value, distractors, query (T=32)
    recipe.print_table({"phases": [], "sample": {"prompt": prompt, "continuation": [4], "reference": [5]}})
    assert f"prompt: {prompt} | generated: [4] | reference: [5]" in capsys.readouterr().out
    long = recipe.format_sample({"prompt": list(range(200)), "continuation": [1], "reference": [2]})
    assert long.startswith(f"prompt: {list(range(32))} ... (136 more) ... {list(range(168, 200))} | generated: [1]")


# ----------------------------------------------------------------------------- --help and outputs
@pytest.mark.parametrize("script", ["smt.py", "bench.py", "needle_e2e.py", "data_samples.py",
                                    "teacher_curves.py"])
def test_help_answers_before_torch_is_imported(script):
    code = ("import runpy, sys\nsys.argv = [sys.argv[1], '--help']\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit:\n    pass\nprint('HEAVY', sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, os.path.join(RECIPES, script)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
    assert "usage:" in out.stdout and out.stdout.rstrip().endswith("HEAVY []"), out.stdout[-500:] + out.stderr[-2000:]


@pytest.mark.parametrize("script,argv,message", [
    ("needle_e2e.py", ["--threads", "0"], "argument --threads: 0 is not a positive integer"),
    ("needle_e2e.py", ["--seq-len", "0"], "argument --seq-len: 0 is not a positive integer"),
    ("needle_e2e.py", ["--dmt-matched-steps", "-1"], "argument --dmt-matched-steps: -1 is negative"),
    ("needle_e2e.py", ["--continue-dmt", "--dmt-from-init"], "are separate runs: give one of them"),
    ("needle_e2e.py", ["--retrain-teacher"], "--retrain-teacher re-trains the teacher of the --dmt-from-init control"),
    ("teacher_curves.py", ["--threads", "0"], "argument --threads: 0 is not a positive integer"),
    ("teacher_curves.py", ["--budget-seconds", "nan"], "argument --budget-seconds: nan is not a positive number"),
    ("dmt_ablation.py", ["--threads", "0"], "argument --threads: 0 is not a positive integer"),
    ("text_e2e.py", ["--smt-steps", "0"], "argument --smt-steps: 0 is not a positive integer"),
    ("decode_cpu.py", ["--repeats", "0"], "argument --repeats: 0 is not a positive integer"),
    ("bench.py", ["--threads", "0"], "argument --threads: 0 is not a positive integer"),
    ("compile_nan_probe.py", ["--steps", "0"], "argument --steps: 0 is not a positive integer"),
    ("assoc_recall_probe.py", ["--seconds", "0"], "argument --seconds: 0 is not a positive number"),
    ("log_curves.py", ["--logging-steps", "0"], "argument --logging-steps: 0 is not a positive integer"),
    ("data_samples.py", ["--n", "x"], "argument --n: 'x' is not an integer"),
])
def test_cli_refuses_impossible_counts_with_a_usage_error(script, argv, message, monkeypatch, capsys):
    """A count, step number or budget of 0 (or a flag combination that cannot run) is an argparse usage error (exit
    2, before any work): it was a traceback later (torch.set_num_threads(0), conflicting needle_e2e flags) or, for
    --repeats 0 / --threads 0 in some recipes, a run that started anyway."""
    import runpy

    monkeypatch.setattr(sys, "argv", [script, *argv])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(os.path.join(RECIPES, script), run_name="__main__")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "usage:" in err and message in err, err[-1500:]


def test_recipes_write_under_outputs_by_default():
    import data_samples
    import needle_e2e

    assert needle_e2e.build_parser().parse_args([]).out == "outputs/needle_e2e"
    assert data_samples.build_parser().parse_args([]).out == "outputs/data_samples.png"


def test_preset_overrides_change_one_value_and_name_unknown_keys(tmp_path):
    """smt_hf.recipe_config.load_preset, the loader of every recipe preset: `_` keys are YAML anchors (dropped, and
    an override changes one user of an anchor only), VALUE is YAML, and an unknown key lists the valid ones."""
    from smt_hf.recipe_config import load_preset

    path = tmp_path / "p.yaml"
    path.write_text("_base: &base {steps: 800, lr: 1.0e-3}\nsynthetic: {<<: *base, variants: [full_rollout]}\n"
                    "backbones: *base\n")
    P = load_preset(str(path), ["synthetic.steps=200", "synthetic.variants=[one_step]"])
    assert P == {"synthetic": {"steps": 200, "lr": 1e-3, "variants": ["one_step"]}, "backbones": {"steps": 800, "lr": 1e-3}}
    with pytest.raises(ConfigError, match=r"synthetic has no key 'step'; valid: \['lr', 'steps', 'variants'\]"):
        load_preset(str(path), ["synthetic.step=200"])


def test_bench_writes_under_outputs_by_default(tmp_path, monkeypatch):
    import bench

    monkeypatch.chdir(tmp_path)
    bench.main(["--preset", "cpu", "--dry-run", "--sections", "dmt", "--no-plot"])
    assert (tmp_path / "outputs" / "bench" / "bench_cpu_dry.json").is_file()
    assert not (tmp_path / "recipes").exists()


# ----------------------------------------------------------------------------- offline-first data
def test_cpu_text_config_names_its_offline_source_and_skips_the_hub(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    config = recipe.load_config(os.path.join(RECIPES, "configs", "text_cpu.yaml"))
    assert config["data"]["source"] == "shakespeare"
    line = recipe.announce_source(config["data"])
    assert line == "[smt] data source: text from 'shakespeare' (offline; the hub is not contacted)"
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert "else the offline default" in recipe.announce_source({"task": "text", "source": "auto"})


def test_tinystories_slice_is_streamed(monkeypatch):
    import datasets

    from smt_hf.data import load_text

    calls = []

    class Stream:
        def take(self, n):
            return [{"text": f"story {i}"} for i in range(n)]

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: calls.append((a, kw)) or Stream())
    got = load_text("tinystories", split="train", max_documents=3)
    assert calls == [(("roneneldan/TinyStories",), {"split": "train", "streaming": True})]
    assert bytes(got.tokens) == b"story 0\n\nstory 1\n\nstory 2" and got.documents == ["3 stories"]


@pytest.mark.parametrize("path", sorted(__import__("glob").glob(os.path.join(RECIPES, "configs", "*.yaml"))),
                         ids=os.path.basename)
def test_every_shipped_config_builds_all_its_phase_arguments(path):
    """Each shipped YAML passes validation and every phase builds its SMTTrainingArguments (a renamed value such
    as dmt_gradient='detach' in a GPU config fails here, not hours into a run)."""
    config = recipe.load_config(path)
    for phase in config["phases"]:
        phase.pop("bf16", None), phase.pop("fp16", None)
    config.setdefault("common", {}).update(use_cpu=True, bf16=False, fp16=False)
    seq_len = config["data"].get("seq_len", 64)
    args = recipe.phase_arguments(config, seq_len, 10**6)
    assert len(args) == len(config["phases"])
    for a in args:
        if a.mode == "dmt":
            assert a.dmt_gradient == "one_step"  # shipped recipes run the no-BPTT DMT


def test_printed_table_names_the_dmt_gradient_setting(capsys):
    ev = {"teacher_acc": 1.0, "onestep_acc": 1.0, "student_acc": 1.0, "student_loss": 0.0, "drift_mean": 0.0}
    recipe.print_table({"phases": [{"mode": "joint", "dmt_gradient": None, "steps": 1, "seconds": 1, "eval": ev},
                                   {"mode": "dmt", "dmt_gradient": "one_step", "steps": 1, "seconds": 1, "eval": ev}]})
    out = capsys.readouterr().out
    assert "| dmt | one_step (no BPTT) |" in out and "| joint | - |" in out
