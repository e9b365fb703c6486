"""argparse types shared by the recipes: a count, step number or budget of 0 (or below) is refused with argparse's
usage line, instead of a traceback later or being read as "not given" (max_steps=0 trains for the epoch count;
torch.set_num_threads(0) raises). Imports nothing heavy: `--help` stays torch-free."""

from __future__ import annotations

import argparse
import math


def _int_at_least(text: str, low: int, below: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} {below}")
    return value


def positive_int(text: str) -> int:
    """An int >= 1 (steps, threads, sequence length, counts)."""
    return _int_at_least(text, 1, "is not a positive integer")


def nonnegative_int(text: str) -> int:
    """An int >= 0 (where 0 has a meaning of its own, e.g. --dmt-matched-steps 0: every transition)."""
    return _int_at_least(text, 0, "is negative")


def positive_float(text: str) -> float:
    """A finite float > 0 (seconds, learning rates, multiples)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < math.inf:  # nan fails too
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value
