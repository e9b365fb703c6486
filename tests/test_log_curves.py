"""recipes/log_curves.py: a single-phase needle_e2e log read back into a learning curve (steps, values, final
evaluation), and the logs it must refuse."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "recipes"))

import log_curves  # noqa: E402

EVAL0 = "{'eval_student_loss': '4.071', 'eval_student_acc': '0.001519', 'epoch': 0}"


def log(tmp_path, lines, name="run.log"):
    path = tmp_path / name
    path.write_text("\n".join(["Loading weights:", EVAL0, "[dmt-from-init] the saved teacher's teacher_acc: 0.99",
                               *lines]) + "\n")
    return str(path)


def train_line(k, loss, readout):  # the k-th logged line: epoch k * 0.016 (100 steps of 6250 per epoch)
    return (f"{{'loss': '{loss}', 'grad_norm': '20.1', 'learning_rate': '0.0003', 'readout_loss': '{readout}', "
            f"'epoch': '{round(k * 0.016, 4)}'}}")


DONE = ["{'train_runtime': '2613', 'train_loss': '6.096', 'epoch': '0.048'}",
        "{'eval_student_loss': '2.36', 'eval_student_acc': '0.2415', 'eval_drift_mean': '0.7035', 'epoch': '0.048'}"]


def test_read_log_gives_steps_values_and_the_final_evaluation(tmp_path):
    path = log(tmp_path, [train_line(1, 18.45, 3.393), train_line(2, 11.42, 2.829), train_line(3, 4.823, 2.359), *DONE])
    got = log_curves.read_log(path, logging_steps=100)
    assert got["steps"] == [100, 200, 300]
    assert got["loss"] == [18.45, 11.42, 4.823] and got["readout_loss"] == [3.393, 2.829, 2.359]
    assert "epoch" not in got and "learning_rate" not in got and "grad_norm" not in got
    assert got["final_eval"] == {"student_loss": 2.36, "student_acc": 0.2415, "drift_mean": 0.7035}  # not the epoch-0 one


def test_read_log_refuses_two_phases_missing_lines_and_no_training(tmp_path):
    two = log(tmp_path, [train_line(1, 9, 3), *DONE, train_line(1, 8, 2), *DONE], "two.log")
    with pytest.raises(ValueError, match="more than one training phase"):
        log_curves.read_log(two)
    gap = log(tmp_path, [train_line(1, 9, 3), train_line(2, 8, 3), train_line(4, 7, 3), *DONE], "gap.log")
    with pytest.raises(ValueError, match="lines missing"):  # the 3rd line is at epoch 0.064, not 0.048
        log_curves.read_log(gap)
    long = [train_line(k, 9, 3) for k in range(1, 61) if k != 55]  # a line missing late in a long run
    with pytest.raises(ValueError, match="logged lines 54 and 55 are 0.032 epochs apart, not 0.016: lines missing"):
        log_curves.read_log(log(tmp_path, [*long, *DONE], "late_gap.log"))
    cut = log_curves.read_log(log(tmp_path, [train_line(1, 9, 3), train_line(2, 8, 3)], "cut.log"))  # no train_runtime
    assert cut["steps"] == [100, 200] and cut["final_eval"] is None
    with pytest.raises(ValueError, match="no training log line"):
        log_curves.read_log(log(tmp_path, DONE, "none.log"))


def test_last_phase_reads_the_dmt_phase_of_a_run_that_retrained_its_teacher_first(tmp_path):
    smt = [f"{{'loss': '{x}', 'decoder_loss': '1.0', 'epoch': '{k * 0.032}'}}" for k, x in ((1, 6.4), (2, 4.5))]
    path = log(tmp_path, [*smt, "{'train_runtime': '2400', 'train_loss': '5.4', 'epoch': '0.064'}",
                          "{'eval_student_acc': '0.0019', 'eval_teacher_acc': '0.9996', 'epoch': '0.064'}",
                          "[dmt-from-init] joint SMT reproduced its row", EVAL0,
                          train_line(1, 18.45, 3.393), train_line(2, 11.42, 2.829), *DONE], "retrain.log")
    with pytest.raises(ValueError, match="more than one training phase"):
        log_curves.read_log(path)
    got = log_curves.read_log(path, last_phase=True)
    assert got["steps"] == [100, 200] and got["loss"] == [18.45, 11.42] and got["readout_loss"] == [3.393, 2.829]
    assert "decoder_loss" not in got  # the SMT phase's keys are not read
    assert got["final_eval"] == {"student_loss": 2.36, "student_acc": 0.2415, "drift_mean": 0.7035}
    single = log(tmp_path, [train_line(1, 9, 3), train_line(2, 8, 3), *DONE], "single.log")
    assert log_curves.read_log(single, last_phase=True) == log_curves.read_log(single)
    short = log(tmp_path, [train_line(1, 9, 3), *DONE, *DONE], "short_last.log")  # a last phase too short to log
    with pytest.raises(ValueError, match="2 training phases"):
        log_curves.read_log(short, last_phase=True)
    lines = open(path).read().splitlines()
    cut_mid = tmp_path / "cut_mid.log"  # cut off after the DMT phase's first two logged lines: its curve, no evaluation
    cut_mid.write_text("\n".join(lines[:-len(DONE)]) + "\n")
    mid = log_curves.read_log(str(cut_mid), last_phase=True)
    assert mid["steps"] == [100, 200] and mid["final_eval"] is None  # not the SMT phase's evaluation
    cut_early = tmp_path / "cut_early.log"  # cut off before the DMT phase logged a line: refused, not the SMT curve
    cut_early.write_text("\n".join(lines[:lines.index(EVAL0, 3) + 1]) + "\n")
    for last in (True, False):
        with pytest.raises(ValueError, match="a later phase starts"):
            log_curves.read_log(str(cut_early), last_phase=last)


def test_main_writes_the_table_json_and_refuses_a_key_not_logged(tmp_path):
    pytest.importorskip("matplotlib")
    a = log(tmp_path, [train_line(1, 9.0, 3.0), train_line(2, 8.0, 2.5), *DONE], "a.log")
    b = log(tmp_path, [train_line(1, 9.5, 3.1), *DONE[:1]], "b.log")  # no final evaluation
    out = str(tmp_path / "curves")
    log_curves.main(["--run", f"seed 0={a}", "--run", f"seed 1={b}", "--keys", "loss", "readout_loss",
                     "--title", "t", "--out", out])
    res = json.load(open(out + ".json"))
    assert res["runs"]["seed 0"]["steps"] == [100, 200] and res["runs"]["seed 1"]["final_eval"] is None
    assert res["command"] == f"python recipes/log_curves.py --run 'seed 0={a}' --run 'seed 1={b}' --keys loss readout_loss --title t --out {out}"
    md = open(out + ".md").read()
    assert "| seed 0 | 200 | 8.000 | 2.500 | 0.241 | `a.log` |" in md and "| seed 1 | 100 | 9.500 | 3.100 | - |" in md
    assert os.path.getsize(out + ".png") > 0
    with pytest.raises(SystemExit):
        log_curves.main(["--run", f"seed 0={a}", "--keys", "dmt_dynamics_loss", "--out", out])
