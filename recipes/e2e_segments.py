"""Resumable BPTT rows of recipes/needle_e2e.py (`--bptt-only --stop-after S`, then `--resume`).

A BPTT row runs to a wall-clock budget; at 4x it can outlast a machine session (2.7 CPU hours per seed for associative
recall at T=32). Such a row runs in segments: a segment that reaches its deadline (`smt_hf.callbacks.Deadline`) saves
an HF Trainer checkpoint (weights, optimizer, scheduler, RNG, step) under `<out>/checkpoints/<stem>_x<multiple>/` and
records its wall-clock in `segments.json` there; no row is written. A later call with `--resume` continues from the
checkpoint with the seconds already spent counted against the budget (`TimeBudget(spent=...)`), and the row it finally
writes has `seconds` = the sum of its segments' wall-clock (each segment's own in `segments`); the folder is then
removed. Each restart's setup (data, compile of the recurrent step, skipping the consumed batches) is inside its
segment's wall-clock, so a segmented row gets slightly fewer steps than one uninterrupted run would.

A resumed segment must run on the machine, thread count, model, settings, episodes and budget of the first
(`Segments.open`: ValueError naming each difference): its seconds would otherwise not be the same budget's.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from transformers.trainer_utils import get_last_checkpoint

RECORD = "segments.json"


class Segments:
    """The segments of one resumable row. `folder` is its checkpoint folder (the Trainer's output_dir), `done` the
    earlier segments ([{"seconds", "steps", "ended"}], seconds of wall-clock each), `checkpoint` the folder to resume
    from (None: a first segment)."""

    def __init__(self, folder: str, expect: dict, done: list[dict], checkpoint: str | None):
        self.folder, self.expect, self.done, self.checkpoint = folder, expect, done, checkpoint

    @property
    def spent(self) -> float:
        """Seconds of the budget used by the earlier segments."""
        return sum(s["seconds"] for s in self.done)

    @classmethod
    def open(cls, folder: str, expect: dict, resume: bool) -> "Segments":
        """The row's segments so far. `expect` (JSON-able: machine, threads, model, settings, budget ...) must equal
        the first segment's. A folder with a record and no `resume`: ValueError (pass --resume or delete it); with
        `resume` and no record: a first segment (a folder left without a record, by a run killed before it wrote
        one, is removed). Raises ValueError for a record whose `expect` differs, naming each key, or that names a
        checkpoint that is gone."""
        path = os.path.join(folder, RECORD)
        expect = json.loads(json.dumps(expect))
        if not os.path.isfile(path):
            shutil.rmtree(folder, ignore_errors=True)
            return cls(folder, expect, [], None)
        saved = json.load(open(path))
        spent = sum(s["seconds"] for s in saved["segments"])
        if not resume:
            raise ValueError(f"{folder} holds a BPTT row stopped after {spent:.0f} s of its "
                             f"{saved['expect'].get('budget_seconds')} s budget: pass --resume to continue it, or "
                             "delete the folder to start it over")
        wrong = [f"{k} {saved['expect'].get(k)!r} (this run: {expect.get(k)!r})"
                 for k in sorted(set(expect) | set(saved["expect"])) if saved["expect"].get(k) != expect.get(k)]
        if wrong:
            raise ValueError(f"{folder}'s earlier segments ran with " + "; ".join(wrong) + ": a resumed segment must "
                             "run as they did (its seconds count against the same budget)")
        checkpoint = get_last_checkpoint(folder)
        if checkpoint is None:
            raise ValueError(f"{folder} records {len(saved['segments'])} segment(s) but holds no checkpoint-* folder")
        return cls(folder, expect, saved["segments"], checkpoint)

    def record(self, seconds: float, steps: int) -> None:
        """A segment stopped at its deadline after `seconds` of wall-clock at optimizer step `steps`: recorded (written
        whole, then moved into place), and checkpoints older than the newest removed."""
        self.done = self.done + [{"seconds": round(seconds, 1), "steps": steps,
                                  "ended": time.strftime("%Y-%m-%d %H:%M:%S %Z")}]
        tmp = os.path.join(self.folder, RECORD + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"expect": self.expect, "segments": self.done}, f, indent=1)
        os.replace(tmp, os.path.join(self.folder, RECORD))
        newest = get_last_checkpoint(self.folder)
        for name in os.listdir(self.folder):
            if name.startswith("checkpoint-") and os.path.join(self.folder, name) != newest:
                shutil.rmtree(os.path.join(self.folder, name))

    def finish(self, row: dict, seconds: float) -> None:
        """The last segment ran out the budget after `seconds`: `row` gets the run's total wall-clock and, for a row
        that ran in more than one segment, each segment's; the folder is removed."""
        if self.done:
            row["segments"] = [s["seconds"] for s in self.done] + [round(seconds, 1)]
            row["seconds"] = round(self.spent + seconds, 1)
        shutil.rmtree(self.folder, ignore_errors=True)
