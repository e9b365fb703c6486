"""Training curves of single-phase needle_e2e.py runs, read back from their logs: loss terms vs step. (CPU, seconds.)

needle_e2e.py's Trainer phases print Hugging Face Trainer's log dict every `logging_steps` (100) optimizer steps
(`{'loss': '4.86', 'readout_loss': '2.378', ..., 'epoch': '0.96'}`), then `train_runtime` and the final
evaluation (`eval_student_acc`, ...). The committed logs of a run that has one training phase (`--dmt-from-init`
with one gradient, `--bptt-only` with one multiple, `--continue-dmt`; e.g. `recipes/results/fig3/dmt_from_init/logs/*_more_steps.log`) hold a whole
learning curve that its JSON row (final numbers only) does not. This reads them (text only: `ast.literal_eval` of
the dict lines, nothing executed) and writes <out>.json (per run: steps, each key's values, the final evaluation),
<out>.md (a table of the final values) and <out>.png (one panel per key, the runs as curves).

Step of the k-th logged line (k = 1, 2, ...): k * logging_steps. The logged epochs must grow by the same amount
from line to line (a missing line would show as a double step); that checks the lines are consecutive, not that
logging_steps is the run's (give the run's: needle_e2e logs every 100). A log with more than one training phase is
refused, unless `--last-phase` asks for its last one (a `--dmt-from-init --retrain-teacher` run logs its re-trained
joint SMT before its DMT); one cut off before `train_runtime` is read, with no final evaluation.

    python recipes/log_curves.py --keys loss readout_loss \
        --run "seed 1, 6100 steps=recipes/results/fig3/dmt_from_init/logs/associative_recall_curriculum_e2e_T32_s1_dmt_from_init_full_rollout_own_steps.log" \
        --run "seed 1, 7400 steps=recipes/results/fig3/dmt_from_init/logs/associative_recall_curriculum_e2e_T32_s1_dmt_from_init_full_rollout_more_steps.log" \
        --title "associative recall T=32: full-rollout DMT from init" \
        --out recipes/results/fig3/dmt_from_init/associative_recall_curriculum_T32_full_rollout_from_init_curves
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sibling recipe modules (cli_types)
from cli_types import positive_int  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def read_log(path: str, logging_steps: int = 100, last_phase: bool = False) -> dict:
    """One single-phase run's curve from its log: {"steps": [k * logging_steps], "<key>": [float per logged line]
    for every key of the first training log line (None where a later line lacks it), "final_eval": {key: float} of
    the last evaluation line after training (None if the log has none, e.g. cut off)}. `last_phase`: the curve of the
    log's last training phase (its steps counted from that phase's start), every earlier phase skipped. Raises
    ValueError if the log has no training line, more than one training phase (`train_runtime` lines; with
    `last_phase`: a phase after the last logged training line, one too short to log; either way, a phase that starts,
    with its step-0 evaluation, after the one read: a log cut off before that phase logged a line), or a step between
    two logged lines whose epoch difference is not the first line's epoch (a line missing)."""
    train, evals, phases, start = [], [], 0, 0  # start: the train_runtime lines before the phase being read
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not (line.startswith("{") and line.endswith("}")):
                continue
            try:
                d = ast.literal_eval(line)
            except (ValueError, SyntaxError):
                continue
            if not isinstance(d, dict):
                continue
            if "train_runtime" in d:
                phases += 1
            elif any(k.startswith("eval_") for k in d):
                evals.append((phases, d))
            elif "loss" in d:
                if phases > start:
                    if not last_phase:
                        raise ValueError(f"{path}: more than one training phase; log_curves reads single-phase logs "
                                         "(needle_e2e --dmt-from-init with one gradient, --continue-dmt, ...; "
                                         "--last-phase for the last phase of a longer log)")
                    train, start = [], phases  # a later phase: the curve starts again
                train.append({k: float(v) for k, v in d.items()})
    if not train:
        raise ValueError(f"{path}: no training log line (a dict with 'loss')")
    if phases > start + 1:
        raise ValueError(f"{path}: {phases - start} training phases after its last logged training line's start; "
                         "log_curves reads single-phase logs (or the last phase, which must log a training line)")
    e1 = train[0]["epoch"]
    for k in range(1, len(train)):
        step = train[k]["epoch"] - train[k - 1]["epoch"]
        if abs(step - e1) > e1 / 2:  # one line missing doubles the step; rounding of the logged epoch is far below e1/2
            raise ValueError(f"{path}: logged lines {k} and {k + 1} are {step:.4g} epochs apart, not {e1:.4g}: "
                             "lines missing")
    keys = [k for k in train[0] if k not in ("epoch", "learning_rate", "grad_norm")]
    if any(ph == start + 1 and float(d.get("epoch", -1)) == 0 for ph, d in evals):
        raise ValueError(f"{path}: a later phase starts (its step-0 evaluation) but logs no training line: cut off, or "
                         "too short to log; not read as this phase's curve")
    final = [d for ph, d in evals if ph == start + 1]
    return {"steps": [k * logging_steps for k in range(1, len(train) + 1)],
            **{key: [d.get(key) for d in train] for key in keys},
            "final_eval": {k[len("eval_"):]: float(v) for k, v in final[-1].items() if k.startswith("eval_")}
            if final else None}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, metavar="LABEL=LOG",
                   help="a curve: its label, '=', the path of a single-phase needle_e2e log (repeat)")
    p.add_argument("--last-phase", action="store_true",
                   help="read each log's last training phase (a --retrain-teacher run logs its joint SMT first)")
    p.add_argument("--keys", nargs="+", default=["loss"], help="logged keys to plot, one panel each (default: loss)")
    p.add_argument("--logging-steps", type=positive_int, default=100,
                   help="steps between logged lines (needle_e2e: 100)")
    p.add_argument("--title", default="", help="title over the panels")
    p.add_argument("--out", required=True, help="output stem: writes <out>.json, .md, .png")
    a = p.parse_args(argv)
    runs = {}
    for spec in a.run:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            p.error(f"--run {spec!r}: give LABEL=LOG")
        runs[label] = dict(read_log(path, a.logging_steps, a.last_phase),
                           log=os.path.relpath(path, os.path.dirname(a.out) or "."))
    for key in a.keys:
        missing = [label for label, r in runs.items() if key not in r]
        if missing:
            p.error(f"--keys {key}: not logged by {missing}; logged: {sorted(set().union(*runs.values()) - {'log'})}")
    command = "python recipes/log_curves.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    res = {"title": a.title, "logging_steps": a.logging_steps, "keys": a.keys, "command": command, "runs": runs}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out + ".json", "w") as f:
        json.dump(res, f, indent=2)
    head = ["run", "steps", *(f"last logged {k}" for k in a.keys), "final student_acc", "log"]
    lines = [f"{a.title}: training curves read from the runs' logs (`recipes/log_curves.py`; the k-th logged line is "
             f"step k x {a.logging_steps}; each logged value is the Trainer's mean over the {a.logging_steps} steps "
             f"before it). Final student_acc: the evaluation after training (held-out episodes). Command: `{command}`",
             "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in runs.items():
        acc = (r["final_eval"] or {}).get("student_acc")
        lines.append(f"| {label} | {r['steps'][-1]} | " + " | ".join("-" if r[k][-1] is None else f"{r[k][-1]:.3f}"
                                                                      for k in a.keys)
                     + f" | {'-' if acc is None else f'{acc:.3f}'} | `{r['log']}` |")
    sys.path.insert(0, os.path.dirname(HERE))
    from smt_hf.viz import plot_panels

    png = plot_panels([dict(curves={label: (r["steps"], r[k]) for label, r in runs.items()}, xlabel="step",
                            ylabel=k, title=k) for k in a.keys], a.out + ".png", suptitle=a.title or None)
    lines += ["", f"![training curves]({os.path.basename(str(png))})"]
    with open(a.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    main()
