"""export_for_hub: a folder that loads with trust_remote_code in a Python where smt_hf cannot be imported."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tiny ops: one thread is ~100x faster than two on a loaded 2-core box
from conftest import BACKBONES, tiny_student_config, tiny_teacher_config  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from smt_hf import SMTByteTokenizer, SMTRecurrentForCausalLM, SMTTeacherModel  # noqa: E402
from smt_hf.export import collect_code, export_for_hub, flat_module_name, main  # noqa: E402

PROMPT = "hi SMT"
NEW_TOKENS = 12

# Runs in a fresh interpreter, cwd = tmp_path, no PYTHONPATH. The editable-install finder is removed and a
# blocker refuses any later `smt_hf` import, so only the exported files can provide the classes.
REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, importlib.util, json, sys

    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in str(getattr(f, "__module__", ""))]
    sys.path[:] = [p for p in sys.path if "__editable__" not in p]
    sys.path_importer_cache.clear()
    assert importlib.util.find_spec("smt_hf") is None, "smt_hf is still importable"

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "smt_hf" or name.startswith("smt_hf."):
                raise ImportError("smt_hf is blocked in this test")

    sys.meta_path.insert(0, Blocker())

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    inputs = load_file("inputs.safetensors")
    results, info = {}, {}
    for name in json.load(open("exports.json")):
        folder = "exports/" + name
        if name == "teacher":
            model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
            out = model(inputs["teacher_ids"], inputs["teacher_mask"], inputs["teacher_future"])
            results[name + ".memory"], results[name + ".logits"] = out.memory, out.logits
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
            tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
            ids = tok("%(prompt)s", return_tensors="pt").input_ids
            results[name + ".logits"] = model(inputs["student_ids"]).logits
            gen = model.generate(ids, max_new_tokens=%(new)d, do_sample=False)
            results[name + ".generated"] = gen
            info[name + ".text"] = tok.decode(gen[0])
            info[name + ".tokenizer"] = type(tok).__module__
            info[name + ".auto_config"] = type(AutoConfig.from_pretrained(folder, trust_remote_code=True)).__module__
        info[name + ".module"] = type(model).__module__
    save_file({k: v.contiguous() for k, v in results.items()}, "results.safetensors")
    info["smt_hf_imported"] = sorted(m for m in sys.modules if m == "smt_hf" or m.startswith("smt_hf."))
    json.dump(info, open("info.json", "w"))
    """
) % {"prompt": PROMPT, "new": NEW_TOKENS}


def _student(backbone):
    torch.manual_seed(0)
    return SMTRecurrentForCausalLM(tiny_student_config(backbone, vocab_size=256, initializer_range=0.2)).eval()


def _teacher():
    torch.manual_seed(0)
    return SMTTeacherModel(tiny_teacher_config()).eval()


@pytest.fixture(scope="module")
def remote_run(tmp_path_factory):
    """Export the three students and the teacher, run REMOTE_SCRIPT once, return (models, inputs, results, info)."""
    root = tmp_path_factory.mktemp("remote")
    models = {f"student-{b}": _student(b) for b in BACKBONES}
    models["teacher"] = _teacher()
    models["student-prefill"] = _student("gru")  # carries the teacher's encoder, parallel prefill by default
    torch.manual_seed(2)
    models["student-prefill"].add_prefill_encoder(SMTTeacherModel(tiny_teacher_config(vocab_size=256)), context_length=4)
    models["student-prefill"].config.prefill = "parallel"
    for name, model in models.items():
        export_for_hub(model, root / "exports" / name, tokenizer=None if name == "teacher" else SMTByteTokenizer())
    g = torch.Generator().manual_seed(1)
    inputs = {
        "student_ids": torch.randint(0, 256, (2, 9), generator=g),
        "teacher_ids": torch.randint(0, 16, (2, 7), generator=g),
        "teacher_mask": torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7]),
        "teacher_future": torch.randint(0, 16, (2, 4), generator=g),
    }
    save_file(inputs, root / "inputs.safetensors")
    (root / "exports.json").write_text(json.dumps(sorted(models)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(root / "modules"), TRANSFORMERS_VERBOSITY="error", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((root / "info.json").read_text())
    return models, inputs, load_file(root / "results.safetensors"), info


@pytest.mark.parametrize("backbone", BACKBONES)
def test_remote_code_student_matches_package_exactly(remote_run, backbone):
    models, inputs, results, info = remote_run
    name = f"student-{backbone}"
    model, tok = models[name], SMTByteTokenizer()
    assert info["smt_hf_imported"] == []
    assert info[name + ".module"].startswith("transformers_modules.")
    assert info[name + ".module"].endswith(".modeling_recurrent")
    assert info[name + ".tokenizer"].endswith(".tokenization_smt")
    assert info[name + ".auto_config"].endswith(".configuration_smt")
    with torch.no_grad():
        assert torch.equal(results[name + ".logits"], model(inputs["student_ids"]).logits)
        ids = tok(PROMPT, return_tensors="pt").input_ids
        expected = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert torch.equal(results[name + ".generated"], expected)
    assert info[name + ".text"] == tok.decode(expected[0])


def test_remote_code_student_with_prefill_encoder_prefills_in_parallel(remote_run):
    """The exported code carries modeling_prefill: a remote-code student with a prefill encoder generates exactly
    what the package does with prefill="parallel" (state = E(last 4 prompt tokens))."""
    models, inputs, results, info = remote_run
    model, tok = models["student-prefill"], SMTByteTokenizer()
    assert info["smt_hf_imported"] == [] and info["student-prefill.module"].endswith(".modeling_recurrent")
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(results["student-prefill.logits"], model(inputs["student_ids"]).logits)
        parallel = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
        window = model.generate(ids[:, -4:], max_new_tokens=NEW_TOKENS, do_sample=False)
    assert torch.equal(results["student-prefill.generated"], parallel)
    assert torch.equal(parallel[:, ids.shape[1]:], window[:, 4:])  # only the last 4 prompt tokens shape the state


def test_remote_code_teacher_loads_with_automodel(remote_run):
    models, inputs, results, info = remote_run
    assert info["teacher.module"].startswith("transformers_modules.") and info["teacher.module"].endswith(".modeling_teacher")
    with torch.no_grad():
        out = models["teacher"](inputs["teacher_ids"], inputs["teacher_mask"], inputs["teacher_future"])
    assert torch.equal(results["teacher.memory"], out.memory)
    assert torch.equal(results["teacher.logits"], out.logits)


def test_student_folder_layout(tmp_path):
    export_for_hub(_student("gru"), tmp_path, tokenizer=SMTByteTokenizer())
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json", "README.md"} <= names
    assert {"configuration_smt.py", "modeling_recurrent.py", "modeling_utils.py", "modeling_encoder.py",
            "modeling_layers.py", "cache.py", "backbones.py", "backbones_gru.py", "backbones_mlp.py",
            "backbones_transformer.py", "tokenization_smt.py"} <= names
    assert "modeling_teacher.py" not in names  # the student's code does not import the teacher's
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_smt.SMTRecurrentConfig",
        "AutoModel": "modeling_recurrent.SMTRecurrentForCausalLM",
        "AutoModelForCausalLM": "modeling_recurrent.SMTRecurrentForCausalLM",
    }
    tok_cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert tok_cfg["auto_map"] == {"AutoTokenizer": ["tokenization_smt.SMTByteTokenizer", None]}
    for py in tmp_path.glob("*.py"):
        text = py.read_text()
        assert "from .." not in text and "smt_hf." not in text.split("\n", 1)[1], py.name
        assert ".register(" not in text, py.name
    assert "from .backbones_gru import GRUUpdater" in (tmp_path / "backbones.py").read_text()


def test_teacher_folder_layout_and_no_tokenizer_for_small_vocab(tmp_path):
    export_for_hub(_teacher(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_smt.SMTTeacherConfig", "AutoModel": "modeling_teacher.SMTTeacherModel"}
    names = {p.name for p in tmp_path.iterdir()}
    assert "tokenizer_config.json" not in names and "generation_config.json" not in names  # V=16, not generative
    assert "modeling_recurrent.py" not in names and "backbones.py" not in names  # only what the teacher imports


def test_re_export_removes_stale_files_only(tmp_path):
    export_for_hub(_student("gru"), tmp_path, tokenizer=SMTByteTokenizer())
    (tmp_path / "my_script.py").write_text("print('mine')\n")
    export_for_hub(_teacher(), tmp_path)  # no tokenizer, no generation config, fewer code files
    names = {p.name for p in tmp_path.iterdir()}
    assert {"tokenizer_config.json", "tokenization_smt.py", "generation_config.json", "backbones_gru.py"}.isdisjoint(names)
    assert "my_script.py" in names and "modeling_teacher.py" in names


def test_generation_config_is_written(tmp_path):
    from transformers import GenerationConfig

    export_for_hub(_student("mlp"), tmp_path, generation_config=GenerationConfig(max_new_tokens=7, do_sample=True, top_k=3))
    saved = GenerationConfig.from_pretrained(tmp_path)
    assert (saved.max_new_tokens, saved.do_sample, saved.top_k) == (7, True, 3)


def test_flat_names_and_import_closure():
    assert flat_module_name("smt_hf.backbones.gru") == "backbones_gru"
    assert flat_module_name("smt_hf.backbones") == "backbones"
    files = collect_code(["smt_hf.modeling_teacher"])
    assert set(files) == {"modeling_teacher.py", "configuration_smt.py", "modeling_encoder.py", "modeling_layers.py",
                          "modeling_utils.py"}
    with pytest.raises(ValueError, match="not a module of the smt_hf"):
        flat_module_name("torch.nn")


def test_bad_inputs_raise_with_fix(tmp_path):
    from peft import get_peft_model

    from smt_hf.peft_utils import lora_config_for

    student = _student("gru")
    with pytest.raises(ValueError, match="merge_and_unload"):
        export_for_hub(get_peft_model(student, lora_config_for(student)), tmp_path)
    with pytest.raises(ValueError, match="PEFT adapter layers in it"):  # get_peft_model injected them in place
        export_for_hub(student.model, tmp_path)
    with pytest.raises(ValueError, match="SMTRecurrentForCausalLM"):
        export_for_hub(_student("gru").model, tmp_path)
    with pytest.raises(ValueError, match="repo_id"):
        export_for_hub(_teacher(), tmp_path, push_to_hub=True)


def test_cli_exports_saved_student(tmp_path, capsys):
    student = _student("transformer")
    student.save_pretrained(tmp_path / "saved")
    SMTByteTokenizer().save_pretrained(tmp_path / "saved")
    assert main(["--model", str(tmp_path / "saved"), "--out", str(tmp_path / "out")]) == 0
    assert "exported student" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "config.json").read_text())["auto_map"]["AutoModelForCausalLM"]
    assert (tmp_path / "out" / "tokenization_smt.py").is_file()
    assert load_file(tmp_path / "out" / "model.safetensors").keys() == student.state_dict().keys()


def test_cli_exports_from_a_trainer_output_folder(tmp_path, capsys):
    """`smt-export --model <trainer output>/final`: SMTTrainer.save_model writes student/ and teacher/ there."""
    student, teacher = _student("transformer"), _teacher()
    student.save_pretrained(tmp_path / "final" / "student")
    SMTByteTokenizer().save_pretrained(tmp_path / "final" / "student")
    teacher.save_pretrained(tmp_path / "final" / "teacher")
    assert main(["--model", str(tmp_path / "final"), "--out", str(tmp_path / "s")]) == 0
    assert "exported student" in capsys.readouterr().out
    assert load_file(tmp_path / "s" / "model.safetensors").keys() == student.state_dict().keys()
    assert (tmp_path / "s" / "tokenization_smt.py").is_file()
    assert main(["--model", str(tmp_path / "final"), "--part", "teacher", "--out", str(tmp_path / "t")]) == 0
    assert load_file(tmp_path / "t" / "model.safetensors").keys() == teacher.state_dict().keys()
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err  # tmp_path holds the two exports (s/, t/) and final/ (no config.json)
    assert "or an SMTTrainer output folder" in err and f"folders here that would work: {tmp_path / 's'}, {tmp_path / 't'}" in err
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert "no such folder" in capsys.readouterr().err


def test_cli_refuses_a_part_or_flags_that_do_not_fit(tmp_path, capsys):
    """--part naming the other model of a save_pretrained folder was ignored (the folder's model was exported, rc 0);
    --push without --repo-id, --private without --push, --out naming a file, and a --run-info that is missing, not a
    JSON object or of another format (no key the card reads: an empty card) were tracebacks or silent: usage errors
    now, before anything is written."""
    student, teacher = _student("transformer"), _teacher()
    student.save_pretrained(tmp_path / "final" / "student")
    teacher.save_pretrained(tmp_path / "final" / "teacher")
    (tmp_path / "file").write_text("x")
    (tmp_path / "list.json").write_text("[1]")
    (tmp_path / "e2e.json").write_text('{"task": "needle", "rows": []}')  # another format: its card was empty
    (tmp_path / "summary.json").write_text('{"config": {}, "phases": []}')  # recipes/smt.py's (config: the model's)
    (tmp_path / "text.json").write_text('{"rows": []}')  # recipes/text_e2e.py's: no --e2e hint (its card fails)
    cases = [(["--model", str(tmp_path / "final" / "student"), "--part", "teacher"],
              "holds the student, not the teacher"),
             (["--model", str(tmp_path / "final" / "teacher")], None),  # no --part: the folder's own model
             (["--push"], "--push needs --repo-id"), (["--private"], "--private sets the visibility"),
             (["--run-info", str(tmp_path / "missing.json")], "No such file"),
             (["--run-info", str(tmp_path / "list.json")], "a JSON object is expected"),
             (["--run-info", str(tmp_path / "e2e.json")], "none of the run-summary keys the model card reads"),
             (["--run-info", str(tmp_path / "e2e.json")], "generate_card.py JSON --e2e"),
             (["--run-info", str(tmp_path / "summary.json")], "--summary SUMMARY --run-info-out"),
             (["--run-info", str(tmp_path / "text.json")], "reads for a model (dataset, description, eval,")]
    for extra, message in cases:
        argv = ["--model", str(tmp_path / "final"), "--out", str(tmp_path / "x")] + extra
        if message is None:
            assert main(argv) == 0 and "exported teacher" in capsys.readouterr().out
            continue
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err, extra
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "final"), "--out", str(tmp_path / "text"), "--run-info", str(tmp_path / "text.json")])
    assert "--e2e" not in capsys.readouterr().err  # text_e2e JSONs have rows but no task: generate_card --e2e fails on them
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "final"), "--out", str(tmp_path / "file")])
    assert "exists and is not a folder" in capsys.readouterr().err
    # exported into the trainer folder itself (it now has a config.json): --part teacher still takes teacher/
    assert main(["--model", str(tmp_path / "final"), "--out", str(tmp_path / "final")]) == 0
    assert main(["--model", str(tmp_path / "final"), "--part", "teacher", "--out", str(tmp_path / "t")]) == 0
    assert "exported teacher" in capsys.readouterr().out.splitlines()[-1]


@pytest.mark.parametrize(
    "source, match",
    [
        ("from transformers import AutoConfig\nAutoConfig.register('x', object)\n", "must not register Auto classes"),
        ("from . import other\n", "cannot be flattened"),
        ("import smt_hf.cache\n", "cannot be flattened"),
        ("from .. import cache\n", "cannot be flattened"),
    ],
    ids=["auto-register", "from-dot-import", "absolute-import", "from-dotdot-import"],
)
def test_unflattenable_code_raises(tmp_path, monkeypatch, source, match):
    import smt_hf.export as export

    pkg = tmp_path / "smt_hf"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "sub" / "mod.py").write_text(source)
    monkeypatch.setattr(export, "PACKAGE_DIR", pkg)
    with pytest.raises(ValueError, match=match):
        export.flatten_source("smt_hf.sub.mod")


def test_flatten_rewrites_relative_and_absolute_package_imports(tmp_path, monkeypatch):
    import smt_hf.export as export

    pkg = tmp_path / "smt_hf"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "sub" / "mod.py").write_text("from ..cache import A\nfrom .sib import B\nfrom smt_hf.sub.deep import C\n")
    monkeypatch.setattr(export, "PACKAGE_DIR", pkg)
    text, deps = export.flatten_source("smt_hf.sub.mod")
    assert text.splitlines()[1:] == ["from .cache import A", "from .sub_sib import B", "from .sub_deep import C"]
    assert deps == ["smt_hf.cache", "smt_hf.sub.sib", "smt_hf.sub.deep"]
