"""recipes/text_e2e.py (issue 13, text): the diagnosis and the SMT/DMT/BPTT comparison on the committed text excerpt,
a few steps each; the reported numbers are re-derived here from the saved models and the data."""

import json
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))
import text_e2e as te  # noqa: E402


def test_text_recipe_numbers_are_the_models_numbers(tmp_path, monkeypatch):
    from smt_hf.analysis import bigram_bits, continuation_bits
    from smt_hf.data import load_text
    from smt_hf.recipe import build_data

    monkeypatch.chdir(tmp_path)  # the recipe's models go to ./outputs
    monkeypatch.setattr(te, "BPTT", {k: v for k, v in te.BPTT.items() if k != "recurrent_step_compile"})  # no compile
    out = tmp_path / "res"
    te.cli(["--diagnose", "joint_dyn1", "--steps", "2", "--compare", "smt", "--smt-steps", "2", "--dmt-steps", "1",
            "--source", "fixture", "--eval-windows", "4", "--train-windows", "64", "--out", str(out)])
    diag = json.load(open(out / "text_diagnosis.json"))["runs"]["joint_dyn1"]
    cfg = te.config(te.SETTINGS["joint_dyn1"], 2, 0, "unused", source="fixture", eval_windows=4)
    x = torch.tensor(build_data(cfg["data"])[1]["input_ids"])  # (4, 128)
    teacher, student = te.load_final(os.path.join(te.work_dir(str(out), "text_diagnosis", "joint_dyn1"), "final"))
    assert te.work_dir("a/x", "d") != te.work_dir("b/x", "d")  # two --out folders never share checkpoints
    teacher.eval(), student.eval()
    # teacher first-step bits: its memory of x[t-64:t] alone predicts x[t], t = 64, 68, ..., 124
    nll, n = 0.0, 0
    with torch.no_grad():
        for t in range(64, 128, te.PROBE_STRIDE):
            ctx = x[:, t - 64:t]
            logits = teacher.readout(teacher.encode(ctx, torch.ones_like(ctx)))
            nll += float(torch.nn.functional.cross_entropy(logits, x[:, t], reduction="sum"))
            n += x.shape[0]
    assert diag["teacher_first_bits"] == pytest.approx(nll / n / math.log(2), rel=1e-5)
    pairs = torch.cat([x[:, t - 1:t + 1] for t in range(64, 128, te.PROBE_STRIDE)]).numpy()
    assert diag["bigram_bits"] == pytest.approx(bigram_bits(load_text("fixture", "train").tokens, pairs))
    assert diag["student_prefill_bits"] == pytest.approx(continuation_bits(student, x, 64, teacher), rel=1e-6)
    assert diag["student_own_bits"] == pytest.approx(continuation_bits(student, x, 64), rel=1e-6)
    assert 0.0 <= diag["memory_spread"] <= 1.0
    md = (out / "text_diagnosis.md").read_text()
    assert f"| joint_dyn1 | {diag['teacher_first_bits']:.3f} |" in md
    # the comparison: SMT, SMT -> one-step DMT (steps of each phase), BPTT without any teacher column
    cmp = json.load(open(out / "text_e2e_s0.json"))
    rows = cmp["rows"]
    assert list(rows) == ["SMT", "SMT -> DMT one_step", "BPTT (same wall-clock)"]
    assert cmp["seed"] == 0 and json.load(open(out / "text_diagnosis.json"))["seed"] == 0
    assert rows["SMT"]["steps"] == [2] and rows["SMT -> DMT one_step"]["steps"] == [2, 1]
    assert rows["SMT -> DMT one_step"]["seconds"] >= rows["SMT"]["seconds"]  # cumulative wall-clock of the method
    assert not {"student_prefill_bits", "teacher_first_bits", "memory_spread"} & set(rows["BPTT (same wall-clock)"])
    assert rows["SMT"]["teacher_first_bits"] == rows["SMT -> DMT one_step"]["teacher_first_bits"]  # DMT: teacher frozen
    table = (out / "text_e2e.md").read_text()
    assert "| BPTT (same wall-clock) | - (full BPTT) |" in table and "one_step (no BPTT)" in table


def test_text_recipe_refuses_unknown_settings_naming_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        te.cli(["--diagnose", "joint_dyn2"])
    err = capsys.readouterr().err
    assert "unknown setting(s) ['joint_dyn2']" in err and "'joint_dyn0.1_gamma0.9'" in err
    with pytest.raises(SystemExit):
        te.cli([])
    assert "pass --diagnose and/or --compare SETTING" in capsys.readouterr().err


def test_compare_table_keeps_each_seed_and_the_mean_over_seeds(tmp_path):
    """A second seed adds its own JSON (was: overwrote text_e2e.json); the table lists each seed's rows and the
    mean ± half-range per model; runs of another setting in the same folder are refused, not averaged."""
    def dump(seed, own, bptt, setting="smt"):
        rows = {"SMT -> DMT one_step": {"steps": [4, 1], "seconds": 10.0 + 2 * seed, "student_own_bits": own,
                                        "student_prefill_bits": own - 0.5, "teacher_first_bits": 3.0,
                                        "bigram_bits": 3.7, "bigram_bits_tail": 3.6},
                "BPTT (same wall-clock)": {"steps": 7, "seconds": 11.0, "student_own_bits": bptt,
                                           "bigram_bits": 3.7, "bigram_bits_tail": 3.6}}
        json.dump({"setting": setting, "seed": seed, "data": "d", "machine": "m", "phases": [{"mode": "joint"}],
                   "rows": rows, "eval_windows": 4, "context_length": 64, "seq_len": 128},
                  open(tmp_path / f"text_e2e_s{seed}.json", "w"))

    dump(10, 3.3, 2.5)
    dump(1, 3.2, 2.6)
    dump(0, 3.4, 2.4)
    runs = te.write_compare(str(tmp_path))
    assert [r["seed"] for r in runs] == [0, 1, 10]  # by seed, not by file name
    (tmp_path / "text_e2e_s10.json").unlink()
    runs = te.write_compare(str(tmp_path))
    md = (tmp_path / "text_e2e.md").read_text()
    assert "| 0 | SMT -> DMT one_step |" in md and "| 1 | BPTT (same wall-clock) |" in md and "seeds [0, 1]" in md
    line = next(x for x in md.splitlines() if x.startswith("| mean (n=2) | SMT -> DMT one_step"))
    assert line.endswith("| - | 11 | 3.300 ± 0.100 | 2.800 ± 0.100 | 3.000 ± 0.000 |")  # seconds: the mean
    bptt = next(x for x in md.splitlines() if x.startswith("| mean (n=2) | BPTT"))
    assert bptt.endswith("| 2.500 ± 0.100 | - | - |")
    dump(2, 3.0, 2.0, setting="joint_dyn1")
    with pytest.raises(ValueError, match="differ in setting"):
        te.write_compare(str(tmp_path))


def test_compare_refuses_a_folder_of_another_setting_before_training(tmp_path, monkeypatch):
    """--compare into a folder holding another setting's run is refused before any training (was: trained ~20 min,
    then overwrote the same seed's JSON or failed on the table); a rerun of the same setting is allowed."""
    import smt_hf.trainer

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "res"
    out.mkdir()
    prior = {"setting": "joint_dyn1", "seed": 0, "phases": [], "eval_windows": 4, "rows": {}}
    json.dump(prior, open(out / "text_e2e_s0.json", "w"))
    monkeypatch.setattr(smt_hf.trainer, "SMTTrainer", lambda *a, **k: pytest.fail("trained before refusing"))
    for seed, what in ((0, "overwrite"), (1, "share a table with")):
        with pytest.raises(ValueError, match=f"setting 'joint_dyn1'.*would {what} it"):
            te.compare("smt", 2, 1, seed, str(out), source="fixture", eval_windows=4, train_windows=64)
    assert json.load(open(out / "text_e2e_s0.json")) == prior
    run = {"setting": "smt", "seed": 3, "phases": [{"mode": "smt"}], "eval_windows": 4, "source": "fixture",
           "train_windows": 64}
    json.dump(dict(run, seed=0), open(out / "text_e2e_s0.json", "w"))
    te.check_folder(str(out), run)  # same setting, phases and data: no error
    with pytest.raises(ValueError, match="share a table"):
        te.check_folder(str(out), dict(run, train_windows=128))  # other training windows are other data
