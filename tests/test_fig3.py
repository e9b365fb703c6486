"""recipes/needle_e2e.py as the Fig 3 recipe: family settings from the calibration YAML, BPTT row names, and the
table over families (mean ± half-range over the seeds that ran each row, each (seed, row) once)."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))
import needle_e2e as n  # noqa: E402


def test_family_settings_take_the_calibrated_teacher_and_lr(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("defaults: {seq_len: 32, teacher: {hidden_size: 64, memory_tokens: 4}, learning_rate: 0.003, "
                    "warmup_steps: 100}\nfamilies:\n  copy: {task: string_copy, teacher: {hidden_size: 32, "
                    "memory_tokens: 8}, training: {eval_positions: 8}}\n  nd: {task: needle, task_kwargs: "
                    "{vocab_size: 12}, learning_rate: 0.001, dmt_training: {lambda_onestep_readout: 1.0}}\n")
    f = n.family_settings("copy", path=str(path))
    assert f["task"] == "string_copy" and f["seq_len"] == 32 and f["training"] == {"eval_positions": 8}
    assert f["model"] == {"teacher": {"hidden_size": 32, "memory_tokens": 8}, "student": n.MODEL["student"]}
    assert f["smt"] == dict(n.SMT, learning_rate=0.003, warmup_steps=100) and f["dmt"] == {}
    g = n.family_settings("nd", 64, path=str(path))
    assert (g["task_kwargs"], g["seq_len"], g["smt"]["learning_rate"]) == ({"vocab_size": 12}, 64, 0.001)
    assert g["dmt"] == {"lambda_onestep_readout": 1.0} and "lambda_onestep_readout" not in g["smt"]  # one-step DMT only
    with pytest.raises(KeyError, match=r"\['copy', 'nd'\]"):
        n.family_settings("parity", path=str(path))


def test_train_task_kwargs_apply_to_the_training_episodes_only(tmp_path):
    """A family's `train_task_kwargs` (string_copy's min_string_len) shape the training episodes; the held-out ones
    keep the task's own layout (full-length strings); without the key both are as before."""
    path = tmp_path / "t.yaml"
    path.write_text("defaults: {seq_len: 21, teacher: {hidden_size: 16}, learning_rate: 0.003, warmup_steps: 0}\n"
                    "families:\n  mixed: {task: string_copy, train_task_kwargs: {min_string_len: 1}}\n"
                    "  plain: {task: string_copy}\n")
    f = n.family_settings("mixed", path=str(path))
    assert f["train_task_kwargs"] == {"min_string_len": 1} and f["task_kwargs"] == {}
    assert n.family_settings("plain", path=str(path))["train_task_kwargs"] == {}
    train, ev = n.episodes("string_copy", 21, 0, f["task_kwargs"], f["train_task_kwargs"], num_train=64)
    assert len(train) == 64 and len(ev) == 512
    assert {x.index(0) for x in train["input_ids"]} != {10}  # mixed string lengths
    assert {x.index(0) for x in ev["input_ids"]} == {10}  # full length held out
    plain_train, plain_ev = n.episodes("string_copy", 21, 0, {}, None, num_train=64)
    assert {x.index(0) for x in plain_train["input_ids"]} == {10} and plain_ev["input_ids"] == ev["input_ids"]


def test_shipped_families_all_name_a_task_the_recipe_knows():
    import yaml

    fams = yaml.safe_load(open(n.FAMILIES))["families"]
    assert {n.family_settings(name)["task"] for name in fams} <= set(n.TASKS)


def test_bptt_row_names():
    assert (n.bptt_row(1), n.bptt_row(4.0), n.bptt_row(2)) == (n.ROWS[3], n.ROWS[4], "BPTT (2x wall-clock)")


def test_fig3_table_over_families(tmp_path):
    def row(name, acc, seconds=10.0, **kw):
        return {"run": name, "steps": 5, "seconds": seconds, "teacher_acc": 0.99, "onestep_acc": 0.9,
                "student_acc": acc, **kw}

    def dump(stem, fam, task, seed, rows):
        json.dump({"task": task, "family": fam, "seq_len": 32, "seed": seed, "machine": "m", "rows": rows},
                  open(tmp_path / f"{stem}.json", "w"))

    dump("stack_e2e_T32_s0", "stack", "stack", 0, [row(n.ROWS[0], 0.3), row(n.ROWS[1], 0.9), row(n.ROWS[3], 0.2),
                                                   row(n.ROWS[4], 0.4, 40.0)])
    dump("stack_e2e_T32_s1", "stack", "stack", 1, [row(n.ROWS[0], 0.5), row(n.ROWS[1], 0.7, 20.0), row(n.ROWS[3], 0.6)])
    dump("stack_e2e_T32_s1_bptt", "stack", "stack", 1, [row(n.ROWS[3], 0.0)])  # (seed 1, BPTT) already counted
    dump("needle_e2e_T32_s0", None, "needle", 0, [row(n.ROWS[0], 0.1)])  # an older run without `family`
    dump("stack_e2e_T64_s0", "stack", "stack", 0, [row(n.ROWS[1], 0.0)])  # another length: not read
    dump("a_wide_e2e_T32_s0", "a_wide", "stack", 0, [row(n.ROWS[0], 0.7)])  # a setting tried, not in FIG3_MAIN
    dump("icl_x_e2e_T32_s0", "icl_x", "icl_modular", 0, [row(n.ROWS[0], 0.7)])  # its task has no headline family here
    res = n.fig3(str(tmp_path), 32)
    st = res["stack"]
    assert st["SMT -> DMT one_step (no BPTT)"] == {"mean": 0.8, "half_range": pytest.approx(0.1), "seeds": [0, 1],
                                                   "values": [0.9, 0.7], "seconds": 15.0}
    assert st["BPTT, same wall-clock"]["values"] == [0.2, 0.6]
    assert st["BPTT, 4x wall-clock"]["values"] == [0.4] and st["SMT -> DMT full_rollout (truncated BPTT)"] is None
    assert st["teacher"]["mean"] == 0.99 and st["SMT standalone"]["values"] == [0.3, 0.5]
    assert set(res) == {"stack", "needle (recipe model)", "a_wide", "icl_x"}  # a run without --family is its own
    md = (tmp_path / "fig3_T32.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| stack"))
    assert "0.80 ± 0.10 (n=2, 15 s)" in line and "0.40 (n=1, 40 s)" in line
    got = json.load(open(tmp_path / "fig3_T32.json"))
    assert got["families"]["stack"]["BPTT, 4x wall-clock"]["seeds"] == [0]
    # the headline table holds FIG3_MAIN's families in its order; other settings follow in their own table
    assert got["main"] == ["needle (recipe model)", "stack", "icl_x"]  # the paper's task order
    names = [x.split(" |")[0][2:] for x in md.splitlines() if x.startswith("| ") and not x.startswith("| family")]
    assert names == ["needle (recipe model)", "stack", "icl_x", "a_wide"]
    assert md.index("| stack |") < md.index("Other settings tried") < md.index("| a_wide |")


def test_family_length_is_used_and_a_run_of_another_family_is_not_overwritten(tmp_path):
    a = n.build_parser().parse_args(["--family", "needle_T64"])
    assert a.seq_len is None  # resolved from the family in cli()
    assert n.family_settings("needle_T64")["seq_len"] == 64
    json.dump({"task": "needle", "family": None, "rows": []}, open(tmp_path / "needle_e2e_T32_s0.json", "w"))
    with pytest.raises(ValueError, match="another family"):
        n.run(seq_len=32, seed=0, out=str(tmp_path), family="needle")


def test_a_new_run_of_a_seed_never_replaces_the_seeds_earlier_run(tmp_path):
    """Re-running seed 0 into a folder that has its JSON replaced the rows (DMT-from-init rows lost) and set the
    new rows beside BPTT rows budgeted from the old run's time; it is refused before any work."""
    json.dump({"task": "needle", "family": None, "rows": [{"run": "joint SMT"}]}, open(tmp_path / "needle_e2e_T32_s0.json", "w"))
    with pytest.raises(FileExistsError, match="needle_e2e_T32_s0.json already hold.*Run into an --out without"):
        n.run(seq_len=32, seed=0, out=str(tmp_path), smt_steps=2, dmt_steps=2, bptt=False, full_rollout=False)
    with pytest.raises(FileExistsError, match="needle_e2e_T32_s0.json"):  # seed 1 first: refused before it trains
        n.cli(["--seeds", "1", "0", "--smt-steps", "2", "--dmt-steps", "2", "--no-bptt", "--out", str(tmp_path)])
    assert not (tmp_path / "needle_e2e_T32_s1.json").exists()
    assert json.load(open(tmp_path / "needle_e2e_T32_s0.json"))["rows"] == [{"run": "joint SMT"}]


def test_the_smt_row_names_its_mode():
    def run(mode):
        return {"seed": 0, "settings": {"smt": {"mode": mode}}, "rows": [
            {"run": n.ROWS[0], "dmt_gradient": None, "steps": 5, "seconds": 1.0, "teacher_acc": 1.0, "onestep_acc": 1.0,
             "student_acc": 0.5, "drift_mean": 0.1}], "model": n.MODEL, "seq_len": 32, "task": "needle", "task_kwargs": {"vocab_size": 16}}

    assert n.row_label(n.ROWS[0], run("smt")) == "SMT (mode smt)" and n.row_label(n.ROWS[1], run("smt")) == n.ROWS[1]
    assert n.row_label(n.ROWS[0], run("joint")) == "joint SMT" == n.row_label(n.ROWS[0], {"rows": []})
    assert "| SMT (mode smt) |" in n.table([run("smt")]) and "| joint SMT |" in n.table([run("joint")])


def test_a_row_only_some_seeds_ran_names_its_seeds_in_the_per_seed_column():
    """A row that 1 of 3 seeds ran (an --add-full-rollout on seed 2) shows "s2: 0.66", not a bare 0.66 that reads as
    seed 0's (was: unlabelled); a row every seed ran keeps its plain per-seed list."""
    def run(seed, extra=()):
        rows = [{"run": n.ROWS[1], "dmt_gradient": "one_step", "steps": 4, "seconds": 1.0, "teacher_acc": 1.0,
                 "onestep_acc": 0.5, "student_acc": 0.2 + seed / 100, "drift_mean": 0.1}, *extra]
        return {"seed": seed, "rows": rows, "model": n.MODEL, "seq_len": 32, "task": "needle",
                "task_kwargs": {"vocab_size": 16}}

    full = {"run": n.ROWS[2], "dmt_gradient": "full_rollout", "steps": 4, "seconds": 1.0, "teacher_acc": 1.0,
            "onestep_acc": 0.6, "student_acc": 0.66, "drift_mean": 0.3}
    lines = n.table([run(0), run(1), run(2, [full])]).splitlines()
    assert next(x for x in lines if x.startswith("| " + n.ROWS[2])).endswith("| s2: 0.66 |")
    assert next(x for x in lines if x.startswith("| " + n.ROWS[1])).endswith("| 0.20, 0.21, 0.22 |")


def test_seeds_that_ran_a_row_for_different_step_counts_show_each_seeds_steps_not_their_mean(tmp_path):
    """Needle T=64's full rollout ran 300 steps on seed 0 (reused) and 800 on seeds 1-2: the family table showed
    "633 | 550" (a mean run length no seed had) and Fig 3 "(n=3, 550 s)". Now such a row lists each seed's steps and
    seconds (a seed without a value: "-", the others still under their seed), and its Fig 3 cell the steps; BPTT rows (steps set by a wall-clock budget) and rows with one step count
    keep their means."""
    def row(name, steps, seconds, grad="full_rollout"):
        return {"run": name, "dmt_gradient": grad, "steps": steps, "seconds": seconds, "teacher_acc": 1.0,
                "onestep_acc": 1.0, "student_acc": 0.9, "drift_mean": 0.1}

    runs = [{"seed": s, "machine": "m", "model": n.MODEL, "seq_len": 32, "task": "needle", "family": "needle",
             "task_kwargs": {"vocab_size": 16},
             "rows": [row(n.ROWS[1], 8, 10.0, "one_step"), row(n.ROWS[2], steps, sec), row(n.ROWS[3], bsteps, 30.0, None)]}
            for s, steps, sec, bsteps in ((0, 300, 700.0, 50), (1, 800, 480.0, 70), (2, 800, 460.0, 90))]
    lines = n.table(runs).splitlines()
    assert "| s0 300 / s1 800 / s2 800 | s0 700 / s1 480 / s2 460 |" in next(x for x in lines if x.startswith("| " + n.ROWS[2]))
    assert "| 8 | 10 |" in next(x for x in lines if x.startswith("| " + n.ROWS[1]))
    assert "| 70 | 30 |" in next(x for x in lines if x.startswith("| " + n.ROWS[3]))
    del runs[0]["rows"][1]["seconds"]
    assert "| s0 300 / s1 800 / s2 800 | s0 - / s1 480 / s2 460 |" in n.table(runs)
    runs[0]["rows"][1]["seconds"] = 700.0
    for run in runs:
        json.dump(run, open(tmp_path / f"needle_e2e_T32_s{run['seed']}.json", "w"))
    res = n.fig3(str(tmp_path), 32)["needle"]
    assert res["SMT -> DMT full_rollout (truncated BPTT)"]["steps"] == [300, 800, 800]
    assert "steps" not in res["SMT -> DMT one_step (no BPTT)"] and "steps" not in res["BPTT, same wall-clock"]
    line = next(x for x in (tmp_path / "fig3_T32.md").read_text().splitlines() if x.startswith("| needle"))
    assert "0.90 ± 0.00 (n=3, s0 300 / s1 800 / s2 800 steps, 547 s)" in line and "0.90 ± 0.00 (n=3, 10 s)" in line


def test_a_bptt_only_run_refreshes_the_family_table(tmp_path):
    """--bptt-only appends BPTT rows to a family; its table (and Fig 3) must show them (was: left stale)."""
    n.run(task="needle", seq_len=8, seed=0, out=str(tmp_path), bptt_seconds=0.5, bptt_only=True, bptt_multiples=(1, 4))
    md = (tmp_path / "needle_e2e_T8.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| BPTT")]
    assert [r.split(" |")[0] for r in rows] == ["| " + n.ROWS[3], "| " + n.ROWS[4]]
    assert "BPTT wall-clock budget per seed: s0 0 s, s0 2 s (4x wall-clock)" in md  # 0.5 s and 4 x 0.5 s, rounded; 4x named
    fig = (tmp_path / "fig3_T8.md").read_text()  # a recipe-model (--task) run refreshes Fig 3 too (was: --family only)
    assert fig.count("| needle (recipe model) |") == 1


def test_a_family_whose_decoder_loss_would_never_start_is_refused_before_any_work(tmp_path, monkeypatch):
    """`associative_recall_curriculum` turns the future loss on at step 1100: the recipe's default 900 SMT steps
    would train another teacher than the calibrated one, silently (was: ran). Refused before the data is built."""
    monkeypatch.setattr("smt_hf.data.make_task", lambda *a, **k: pytest.fail("built data before refusing"))
    with pytest.raises(ValueError, match="would never be on"):
        n.run(family="associative_recall_curriculum", smt_steps=900, seed=0, out=str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_a_family_dmt_setting_reaches_the_one_step_dmt_phase_and_is_checked_first(tmp_path, monkeypatch):
    """`dmt_training` goes to the one-step DMT phase only: every phase's arguments are checked before the data is
    built, and the shipped family passes that check (full-rollout DMT and BPTT would refuse the one-step read-out
    loss had it leaked there); the same setting with a full-rollout DMT phase is refused before any work."""
    monkeypatch.setattr("smt_hf.data.make_task", lambda *a, **k: pytest.fail("reached data"))
    fam = n.family_settings("associative_recall_onestep_readout")
    assert fam["dmt"]["lambda_onestep_readout"] == 1.0 == fam["smt"]["lambda_onestep_readout"]
    assert fam["dmt"]["lr_scheduler_type"] == "cosine"  # the defaults' dmt_training, merged key by key
    with pytest.raises(pytest.fail.Exception, match="reached data"):  # all phases accepted
        n.run(family="associative_recall_onestep_readout", smt_steps=2000, seed=0, out=str(tmp_path))
    bad = {**fam, "dmt": {"lambda_onestep_readout": 1.0, "dmt_gradient": "full_rollout", "dmt_stride": 8}}
    monkeypatch.setattr(n, "family_settings", lambda *a, **k: bad)
    with pytest.raises(ValueError, match="lambda_onestep_readout"):
        n.run(family="associative_recall_onestep_readout", smt_steps=2000, seed=0, out=str(tmp_path))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("family, split", [("parity_enc_lm_curriculum", None),
                                           ("parity_enc_lm_curriculum_horizon", "horizon")])
def test_a_length_curriculum_family_needs_smt_steps_past_its_last_stage(tmp_path, monkeypatch, family, split):
    """`parity_enc_lm_curriculum` supervises all 32 positions from SMT step 3000: the default 900 steps are refused
    before the data is built (they would train another teacher than the calibrated one), 4000 pass every phase's
    argument check, and the curriculum (and its split setting) reaches the SMT phase only (BPTT and DMT train on
    every position; DMT and BPTT would refuse `seq_len_curriculum_split`)."""
    monkeypatch.setattr("smt_hf.data.make_task", lambda *a, **k: pytest.fail("reached data"))
    fam = n.family_settings(family)
    assert fam["smt"]["seq_len_curriculum"] == [8, 12, 16, 20, 24, 28, 32] and fam["smt"]["mode"] == "smt"
    assert fam["smt"].get("seq_len_curriculum_split") == split
    for key in ("seq_len_curriculum", "seq_len_curriculum_split"):
        assert key not in fam["training"] and key not in fam["dmt"]
    with pytest.raises(ValueError, match="reaches its last length at step 3000"):
        n.run(family=family, smt_steps=900, seed=0, out=str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="reached data"):  # all phases accepted
        n.run(family=family, smt_steps=4000, seed=0, out=str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_a_family_alone_reproduces_its_committed_fig3_runs():
    """Every committed end-to-end run of a family (recipes/results/fig3) used the settings that `--family NAME` with
    no other flag resolves to now: SMT and one-step DMT arguments and step counts. (The Fig 3 runs were launched with
    `--smt-steps/--dmt-steps/--dmt-schedule/--dmt-matched-steps`; the family alone used to give 900 SMT steps and a
    constant-lr DMT on every transition, another run than the one in the table.)"""
    import glob

    root = os.path.join(os.path.dirname(n.FAMILIES), "..", "..", "results", "fig3")
    runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(root, "*_e2e_T*_s[0-9].json")))]
    runs = [r for r in runs if r.get("family")]
    assert {r["family"] for r in runs} >= set(n.FIG3_MAIN) - {"needle (recipe model)"}
    for r in runs:
        fam = n.family_settings(r["family"], r["seq_len"])
        steps = {x["run"]: x["steps"] for x in r["rows"]}
        assert r["settings"]["smt"] == fam["smt"], r["family"]
        assert r["settings"]["dmt"] == {**n.DMT, **fam["dmt"]}, r["family"]
        assert (steps[n.ROWS[0]], steps[n.ROWS[1]]) == (fam["smt_steps"], fam["dmt_steps"]), r["family"]


def test_arguments_given_win_over_the_family_and_the_command_is_recorded(tmp_path, monkeypatch):
    """Steps and DMT settings given to run() (the command-line flags) replace the family's; left out, the family's
    apply (what every phase's argument check, before any data, receives); cli() passes the command line on."""
    import smt_hf.trainer  # noqa: F401  (imported before the patch: it keeps the class it imports)
    import smt_hf.training_args as ta

    calls, real = [], ta.SMTTrainingArguments
    monkeypatch.setattr(ta, "SMTTrainingArguments", lambda **kw: (calls.append(kw), real(**kw))[1])
    monkeypatch.setattr("smt_hf.data.make_task", lambda *a, **k: pytest.fail("reached data"))
    with pytest.raises(pytest.fail.Exception, match="reached data"):
        n.run(family="stack", seed=0, out=str(tmp_path))
    dmt, smt = calls[0], calls[-1]  # phases are checked in the order one-step DMT, full rollout, BPTT, SMT
    assert (dmt["lr_scheduler_type"], dmt["dmt_matched_steps"], dmt["max_steps"], smt["max_steps"]) == ("cosine", 8, 400, 3000)
    calls.clear()
    with pytest.raises(pytest.fail.Exception, match="reached data"):
        n.run(family="stack", seed=0, out=str(tmp_path), smt_steps=500, dmt_schedule="linear", dmt_matched_steps=4)
    dmt, smt = calls[0], calls[-1]
    assert (dmt["lr_scheduler_type"], dmt["dmt_matched_steps"], smt["max_steps"]) == ("linear", 4, 500)
    for extra, want in ((dict(dmt_stride=8), (8, None)), (dict(dmt_matched_steps=0), (None, None))):
        calls.clear()  # a stride replaces the family's random matched transitions; 0 unsets them (every transition)
        with pytest.raises(pytest.fail.Exception, match="reached data"):
            n.run(family="stack", seed=0, out=str(tmp_path), dmt_steps=50, **extra)
        assert (calls[0].get("dmt_stride"), calls[0].get("dmt_matched_steps"), calls[0]["max_steps"]) == (*want, 50)
    seen = {}
    monkeypatch.setattr(n, "run", lambda *a, **k: seen.update(k, smt_steps=a[3], dmt_steps=a[4]))
    n.cli(["--family", "stack", "--dmt-steps", "7", "--out", str(tmp_path)])
    assert (seen["smt_steps"], seen["dmt_steps"], seen["dmt_schedule"], seen["dmt_matched_steps"]) == (None, 7, None, None)
    assert seen["command"].endswith("needle_e2e.py --family stack --dmt-steps 7 --out " + str(tmp_path))
    with pytest.raises(SystemExit):  # 0 steps would read as "not given"
        n.cli(["--family", "stack", "--dmt-steps", "0"])


def test_backbone_and_bptt_lr_reach_the_student_and_bptt_and_a_folder_never_mixes_them(tmp_path, monkeypatch):
    """--backbone sets the student's updater for every row and --bptt-lr BPTT's learning rate (was: neither could be
    changed, so a BPTT failure could not be told from its backbone or lr); both are recorded in the JSON and named in
    the family table; a folder whose runs used another backbone or lr is refused (its table would average both)."""
    import smt
    import smt_hf.trainer as trainer_module

    built, lrs, real_build, real_trainer = [], [], smt.build_models, trainer_module.SMTTrainer
    monkeypatch.setattr(smt, "build_models", lambda cfg, *a: (built.append(cfg), real_build(cfg, *a))[1])
    monkeypatch.setattr(trainer_module, "SMTTrainer", lambda **kw: (lrs.append((kw["args"].learning_rate, type(
        kw["model"].model.updater).__name__)), real_trainer(**kw))[1])
    n.run(task="needle", seq_len=8, seed=0, out=str(tmp_path), bptt_seconds=0.2, bptt_only=True, backbone="gru",
          bptt_lr=3e-3)
    assert built[0]["student"]["backbone"] == "gru" and lrs == [(3e-3, lrs[0][1])] and "GRU" in lrs[0][1]
    run = json.load(open(tmp_path / "needle_e2e_T8_s0_bptt.json"))
    assert run["model"]["student"]["backbone"] == "gru" and run["settings"]["bptt"]["learning_rate"] == 3e-3
    assert run["settings"]["bptt"] == dict(n.BPTT, learning_rate=3e-3)  # everything else as the recipe's
    md = (tmp_path / "needle_e2e_T8.md").read_text()
    assert "'backbone': 'gru'" in md and "'learning_rate': 0.003" in md
    monkeypatch.setattr("smt_hf.data.make_task", lambda *a, **k: pytest.fail("reached data"))
    for kw in (dict(backbone="transformer", bptt_lr=3e-3), dict(backbone="gru", bptt_lr=None)):
        with pytest.raises(ValueError, match="would average both"):
            n.run(task="needle", seq_len=8, seed=1, out=str(tmp_path), bptt_seconds=0.2, bptt_only=True, **kw)
    seen = {}
    monkeypatch.setattr(n, "run", lambda *a, **k: seen.update(k))
    n.cli(["--task", "needle", "--backbone", "mlp", "--bptt-lr", "3e-4", "--out", str(tmp_path)])
    assert (seen["backbone"], seen["bptt_lr"]) == ("mlp", 3e-4)
    n.cli(["--task", "needle", "--out", str(tmp_path)])
    assert (seen["backbone"], seen["bptt_lr"]) == ("transformer", None)


def test_family_table_of_a_folder_with_runs_from_before_bptt_settings_were_recorded(tmp_path):
    """A run added to a folder whose first JSON records settings without `bptt` (committed Fig 3 needle/parity runs)
    must rewrite the table (was: KeyError 'bptt' after training); BPTT settings are named once."""
    def dump(name, settings, rows):
        run = {"task": "needle", "family": None, "seq_len": 8, "seed": 0, "machine": "m", "threads": 1, "model": n.MODEL,
               "task_kwargs": {"vocab_size": 16}, "settings": settings, "rows": rows, "drift": {}}
        json.dump(run, open(tmp_path / f"needle_e2e_T8_{name}.json", "w"))

    row = lambda name, acc: {"run": name, "dmt_gradient": None, "steps": 10, "seconds": 1.0, "student_acc": acc}  # noqa: E731
    dump("s0", {"smt": {"mode": "joint"}, "dmt": {}, "full_rollout": {}}, [row(n.ROWS[0], 0.5)])
    dump("s0_bptt", {"bptt": {"learning_rate": 3e-3}}, [row(n.ROWS[3], 0.1)])
    md = n.write_summary(str(tmp_path), "needle", 8)
    assert md.count("BPTT `{'learning_rate': 0.003}`") == 1 and "Seeds ran with" not in md
    assert "student `{'backbone': 'transformer', 'updater_layers': 2}`" in md


def test_fig3_names_the_student_updater_of_each_family(tmp_path):
    def dump(stem, fam, model):
        json.dump({"task": "stack", "family": fam, "seq_len": 32, "seed": 0, "machine": "m", **model,
                   "rows": [{"run": n.ROWS[1], "steps": 5, "seconds": 1.0, "student_acc": 0.5}]},
                  open(tmp_path / f"{stem}.json", "w"))

    dump("stack_e2e_T32_s0", "stack", {"model": {"student": {"backbone": "gru", "updater_layers": 2}}})
    res_md = lambda: (n.fig3(str(tmp_path), 32), (tmp_path / "fig3_T32.md").read_text())  # noqa: E731
    _, md = res_md()
    assert "Student updater: gru (every family)." in md
    assert json.load(open(tmp_path / "fig3_T32.json"))["student_backbone"] == {"stack": "gru"}
    dump("other_e2e_T32_s0", "other", {})  # a JSON from before the backbone was recorded: the transformer
    _, md = res_md()
    assert "Student updater: other: transformer; stack: gru." in md


def test_family_summary_names_each_machine_with_its_seeds(tmp_path):
    """Seeds of one family run on different machines (sessions): the markdown header names each machine with its
    seeds (it used to name the first run's machine for all of them)."""
    row = lambda name, acc: {"run": name, "dmt_gradient": None, "steps": 10, "seconds": 1.0, "teacher_acc": 1.0,  # noqa: E731
                             "onestep_acc": 0.9, "student_acc": acc, "drift_mean": 0.1}
    for seed, machine in [(0, "CPU Intel"), (1, "CPU AMD EPYC"), (2, "CPU AMD EPYC")]:
        json.dump({"task": "needle", "family": None, "seq_len": 32, "seed": seed, "machine": machine, "threads": 1,
                   "model": n.MODEL, "task_kwargs": {"vocab_size": 16},
                   "rows": [row(n.ROWS[0], 0.3), row(n.ROWS[1], 0.5)]},
                  open(tmp_path / f"needle_e2e_T32_s{seed}.json", "w"))
    md = n.write_summary(str(tmp_path), "needle", 32)
    assert md.startswith("needle, T=32, seeds [0, 1, 2], CPU Intel (seed 0); CPU AMD EPYC (seeds 1, 2), 1 thread(s);")


def test_family_summary_names_the_training_episodes_kwargs(tmp_path):
    """A family trained on episodes with `train_task_kwargs` says so in its markdown; one without does not."""
    row = {"run": n.ROWS[0], "dmt_gradient": None, "steps": 10, "seconds": 1.0, "teacher_acc": 1.0,
           "onestep_acc": 0.9, "student_acc": 0.5, "drift_mean": 0.1}
    run = {"task": "string_copy", "family": "mixed", "seq_len": 32, "seed": 0, "machine": "CPU x", "threads": 1,
           "model": n.MODEL, "task_kwargs": {}, "rows": [row, dict(row, run=n.ROWS[1])]}
    json.dump(run, open(tmp_path / "mixed_e2e_T32_s0.json", "w"))
    assert "training episodes" not in n.write_summary(str(tmp_path), "mixed", 32)
    json.dump({**run, "train_task_kwargs": {"min_string_len": 1}}, open(tmp_path / "mixed_e2e_T32_s0.json", "w"))
    md = n.write_summary(str(tmp_path), "mixed", 32)
    assert 'training episodes with {"min_string_len": 1} on top of the task\'s kwargs {}' in md


def test_usage_errors_before_anything_runs(tmp_path, capsys):
    """An unknown family (a KeyError traceback), --fig3 over a folder without runs of that length (a header-only
    table written, or a traceback for a missing folder) and a length full-rollout DMT cannot use (its stride-8
    check failed for every run, --no-full-rollout too) are usage errors naming the fix."""
    for argv, message in ((["--family", "nope"], "family 'nope' is not in"),
                          (["--fig3", "--out", str(tmp_path / "missing")], "no \\*_e2e_T32_s\\*.json in"),
                          (["--fig3", "--out", str(tmp_path)], "no \\*_e2e_T32_s\\*.json in")):
        with pytest.raises(SystemExit) as e:
            n.cli(argv)
        assert e.value.code == 2
        assert __import__("re").search(message, capsys.readouterr().err)
    assert not list(tmp_path.iterdir())  # nothing written
    for kw, fix in ((dict(), "--no-full-rollout"), (dict(full_rollout=False, dmt_from_init=("full_rollout",)),
                                                     "--dmt-from-init one_step")):  # (the control's row, too)
        with pytest.raises(ValueError, match=f"seq_len 12: full-rollout DMT matches every 8th step.*{fix}"):
            n.run("parity", 12, 0, 1, 1, out=str(tmp_path), bptt=False, **kw)


def test_fig3_cells_name_their_machine_when_runs_ran_on_several(tmp_path):
    """A table over runs from two machines names, in each cell, the machine its seeds ran on (the caption listed both
    machines, and a row whose 4x BPTT ran on another machine than its 1x looked like one machine's numbers)."""
    def dump(stem, seed, machine, rows):
        json.dump({"task": "stack", "family": "stack", "seq_len": 32, "seed": seed, "machine": machine,
                   "rows": [{"run": r, "steps": 5, "seconds": 10.0, "teacher_acc": 0.9, "onestep_acc": 0.9,
                             "student_acc": 0.5} for r in rows]}, open(tmp_path / f"{stem}.json", "w"))

    dump("stack_e2e_T32_s0", 0, "CPU Intel(R) Xeon(R) Processor, 2 cores", [n.ROWS[0], n.ROWS[1], n.ROWS[3]])
    dump("stack_e2e_T32_s1", 1, "CPU AMD EPYC, 2 cores", [n.ROWS[0], n.ROWS[1], n.ROWS[3]])
    dump("stack_e2e_T32_s0_bptt_x4", 0, "CPU AMD EPYC, 2 cores", [n.ROWS[4]])
    n.fig3(str(tmp_path), 32)
    line = next(x for x in (tmp_path / "fig3_T32.md").read_text().splitlines() if x.startswith("| stack"))
    cells = [c.strip() for c in line.split("|")[2:-1]]
    assert cells[0] == "0.90 ± 0.00 (n=2, 10 s, AMD EPYC / Intel Xeon)"  # teacher: both seeds
    assert cells[-1] == "0.50 (n=1, 10 s, AMD EPYC)"  # 4x BPTT: seed 0's, on the EPYC
    (tmp_path / "stack_e2e_T32_s1.json").unlink()
    (tmp_path / "stack_e2e_T32_s0_bptt_x4.json").unlink()
    n.fig3(str(tmp_path), 32)  # one machine: no cell names it
    line = next(x for x in (tmp_path / "fig3_T32.md").read_text().splitlines() if x.startswith("| stack"))
    assert "Xeon" not in line and "(n=1, 10 s)" in line
