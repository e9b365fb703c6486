"""recipes/teacher_curves.py: the calibration loop stops at its target and records the curve it stopped on."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))

DEFAULTS = {"seq_len": 8, "teacher": {"hidden_size": 16, "memory_tokens": 2, "num_encoder_layers": 1,
                                      "num_decoder_layers": 1, "num_attention_heads": 2},
            "student": {"backbone": "mlp"}, "learning_rate": 1e-3, "warmup_steps": 0, "batch_size": 8,
            "max_steps": 12, "eval_steps": 4, "budget_seconds": 600, "target": 0.95, "num_train": 64, "num_eval": 16}


@pytest.mark.parametrize("target, steps, curve_steps", [(0.0, 4, [4]), (1.01, 12, [4, 8, 12])])
def test_run_stops_at_target_or_runs_out(target, steps, curve_steps):
    import teacher_curves

    r = teacher_curves.run_one("needle", {"task": "needle", "task_kwargs": {"vocab_size": 8}, "target": target},
                               DEFAULTS, seed=0)
    assert [c[0] for c in r["curve"]] == curve_steps and r["curve"][-1][0] == steps
    assert (r["reached_at"] is not None) == (target == 0.0)
    assert r["final_teacher_acc"] == r["curve"][-1][2] and 0.0 <= r["final_teacher_acc"] <= 1.0


@pytest.mark.parametrize("start, ramp", [(6, 2), (4, 0)])
def test_a_decoder_loss_curriculum_runs_until_the_loss_is_fully_on(start, ramp):
    """A run at its target keeps going until one step has had the full decoder weight (start 6 + ramp 2: after
    step 8; start 4, no ramp: after step 5, not at the evaluation of step 4 which had it off), and only then counts
    as reached (was: stopped and reached at step 4, before the future loss was ever on); each point records the SMT
    one-step accuracy too."""
    import teacher_curves

    spec = {"task": "needle", "task_kwargs": {"vocab_size": 8}, "target": 0.0,
            "smt_training": {"lambda_dec_start_step": start, "lambda_dec_ramp_steps": ramp}}
    assert teacher_curves.full_loss_step({**DEFAULTS, **spec}) == start + max(ramp, 1)
    assert teacher_curves.full_loss_step(DEFAULTS) == 0
    r = teacher_curves.run_one("needle", spec, DEFAULTS, seed=0)
    assert [c[0] for c in r["curve"]] == [4, 8] and r["reached_at"]["step"] == 8
    assert all(0.0 <= c[3] <= 1.0 for c in r["curve"]) and r["final_onestep_acc"] == r["curve"][-1][3]
    assert f"| {r['final_onestep_acc']:.3f} | 8 |" in teacher_curves.table([r])


def test_write_merges_runs_by_family_length_and_seed(tmp_path):
    import teacher_curves

    def run(family, seed, acc):
        return {"family": family, "seq_len": 8, "seed": seed, "machine": "m", "threads": 1,
                "settings": {**DEFAULTS, "task": "needle"}, "curve": [[4, 1.0, acc]], "final_teacher_acc": acc,
                "reached_at": {"step": 4, "seconds": 1.0} if acc >= 0.95 else None}

    teacher_curves.write(str(tmp_path), [run("a", 0, 0.5), run("b", 0, 0.96)])
    md = teacher_curves.write(str(tmp_path), [run("a", 0, 0.97)])  # replaces a/0, keeps b/0
    rows = [x for x in md.splitlines() if x.startswith("| a ") or x.startswith("| b ")]
    assert len(rows) == 2 and "0.970" in rows[0] and "| 600 | 4 | 1.0 |" in rows[0] and "0.960" in rows[1]


def test_the_curves_plot_has_one_panel_per_task(tmp_path, monkeypatch):
    """Runs are grouped by task into panels (was: every family of every task on one axis, its legend over the plot)."""
    import teacher_curves

    import smt_hf.viz

    got = {}
    monkeypatch.setattr(smt_hf.viz, "plot_panels", lambda panels, path, **kw: got.setdefault("panels", panels))

    def run(family, task, seed):
        return {"family": family, "task": task, "seq_len": 32, "seed": seed, "curve": [[4, 0.5, 0.3], [8, 2.0, 0.9]]}

    teacher_curves.plot([run("b", "parity", 0), run("a", "needle", 0), run("a_lm", "needle", 1)], str(tmp_path / "p.png"))
    assert [p["title"] for p in got["panels"]] == ["needle", "parity"]
    assert list(got["panels"][0]["curves"]) == ["a T=32", "a_lm T=32 s1"]
    assert got["panels"][0]["curves"]["a T=32"] == ([1.0, 2.0], [0.3, 0.9])  # seconds floored at 1 (log axis)
    assert got["panels"][1]["hline"] == 0.95 and got["panels"][1]["logx"]


def test_a_family_can_override_the_future_length():
    """`training` may set any SMTTrainingArguments field, also one the loop sets itself (was: TypeError)."""
    import teacher_curves

    r = teacher_curves.run_one("needle", {"task": "needle", "task_kwargs": {"vocab_size": 8},
                                          "training": {"future_length": 1}}, DEFAULTS, seed=0)
    assert [c[0] for c in r["curve"]] == [4, 8, 12]


def test_train_task_kwargs_shape_the_training_episodes_and_show_in_the_table_row():
    import teacher_curves

    cfg = {**DEFAULTS, "task": "string_copy", "seq_len": 9, "train_task_kwargs": {"min_string_len": 1}}
    train, ev = teacher_curves.episode_sets(cfg, seed=0)
    assert (len(train), len(ev)) == (64, 16)
    assert len({x.index(0) for x in train["input_ids"]}) > 1 and {x.index(0) for x in ev["input_ids"]} == {4}
    assert "train min_string_len=1" in teacher_curves.extra({**cfg, "teacher": DEFAULTS["teacher"]})
    with pytest.raises(ValueError, match="change needle's vocabulary .16 vs 8."):
        teacher_curves.episode_sets({**DEFAULTS, "task": "needle", "task_kwargs": {"vocab_size": 8},
                                     "train_task_kwargs": {"vocab_size": 16}}, seed=0)


def test_reference_lm_is_scored_at_the_teachers_positions():
    """An oracle whose logits at t-1 are labels[t] scores 1 at the teacher's positions; reading them off one position
    late (the prediction at t) does not."""
    import torch
    import torch.nn.functional as F
    import teacher_curves

    from smt_hf.data import make_task

    ds = make_task("associative_recall", 32, 16, seed=0, n_keys=4, key_vocab=4, value_vocab=4)
    ids, labels = torch.tensor(ds["input_ids"]), torch.tensor(ds["labels"])
    nxt = torch.cat([labels[:, 1:], torch.zeros_like(labels[:, :1])], 1).clamp(min=0)  # labels[t] at position t-1
    assert teacher_curves.lm_accuracy(lambda x: F.one_hot(nxt, 9).float(), ids, labels, 4) == 1.0
    late = labels.clamp(min=0)  # the answer at t itself: one position late
    assert teacher_curves.lm_accuracy(lambda x: F.one_hot(late, 9).float(), ids, labels, 4) < 0.5


def test_reference_lm_run_and_its_table_row():
    import teacher_curves

    spec = {"task": "needle", "task_kwargs": {"vocab_size": 8}, "reference_lm": True, "target": 1.01}
    r = teacher_curves.run_reference_lm("needle_lm", {**DEFAULTS, **spec}, seed=0)
    assert [c[0] for c in r["curve"]] == [4, 8, 12] and r["final_teacher_acc"] == r["curve"][-1][2]
    again = teacher_curves.run_one("needle_lm", spec, DEFAULTS, seed=0)["curve"]  # dispatch, seeded
    assert [(c[0], c[2]) for c in again] == [(c[0], c[2]) for c in r["curve"]]  # steps and accuracy (not seconds)
    row = next(x for x in teacher_curves.table([r]).splitlines() if x.startswith("| needle_lm "))
    assert "| - (causal LM) | 1/0 |" in row and row.endswith("| vocab_size=8 |")  # task kwargs: other settings


def test_budget_seconds_flag_overrides_every_familys_budget(tmp_path, capsys):
    """`--budget-seconds` replaces the budget a family gets from its YAML (120 s here, max_steps 10**6, a target it
    cannot reach): the run stops on the flag's budget and records it in its settings (a whole number as an int, as
    the YAML's); a budget <= 0 or nan is refused with a message naming the flag."""
    import json

    import teacher_curves
    import yaml

    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({"defaults": {**DEFAULTS, "max_steps": 10**6, "target": 1.01, "budget_seconds": 120},
                                   "families": {"needle": {"task": "needle", "task_kwargs": {"vocab_size": 8}}}}))
    teacher_curves.main(["--config", str(cfg), "--out", str(tmp_path), "--budget-seconds", "1.5"])
    (r,) = json.load(open(tmp_path / "teacher_curves.json"))
    assert r["settings"]["budget_seconds"] == 1.5 and r["reached_at"] is None
    assert 0 < r["curve"][-1][0] < 10**6 and r["curve"][-1][1] < 30
    for bad in ("0", "-3", "nan"):
        with pytest.raises(SystemExit):
            teacher_curves.main(["--config", str(cfg), "--out", str(tmp_path), "--budget-seconds", bad])
        assert f"argument --budget-seconds: {bad} is not a positive number" in capsys.readouterr().err
    teacher_curves.main(["--config", str(cfg), "--out", str(tmp_path), "--budget-seconds", "2"])
    (r,) = json.load(open(tmp_path / "teacher_curves.json"))  # the same family/T/seed: replaced
    assert r["settings"]["budget_seconds"] == 2 and isinstance(r["settings"]["budget_seconds"], int)


@pytest.mark.parametrize("budget, steps", [(1e-9, 0), (600, 12)])
def test_reference_lm_scores_where_its_budget_ends(budget, steps):
    """The causal-LM reference (`reference_lm`) stopped by its budget between evaluations, or before its first step,
    records a last point at the step it stopped on, as the teacher's loop does (was: an IndexError on an empty curve;
    12 steps, evaluations every 5: points at 5, 10 and the end, 12)."""
    import teacher_curves

    spec = {"task": "needle", "task_kwargs": {"vocab_size": 8}, "reference_lm": True, "target": 1.01,
            "budget_seconds": budget, "eval_steps": 5}
    r = teacher_curves.run_one("needle", spec, DEFAULTS, seed=0)
    assert r["curve"][-1][0] == steps and [c[0] for c in r["curve"]] == ([0] if steps == 0 else [5, 10, 12])
    assert r["final_teacher_acc"] == r["curve"][-1][2] and r["reached_at"] is None
