"""recipes/needle_e2e.py's rows appended to an earlier run's JSON: --continue-dmt, --add-full-rollout and the
DMT-from-init control (--dmt-from-init), and the tables that show them (the control beside the SMT -> DMT rows)."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))
import needle_e2e as n  # noqa: E402

def test_continued_dmt_sums_wall_clock_over_phases_and_takes_bptt_from_every_file_of_the_seed():
    def row(name, steps, seconds, acc):
        return {"run": name, "steps": steps, "seconds": seconds, "student_acc": acc}

    runs = [{"seed": 0, "rows": [row(n.ROWS[0], 100, 10.0, 0.3), row(n.ROWS[1], 40, 2.0, 0.5),
                                 row(n.ROWS[2], 40, 3.0, 0.6), row(n.ROWS[1] + " (+160 steps, 200 in all)", 160, 8.0, 0.7),
                                 row(n.ROWS[1] + " (+400 steps, 600 in all)", 400, 20.0, 0.8)]},
            {"seed": 0, "rows": [row(n.ROWS[3], 50, 12.0, 0.9)]}, {"seed": 0, "rows": [row(n.ROWS[4], 200, 48.0, 0.95)]},
            {"seed": 1, "rows": [row(n.ROWS[0], 100, 10.0, 0.3), row(n.ROWS[1], 40, 2.0, 0.5)]}]  # not continued
    got = n.continued_dmt(runs)
    assert list(got) == [0]
    assert got[0]["SMT -> one-step DMT (no BPTT)"] == [(10.0, 0.3), (12.0, 0.5), (20.0, 0.7), (40.0, 0.8)]
    assert got[0][n.ROWS[3]] == [(12.0, 0.9)] and got[0][n.ROWS[4]] == [(48.0, 0.95)] and len(got[0]) == 3


def test_family_summary_says_so_when_a_continued_seed_has_no_bptt_run(tmp_path):
    """The family markdown's continued-DMT line gives each phase's steps/s and, without a BPTT run of that seed, says
    so (it used to end "BPTT: ." with an empty list)."""
    def row(name, steps, seconds, acc):
        return {"run": name, "dmt_gradient": None, "steps": steps, "seconds": seconds, "teacher_acc": 1.0,
                "onestep_acc": 0.9, "student_acc": acc, "drift_mean": 0.1}

    run = {"task": "needle", "family": None, "seq_len": 32, "seed": 0, "machine": "m", "threads": 1, "model": n.MODEL,
           "task_kwargs": {"vocab_size": 16}, "rows": [row(n.ROWS[0], 100, 10.0, 0.3), row(n.ROWS[1], 40, 4.0, 0.5),
                                                       row(n.ROWS[1] + " (+160 steps, 200 in all)", 160, 8.0, 0.7)]}
    json.dump(run, open(tmp_path / "needle_e2e_T32_s0.json", "w"))
    md = n.write_summary(str(tmp_path), "needle", 32)
    assert "10 s: 0.30, 14 s: 0.50, 22 s: 0.70 (steps/s of each phase, a measure of the machine's load: 10.00, " \
           "10.00, 20.00); no BPTT run of this seed here." in md
    assert "BPTT: ." not in md


def test_continue_dmt_appends_a_row_with_its_own_command_and_keeps_the_first_runs(tmp_path):
    """--continue-dmt loads the saved student, runs more one-step DMT steps and appends one row (its step count in
    the name, its command on the row); the earlier rows and the file's first command stay as they were."""
    kw = dict(task="needle", seq_len=8, seed=0, out=str(tmp_path), bptt=False, full_rollout=False)
    n.run(smt_steps=2, dmt_steps=2, command="first", **kw)
    stem = tmp_path / "needle_e2e_T8_s0.json"
    before = json.load(open(stem))
    n.run(dmt_steps=3, continue_dmt=True, command="second", **kw)
    after = json.load(open(stem))
    assert after["command"] == before["command"] == "first" and after["rows"][:2] == before["rows"]
    assert [r["run"] for r in after["rows"]] == [n.ROWS[0], n.ROWS[1], n.ROWS[1] + " (+3 steps, 5 in all)"]
    assert (after["rows"][2]["steps"], after["rows"][2]["command"]) == (3, "second")
    assert after["rows"][2]["settings"] == dict(n.DMT, seed=2)  # the data seed moved on by the 2 steps done
    assert "command" not in after["rows"][1]
    assert n.ROWS[1] + " (+3 steps, 5 in all)" in after["drift"]  # the continued row's drift curve is kept (was: lost)
    del after["command"]  # a file written before commands were recorded keeps none at the top
    json.dump(after, open(stem, "w"))
    n.run(dmt_steps=1, continue_dmt=True, command="third", **kw)
    again = json.load(open(stem))
    assert "command" not in again and again["rows"][3]["command"] == "third"
    assert again["rows"][3]["settings"]["seed"] == 5
    json.dump(dict(again, train_task_kwargs={"min_string_len": 1}), open(stem, "w"))  # trained on other episodes
    with pytest.raises(ValueError, match="train_task_kwargs"):
        n.run(dmt_steps=1, continue_dmt=True, **kw)
    assert json.load(open(stem))["rows"] == again["rows"]


def test_add_full_rollout_appends_the_row_a_full_run_would_have_and_refuses_another_smt_state(tmp_path, monkeypatch):
    """--add-full-rollout gives an earlier run its full-rollout row: joint SMT is re-trained and checked against the
    saved row, and the appended row equals the one a run with full rollout gives (same seed); the earlier rows, the
    file's command and drift curves stay. A saved joint-SMT row the re-run does not reproduce, or a row already
    there, is refused and the file is left as it was."""
    import smt_hf.viz

    plotted = []  # the drift plots' curves (the other plots are left out)
    monkeypatch.setattr(smt_hf.viz, "plot_curves", lambda x, curves, path, *a, **k: plotted.append(curves) if str(
        path).endswith("_drift.png") else None)
    kw = dict(task="needle", seq_len=8, seed=0, bptt=False, smt_steps=2, dmt_steps=2)
    n.run(out=str(tmp_path / "full"), command="full", **kw)
    full = json.load(open(tmp_path / "full" / "needle_e2e_T8_s0.json"))
    n.run(out=str(tmp_path / "add"), full_rollout=False, command="first", **kw)
    stem = tmp_path / "add" / "needle_e2e_T8_s0.json"
    before = json.load(open(stem))
    n.run(out=str(tmp_path / "add"), add_full_rollout=True, command="second", **kw)
    after = json.load(open(stem))
    assert [r["run"] for r in after["rows"]] == [n.ROWS[0], n.ROWS[1], n.ROWS[2]]
    assert after["command"] == "first" and after["rows"][:2] == before["rows"]
    added, ref = after["rows"][2], full["rows"][2]
    assert ref["run"] == n.ROWS[2] and {k: added[k] for k in n.METRICS} == {k: ref[k] for k in n.METRICS}
    assert (added["command"], added["settings"], added["steps"]) == ("second", n.FULL_ROLLOUT, 2)
    assert set(after["drift"]) == set(before["drift"]) | {n.ROWS[2]}
    # every row's curve is plotted as one (steps, values) pair, the ones read back from JSON too (was: a list, drawn
    # as one line per step)
    assert set(plotted[-1]) == set(after["drift"]) and plotted[-1] == {k: tuple(v) for k, v in after["drift"].items()}
    assert all(isinstance(c, tuple) and len(c) == 2 for c in plotted[-1].values())
    n.run(out=str(tmp_path / "add"), add_full_rollout=True, **kw)  # has the row: skipped, no training
    assert json.load(open(stem)) == after
    before["rows"][0]["student_acc"] += 0.01  # another SMT state than the re-run gives
    json.dump(before, open(stem, "w"))
    with pytest.raises(ValueError, match="differs"):
        n.run(out=str(tmp_path / "add"), add_full_rollout=True, **kw)
    assert json.load(open(stem)) == before
    # refused before any training: what would make another SMT state, or another full-rollout step count
    import smt

    monkeypatch.setattr(smt, "build_models", None)  # a TypeError if training started
    for bad, match in [(dict(threads=2), "threads 1 .this run: 2."), (dict(smt_steps=3), "smt_steps 2 .this run: 3."),
                       (dict(dmt_steps=5), "dmt_steps 2 .this run: 5."), (dict(smt_memory_noise=0.1), "smt .*smt_memory_noise")]:
        with pytest.raises(ValueError, match=match):
            n.run(out=str(tmp_path / "add"), add_full_rollout=True, **{**kw, **bad})
    assert json.load(open(stem)) == before
    with pytest.raises(FileNotFoundError, match="no earlier run"):
        n.run(out=str(tmp_path / "none"), add_full_rollout=True, **kw)
    with pytest.raises(ValueError, match="separate runs"):
        n.run(out=str(tmp_path / "add"), add_full_rollout=True, continue_dmt=True, **kw)


def test_dmt_from_init_starts_from_the_bptt_initialisation_with_the_smt_trained_teacher(tmp_path, monkeypatch):
    """--dmt-from-init (the control of what SMT gives DMT) appends one-step and full-rollout DMT rows whose student
    starts from the initialisation SMT and BPTT started from (not the SMT state) and whose teacher is the one joint SMT
    trained; the settings, step counts and earlier rows are the run's. The table costs each row per step as the
    SMT -> DMT row of its gradient. Rows already there are skipped; another thread or step count is refused before
    any training."""
    import torch

    import smt_hf.trainer

    starts = []  # (student, teacher) state at the start of every phase's training, in order

    class Spy(smt_hf.trainer.SMTTrainer):  # a trainer that only evaluates (the saved teacher's check) is not a phase
        def __init__(self, model=None, teacher=None, **k):
            self.start = ({a: b.clone() for a, b in model.state_dict().items()},
                          None if teacher is None else {a: b.clone() for a, b in teacher.state_dict().items()})
            super().__init__(model=model, teacher=teacher, **k)

        def train(self, *a, **k):
            starts.append(self.start)
            return super().train(*a, **k)

    monkeypatch.setattr(smt_hf.trainer, "SMTTrainer", Spy)
    kw = dict(task="needle", seq_len=8, seed=0, out=str(tmp_path), smt_steps=2, dmt_steps=2)
    n.run(bptt_multiples=(1,), bptt_seconds=0.5, command="first", **kw)  # SMT, DMT one_step, full_rollout, BPTT
    stem = tmp_path / "needle_e2e_T8_s0.json"
    before = json.load(open(stem))
    (init, untrained), (_, smt_teacher) = starts[0], starts[1]  # SMT's start; one-step DMT's (after SMT)
    del starts[:]
    n.run(dmt_from_init=True, command="second", **kw)
    after = json.load(open(stem))
    assert after["rows"][:4] == before["rows"] and after["command"] == "first"
    added = after["rows"][4:]
    assert [r["run"] for r in added] == list(n.FROM_INIT) and [r["steps"] for r in added] == [2, 2]
    assert [r["dmt_gradient"] for r in added] == ["one_step", "full_rollout"]
    assert [r["settings"] for r in added] == [before["settings"]["dmt"], before["settings"]["full_rollout"]]
    assert all(r["command"] == "second" for r in added)
    assert len(starts) == 2
    for student, teacher in starts:
        assert student.keys() == init.keys() and all(torch.equal(student[k], init[k]) for k in init)
        assert all(torch.equal(teacher[k], smt_teacher[k]) for k in smt_teacher)
        assert not all(torch.equal(teacher[k], untrained[k]) for k in untrained)  # SMT trained it
    cells = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[4] for line in
             n.write_summary(str(tmp_path), "needle", 8).splitlines() if line.startswith("| ") and "M |" in line}
    assert cells[n.FROM_INIT[0]] == cells[n.ROWS[1]] != cells[n.FROM_INIT[1]] == cells[n.ROWS[2]]
    n.run(dmt_from_init=True, **kw)  # both rows there: skipped, no training
    assert json.load(open(stem)) == after and len(starts) == 2
    for bad, match in [(dict(threads=2), "threads 1 .this run: 2."), (dict(dmt_from_init=("bptt",)), "supported"),
                       (dict(dmt_matched_steps=2), "settings of its one_step DMT row")]:
        with pytest.raises(ValueError, match=match):
            n.run(**{"dmt_from_init": True, **kw, **bad})
    assert len(starts) == 2
    # one gradient, another step count: named in the row, from the same initialisation
    n.run(**{**kw, "dmt_steps": 3}, dmt_from_init="full_rollout")  # one gradient as a string
    longer = json.load(open(stem))["rows"][6:]
    assert [(r["run"], r["steps"]) for r in longer] == [("DMT full_rollout from init (no SMT, 3 steps)", 3)]
    assert len(starts) == 3 and all(torch.equal(starts[2][0][k], init[k]) for k in init)
    assert [x for x in n.table([json.load(open(stem))]).splitlines() if x.startswith("| ")][-1].startswith(
        "| DMT full_rollout from init (no SMT, 3 steps) |")
    # other DMT settings than the run's SMT -> DMT rows (here: the saved file's one-step DMT): refused, nothing trained
    saved = json.load(open(stem))
    json.dump(dict(saved, settings=dict(saved["settings"], dmt=dict(saved["settings"]["dmt"], learning_rate=1.0))),
              open(stem, "w"))
    with pytest.raises(ValueError, match="settings of its one_step DMT row"):
        n.run(**{**kw, "dmt_steps": 4}, dmt_from_init=True)
    assert len(starts) == 3
    with pytest.raises(ValueError, match="separate runs"):
        n.run(dmt_from_init=True, continue_dmt=True, **kw)
    # a saved teacher that is not the run's (its eval accuracy is not the joint-SMT row's): refused, nothing trained
    acc = saved["rows"][0]["teacher_acc"]
    for wrong in (acc + 2.5 / 512, acc - 0.05):  # 512 held-out needle episodes, one target each
        json.dump(dict(saved, rows=[dict(saved["rows"][0], teacher_acc=wrong), *saved["rows"][1:]]), open(stem, "w"))
        with pytest.raises(ValueError, match="not this run's teacher"):
            n.run(**{**kw, "dmt_steps": 5}, dmt_from_init="one_step")
    assert len(starts) == 3
    # one target off (another machine's floating point): accepted
    json.dump(dict(saved, rows=[dict(saved["rows"][0], teacher_acc=acc - 1 / 512), *saved["rows"][1:]]), open(stem, "w"))
    n.run(**{**kw, "dmt_steps": 5}, dmt_from_init="one_step")
    assert len(starts) == 4 and json.load(open(stem))["rows"][-1]["run"] == n.from_init_row("one_step", 5)


def test_a_run_appending_rows_keeps_the_rows_another_run_appended_meanwhile(tmp_path, monkeypatch):
    """Two runs appending to one seed's JSON at once (say --add-full-rollout and --dmt-from-init, each hours long):
    each save re-reads the file and keeps the rows and drift curves the other wrote since (a save used to write the
    file as this run read it, plus its own rows: the other run's rows were lost)."""
    import smt_hf.trainer

    kw = dict(task="needle", seq_len=8, seed=0, out=str(tmp_path), bptt=False, full_rollout=False, dmt_steps=2)
    n.run(smt_steps=2, command="first", **kw)
    stem = tmp_path / "needle_e2e_T8_s0.json"
    first = json.load(open(stem))
    other = dict(first["rows"][1], run=n.ROWS[1] + " (+1 steps, 3 in all)", command="the other run")
    train = smt_hf.trainer.SMTTrainer.train

    def train_while_another_run_appends(self, *a, **k):
        disk = json.load(open(stem))
        if other not in disk["rows"]:
            disk["rows"].append(other)
            disk["drift"][other["run"]] = [[1, 2], [0.5, 0.6]]
            json.dump(disk, open(stem, "w"))
        return train(self, *a, **k)

    monkeypatch.setattr(smt_hf.trainer.SMTTrainer, "train", train_while_another_run_appends)
    n.run(dmt_from_init=True, command="second", **kw)  # two phases, two saves
    after = json.load(open(stem))
    assert [r["run"] for r in after["rows"]] == [n.ROWS[0], n.ROWS[1], other["run"], *n.FROM_INIT]
    assert after["rows"][:3] == first["rows"] + [other] and after["command"] == "first"
    assert after["drift"][other["run"]] == [[1, 2], [0.5, 0.6]] and set(n.FROM_INIT) <= set(after["drift"])


def test_family_table_puts_other_bptt_multiples_beside_bptt_and_the_dmt_from_init_control_last(tmp_path):
    """Row order of a family table: SMT, one-step DMT and its continuations, full rollout, BPTT 1x then BPTT at other
    multiples (1.2x), 4x, then the DMT-from-init control (a 1.2x BPTT row used to sit among the DMT rows)."""
    def row(name, grad=None):
        return {"run": name, "dmt_gradient": grad, "steps": 10, "seconds": 1.0, "teacher_acc": 1.0,
                "onestep_acc": 0.5, "student_acc": 0.5, "drift_mean": 0.1}

    names = [n.ROWS[0], n.ROWS[1], n.bptt_row(1.2), n.ROWS[1] + " (+5 steps, 15 in all)", n.FROM_INIT[1], n.ROWS[3],
             n.ROWS[2], n.FROM_INIT[0], n.ROWS[4]]
    grads = {n.ROWS[1]: "one_step", n.ROWS[2]: "full_rollout", n.FROM_INIT[0]: "one_step", n.FROM_INIT[1]: "full_rollout"}
    run = {"task": "needle", "family": None, "seq_len": 8, "seed": 0, "machine": "m", "threads": 1, "model": n.MODEL,
           "task_kwargs": {"vocab_size": 16}, "rows": [row(x, grads.get(x)) for x in names]}
    got = [line.split(" | ")[0].lstrip("| ") for line in n.table([run]).splitlines()[2:] if line.startswith("| ")]
    assert got == [n.ROWS[0], n.ROWS[1], n.ROWS[1] + " (+5 steps, 15 in all)", n.ROWS[2], n.ROWS[3], "BPTT (1.2x wall-clock)",
                   n.ROWS[4], *n.FROM_INIT]


def test_fig3_puts_the_dmt_from_init_control_beside_the_smt_dmt_rows_of_the_same_seeds(tmp_path):
    """The control table compares DMT from init with SMT -> DMT over the seeds that ran the control only (seed 1 has
    no control, so its SMT -> DMT rows stay out of the control's columns, not of Fig 3's)."""
    def row(name, acc):
        return {"run": name, "steps": 5, "seconds": 10.0, "teacher_acc": 1.0, "onestep_acc": 0.9, "student_acc": acc}

    def dump(stem, fam, seed, rows, task="stack"):
        json.dump({"task": task, "family": fam, "seq_len": 32, "seed": seed, "machine": "m", "rows": rows},
                  open(tmp_path / f"{stem}.json", "w"))

    dump("stack_e2e_T32_s0", "stack", 0, [row(n.ROWS[0], 0.3), row(n.ROWS[1], 0.9), row(n.ROWS[2], 0.8),
                                          row(n.FROM_INIT[0], 0.1), row(n.FROM_INIT[1], 0.2),
                                          row(n.from_init_row("full_rollout", 99), 0.7)])  # other steps: not this table's
    dump("stack_e2e_T32_s1", "stack", 1, [row(n.ROWS[0], 0.3), row(n.ROWS[1], 0.5), row(n.ROWS[2], 0.6)])
    dump("stack_e2e_T32_s2", "stack", 2, [row(n.ROWS[0], 0.3), row(n.ROWS[1], 0.7), row(n.FROM_INIT[0], 0.3)])
    dump("a_wide_e2e_T32_s0", "a_wide", 0, [row(n.ROWS[0], 0.7), row(n.ROWS[1], 0.7)])  # no control: not in its table
    res = n.fig3(str(tmp_path), 32)
    assert res["stack"]["SMT -> DMT one_step (no BPTT)"]["values"] == [0.9, 0.5, 0.7]  # Fig 3 itself: every seed
    got = json.load(open(tmp_path / "fig3_T32.json"))["control"]
    assert set(got) == {"stack"}
    st = got["stack"]
    from e2e_report import CONTROL_COLUMNS

    one, one_init, _, full, full_init, _ = (c[0] for c in CONTROL_COLUMNS)
    assert st[one]["values"] == [0.9, 0.7] and st[one]["seeds"] == [0, 2] and st[one_init]["values"] == [0.1, 0.3]
    assert st[full]["values"] == [0.8] and st[full_init]["values"] == [0.2]
    assert "truncated BPTT" in full and "truncated BPTT" in full_init and "no BPTT" in one_init
    md = (tmp_path / "fig3_T32.md").read_text()
    control = md[md.index("The control, DMT without SMT"):]
    line = next(x for x in control.splitlines() if x.startswith("| stack"))
    assert line == "| stack | 0.80 ± 0.10 (n=2, 10 s) | 0.20 ± 0.10 (n=2, 10 s) | 0.80 (n=1, 10 s) | 0.20 (n=1, 10 s) |"
    assert "| a_wide" not in control
    dump("needle_e2e_T32_s0", None, 0, [row(n.ROWS[1], 1.0), row(n.FROM_INIT[0], 0.1)], task="needle")
    dump("string_copy_e2e_T32_s0", "string_copy", 0, [row(n.ROWS[1], 0.5), row(n.FROM_INIT[0], 0.1)], task="string_copy")
    n.fig3(str(tmp_path), 32)
    md = (tmp_path / "fig3_T32.md").read_text()
    names = [x.split(" |")[0][2:] for x in md[md.index("The control"):].splitlines() if x.startswith("| ")][1:]
    assert names == ["needle (recipe model)", "string_copy", "stack"]  # Fig 3's order (the paper's task order), not the alphabet


def test_fig3_control_shows_a_longer_one_step_dmt_from_init_beside_it_only_where_one_ran(tmp_path):
    """DMT from init given more steps than SMT -> DMT (`--dmt-from-init one_step --dmt-steps N`, N above the run's):
    a column of its own in the control table, the step count most seeds ran (here the longest, too) over the seeds
    that ran it (a seed with that row only counts too), its steps named above the table; a row with fewer steps is not 'more steps'. No
    family with such a row: no such column (the table as before)."""
    def row(name, acc, steps=5):
        return {"run": name, "steps": steps, "seconds": 10.0 * steps / 5, "teacher_acc": 1.0, "onestep_acc": 0.9,
                "student_acc": acc}

    def dump(seed, rows):
        json.dump({"task": "stack", "family": "stack", "seq_len": 32, "seed": seed, "machine": "m", "rows": rows},
                  open(tmp_path / f"stack_e2e_T32_s{seed}.json", "w"))

    base = [row(n.ROWS[0], 0.3), row(n.ROWS[1], 0.9), row(n.FROM_INIT[0], 0.1)]
    dump(0, base + [row(n.from_init_row("one_step", 3), 0.05, 3)])  # fewer steps than SMT -> DMT's 5: not 'more'
    n.fig3(str(tmp_path), 32)
    md = (tmp_path / "fig3_T32.md").read_text()
    assert "more steps" not in md and "| stack | 0.90 (n=1, 10 s) | 0.10 (n=1, 10 s) |" in md
    dump(0, base + [row(n.from_init_row("one_step", 20), 0.5, 20), row(n.from_init_row("one_step", 40), 0.6, 40)])
    dump(1, [row(n.ROWS[0], 0.3), row(n.ROWS[1], 0.7), row(n.FROM_INIT[0], 0.2), row(n.from_init_row("one_step", 40), 0.8, 40)])
    dump(2, [row(n.ROWS[0], 0.3), row(n.ROWS[1], 0.5), row(n.from_init_row("one_step", 40), 0.4, 40)])  # the longer only
    dump(3, [row(n.ROWS[0], 0.3), row(n.ROWS[1], 0.1), row(n.from_init_row("one_step", 20), 0.9, 20)])  # not 40 steps
    n.fig3(str(tmp_path), 32)
    from e2e_report import CONTROL_COLUMNS

    got = json.load(open(tmp_path / "fig3_T32.json"))["control"]["stack"]
    more = got[CONTROL_COLUMNS[2][0]]  # 40 steps: 3 seeds ran it (20: 2), over those seeds
    assert more["values"] == [0.6, 0.8, 0.4] and more["steps"] == [40, 40, 40] and more["seconds"] == 80.0
    assert got[CONTROL_COLUMNS[0][0]]["seeds"] == [0, 1, 2]  # SMT -> DMT over the seeds that ran a control row
    md = (tmp_path / "fig3_T32.md").read_text()
    assert "(per family: stack 40 steps, against SMT + SMT -> DMT one-step's 20 s)." in md  # 10 s + 10 s, its seeds
    assert json.load(open(tmp_path / "fig3_T32.json"))["control_smt_dmt_seconds"] == {"stack": 20.0}
    header = next(x for x in md[md.index("The control"):].splitlines() if x.startswith("| family"))
    assert header == "| family | " + " | ".join(c[0] for c in CONTROL_COLUMNS[:3]) + " |"  # no full rollout ran: no column
    assert "| stack | 0.70 ± 0.20 (n=3, 10 s) | 0.15 ± 0.05 (n=2, 10 s) | 0.60 ± 0.20 (n=3, 80 s) |" in md


def test_fig3_more_steps_column_is_the_step_count_most_seeds_ran_not_one_seeds_longer_extra_run(tmp_path):
    """A seed's extra 'more steps' run at its own step count (as on associative recall: seed 1 again at 6100
    and seed 0 at 8900 full-rollout steps beside all three seeds' 7400) stays in its JSON but does not take the
    column over: the column is the step count most seeds ran, over those seeds (on a tie, the one nearest the
    seeds' SMT + SMT -> DMT wall-clock, the longer where that is unknown). Fails on 52b44f0, whose column was the
    longest run over the one seed that ran it, and on d32fcaf, where a tie went to the longer run even when it was
    given several times the budget."""
    def row(name, acc, steps=5):
        return {"run": name, "steps": steps, "seconds": float(steps), "teacher_acc": 1.0, "onestep_acc": 0.9,
                "student_acc": acc}

    def dump(seed, extra):
        rows = [row(n.ROWS[0], 0.3), row(n.ROWS[1], 0.9), row(n.ROWS[2], 0.8), row(n.FROM_INIT[1], 0.1)]
        json.dump({"task": "stack", "family": "stack", "seq_len": 32, "seed": seed, "machine": "m",
                   "rows": rows + [row(n.from_init_row("full_rollout", k), acc, k) for k, acc in extra]},
                  open(tmp_path / f"stack_e2e_T32_s{seed}.json", "w"))

    from e2e_report import CONTROL_COLUMNS, longer_from_init_steps

    dump(0, [(74, 0.15), (89, 0.5)])
    dump(1, [(74, 0.42), (61, 0.4)])
    dump(2, [(74, 0.19)])
    n.fig3(str(tmp_path), 32)
    fr = json.load(open(tmp_path / "fig3_T32.json"))["control"]["stack"][CONTROL_COLUMNS[5][0]]
    assert fr["values"] == [0.15, 0.42, 0.19] and fr["steps"] == [74, 74, 74] and fr["seeds"] == [0, 1, 2]
    assert "(per family: stack 74 steps," in (tmp_path / "fig3_T32.md").read_text()
    tie = {seed: {r["run"]: r for r in (row(n.ROWS[2], 0.8), row(n.from_init_row("full_rollout", k), 0.4, k))}
           for seed, k in ((0, 61), (1, 89))}  # rows keyed by name, as fig3 holds them
    assert longer_from_init_steps(tie, "full_rollout") == 89  # one seed each, no SMT row (no budget): the longer
    # as many seeds at each count: the count run in about the seeds' SMT + SMT -> DMT wall-clock, not a run given
    # several times that (parity T=32's headline runs: 3500 full-rollout steps matched, 10000 at about 2.7x)
    def timed(name, steps, seconds):
        return dict(row(name, 0.5, steps), seconds=seconds)

    for short_s, long_s, want in ((1375.0, 3827.0, 3500), (245.0, 1379.0, 10000)):
        both = {seed: {r["run"]: r for r in (timed(n.ROWS[0], 6000, 1300.0), timed(n.ROWS[2], 400, 140.0),
                                              timed(n.from_init_row("full_rollout", 3500), 3500, short_s),
                                              timed(n.from_init_row("full_rollout", 10000), 10000, long_s))}
                for seed in (0, 1)}
        assert longer_from_init_steps(both, "full_rollout") == want
    for rows in both.values():  # rows of 0 s (e.g. rounded away): no budget known, so no ratio, and the longer
        rows[n.ROWS[0]]["seconds"] = rows[n.ROWS[2]]["seconds"] = 0.0
    assert longer_from_init_steps(both, "full_rollout") == 10000


def test_fig3_control_has_a_full_rollout_more_steps_column_set_against_smt_plus_full_rollout(tmp_path):
    """Full-rollout DMT from init given more steps than SMT -> DMT full_rollout (`--dmt-from-init full_rollout
    --dmt-steps N`): a column of its own after the full-rollout control, its steps named above the table against the
    SMT + SMT -> DMT full-rollout wall-clock (not the one-step one); a one-step 'more steps' run does not fill it, nor
    it the one-step column; a full-rollout row with no more steps than SMT -> DMT full_rollout's (or, in a run without
    that row, than SMT -> DMT one-step's) is not 'more steps'."""
    def row(name, acc, steps=5, seconds=None):
        return {"run": name, "steps": steps, "seconds": seconds or 10.0 * steps / 5, "teacher_acc": 1.0,
                "onestep_acc": 0.9, "student_acc": acc}

    def dump(seed, rows):
        json.dump({"task": "stack", "family": "stack", "seq_len": 64, "seed": seed, "machine": "m", "rows": rows},
                  open(tmp_path / f"stack_e2e_T64_s{seed}.json", "w"))

    # one-step DMT 8 steps, full rollout 5: a full-rollout run of 6 steps is 'more steps' (6 > 5), though 6 < 8
    base = [row(n.ROWS[0], 0.3, 10, 100.0), row(n.ROWS[1], 0.9, 8, 30.0), row(n.ROWS[2], 0.95, 5, 20.0),
            row(n.FROM_INIT[0], 0.1, 8), row(n.FROM_INIT[1], 0.2)]
    dump(0, base + [row(n.from_init_row("full_rollout", 5), 0.3)])  # no more steps than SMT -> DMT full_rollout's
    dump(2, [row(n.ROWS[0], 0.3, 10, 100.0), row(n.ROWS[1], 0.9, 8, 30.0), row(n.FROM_INIT[0], 0.1, 8),
             row(n.from_init_row("full_rollout", 6), 0.5, 6)])  # no full-rollout row: 6 < its one-step 8, not 'more'
    n.fig3(str(tmp_path), 64)
    assert "more steps" not in (tmp_path / "fig3_T64.md").read_text()
    (tmp_path / "stack_e2e_T64_s2.json").unlink()
    dump(0, base + [row(n.from_init_row("full_rollout", 6), 0.7, 6), row(n.from_init_row("one_step", 40), 0.4, 40)])
    dump(1, base + [row(n.from_init_row("full_rollout", 6), 0.9, 6, 50.0)])
    n.fig3(str(tmp_path), 64)
    from e2e_report import CONTROL_COLUMNS

    got = json.load(open(tmp_path / "fig3_T64.json"))
    fr = got["control"]["stack"][CONTROL_COLUMNS[5][0]]
    assert CONTROL_COLUMNS[5][0] == "DMT full_rollout from init, more steps (no SMT, truncated BPTT)"
    assert fr["values"] == [0.7, 0.9] and fr["steps"] == [6, 6] and fr["seconds"] == 31.0 and fr["seeds"] == [0, 1]
    assert got["control"]["stack"][CONTROL_COLUMNS[2][0]]["values"] == [0.4]  # the one-step 'more steps' run only
    assert got["control_smt_full_rollout_seconds"] == {"stack": 120.0} and got["control_smt_dmt_seconds"] == {"stack": 130.0}
    md = (tmp_path / "fig3_T64.md").read_text()
    assert "(per family: stack 40 steps, against SMT + SMT -> DMT one-step's 130 s)." in md
    assert ("Full rollout, 'more steps': the same full-rollout DMT from init for more steps than SMT -> DMT "
            "full_rollout's (per family: stack 6 steps, against SMT + SMT -> DMT full-rollout's 120 s).") in md
    header = next(x for x in md[md.index("The control"):].splitlines() if x.startswith("| family"))
    assert header == "| family | " + " | ".join(c[0] for c in CONTROL_COLUMNS) + " |"
    assert "| 0.20 ± 0.00 (n=2, 10 s) | 0.80 ± 0.10 (n=2, 31 s) |" in md  # full rollout from init, then more steps


def test_retrain_teacher_gives_the_control_the_saved_teachers_rows_and_saves_it(tmp_path):
    """--dmt-from-init --retrain-teacher (a run whose saved teacher is gone): joint SMT is re-trained, checked against
    the run's row and its teacher saved; the control's rows equal those the saved teacher gives. --add-full-rollout
    saves its reproduced teacher too, so a control can follow it. A joint-SMT row the re-run does not reproduce is
    refused and nothing is added; retrain_teacher without dmt_from_init is refused."""
    import shutil

    from safetensors.torch import load_file

    kw = dict(task="needle", seq_len=8, seed=0, bptt=False, smt_steps=2, dmt_steps=2)
    n.run(out=str(tmp_path / "a"), command="first", **kw)
    name = "needle_e2e_T8_s0.json"
    os.makedirs(tmp_path / "b")
    shutil.copy(tmp_path / "a" / name, tmp_path / "b" / name)  # the JSON, not the saved student/teacher
    saved_teacher = tmp_path / "a" / "final_needle_T8_s0" / "teacher" / "model.safetensors"
    ref = load_file(saved_teacher)
    with pytest.raises(OSError):  # no saved teacher to label with: the plain control cannot run
        n.run(out=str(tmp_path / "b"), dmt_from_init=True, **kw)
    n.run(out=str(tmp_path / "a"), dmt_from_init=True, **kw)
    n.run(out=str(tmp_path / "b"), dmt_from_init=True, retrain_teacher=True, **kw)
    a, b = (json.load(open(tmp_path / d / name)) for d in "ab")
    assert [r["run"] for r in b["rows"]] == [r["run"] for r in a["rows"]] == [*n.ROWS[:3], *n.FROM_INIT]
    assert [{k: r[k] for k in ("steps", *n.METRICS)} for r in b["rows"]] == \
           [{k: r[k] for k in ("steps", *n.METRICS)} for r in a["rows"]]
    again = load_file(tmp_path / "b" / "final_needle_T8_s0" / "teacher" / "model.safetensors")
    assert again.keys() == ref.keys() and all(bool((again[k] == ref[k]).all()) for k in ref)
    # --add-full-rollout saves the teacher it reproduced
    n.run(out=str(tmp_path / "c"), full_rollout=False, **kw)
    shutil.rmtree(tmp_path / "c" / "final_needle_T8_s0")
    n.run(out=str(tmp_path / "c"), add_full_rollout=True, **kw)
    again = load_file(tmp_path / "c" / "final_needle_T8_s0" / "teacher" / "model.safetensors")
    assert all(bool((again[k] == ref[k]).all()) for k in ref)
    # a folder holding another run's teacher: kept as it is (not overwritten); the control uses the reproduced one
    os.makedirs(tmp_path / "e")
    shutil.copy(tmp_path / "a" / name, tmp_path / "e" / name)
    other = tmp_path / "e" / "final_needle_T8_s0" / "teacher"
    n.run(out=str(tmp_path / "o"), **{**kw, "seed": 1})  # another seed's teacher
    shutil.copytree(tmp_path / "o" / "final_needle_T8_s1" / "teacher", other)
    theirs = load_file(other / "model.safetensors")
    with open(tmp_path / "e" / name, "w") as f:  # the run's rows before its control
        json.dump(dict(a, rows=a["rows"][:3]), f)
    n.run(out=str(tmp_path / "e"), dmt_from_init=True, retrain_teacher=True, **kw)
    kept = load_file(other / "model.safetensors")
    assert all(bool((kept[k] == theirs[k]).all()) for k in theirs) and any(bool((theirs[k] != ref[k]).any()) for k in ref)
    e = json.load(open(tmp_path / "e" / name))
    assert [{k: r[k] for k in ("steps", *n.METRICS)} for r in e["rows"]] == \
           [{k: r[k] for k in ("steps", *n.METRICS)} for r in a["rows"]]
    # another SMT state than the re-run gives: refused, nothing added, no teacher saved
    os.makedirs(tmp_path / "d")
    bad = json.load(open(tmp_path / "a" / name))
    bad["rows"] = [dict(bad["rows"][0], student_acc=bad["rows"][0]["student_acc"] + 0.01), *bad["rows"][1:3]]
    with open(tmp_path / "d" / name, "w") as f:
        json.dump(bad, f)
    with pytest.raises(ValueError, match="differs .* no DMT-from-init row is added"):
        n.run(out=str(tmp_path / "d"), dmt_from_init=True, retrain_teacher=True, **kw)
    assert json.load(open(tmp_path / "d" / name)) == bad and not os.path.exists(tmp_path / "d" / "final_needle_T8_s0")
    with pytest.raises(ValueError, match="with dmt_from_init"):
        n.run(out=str(tmp_path / "a"), retrain_teacher=True, **kw)


def test_matched_from_init_steps_is_smt_plus_dmt_time_over_the_controls_pace(tmp_path):
    """The step count of a 'more steps' DMT-from-init run (`e2e_report.py --matched-steps`): the mean over the seeds
    with the control row of joint SMT + SMT -> DMT (that gradient) seconds, over the mean of the control rows' seconds
    per step, to the nearest 100. A seed without the control and a BPTT-only JSON do not count; no control: refused."""
    import subprocess

    from e2e_report import matched_from_init_steps

    def row(name, steps, seconds):
        return {"run": name, "steps": steps, "seconds": seconds, "student_acc": 0.5}

    def dump(name, seed, rows):
        json.dump({"task": "stack", "seq_len": 32, "seed": seed, "rows": rows}, open(tmp_path / name, "w"))

    with pytest.raises(ValueError, match="--dmt-from-init one_step first"):
        matched_from_init_steps(str(tmp_path), "stack_e2e_T32")
    dump("stack_e2e_T32_s0.json", 0, [row(n.ROWS[0], 900, 300.0), row(n.ROWS[1], 400, 100.0),
                                      row(n.ROWS[2], 400, 140.0), row(n.FROM_INIT[0], 400, 80.0),
                                      row(n.FROM_INIT[1], 400, 120.0)])
    dump("stack_e2e_T32_s1.json", 1, [row(n.ROWS[0], 900, 500.0), row(n.ROWS[1], 400, 100.0),
                                      row(n.FROM_INIT[0], 400, 40.0)])
    dump("stack_e2e_T32_s2.json", 2, [row(n.ROWS[0], 900, 9000.0), row(n.ROWS[1], 400, 9000.0)])  # no control
    dump("stack_e2e_T32_s0_bptt_x4.json", 0, [row(n.ROWS[0], 900, 9000.0), row(n.ROWS[1], 400, 9000.0),
                                              row(n.FROM_INIT[0], 400, 1.0)])
    steps, d = matched_from_init_steps(str(tmp_path), "stack_e2e_T32")
    # (400 + 600) / 2 s over (0.2 + 0.1) / 2 s per step = 3333.3 -> 3300
    assert d["seeds"] == [0, 1] and d["budget_s"] == 500.0 and abs(d["s_per_step"] - 0.15) < 1e-12 and steps == 3300
    assert matched_from_init_steps(str(tmp_path), "stack_e2e_T32", "full_rollout")[0] == 1500  # 440 s / 0.3 s, seed 0
    recipes = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
    dump("stack_e2e_T32_s10.json", 10, [row(n.ROWS[0], 900, 300.0), row(n.ROWS[1], 400, 100.0),
                                        row(n.FROM_INIT[0], 400, 80.0)])  # 466.7 s / 0.1667 s = 2800
    cmd = [sys.executable, os.path.join(recipes, "e2e_report.py"), "--matched-steps", "one_step", "--stem",
           "stack_e2e_T32", "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert out.stdout == "2800\n" and "seeds [0, 1, 10]" in out.stderr
    cmd[3] = "full_rollout"
    dump("stack_e2e_T32_s0.json", 0, [row(n.ROWS[0], 900, 300.0), row(n.ROWS[1], 400, 100.0)])  # no control left
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 1 and "run --dmt-from-init full_rollout first" in out.stderr and not out.stdout
