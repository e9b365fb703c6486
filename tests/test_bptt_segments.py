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

X4 = n.bptt_row(4)


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
def test_a_bptt_trainer_stopped_by_a_deadline_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch, compiled):
    """BPTT (the mode of the resumable rows), with and without the compiled recurrent step: a Deadline after step 3
    saves checkpoint-3 (whatever save_strategy says) and stops; new weights resumed from it reach, at step 6, the
    weights of 6 uninterrupted steps."""
    monkeypatch.setattr(Deadline, "due", lambda self, state: state.global_step >= 3)

    def train(out, seed, callbacks, resume=None):
        torch.manual_seed(seed)
        args = SMTTrainingArguments(output_dir=str(out), mode="bptt", context_length=8, max_steps=6, learning_rate=3e-3,
                                    per_device_train_batch_size=4, report_to="none", save_strategy="no",
                                    use_cpu=True, disable_tqdm=True, logging_steps=100,
                                    recurrent_step_compile="default" if compiled else None)
        tr = SMTTrainer(model=SMTRecurrentForCausalLM(tiny_student_config()), args=args,
                        train_dataset=make_task("needle", 64, 8, 0, vocab_size=16), callbacks=callbacks)
        tr.train(resume_from_checkpoint=resume)
        return tr

    whole = train(tmp_path / "whole", 0, []).model.state_dict()
    stop = Deadline(at=0.0)
    first = train(tmp_path / "split", 0, [stop])
    assert stop.reached and first.state.global_step == 3 and os.listdir(tmp_path / "split") == ["checkpoint-3"]
    resumed = train(tmp_path / "resumed", 123, [], resume=str(tmp_path / "split" / "checkpoint-3"))
    assert resumed.state.global_step == 6
    got = resumed.model.state_dict()
    at3 = first.model.state_dict()
    assert any(not torch.equal(got[k], v) for k, v in at3.items())  # it trained on from step 3
    assert all(torch.allclose(got[k], v, rtol=1e-5, atol=1e-7) for k, v in whole.items()), \
        [k for k, v in whole.items() if not torch.allclose(got[k], v, rtol=1e-5, atol=1e-7)]


def _by_steps(monkeypatch, budget_steps, stop_step):
    """The time budget and the deadline counted in optimizer steps, so runs stop at the same step."""
    def budget_end(self, args, state, control, **kw):
        if state.global_step >= budget_steps:
            control.should_training_stop = self.exhausted = True

    monkeypatch.setattr(TimeBudget, "on_step_end", budget_end)
    monkeypatch.setattr(Deadline, "due", lambda self, state: state.global_step >= stop_step)


def _run(out, **kw):
    return n.run(task="needle", seq_len=8, seed=0, out=str(out), bptt_seconds=1000.0, bptt_only=True,
                 bptt_multiples=(1, 4), **kw)


def test_a_bptt_row_stopped_and_resumed_ends_as_the_uninterrupted_row(tmp_path, monkeypatch):
    """Stopped after step 2 of 4 (checkpoint: weights, optimizer, scheduler, RNG, data position), then resumed: the
    row's metrics equal the uninterrupted run's, its seconds are its segments' sum, the checkpoints are removed."""
    _by_steps(monkeypatch, budget_steps=4, stop_step=2)
    whole = _run(tmp_path / "whole")
    assert [r["steps"] for r in whole] == [4, 4]
    split = tmp_path / "split"
    first = _run(split, stop_at=0.0)  # the 1x row: 2 steps, stopped; the 4x row waits for it
    assert first == [] and not os.path.exists(split / "needle_e2e_T8_s0_bptt_x1_4.json")
    folder = split / "checkpoints" / "needle_e2e_T8_s0_bptt_x1_4_x1"
    record = json.loads((folder / "segments.json").read_text())
    assert [s["steps"] for s in record["segments"]] == [2]
    assert sorted(os.listdir(folder)) == ["checkpoint-2", "segments.json"]
    with pytest.raises(ValueError, match="pass --resume"):
        _run(split)  # the stopped row is not started over silently
    _by_steps(monkeypatch, budget_steps=4, stop_step=10**9)
    rows = _run(split, resume=True)
    assert [r["run"] for r in rows] == [n.ROWS[3], X4] and [r["steps"] for r in rows] == [4, 4]
    for a, b in zip(whole, rows):
        assert {k: a[k] for k in n.METRICS} == {k: b[k] for k in n.METRICS}  # NaN-free here: == is exact
    assert len(rows[0]["segments"]) == 2 and rows[0]["seconds"] == pytest.approx(sum(rows[0]["segments"]), abs=0.11)
    assert "segments" not in rows[1]  # one segment: as an uninterrupted row
    assert not os.path.exists(folder) and not os.listdir(split / "checkpoints")
    saved = json.loads((split / "needle_e2e_T8_s0_bptt_x1_4.json").read_text())
    assert [r["run"] for r in saved["rows"]] == [n.ROWS[3], X4]
    again = _run(split, resume=True)  # both rows there: nothing re-runs
    assert again == saved["rows"]


def test_a_resumed_segment_must_run_the_first_ones_budget_and_settings(tmp_path, monkeypatch):
    _by_steps(monkeypatch, budget_steps=4, stop_step=1)
    _run(tmp_path, stop_at=0.0)
    with pytest.raises(ValueError, match=r"budget_seconds 1000\.0 \(this run: 2000\.0\)"):
        n.run(task="needle", seq_len=8, seed=0, out=str(tmp_path), bptt_seconds=2000.0, bptt_only=True,
              bptt_multiples=(1, 4), resume=True)
    with pytest.raises(ValueError, match="learning_rate"):
        _run(tmp_path, resume=True, bptt_lr=3e-3)
    # the record is untouched by the refusals
    assert len(json.loads((tmp_path / "checkpoints" / "needle_e2e_T8_s0_bptt_x1_4_x1" / "segments.json")
                          .read_text())["segments"]) == 1


def test_segments_are_refused_outside_a_bptt_only_run(tmp_path):
    with pytest.raises(ValueError, match="give them with bptt_only"):
        n.run(task="needle", seq_len=8, seed=0, out=str(tmp_path), stop_at=0.0)
    with pytest.raises(SystemExit):
        n.cli(["--seq-len", "8", "--resume", "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())
