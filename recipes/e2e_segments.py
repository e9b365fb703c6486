"""Resumable BPTT rows of recipes/needle_e2e.py (`--bptt-only --stop-after S`, then `--resume`).

A BPTT row runs to a wall-clock budget; at 4x it can outlast a machine session (2.7 CPU hours per seed for associative
recall at T=32). Such a row runs in segments: a segment that reaches its deadline (`smt_hf.callbacks.Deadline`) saves
an HF Trainer checkpoint (weights, optimizer, scheduler, RNG, step) under `<out>/checkpoints/<stem>_x<multiple>/` and
records its wall-clock and step in `segments.json` there; no row is written. A later call with `--resume` continues
from that checkpoint with the seconds already spent counted against the budget (`TimeBudget(spent=...)`); the row it
finally writes has `seconds` = the sum of its segments' wall-clock and `segments` (each one's seconds, step and git
commit); the folder is removed once the row is saved. A segment's wall-clock is its whole `Trainer.train()` call: the
setup before the first step (the resumed checkpoint's load, the skip over consumed batches), the compile of the
recurrent step, and the checkpoint save at its end all count in the row's seconds, so a segmented row gets slightly
fewer steps than one uninterrupted run would; the last segment's `TimeBudget` starts at its first step's start, so
its setup can take the row's seconds a little past the budget (as its last step may: `TimeBudget`).

What a resumed segment must share with the segments before it (`Segments.open`, ValueError naming each difference):
the machine (CPU model, cores, threads, torch version), the transformers / accelerate / datasets versions, the task,
seed and episodes, the model, the training arguments and the budget. Not checked: the code's git commit and the
command line (both recorded per segment) and the load of the machine (the budget's wall-clock assumes the same
neighbours as the run it is a multiple of).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import time

RECORD = "segments.json"


def refuse_existing_runs(out: str, name: str, T: int, seeds) -> None:
    """A new run of a seed writes `<out>/<name>_e2e_T<T>_s<seed>.json` whole: raise FileExistsError (before any seed
    trains) when one of them exists, since it would replace that run's rows (appended rows included) and leave its
    `_bptt*.json` rows, budgeted from that run, beside the new one."""
    found = [p for s in seeds if os.path.exists(p := os.path.join(out, f"{name}_e2e_T{T}_s{s}.json"))]
    if found:
        raise FileExistsError(
            f"{', '.join(found)} already hold(s) a run of this seed: a new run would replace its rows. Run into an --out "
            "without that seed's JSON (then copy the files), or move them; to add rows to that run instead: "
            "--bptt-only, --dmt-from-init [--retrain-teacher], --add-full-rollout, --continue-dmt (the last needs the "
            "run's saved student)")


def _now() -> str:
    """This machine's local time, as the segments record it."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def open_rows(out: str, stem: str, multiples, bptt_seconds: float, expect: dict, resume: bool, row_name):
    """Before a --bptt-only seed builds its episodes: (the rows of `stem`.json it keeps, {multiple: Segments} of the
    rows it runs, the JSON's first command line or None). `expect` is what every segment of a row shares, without
    its budget (`multiple * bptt_seconds`, added here); `row_name(multiple)` a row's name (`e2e_report.bptt_row`).
    Without `resume` nothing is kept, and a JSON with a row run in segments (hours over sessions) is refused rather
    than overwritten; with it, the JSON's rows are kept if it ran on `expect`'s machine, threads and BPTT settings and
    each kept row of `multiples` had `multiple * bptt_seconds` as its budget (else ValueError), and a row kept is not
    run again (a checkpoint folder left beside it by a kill is removed). Each other row: `Segments.open` (its
    ValueErrors)."""
    rows, command, path = [], None, stem + ".json"
    if os.path.exists(path):
        saved = _load(path)
        if not resume and any(r.get("segments") for r in saved["rows"]):
            raise ValueError(f"{path} has rows run in segments over sessions: pass --resume to keep them (and finish "
                             "the stopped ones), or move the file away to start over")
        if resume:
            ours = {"machine": expect["machine"], "threads": expect["threads"], "bptt": expect["bptt"]}
            theirs = {"machine": saved.get("machine"), "threads": saved.get("threads"),
                      "bptt": saved.get("settings", {}).get("bptt")}
            wrong = [f"{k} {theirs[k]!r} (this run: {ours[k]!r})" for k in ours if theirs[k] != ours[k]]
            wrong += [f"a {r['run']!r} row with a {r.get('budget_seconds')} s budget (this run: "
                      f"{round(m * bptt_seconds, 1)} s)" for m in multiples for r in saved["rows"]
                      if r["run"] == row_name(m) and r.get("budget_seconds") != round(m * bptt_seconds, 1)]
            if wrong:
                raise ValueError(f"{path} ran with " + "; ".join(wrong) + ": --resume keeps its rows only for the "
                                 "same run (use its settings, or another --out)")
            rows, command = saved["rows"], saved.get("command")
    segs = {}
    for m in multiples:
        if any(r["run"] == row_name(m) for r in rows):
            Segments(folder_for(out, stem, m), {}, []).remove()
        else:
            segs[m] = Segments.open(folder_for(out, stem, m), {**expect, "budget_seconds": m * bptt_seconds}, resume)
    return rows, segs, command


def _load(path: str) -> dict:
    try:
        return json.load(open(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): move it away to start over") from e


def folder_for(out: str, stem: str, multiple: float) -> str:
    """The checkpoint folder of the BPTT row `multiple` x the budget of the JSON at `stem` (a path without .json)."""
    return os.path.join(out, "checkpoints", f"{os.path.basename(stem)}_x{multiple:g}")


def versions() -> dict:
    """The versions of the libraries a resumed run's data order and training depend on (torch: in `machine()`)."""
    import accelerate
    import datasets
    import transformers

    return {"transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "datasets": datasets.__version__}


def git_commit() -> str | None:
    """HEAD of the checkout this file is in (+ "-dirty" with uncommitted changes to tracked files); None outside one."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


class Segments:
    """The segments of one resumable row. `folder` is its checkpoint folder (the Trainer's output_dir), `expect` what
    every segment must share, `done` the earlier segments ([{"seconds", "steps", "started", "ended", "commit",
    "command"}], seconds of wall-clock each, steps the optimizer step it stopped at, started / ended local times, commit
    the checkout's HEAD when it started)."""

    def __init__(self, folder: str, expect: dict, done: list[dict]):
        self.folder, self.expect, self.done = folder, expect, done
        self.command = None  # the command line running this segment (recorded with it; needle_e2e sets it)
        self.commit = git_commit()  # the code this segment runs: HEAD when it starts, not when it ends
        self.started = _now()

    @property
    def spent(self) -> float:
        """Seconds of the budget used by the earlier segments."""
        return sum(s["seconds"] for s in self.done)

    @property
    def checkpoint(self) -> str | None:
        """The checkpoint the last recorded segment saved (None: a first segment)."""
        return os.path.join(self.folder, f"checkpoint-{self.done[-1]['steps']}") if self.done else None

    @classmethod
    def open(cls, folder: str, expect: dict, resume: bool) -> "Segments":
        """The row's segments so far. `expect` (JSON-able, with `budget_seconds`) must equal the last record's
        (`budget_seconds` within 0.05 s: older records rounded it). No record and no checkpoint in `folder`: a first
        segment (an empty folder left by a kill is removed). Raises ValueError: checkpoints without a record (a first
        segment killed between its checkpoint and its record: its seconds are unknown, the folder is kept for the
        user to delete); a record and no `resume` (pass --resume or delete the folder); a recorded `expect` that
        differs, naming each key (keys the record does not have, written before they were checked, are printed and
        not checked); a record whose checkpoint is gone; a record whose seconds already reach the budget.
        Checkpoints other than the recorded one (saved by a later segment killed before it recorded) are removed:
        their seconds are nowhere."""
        path = os.path.join(folder, RECORD)
        expect = json.loads(json.dumps(expect))
        if not os.path.isfile(path):
            if glob.glob(os.path.join(folder, "checkpoint-*")):
                raise ValueError(f"{folder} holds checkpoints but no {RECORD}: a first segment was killed after its "
                                 "checkpoint and before it recorded its seconds, so its budget cannot be counted; "
                                 "delete the folder to start the row over")
            shutil.rmtree(folder, ignore_errors=True)
            others = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(os.path.dirname(folder), "*", RECORD)))
            if resume:
                print(f"[resume] {folder}: nothing stopped there, the row starts afresh" + (
                    f" (stopped rows in {os.path.dirname(folder)}: {[os.path.basename(p) for p in others]}, "
                    "another command's: other --bptt-multiples or --seeds?)" if others else ""), flush=True)
            return cls(folder, expect, [])
        saved = _load(path)
        ours = cls(folder, expect, saved["segments"])
        budget = saved["expect"].get("budget_seconds")
        if not resume:
            raise ValueError(f"{folder} holds a BPTT row stopped after {ours.spent:.0f} s of its {budget} s budget: "
                             "pass --resume to continue it, or delete the folder to start it over")
        unrecorded = sorted(set(expect) - set(saved["expect"]))
        if unrecorded:
            print(f"[resume] {path} does not record {unrecorded} (written before they were): not checked", flush=True)
        def same(k):
            a, b = saved["expect"][k], expect.get(k)
            return abs(a - b) <= 0.05 if k == "budget_seconds" and None not in (a, b) else a == b

        wrong = [f"{k} {saved['expect'][k]!r} (this run: {expect.get(k)!r})" for k in sorted(saved["expect"])
                 if not same(k)]
        if wrong:
            raise ValueError(f"{folder}'s earlier segments ran with " + "; ".join(wrong) + ": a resumed segment must "
                             "run as they did (its seconds count against the same budget)")
        if not os.path.isdir(ours.checkpoint):
            raise ValueError(f"{folder} records {len(ours.done)} segment(s) ending at {ours.checkpoint}, which is gone: "
                             "delete the folder to start the row over")
        if ours.spent >= budget:
            raise ValueError(f"{path}: its segments' {ours.spent} s reach the {budget} s budget, but no row was "
                             "written; delete the folder to run the row again")
        for name in os.listdir(folder):
            if name.startswith("checkpoint-") and os.path.join(folder, name) != ours.checkpoint:
                print(f"[resume] {os.path.join(folder, name)}: not a recorded segment's checkpoint, removed", flush=True)
                shutil.rmtree(os.path.join(folder, name))
        return ours

    def record(self, seconds: float, steps: int) -> None:
        """A segment stopped at its deadline after `seconds` of wall-clock at optimizer step `steps` (its checkpoint
        saved): recorded (written whole, then moved into place), then the previous segment's checkpoint removed."""
        before = self.checkpoint
        self.done = self.done + [{"seconds": seconds, "steps": steps,  # (unrounded: `phase` compared this sum)
                                  "started": self.started, "ended": _now(),
                                  "commit": self.commit,
                                  "command": self.command}]
        from smt_hf.recipe import write_json  # here, not at the top: `needle_e2e.py --help` imports no torch

        write_json(os.path.join(self.folder, RECORD), {"expect": self.expect, "segments": self.done})
        if before is not None and before != self.checkpoint:
            shutil.rmtree(before, ignore_errors=True)

    def finish(self, row: dict, seconds: float) -> None:
        """The last segment ran out the budget after `seconds`: a row that ran in more than one segment gets the sum
        of their wall-clock as `seconds` and each one's in `segments` (the folder stays until `remove`)."""
        if self.done:
            last = {"seconds": round(seconds, 1), "steps": row["steps"], "started": self.started,
                    "ended": _now(), "commit": self.commit, "command": self.command}
            row["segments"] = [{**{k: s[k] for k in ("steps", "started", "ended", "commit", "command") if k in s},
                                "seconds": round(s["seconds"], 1)} for s in self.done] + [last]
            row["seconds"] = round(self.spent + seconds, 1)

    def remove(self) -> None:
        """The row is saved: its checkpoints and record go (and <out>/checkpoints/ once empty)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(self.folder))
        except OSError:  # other rows' folders there, or none at all
            pass
