"""Trainer callbacks for SMT runs."""

from __future__ import annotations

import time

from transformers import TrainerCallback


class TimeBudget(TrainerCallback):
    """Stop training once `seconds` of training wall-clock have passed: `spent` (seconds of earlier segments of the
    same run, for a run resumed from a checkpoint) plus the time since `on_train_begin`, checked after every
    optimizer step, so the last step may end past the budget. Used to give BPTT the same wall-clock as SMT->DMT.

    Args:
        seconds: the budget (> 0).
        spent: seconds of the budget already used by earlier segments (>= 0, < `seconds`).

    Attributes:
        exhausted: True once the budget stopped training.

    Raises:
        ValueError: `seconds` is not positive, or `spent` is negative or not below `seconds`.
    """

    def __init__(self, seconds: float, spent: float = 0.0):
        if not seconds > 0:
            raise ValueError(f"TimeBudget(seconds={seconds!r}): pass a positive number of seconds (or no callback).")
        if not 0 <= spent < seconds:
            raise ValueError(f"TimeBudget(spent={spent!r}): the seconds already used must be >= 0 and below the "
                             f"budget ({seconds!r}).")
        self.seconds, self.spent = seconds, spent
        self.t0, self.exhausted = None, False

    def on_train_begin(self, args, state, control, **kw):
        self.t0 = time.time()

    def on_step_end(self, args, state, control, **kw):
        if self.spent + time.time() - self.t0 >= self.seconds:
            control.should_training_stop = self.exhausted = True


class Deadline(TrainerCallback):
    """Save a checkpoint and stop training after the first optimizer step that ends at or past `at` (seconds since
    the epoch, as `time.time()`), so that `train(resume_from_checkpoint=...)` can continue the run later (e.g. a
    wall-clock-budgeted run longer than one machine session: recipes/needle_e2e.py `--stop-after`). The checkpoint is
    `<output_dir>/checkpoint-<step>`, saved whatever `save_strategy` says.

    Args:
        at: the deadline, in seconds since the epoch (`time.time() + 3600`: an hour from now), not a duration.

    Attributes:
        reached: True once the deadline stopped training.
    """

    def __init__(self, at: float):
        self.at, self.reached = at, False

    def due(self, state) -> bool:
        return time.time() >= self.at

    def on_step_end(self, args, state, control, **kw):
        if self.due(state):
            control.should_save = control.should_training_stop = self.reached = True


class SeqLenCurriculumCheck(TrainerCallback):
    """Refuse, when training begins, a `seq_len_curriculum` whose last length would start after the run's last step
    (`state.max_steps`, which an epoch-based run only knows then; runs with `max_steps` are checked by
    SMTTrainingArguments). Added by SMTTrainer when the curriculum is set.

    Raises:
        ValueError: on_train_begin, the last stage starts at step (stages - 1) * steps >= state.max_steps.
    """

    def on_train_begin(self, args, state, control, **kw):
        start = (len(args.seq_len_curriculum) - 1) * args.seq_len_curriculum_steps
        if state.max_steps <= start:
            raise ValueError(f"`seq_len_curriculum` {args.seq_len_curriculum} with {args.seq_len_curriculum_steps} "
                             f"steps per stage reaches its last length at step {start}, but this run has "
                             f"{state.max_steps} optimizer steps; shorten the stages or train longer.")
