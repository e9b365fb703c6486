"""BPTT rows in segments (recipes/needle_e2e.py --stop-after / --resume, recipes/e2e_segments.py): a row stopped at a
deadline and resumed ends where the uninterrupted row ends, its wall-clock is the sum of its segments', and a resumed
segment that would run another budget, machine or settings is refused."""

import json
import os
import sys

import pytest
import torch
from conftest import tiny_student_config

from smt_hf import SMTRecurrentForCausalLM, SMTTrainer, SMTTrainingArguments, make_task
from smt_hf.callbacks import Deadline, TimeBudget

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))
import needle_e2e as n  # noqa: E402
from e2e_segments import Segments  # noqa: E402

X4 = n.bptt_row(4)
FUTURE = 4e9  # a deadline not yet passed (the tests' Deadline.due counts steps instead)


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def time(self):
        return self.now


def test_time_budget_counts_the_seconds_of_earlier_segments(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr("smt_hf.callbacks.time", clock)
    state, control = object(), type("C", (), {"should_training_stop": False, "should_save": False})()
    budget = TimeBudget(100, spent=60)
    budget.on_train_begin(None, state, control)
    clock.now += 39
    budget.on_step_end(None, state, control)
    assert not control.should_training_stop and not budget.exhausted
    clock.now += 1  # 60 s earlier + 40 s now = the budget
    budget.on_step_end(None, state, control)
    assert control.should_training_stop and budget.exhausted
    deadline = Deadline(at=clock.now + 5)
    deadline.on_step_end(None, state, control)
    assert not control.should_save and not deadline.reached
    clock.now += 5
    deadline.on_step_end(None, state, control)
    assert control.should_save and deadline.reached
    for bad in (dict(seconds=10, spent=10), dict(seconds=10, spent=-1)):
        with pytest.raises(ValueError, match="already used"):
            TimeBudget(**bad)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("stop", [3, 4])
def test_a_bptt_trainer_stopped_by_a_deadline_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch, compiled,
                                                                                  stop):
    """BPTT (the mode of the resumable rows), with and without the compiled recurrent step, 3 steps an epoch: a
    Deadline after step 3 (an epoch's end) or 4 (inside the second epoch) saves checkpoint-<step> (whatever
    save_strategy says) and stops; other weights resumed from it reach, at step 7, the weights of 7 uninterrupted
    steps."""
    monkeypatch.setattr(Deadline, "due", lambda self, state: state.global_step >= stop)

    def train(out, seed, callbacks, resume=None):
        torch.manual_seed(seed)
        args = SMTTrainingArguments(output_dir=str(out), mode="bptt", context_length=8, max_steps=7, learning_rate=3e-3,
                                    per_device_train_batch_size=4, report_to="none", save_strategy="no",
                                    use_cpu=True, disable_tqdm=True, logging_steps=100,
                                    recurrent_step_compile="default" if compiled else None)
        tr = SMTTrainer(model=SMTRecurrentForCausalLM(tiny_student_config()), args=args,
                        train_dataset=make_task("needle", 12, 8, 0, vocab_size=16), callbacks=callbacks)
        tr.train(resume_from_checkpoint=resume)
        return tr

    whole = train(tmp_path / "whole", 0, []).model.state_dict()
    deadline = Deadline(at=0.0)
    first = train(tmp_path / "split", 0, [deadline])
    assert deadline.reached and first.state.global_step == stop
    assert os.listdir(tmp_path / "split") == [f"checkpoint-{stop}"]
    at_stop = {k: v.clone() for k, v in first.model.state_dict().items()}
    resumed = train(tmp_path / "resumed", 123, [], resume=str(tmp_path / "split" / f"checkpoint-{stop}"))
    assert resumed.state.global_step == 7
    got = resumed.model.state_dict()
    assert any(not torch.equal(got[k], v) for k, v in at_stop.items())  # it trained on from the checkpoint
    assert all(torch.allclose(got[k], v, rtol=1e-5, atol=1e-7) for k, v in whole.items()), \
        [k for k, v in whole.items() if not torch.allclose(got[k], v, rtol=1e-5, atol=1e-7)]


def _by_steps(monkeypatch, budget_steps, stop_step):
    """The time budget and the deadline counted in optimizer steps, so runs stop at the same step; returns the
    `spent` of every TimeBudget made."""
    spent, init = [], TimeBudget.__init__

    def budget_init(self, seconds, spent_=0.0, **kw):
        init(self, seconds, kw.get("spent", spent_))
        spent.append(self.spent)

    def budget_end(self, args, state, control, **kw):
        if state.global_step >= budget_steps:
            control.should_training_stop = self.exhausted = True

    monkeypatch.setattr(TimeBudget, "__init__", budget_init)
    monkeypatch.setattr(TimeBudget, "on_step_end", budget_end)
    monkeypatch.setattr(Deadline, "due", lambda self, state: state.global_step >= stop_step)
    return spent


def _run(out, seconds=1000.0, bptt_multiples=(1, 4), **kw):
    return n.run(task="needle", seq_len=8, seed=0, out=str(out), bptt_seconds=seconds, bptt_only=True,
                 bptt_multiples=bptt_multiples, **kw)


FOLDER = ("checkpoints", "needle_e2e_T8_s0_bptt_x1_4_x1")


def test_a_bptt_row_stopped_and_resumed_ends_as_the_uninterrupted_row(tmp_path, monkeypatch):
    """Stopped after step 2 of 4 (checkpoint: weights, optimizer, scheduler, RNG, data position), then resumed: the
    row's metrics equal the uninterrupted run's, the resumed TimeBudget counts the first segment's seconds, the row's
    seconds are its segments' sum, the checkpoints are removed."""
    _by_steps(monkeypatch, budget_steps=4, stop_step=2)
    whole = _run(tmp_path / "whole")
    assert [r["steps"] for r in whole] == [4, 4]
    split = tmp_path / "split"
    first = _run(split, stop_at=FUTURE)  # the 1x row: 2 steps, stopped; the 4x row waits for it
    assert first == [] and not os.path.exists(split / "needle_e2e_T8_s0_bptt_x1_4.json")
    folder = split.joinpath(*FOLDER)
    record = json.loads((folder / "segments.json").read_text())
    assert [s["steps"] for s in record["segments"]] == [2]
    assert sorted(os.listdir(folder)) == ["checkpoint-2", "segments.json"]
    with pytest.raises(ValueError, match="pass --resume"):
        _run(split)  # the stopped row is not started over silently
    spent = _by_steps(monkeypatch, budget_steps=4, stop_step=10**9)
    (folder / "checkpoint-3").mkdir()  # a checkpoint no record names (a segment killed before recording): not used
    rows = _run(split, resume=True, command="python second --resume")
    assert rows[0]["command"] == rows[1]["command"] == "python second --resume"  # each appended row: its own
    assert spent == [record["segments"][0]["seconds"], 0.0]  # the 1x row resumed, the 4x row from the start
    assert [r["run"] for r in rows] == [n.ROWS[3], X4] and [r["steps"] for r in rows] == [4, 4]
    for a, b in zip(whole, rows):
        assert {k: a[k] for k in n.METRICS} == {k: b[k] for k in n.METRICS}  # NaN-free here: == is exact
    assert [s["steps"] for s in rows[0]["segments"]] == [2, 4]
    assert rows[0]["seconds"] == pytest.approx(sum(s["seconds"] for s in rows[0]["segments"]), abs=0.11)
    assert "segments" not in rows[1]  # one segment: as an uninterrupted row
    assert not os.path.exists(split / "checkpoints")  # (emptied, then removed)
    first, second = (s["seconds"] for s in rows[0]["segments"])
    assert f"s0 1000 s [2 segments: {first:.0f} + {second:.0f} s], s0 4000 s (4x wall-clock)" in \
        (split / "needle_e2e_T8.md").read_text()  # the table says how the row ran
    saved = json.loads((split / "needle_e2e_T8_s0_bptt_x1_4.json").read_text())
    assert [r["run"] for r in saved["rows"]] == [n.ROWS[3], X4]
    again = _run(split, resume=True, command="python third --resume")  # both rows there: nothing re-runs
    assert again == saved["rows"]
    assert json.loads((split / "needle_e2e_T8_s0_bptt_x1_4.json").read_text()) == saved  # (its command kept too)
    with pytest.raises(ValueError, match="rows run in segments over sessions: pass --resume"):
        _run(split)  # a plain re-run would overwrite the rows of two sessions


def test_a_resume_keeps_only_rows_of_the_same_budget(tmp_path, monkeypatch):
    """1x done, 4x stopped before it started (the deadline): a --resume with another --bptt-seconds would have kept
    the 1x row of the old budget beside a 4x row of the new one (was: silently); refused before any work."""
    _by_steps(monkeypatch, budget_steps=2, stop_step=10**9)
    _run(tmp_path, bptt_multiples=(1,))
    os.rename(tmp_path / "needle_e2e_T8_s0_bptt.json", tmp_path / "needle_e2e_T8_s0_bptt_x1_4.json")
    monkeypatch.setattr(n, "episodes", lambda *a, **k: pytest.fail("built the episodes before refusing"))
    with pytest.raises(ValueError, match=r"row with a 1000\.0 s budget \(this run: 2000\.0 s\)"):
        _run(tmp_path, seconds=2000.0, resume=True)


def test_a_record_just_under_the_budget_resumes(tmp_path, capsys):
    """Seconds are recorded unrounded: 15.96 s of a 16 s budget is not 'the budget reached' (was: rounded to 16.0,
    a row no --resume could finish)."""
    folder = tmp_path / "checkpoints" / "row"
    first = Segments.open(str(folder), {"budget_seconds": 16.0}, resume=False)
    (folder / "checkpoint-5").mkdir(parents=True)  # (as the Deadline's save)
    first.record(15.96, 5)
    again = Segments.open(str(folder), {"budget_seconds": 16.0}, resume=True)
    assert again.spent == 15.96 and again.checkpoint == str(folder / "checkpoint-5")
    Segments.open(str(tmp_path / "checkpoints" / "other"), {"budget_seconds": 16.0}, resume=True)
    out = capsys.readouterr().out
    assert "other: nothing stopped there" in out and "stopped rows in" in out and "['row']" in out


def test_a_deadline_that_comes_with_the_budget_writes_the_row(tmp_path, monkeypatch):
    """The deadline on the budget's last step, or past the budget once the segments' setup and save are counted:
    the row is written (was: recorded as a segment that no --resume could continue), and no checkpoint is left."""
    _by_steps(monkeypatch, budget_steps=2, stop_step=2)
    rows = _run(tmp_path / "same_step", stop_at=FUTURE)
    assert [r["steps"] for r in rows] == [2, 2]
    _by_steps(monkeypatch, budget_steps=10**9, stop_step=2)
    rows = _run(tmp_path / "past", seconds=1e-6, stop_at=FUTURE)  # stopped at step 2, but 1e-6 s were spent long since
    assert [r["steps"] for r in rows] == [2, 2]
    for out in ("same_step", "past"):
        assert not os.path.exists(tmp_path / out / "checkpoints")


def test_a_resumed_segment_must_run_the_first_ones_budget_and_settings(tmp_path, monkeypatch):
    _by_steps(monkeypatch, budget_steps=4, stop_step=1)
    _run(tmp_path, stop_at=FUTURE)
    monkeypatch.setattr(n, "episodes", lambda *a, **k: pytest.fail("built the episodes before refusing"))
    with pytest.raises(ValueError, match=r"budget_seconds 1000\.0 \(this run: 2000\.0\)"):
        _run(tmp_path, seconds=2000.0, resume=True)
    with pytest.raises(ValueError, match="learning_rate"):
        _run(tmp_path, resume=True, bptt_lr=3e-3)
    folder = tmp_path.joinpath(*FOLDER)
    assert len(json.loads((folder / "segments.json").read_text())["segments"]) == 1  # untouched by the refusals
    os.rename(folder / "checkpoint-1", folder / "gone")
    with pytest.raises(ValueError, match="checkpoint-1, which is gone"):
        _run(tmp_path, resume=True)


def test_a_stopped_row_is_refused_before_the_rows_ahead_of_it_train(tmp_path, monkeypatch):
    """1x ran out its budget (a step a 1000 s), 4x was stopped at step 2: the same command without --resume is
    refused before the episodes are built (was: the 1x row trained again, overwrote the JSON, then the refusal)."""
    _by_steps(monkeypatch, budget_steps=10**9, stop_step=2)
    monkeypatch.setattr(TimeBudget, "on_step_end", lambda self, args, state, control, **kw: setattr(
        control, "should_training_stop", state.global_step >= self.seconds / 1000) or setattr(
        self, "exhausted", control.should_training_stop))
    assert [r["steps"] for r in _run(tmp_path, stop_at=FUTURE)] == [1]
    monkeypatch.setattr(n, "episodes", lambda *a, **k: pytest.fail("built the episodes before refusing"))
    with pytest.raises(ValueError, match="pass --resume"):
        _run(tmp_path)


def test_no_seed_starts_past_the_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr(n, "episodes", lambda *a, **k: pytest.fail("built the episodes past the deadline"))
    assert _run(tmp_path, stop_at=1.0, resume=True) == []  # 1.0 (seconds since the epoch): long past
    assert not list(tmp_path.iterdir())


def test_no_row_starts_past_the_deadline(tmp_path, monkeypatch):
    """The 1x row ran out its budget (step 1); the clock then passes the deadline: the 4x row is not started (no
    checkpoint folder, no row), and a --resume later runs it."""
    late = []
    _by_steps(monkeypatch, budget_steps=1, stop_step=10**9)
    done = TimeBudget.on_step_end
    monkeypatch.setattr(TimeBudget, "on_step_end", lambda self, *a, **k: done(self, *a, **k) or late.append(1))
    real = n.time.time
    monkeypatch.setattr(n.time, "time", lambda: real() + (1e10 if late else 0.0))
    assert [r["run"] for r in _run(tmp_path, stop_at=real() + 3600)] == [n.ROWS[3]]
    assert not os.path.exists(tmp_path / "checkpoints")
    monkeypatch.undo()
    _by_steps(monkeypatch, budget_steps=1, stop_step=10**9)
    assert [r["run"] for r in _run(tmp_path, resume=True)] == [n.ROWS[3], X4]


def test_a_checkpoint_without_a_record_is_refused_not_deleted(tmp_path, monkeypatch):
    """A first segment killed after its checkpoint and before its record: its seconds are unknown, so the row is
    refused, with or without --resume, and the checkpoint kept (was: deleted without a word)."""
    stale = tmp_path.joinpath(*FOLDER) / "checkpoint-7"
    stale.mkdir(parents=True)
    monkeypatch.setattr(n, "episodes", lambda *a, **k: pytest.fail("built the episodes before refusing"))
    for resume in (False, True):
        with pytest.raises(ValueError, match="holds checkpoints but no segments.json"):
            _run(tmp_path, resume=resume)
    assert stale.is_dir()
    stale.rmdir()  # an empty folder left by a kill: removed, the row starts
    monkeypatch.undo()
    _by_steps(monkeypatch, budget_steps=1, stop_step=10**9)
    assert [r["steps"] for r in _run(tmp_path)] == [1, 1]


def test_a_record_of_the_first_version_resumes(tmp_path, monkeypatch, capsys):
    """The two rows stopped by 09aa415's code: no `versions` / `training` in the record, seconds and budget rounded,
    no commit or command per segment. --resume continues them, counting the recorded seconds, and says what it
    could not check."""
    _by_steps(monkeypatch, budget_steps=4, stop_step=2)
    _run(tmp_path, seconds=2470.4, bptt_multiples=(4,), stop_at=FUTURE)
    folder = tmp_path / "checkpoints" / "needle_e2e_T8_s0_bptt_x4_x4"
    record = json.loads((folder / "segments.json").read_text())
    for k in ("versions", "training"):
        del record["expect"][k]
    record["expect"]["budget_seconds"] = 9881.6
    record["segments"] = [{"seconds": 7600.3, "steps": 2, "ended": "2026-12-07 06:45:01 UTC"}]
    (folder / "segments.json").write_text(json.dumps(record))
    spent = _by_steps(monkeypatch, budget_steps=4, stop_step=10**9)
    rows = _run(tmp_path, seconds=2470.4, bptt_multiples=(4,), resume=True, command="python b --resume")
    assert "does not record ['training', 'versions']" in capsys.readouterr().out
    assert spent == [7600.3] and [r["steps"] for r in rows] == [4]
    assert [s.get("command") for s in rows[0]["segments"]] == [None, "python b --resume"]
    assert rows[0]["seconds"] == pytest.approx(7600.3 + rows[0]["segments"][1]["seconds"], abs=0.11)
    assert rows[0]["budget_seconds"] == 9881.6


def test_a_resume_keeps_the_json_first_command_and_each_segment_its_own(tmp_path, monkeypatch):
    _by_steps(monkeypatch, budget_steps=10**9, stop_step=2)
    monkeypatch.setattr(TimeBudget, "on_step_end", lambda self, args, state, control, **kw: setattr(
        control, "should_training_stop", state.global_step >= self.seconds / 1000) or setattr(
        self, "exhausted", control.should_training_stop))
    _run(tmp_path, stop_at=FUTURE, command="python a --stop-after 9")  # 1x: a row; 4x: stopped at step 2
    rows = _run(tmp_path, resume=True, command="python b --resume")
    saved = json.loads((tmp_path / "needle_e2e_T8_s0_bptt_x1_4.json").read_text())
    assert saved["command"] == "python a --stop-after 9" and rows == saved["rows"]
    assert rows[0].get("command") is None and rows[1]["command"] == "python b --resume"  # the 1x row: the file's
    assert [s["command"] for s in rows[1]["segments"]] == ["python a --stop-after 9", "python b --resume"]
    assert [s["steps"] for s in rows[1]["segments"]] == [2, 4] and rows[1]["budget_seconds"] == 4000.0


def test_segments_are_refused_outside_a_bptt_only_run(tmp_path, capsys):
    with pytest.raises(ValueError, match="give them with bptt_only"):
        n.run(task="needle", seq_len=8, seed=0, out=str(tmp_path), stop_at=1.0)
    with pytest.raises(SystemExit):
        n.cli(["--seq-len", "8", "--resume", "--out", str(tmp_path)])
    assert "give them with --bptt-only" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_segment_records_the_commit_it_started_on(tmp_path, monkeypatch):
    """A segment's commit is the checkout's HEAD when it started, not when it ended (was: read at the end, so a
    commit made while it ran was named as its code), and its start and end times are recorded and kept in the row."""
    import e2e_segments

    head = {"now": "a" * 40}  # the checkout's HEAD, moved by commits made while a segment runs
    monkeypatch.setattr(e2e_segments, "git_commit", lambda: head["now"])
    folder = tmp_path / "checkpoints" / "row"
    first = Segments.open(str(folder), {"budget_seconds": 16.0}, resume=False)  # starts on a...
    (folder / "checkpoint-5").mkdir(parents=True)
    head["now"] = "b" * 40
    first.record(10.0, 5)  # ...and ends after b was committed
    second = Segments.open(str(folder), {"budget_seconds": 16.0}, resume=True)  # starts on b...
    head["now"] = "c" * 40
    row = {"steps": 8}
    second.finish(row, 6.0)  # ...and ends after c
    assert [s["commit"] for s in row["segments"]] == ["a" * 40, "b" * 40]
    assert all(s["started"] <= s["ended"] for s in row["segments"]) and row["seconds"] == 16.0
    with open(folder / "segments.json") as f:
        assert json.load(f)["segments"][0]["commit"] == "a" * 40
