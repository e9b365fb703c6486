"""Trainer callbacks for SMT runs."""

from __future__ import annotations

import time

from transformers import TrainerCallback


class TimeBudget(TrainerCallback):
    """Stop training once `seconds` of training wall-clock have passed since `on_train_begin` (checked after every
    optimizer step, so the last step may end past the budget). Used to give BPTT the same wall-clock as SMT->DMT.

    Args:
        seconds: the budget (> 0).

    Raises:
        ValueError: `seconds` is not positive.
    """

    def __init__(self, seconds: float):
        if not seconds > 0:
            raise ValueError(f"TimeBudget(seconds={seconds!r}): pass a positive number of seconds (or no callback).")
        self.seconds = seconds
        self.t0 = None

    def on_train_begin(self, args, state, control, **kw):
        self.t0 = time.time()

    def on_step_end(self, args, state, control, **kw):
        if time.time() - self.t0 >= self.seconds:
            control.should_training_stop = True


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
