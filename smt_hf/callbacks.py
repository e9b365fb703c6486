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
