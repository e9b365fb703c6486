"""End to end, without BPTT: joint SMT, then one-step DMT, gives a standalone RNN (any synthetic family, CPU).

Per seed, one student:
1. joint SMT: teacher accuracy, the student's one-step accuracy (teacher memory -> step -> readout) and the
   standalone student (its own initial memory, whole episodes, true tokens fed in);
2. + DMT, dmt_gradient="one_step" (the no-BPTT method, the package's DMT defaults): the headline row;
3. + DMT, dmt_gradient="full_rollout" from the same SMT state (truncated BPTT with teacher targets; reference only);
4. BPTT: the same student architecture from the same initialisation, for the wall-clock of rows 1+2 (and, with
   `--bptt-multiples 1 4`, also for 4x that wall-clock).

The student is a transformer updater unless `--backbone` says otherwise (mlp, gru); `--bptt-lr` sets BPTT's learning
rate. A folder holds one (backbone, BPTT lr): its tables average every seed in it.

`--family NAME` takes the task, its options, the teacher, the SMT learning rate / warm-up and evaluation settings of
that family from the teacher calibration (recipes/configs/calibration/teachers.yaml, recipes/teacher_curves.py), and
its end-to-end run (SMT steps, DMT steps and one-step DMT settings: the Fig 3 runs; flags given override them); the
student is this recipe's. `--fig3` writes the table/figure over every family found in --out (paper Fig 3). Each
JSON records the command line that wrote it (a row `--continue-dmt`, `--add-full-rollout`, `--dmt-from-init` or
`--resume` appends: its own; a row run in segments: each segment's).

    python recipes/needle_e2e.py --seq-len 32 --seeds 0 1 2          # ~10 CPU minutes per seed, one thread
    python recipes/needle_e2e.py --task parity --seq-len 64 --seeds 0
    python recipes/needle_e2e.py ... --out recipes/results/fig3       # write the shipped results (a new seed only)
    python recipes/needle_e2e.py --family stack --seeds 0 --bptt-multiples 1 4 --out outputs/fig3  # seed 0 anew
    python recipes/needle_e2e.py --family stack --seeds 0 --add-full-rollout --out recipes/results/fig3  # its missing row
    python recipes/needle_e2e.py --seq-len 32 --seeds 0 --dmt-from-init  # after a run of seed 0 there: DMT without SMT
    python recipes/needle_e2e.py --seq-len 32 --seeds 0 --dmt-from-init --retrain-teacher  # its saved teacher gone
    python recipes/needle_e2e.py --fig3 --seq-len 32 --out recipes/results/fig3
    python recipes/needle_e2e.py --family stack --seeds 0 --bptt-only --bptt-seconds 600 --bptt-multiples 4 \
        --stop-after 1200    # then the same with --resume (as often as needed): 4x BPTT over several sessions

Prints one table per seed and one over all seeds found (the student's model card:
`python model_cards/generate_card.py <JSON> --e2e --model <folder>/student`); writes <out>/<family or task>_e2e_T<T>_s<seed>.json, the drift
plot, and <out>/<family or task>_e2e_T<T>.md (mean ± spread over the seeds in <out>). Default out: outputs/needle_e2e.
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_report import (  # noqa: E402,F401  (the tables and plots over run JSONs; some names re-exported for tests)
    FIG3_MAIN, FROM_INIT, METRICS, ROWS, bptt_row, continued_dmt, fig3, from_init_row, row_label, student_backbone,
    table, write_summary)
from cli_types import nonnegative_int, positive_float, positive_int  # noqa: E402
from e2e_segments import open_rows, refuse_existing_runs, versions  # noqa: E402
from e2e_teacher import TEACHER_ACC_TOLERANCE, check_saved_teacher, save_teacher  # noqa: E402,F401

DEFAULT_OUT = "outputs/needle_e2e"  # not the tracked recipes/results unless --out says so
TASKS = {"needle": dict(vocab_size=16), "parity": {}, "string_copy": {}, "stack": {}, "associative_recall": {},
         "icl_modular": {}}
FAMILIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "calibration", "teachers.yaml")
MODEL = {"teacher": dict(hidden_size=64, memory_tokens=2, num_encoder_layers=2, num_decoder_layers=1, num_attention_heads=4),
         "student": dict(backbone="transformer", updater_layers=2)}
SMT = dict(mode="joint", per_device_train_batch_size=64, learning_rate=1e-3, lambda_dyn=1.0)
# BPTT runs to a wall-clock budget (max_steps is only an upper bound), so its warm-up is in steps: a fraction of
# max_steps would keep the learning rate near 0 for the whole budget
# and it uses the compiled recurrent step (same losses, 1.6x faster per step on CPU, recipes/results/bench_cpu_compile.md)
BPTT = dict(mode="bptt", per_device_train_batch_size=64, learning_rate=1e-3, warmup_steps=10, recurrent_step_compile="default")
# DMT: the package defaults (one_step, k=1, teacher transitions) plus what this recipe sets for episodes
DMT = dict(mode="dmt", per_device_train_batch_size=32, learning_rate=3e-4, dmt_start="initial")
FULL_ROLLOUT = dict(DMT, dmt_gradient="full_rollout", dmt_stride=8, dmt_teacher_transitions=False)


def family_settings(name: str, seq_len: int | None = None, path: str = FAMILIES) -> dict:
    """The calibrated settings of one family of teachers.yaml: {task, task_kwargs, train_task_kwargs (on top of
    task_kwargs for the training episodes only), seq_len, model, smt, training}.
    `model` = the family's teacher + this recipe's student; `smt` = joint SMT (or the family's `smt_mode`) with the
    family's learning rate and warm-up (+ its `smt_training`: SMT-phase-only arguments such as lambda_encoder_lm);
    `training` = extra SMTTrainingArguments for every phase (e.g. eval_positions); `dmt` = `dmt_training`,
    arguments of the one-step DMT phase only (e.g. lambda_onestep_readout, lr_scheduler_type), the defaults' merged
    key by key with the family's; `smt_steps` / `dmt_steps` = the family's end-to-end run (Fig 3; None: the recipe's
    defaults). KeyError names the families there."""
    from smt_hf.recipe_config import load_preset

    cfg = load_preset(path)
    if name not in cfg["families"]:
        raise KeyError(f"family {name!r} is not in {path}; choose from {sorted(cfg['families'])}")
    f = {**cfg["defaults"], **cfg["families"][name]}
    dmt = {**(cfg["defaults"].get("dmt_training") or {}), **(cfg["families"][name].get("dmt_training") or {})}
    return {"task": f["task"], "task_kwargs": dict(f.get("task_kwargs") or {}),
            "train_task_kwargs": dict(f.get("train_task_kwargs") or {}), "seq_len": seq_len or f["seq_len"],
            "model": {"teacher": dict(f["teacher"]), "student": dict(MODEL["student"])},
            "smt": dict(SMT, mode=f.get("smt_mode", SMT["mode"]), learning_rate=f["learning_rate"],
                        warmup_steps=f["warmup_steps"], **(f.get("smt_training") or {})),
            "training": dict(f.get("training") or {}), "dmt": dmt,
            "smt_steps": f.get("smt_steps"), "dmt_steps": f.get("dmt_steps")}


def episodes(task: str, T: int, seed: int, kw: dict, train_kw: dict | None = None, num_train: int = 200000):
    """(training episodes, held-out episodes) of one seed's run: `num_train` episodes drawn with `seed` (task kwargs
    `kw`, then `train_kw` on top: a family's `train_task_kwargs`), and 512 held-out ones with seed 10**6 + seed
    (`kw` only) (`datasets.Dataset`s of `smt_hf.data.make_task`). recipes/onestep_error_probe.py re-scores a saved
    run on these."""
    from teacher_curves import episode_sets  # (this folder is on sys.path: see the imports above)

    return episode_sets({"task": task, "seq_len": T, "task_kwargs": kw, "train_task_kwargs": train_kw,
                         "num_train": num_train, "num_eval": 512}, seed)


def run(task="needle", seq_len=None, seed=0, smt_steps=None, dmt_steps=None, out=DEFAULT_OUT, threads=1,
        bptt=True, full_rollout=True, save_dir=None, bptt_seconds=None, bptt_only=False, continue_dmt=False,
        add_full_rollout=False, dmt_from_init=False, retrain_teacher=False,
        smt_memory_noise=0.0, dmt_stride=None, dmt_schedule=None, causal_teacher=False, dmt_matched_steps=None,
        reuse_from=None, family=None, bptt_multiples=(1,), command=None, backbone="transformer", bptt_lr=None,
        stop_at=None, resume=False):
    """One seed end to end (module docstring). Steps and DMT settings left None come from the family (teachers.yaml:
    `smt_steps`, `dmt_steps`, `dmt_training`), else the recipe's defaults (SMT 900 steps at T <= 32, 1400 above; DMT
    300 steps, the package's schedule); a value given here wins over the family's (`dmt_stride` also drops the
    family's `dmt_matched_steps`, which needs stride 1; `dmt_matched_steps=0` drops it: every transition).
    `command` (the command line) is recorded in the JSON (on the appended row with `continue_dmt` or
    `add_full_rollout`, with the settings that row ran with). `add_full_rollout` gives an earlier run (its JSON in
    `out`) the full-rollout row it lacks, for as many steps as its one-step DMT row (`dmt_steps` given and different:
    ValueError). Its threads, model, SMT settings and steps must be this call's (ValueError before any training);
    joint SMT is then re-trained from the same seed and must reproduce the saved joint-SMT row (steps and every
    metric; SMT is deterministic per seed on CPU on one machine), else ValueError and nothing is added;
    full-rollout DMT runs from that state and its row is appended. A run that already has the row is skipped.
    `dmt_from_init` is the control of what SMT gives DMT: one-step and full-rollout DMT (True: both; or a tuple of
    "one_step", "full_rollout"), each from the untrained student (seeded as BPTT's initialisation) with the run's
    SMT-trained teacher (saved under `save_dir`, default `out`/final_<family>_T<T>_s<seed>) labelling, with the
    settings of the two SMT -> DMT rows, for as many steps as the one-step DMT row (`dmt_steps` given: that many,
    named in the row, `from_init_row`); rows appended (one already there: skipped). Another model or thread count
    than the saved run's, other DMT settings than its SMT -> DMT rows', or a saved teacher that is not the run's
    (`check_saved_teacher`): ValueError before any training. `retrain_teacher` (with `dmt_from_init`, for a run whose
    teacher was not saved or is gone): joint SMT is re-trained from the seed and must reproduce the run's joint-SMT
    row, as `add_full_rollout`'s (same checks, same ValueErrors), and that teacher labels the control. Both re-runs
    save the reproduced teacher where none is saved (`save_teacher`), so a control can follow an `add_full_rollout`
    run without re-training. Runs that append rows to one JSON may run side by side:
    each save re-reads the file and keeps the rows the others appended since (two saves in the same instant can still
    race: there is no lock).
    `backbone` is the student's updater (every row); `bptt_lr` BPTT's learning rate (None: 1e-3, the BPTT dict);
    both are recorded in the JSON (`model`, `settings`).
    `stop_at` and `resume` (with `bptt_only` only, else ValueError) run BPTT rows in segments (recipes/e2e_segments.py):
    a row still short of its budget at `stop_at` (seconds since the epoch) saves a checkpoint and writes no row, and
    the multiples after it wait (none starts past `stop_at`); `resume` continues such a row from its checkpoint
    (what must match: `Segments.open`, its ValueErrors raised before this seed's episodes are built and any of its
    rows trains), keeps the rows the JSON already has and skips their multiples."""
    import torch

    sys.path.insert(0, os.path.dirname(__file__))
    from smt import build_models, machine

    from smt_hf.callbacks import Deadline, TimeBudget
    from smt_hf.data import task_vocab_size
    from smt_hf.recipe import write_json
    from smt_hf.trainer import SMTTrainer
    from smt_hf.training_args import SMTTrainingArguments

    torch.set_num_threads(threads)
    fam = family_settings(family, seq_len) if family else None
    if fam:
        task = fam["task"]
    T, kw = (fam["seq_len"] if fam else seq_len or 32), (fam["task_kwargs"] if fam else TASKS[task])
    vocab = task_vocab_size(task, **kw)
    common = dict(context_length=T, future_length=T, rollout_length=T, per_device_eval_batch_size=128, report_to="none",
                  save_strategy="no", use_cpu=True, disable_tqdm=not sys.stderr.isatty(), logging_steps=100, seed=seed,
                  **(fam["training"] if fam else {}))
    rows, curves = [], {}
    smt_set = dict(fam["smt"] if fam else SMT, **({"smt_memory_noise": smt_memory_noise} if smt_memory_noise else {}),
                   **({"smt_all_prefixes": True} if causal_teacher else {}))
    smt_steps = smt_steps or (fam or {}).get("smt_steps") or (900 if T <= 32 else 1400)
    dmt_steps_given = dmt_steps
    dmt_steps = dmt_steps or (fam or {}).get("dmt_steps") or 300
    dmt_set = {**DMT, **(fam["dmt"] if fam else {}),  # the family's dmt_training, then what the caller gives
               **({"dmt_stride": dmt_stride} if dmt_stride is not None else {}),
               **({"lr_scheduler_type": dmt_schedule} if dmt_schedule is not None else {}),
               **({"dmt_matched_steps": dmt_matched_steps} if dmt_matched_steps else {})}
    if dmt_matched_steps == 0 or (dmt_stride is not None and dmt_matched_steps is None):
        dmt_set.pop("dmt_matched_steps", None)  # every (k-th) transition instead of the family's random draws
    model = fam["model"] if fam else MODEL
    model = {**model, "student": {**model["student"], "backbone": backbone}}
    bptt_set = BPTT if bptt_lr is None else dict(BPTT, learning_rate=bptt_lr)
    model = model if not causal_teacher else {**model, "teacher": {**model["teacher"], "encoder_causal": True}}

    if sum(map(bool, (bptt_only, continue_dmt, add_full_rollout, dmt_from_init))) > 1:
        raise ValueError("bptt_only, continue_dmt, add_full_rollout and dmt_from_init are separate runs: give one of them")
    if (stop_at is not None or resume) and not bptt_only:
        raise ValueError("stop_at and resume run BPTT rows in segments: give them with bptt_only")
    if retrain_teacher and not dmt_from_init:
        raise ValueError("retrain_teacher re-trains the teacher of the DMT-from-init control: give it with dmt_from_init")

    def phase(name, student, teacher, settings, steps, callbacks=None, record=True, segments=None):
        """Train, evaluate, record the row (and save the JSON); (trainer, row). With `segments` (a resumable BPTT row):
        resumed from its checkpoint, if any; stopped by a Deadline in `callbacks` before the budget ran out: the
        segment is recorded and no row (None)."""
        args = SMTTrainingArguments(output_dir=segments.folder if segments else "outputs/needle_e2e/tmp",
                                    max_steps=steps, **{**common, **settings})
        tr = SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=train, eval_dataset=ev,
                        callbacks=callbacks)
        t0 = time.time()
        tr.train(resume_from_checkpoint=segments.checkpoint if segments else None)
        seconds = time.time() - t0
        stopped = any(isinstance(c, Deadline) and c.reached for c in callbacks or ())
        budget = next((c for c in callbacks or () if isinstance(c, TimeBudget)), None)
        if segments is not None:
            segments.command = command
        if segments is not None and stopped and not budget.exhausted and budget.spent + seconds < budget.seconds:
            segments.record(seconds, tr.state.global_step)
            print(f"[stop-at] {name}: stopped at step {tr.state.global_step} after {segments.spent:.0f} s of its "
                  f"budget (checkpoint in {segments.folder}); continue it with --resume", flush=True)
            return tr, None
        m = tr.evaluate()
        row = {"run": name, "dmt_gradient": args.dmt_gradient if args.mode == "dmt" else None, "mode": args.mode,
               "steps": tr.state.global_step, "seconds": round(seconds, 1),
               **{k: m.get(f"eval_{k}") for k in METRICS}}
        if budget is not None:  # a BPTT row: its wall-clock budget (saved with the row)
            row["budget_seconds"] = round(budget.seconds, 1)
        if segments is not None:
            segments.finish(row, seconds)
        if not record:  # a re-run whose row is only compared (add_full_rollout's joint SMT)
            return tr, row
        if continue_dmt or add_full_rollout or dmt_from_init or resume:  # a row appended to an earlier JSON: its own
            # command line and settings
            row.update({"command": command} if command else {}, settings=settings)
        rows.append(row)
        if "drift_curve" in tr.last_eval:
            curves[name] = (tr.last_eval["drift_steps"], tr.last_eval["drift_curve"])
        print(json.dumps(row), flush=True)
        save()  # after every phase: a run stopped early keeps what finished
        return tr, row

    reusable = load_reusable(reuse_from, task, T, seed, model) if reuse_from else []
    grads = (() if not dmt_from_init else ("one_step", "full_rollout") if dmt_from_init is True else
             (dmt_from_init,) if isinstance(dmt_from_init, str) else tuple(dmt_from_init))  # the control's gradients
    runs_full = add_full_rollout or "full_rollout" in grads or (full_rollout and not (bptt_only or continue_dmt or grads))
    if runs_full and T % FULL_ROLLOUT["dmt_stride"]:
        raise ValueError(f"seq_len {T}: full-rollout DMT matches every {FULL_ROLLOUT['dmt_stride']}th step, so the "
                         "length must be a multiple of it; or run no full-rollout row (" + ("--add-full-rollout adds "
                         "one" if add_full_rollout else "--dmt-from-init one_step" if grads else "--no-full-rollout") + ")")
    phases = [dict(dmt_set, max_steps=dmt_steps), bptt_set] + [FULL_ROLLOUT] * runs_full + (
        [] if bptt_only or continue_dmt else [dict(smt_set, max_steps=smt_steps)])
    for settings in phases:  # refuse bad settings now, not after the SMT phase (nor after building the data)
        SMTTrainingArguments(output_dir="outputs/needle_e2e/tmp", **common, **settings)
    tag = "" if list(bptt_multiples) == [1] else "_x" + "_".join(f"{m:g}" for m in bptt_multiples)
    stem = os.path.join(out, f"{family or task}_e2e_T{T}_s{seed}" + (f"_bptt{tag}" if bptt_only else ""))
    folder = save_dir or os.path.join(out, f"final_{family or task}_T{T}_s{seed}")  # the saved student/ + teacher/
    if os.path.exists(stem + ".json") and json.load(open(stem + ".json")).get("family") != family:
        raise ValueError(f"{stem}.json is a run of another family ({json.load(open(stem + '.json')).get('family')!r}, "
                         f"not {family!r}): use another --out")
    if not (bptt_only or continue_dmt or add_full_rollout or dmt_from_init):
        refuse_existing_runs(out, family or task, T, [seed])
    for path in glob.glob(os.path.join(out, f"{family or task}_e2e_T{T}_s*.json")):  # its tables average these
        other = json.load(open(path))
        theirs = (student_backbone(other),
                  other.get("settings", {}).get("bptt", BPTT)["learning_rate"])  # older JSONs: the recipe's
        if theirs != (backbone, bptt_set["learning_rate"]):
            raise ValueError(f"{path} ran backbone {theirs[0]!r} with BPTT lr {theirs[1]:g}, not {backbone!r} with "
                             f"{bptt_set['learning_rate']:g}: its table would average both; use another --out")
    train_kw = fam["train_task_kwargs"] if fam else {}
    segs, kept_command = {}, None  # bptt_only: the rows kept and run, checked before the episodes are built
    if bptt_only and stop_at is not None and time.time() >= stop_at:
        print(f"[stop-at] seed {seed}: the deadline has passed, not started", flush=True)
        return rows
    if bptt_only:
        training = {k: v for k, v in {**common, **bptt_set}.items() if k != "disable_tqdm"}
        kept, segs, kept_command = open_rows(out, stem, bptt_multiples, bptt_seconds, {
            "machine": machine(), "threads": threads, "versions": versions(), "task": task, "family": family,
            "seq_len": T, "seed": seed, "task_kwargs": kw, "train_task_kwargs": train_kw, "model": model,
            "bptt": bptt_set, "training": training}, resume, bptt_row)
        rows[:] = kept
    train, ev = episodes(task, T, seed, kw, train_kw)
    os.makedirs(out, exist_ok=True)
    phase_settings = {"smt": smt_set, "dmt": dmt_set, "full_rollout": FULL_ROLLOUT, "bptt": bptt_set}
    run_info = {**({"command": kept_command or command} if kept_command or command else {}), "task": task,
                "family": family, "task_kwargs": kw, **({"train_task_kwargs": train_kw} if train_kw else {}),
                "seq_len": T, "seed": seed, "machine": machine(), "threads": threads, "model": model,
                "settings": phase_settings, "rows": rows, "drift": curves}

    loaded = []  # in a run that appends rows: how many rows the file had when read (the rest are this run's)

    def save():  # written whole, then moved into place: an interrupted save leaves the earlier file
        if loaded and os.path.exists(stem + ".json"):  # rows another run appended since we read the file are kept
            disk, ours = json.load(open(stem + ".json")), rows[loaded[0]:]
            mine = {json.dumps(r, sort_keys=True) for r in ours}  # (as text: JSON's lists for tuples, NaN == NaN)
            rows[:] = [r for r in disk["rows"] if json.dumps(r, sort_keys=True) not in mine] + ours
            loaded[0] = len(rows) - len(ours)
            curves.update({k: tuple(c) for k, c in (disk.get("drift") or {}).items() if k not in curves})
        write_json(stem + ".json", run_info)

    def reproduce_smt(what: str, wrong: list[str]):
        """Joint SMT re-trained from the seed (add_full_rollout, retrain_teacher): refused before training if the run
        ran other threads, model, SMT settings or steps (or `wrong` names another mismatch), and after it if it does
        not give the run's joint-SMT row (steps and every metric); then its teacher is saved. (student, teacher)."""
        prefix = {"full-rollout": "add-full-rollout", "DMT-from-init": "dmt-from-init"}[what]
        first = next((r for r in rows if r["run"] == ROWS[0]), None)
        if first is None:
            raise ValueError(f"{stem}.json has no {ROWS[0]!r} row to match")
        # checked before the SMT re-run, not after it: what would make it another SMT state, or another row
        ours = json.loads(json.dumps({"threads": threads, "model": model, "smt": smt_set, "machine": machine()}))
        theirs = {"threads": run_info.get("threads"), "model": run_info.get("model"),
                  "smt": run_info.get("settings", {}).get("smt", ours["smt"]), "machine": run_info.get("machine")}
        wrong = [f"{k} {theirs[k]} (this run: {ours[k]})" for k in ("threads", "model", "smt") if theirs[k] != ours[k]
                 ] + ([f"smt_steps {first['steps']} (this run: {smt_steps})"] if first["steps"] != smt_steps else []) + wrong
        if wrong:
            raise ValueError(f"{stem}.json ran with " + "; ".join(wrong) + f": no {what} row is added")
        if theirs["machine"] != ours["machine"]:
            print(f"[{prefix}] {stem}.json ran on {theirs['machine']}, this run on {ours['machine']}: its joint SMT may "
                  "not be reproduced bit for bit (checked after the re-run)", flush=True)
        torch.manual_seed(seed)
        student, teacher = build_models(model, vocab, T)
        _, again = phase(ROWS[0], student, teacher, smt_set, smt_steps, record=False)
        if any(json.dumps(first.get(k)) != json.dumps(again.get(k)) for k in ("steps", *METRICS)):  # NaN == NaN
            raise ValueError(f"re-trained joint SMT {again} differs from {stem}.json's {first}: not the same SMT state "
                             f"(another machine, thread count or settings?), so no {what} row is added")
        print(f"[{prefix}] joint SMT reproduced {stem}.json's row", flush=True)
        save_teacher(teacher, os.path.join(folder, "teacher"), prefix)
        return student, teacher

    if continue_dmt or add_full_rollout or dmt_from_init:  # rows appended to this seed's JSON in `out`; the rest kept
        if not os.path.exists(stem + ".json"):
            raise FileNotFoundError(f"{stem}.json: no earlier run of this seed in {out} to add a row to")
        run_info.pop("command", None)  # the file's `command` stays the one that wrote it first (each row: its own)
        saved = json.load(open(stem + ".json"))
        if (saved.get("train_task_kwargs") or {}) != train_kw:  # the new row would train on other episodes
            raise ValueError(f"{stem}.json trained on episodes with train_task_kwargs "
                             f"{saved.get('train_task_kwargs') or {}}, this run on {train_kw}: no row is added")
        run_info.update(saved)
        rows[:] = run_info["rows"]
        run_info["rows"] = rows
        loaded.append(len(rows))
        # the new row's drift curve joins the earlier ones ((steps, values) pairs: JSON gave lists)
        curves.update({name: tuple(c) for name, c in (run_info.get("drift") or {}).items()})
        run_info["drift"] = curves
    if add_full_rollout:
        if any(r["run"] == ROWS[2] for r in rows):  # nothing to add: the other seeds of --seeds still run
            print(f"[add-full-rollout] {stem}.json already has a {ROWS[2]!r} row: seed {seed} left as it is", flush=True)
            return rows
        onestep = next((r for r in rows if r["run"] == ROWS[1]), None)
        if onestep is None:
            raise ValueError(f"{stem}.json has no {ROWS[1]!r} row to match")
        dmt_steps = dmt_steps_given or onestep["steps"]  # a full run gives both DMT rows the same step count
        wrong = [f"dmt_steps {onestep['steps']} (this run: {dmt_steps})"] if onestep["steps"] != dmt_steps else []
        student, teacher = reproduce_smt("full-rollout", wrong)
        phase(ROWS[2], student, teacher, FULL_ROLLOUT, dmt_steps)
        plot_drift(stem, curves, task, T, seed)
        summarize(out, family, task, T)
        return rows
    if dmt_from_init:  # DMT without SMT: the untrained student, the saved (SMT-trained, frozen in DMT) teacher
        from smt_hf import SMTTeacherModel

        onestep = next((r for r in rows if r["run"] == ROWS[1]), None)
        if onestep is None:
            raise ValueError(f"{stem}.json has no {ROWS[1]!r} row to match")
        wrong = [f"{k} {run_info.get(k)} (this run: {v})" for k, v in (("threads", threads), ("model", model))
                 if run_info.get(k) != json.loads(json.dumps(v))]
        steps = dmt_steps_given or onestep["steps"]
        if not set(grads) <= {"one_step", "full_rollout"}:
            raise ValueError(f"dmt_from_init {grads}: supported gradients are one_step and full_rollout")
        phase_of = {"one_step": ("dmt", dmt_set), "full_rollout": ("full_rollout", FULL_ROLLOUT)}
        for grad in grads:  # the control differs from the SMT -> DMT row in its start only
            key, ours = phase_of[grad]
            theirs = run_info.get("settings", {}).get(key)
            if theirs is None:  # a JSON from before settings were recorded: nothing to check against
                print(f"[dmt-from-init] {stem}.json records no {key} settings: this run's {ours} are used", flush=True)
            elif theirs != json.loads(json.dumps(ours)):
                wrong.append(f"the settings of its {grad} DMT row {theirs} (this run: {ours})")
        if wrong:
            raise ValueError(f"{stem}.json ran with " + "; ".join(wrong) + ": no DMT-from-init row is added")
        names = {grad: from_init_row(grad, None if steps == onestep["steps"] else steps) for grad in grads}
        for grad, name in list(names.items()):
            if any(r["run"] == name for r in rows):
                print(f"[dmt-from-init] {stem}.json already has a {name!r} row: left as it is", flush=True)
                del names[grad]
        if names and retrain_teacher:
            teacher = reproduce_smt("DMT-from-init", [])[1]  # its mismatches were refused above
        elif names:
            teacher = SMTTeacherModel.from_pretrained(os.path.join(folder, "teacher"))
            args = SMTTrainingArguments(output_dir="outputs/needle_e2e/tmp", max_steps=1, **{**common, **dmt_set})
            check_saved_teacher(teacher, build_models(model, vocab, T)[0], args, ev, run_info, stem, folder)
        for grad, name in names.items():
            torch.manual_seed(seed)
            student, _ = build_models(model, vocab, T)  # the initialisation the SMT and BPTT rows started from
            phase(name, student, teacher, phase_of[grad][1], steps)
        plot_drift(stem, curves, task, T, seed)
        summarize(out, family, task, T)
        return rows
    if continue_dmt:  # more one-step DMT steps on the student this recipe saved, appended to its JSON as one more row
        from smt_hf import SMTRecurrentForCausalLM, SMTTeacherModel

        student = SMTRecurrentForCausalLM.from_pretrained(os.path.join(folder, "student"))
        teacher = SMTTeacherModel.from_pretrained(os.path.join(folder, "teacher"))
        done = sum(r["steps"] for r in rows if r["run"].startswith(ROWS[1]))
        # the data seed moves on by the steps already done: a continuation draws other episodes and matched
        # transitions than the phases before it (its learning-rate schedule starts afresh)
        tr, _ = phase(f"{ROWS[1]} (+{dmt_steps} steps, {done + dmt_steps} in all)", student, teacher,
                      dict(dmt_set, seed=seed + done), dmt_steps)
        tr.save_model(folder)
        plot_drift(stem, curves, task, T, seed)
        return rows
    torch.manual_seed(seed)
    student, teacher = build_models(model, vocab, T)
    if bptt_only:  # BPTT alone for multiples of a given budget (a run whose SMT/DMT rows were measured separately)
        init = copy.deepcopy(student.state_dict())
        for multiple, segments in segs.items():
            if stop_at is not None and time.time() >= stop_at:
                print(f"[stop-at] {bptt_row(multiple)}: the deadline has passed, not started", flush=True)
                break
            student.load_state_dict(init)
            callbacks = [TimeBudget(multiple * bptt_seconds, spent=segments.spent)]
            _, row = phase(bptt_row(multiple), student, None, bptt_set, 10**6,
                           callbacks + ([Deadline(stop_at)] if stop_at is not None else []), segments=segments)
            if row is None:  # stopped before its budget ran out: the next multiples wait for it
                break
            segments.remove()  # (after the save: a kill before it leaves the checkpoint, not a lost row)
        summarize(out, family, task, T)
        return rows
    init = copy.deepcopy(student.state_dict())
    _, smt = phase(ROWS[0], student, teacher, smt_set, smt_steps)
    smt_state = copy.deepcopy(student.state_dict())
    tr, dmt = phase(ROWS[1], student, teacher, dmt_set, dmt_steps)
    tr.save_model(folder)
    if reusable and reuse_rows(reusable, rows, save):  # the same SMT state (checked, not assumed): no need to re-run
        full_rollout = False
    if full_rollout:
        student.load_state_dict(smt_state)
        phase(ROWS[2], student, teacher, FULL_ROLLOUT, dmt_steps)
    for multiple in bptt_multiples if bptt else ():
        student.load_state_dict(init)
        budget = multiple * (smt["seconds"] + dmt["seconds"] if bptt_seconds is None else bptt_seconds)
        phase(bptt_row(multiple), student, None, bptt_set, 10**6, [TimeBudget(budget)])
    plot_drift(stem, curves, task, T, seed)
    print(f"\n{task}, T={T}, seed {seed}, {machine()}\n{table([run_info])}")
    summarize(out, family, task, T)
    return rows


def plot_drift(stem: str, curves: dict, task: str, T: int, seed: int) -> None:
    """<stem>_drift.png: the standalone student's rollout drift (1 - R^2 per step) of every row that has one."""
    try:
        from smt_hf.viz import plot_curves

        plot_curves(None, curves, stem + "_drift.png", title=f"Rollout drift of the standalone student, {task} T={T}, "
                    f"seed {seed}", xlabel="rollout step", ylabel="1 - R^2")
    except ImportError:  # matplotlib is optional
        pass


def summarize(out: str, family: str | None, task: str, T: int) -> None:
    """Rewrite the family's table over every seed in `out`, and Fig 3 over every family there (a recipe-model run
    such as `--task needle` is a Fig 3 family too)."""
    print(f"\nall seeds in {out}:\n{write_summary(out, family or task, T)}")
    fig3(out, T)


def load_reusable(paths: list[str], task: str, seq_len: int, seed: int, model: dict) -> list[tuple[str, dict]]:
    """The earlier runs (JSON paths) whose full-rollout row may be reused (a run of the seed into another --out: a
    seed's own JSON in --out is refused, `refuse_existing_runs`). Missing files are skipped with a line; a run of
    another task, length, seed or model raises ValueError."""
    found = []
    for path in paths:
        if not os.path.exists(path):
            print(f"[reuse] {path}: no such file, nothing reused from it", flush=True)
            continue
        old = json.load(open(path))
        got = (old.get("task"), old.get("seq_len"), old.get("seed"), old.get("model"))
        if got != (task, seq_len, seed, json.loads(json.dumps(model))):
            raise ValueError(f"{path} is a run of (task, T, seed, model) = {got}, not {(task, seq_len, seed, model)}: "
                             "its rows cannot be reused.")
        found.append((path, old))
    return found


def reuse_rows(found: list[tuple[str, dict]], rows: list[dict], save) -> bool:
    """Append the full-rollout row of an earlier run of the same seed (`load_reusable`), marked `reused_from`. It
    starts from the SMT state, and SMT is deterministic per seed on CPU, so it is reused only when the earlier run's
    joint-SMT row equals this run's (steps and every metric) and its full-rollout settings are this recipe's;
    otherwise ValueError. BPTT rows are never reused: their budget is the wall-clock of the run they belong to.
    Returns whether a row was reused."""
    new = rows[0]
    for path, old in found:
        r = next((r for r in old["rows"] if r["run"] == ROWS[2]), None)
        if r is None or any(x["run"] == ROWS[2] for x in rows):
            continue
        first = next((x for x in old["rows"] if x["run"] == ROWS[0]), None)
        if first is None or any(json.dumps(first.get(k)) != json.dumps(new.get(k)) for k in ("steps", *METRICS)):
            raise ValueError(f"{path}: its joint-SMT row {first} differs from this run's {new}: not the same "
                             "SMT state, so its full_rollout row cannot be reused.")
        if old.get("settings", {}).get("full_rollout") != json.loads(json.dumps(FULL_ROLLOUT)):
            raise ValueError(f"{path}: its full-rollout settings differ from this recipe's {FULL_ROLLOUT}.")
        rows.append({**r, "reused_from": os.path.relpath(path)})
    save()
    return any(x["run"] == ROWS[2] for x in rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="needle", choices=sorted(TASKS),
                   help="without --family: this task, the recipe's model")
    p.add_argument("--family", default=None, help=f"a family of {os.path.relpath(FAMILIES)}: its task, teacher and SMT "
                   "settings (overrides --task)")
    p.add_argument("--bptt-multiples", type=positive_float, nargs="+", default=[1.0],
                   help="BPTT runs, each given this multiple of the SMT + DMT wall-clock (e.g. 1 4)")
    p.add_argument("--fig3", action="store_true",
                   help="only write fig3_T<seq-len>.{json,md,png} over the runs in --out")
    p.add_argument("--seq-len", type=positive_int, default=None, help="default: the family's seq_len, else 32")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed, in turn (default %(default)s)")
    p.add_argument("--smt-steps", type=positive_int, default=None,
                   help="default: the family's smt_steps, else 900 at T<=32, 1400 above")
    p.add_argument("--dmt-steps", type=positive_int, default=None, help="default: the family's dmt_steps, else 300")
    p.add_argument("--threads", type=positive_int, default=1, help="CPU threads (default %(default)s)")
    p.add_argument("--smt-memory-noise", type=float, default=0.0,
                   help="std of the Gaussian noise added to the input memory of each SMT transition (DART-style)")
    p.add_argument("--dmt-stride", type=positive_int, default=None,
                   help="k of one-step DMT: match every k-th transition (drops the family's dmt_matched_steps)")
    p.add_argument("--dmt-matched-steps", type=nonnegative_int, default=None,
                   help="one-step DMT matches this many random transitions per sequence (dmt_matched_steps; "
                        "default: the family's dmt_training, else every transition; 0: every transition)")
    p.add_argument("--reuse-rows", nargs="+", default=None, metavar="JSON",
                   help="take the full_rollout row from earlier runs of the same seed ('{seed}' in a path is replaced) "
                        "when their joint-SMT row equals this run's (then full_rollout is not re-run); never BPTT rows")
    p.add_argument("--dmt-schedule", default=None, help="DMT lr_scheduler_type (e.g. cosine), after warm-up "
                   "(default: the family's dmt_training, else the package's constant_with_warmup; `constant` has no warm-up)")
    p.add_argument("--causal-teacher", action="store_true",
                   help="causal-context teacher (encoder_causal) and SMT on every transition of each episode "
                        "(smt_all_prefixes)")
    p.add_argument("--no-bptt", action="store_true", help="skip the BPTT rows")
    p.add_argument("--continue-dmt", action="store_true",
                   help="run --dmt-steps more one-step DMT steps on the saved student of an earlier run (a row is appended)")
    p.add_argument("--add-full-rollout", action="store_true",
                   help="give an earlier run in --out its full-rollout DMT row: re-train its joint SMT (same flags, "
                        "threads and machine as that run: it must reproduce its row exactly) and run as many "
                        "full-rollout DMT steps as its one-step DMT row from it (seeds that have the row: skipped)")
    p.add_argument("--dmt-from-init", nargs="*", choices=["one_step", "full_rollout"], default=None,
                   metavar="GRADIENT",
                   help="the control of SMT's part: give an earlier run in --out one-step and full-rollout DMT rows "
                        "(or the gradients named: one_step, full_rollout) from the untrained student (BPTT's "
                        "initialisation), its saved SMT-trained teacher labelling, as many steps as its one-step DMT "
                        "row or --dmt-steps (rows already there: skipped)")
    p.add_argument("--retrain-teacher", action="store_true",
                   help="with --dmt-from-init, for a run whose saved teacher is gone: re-train its joint SMT (as "
                        "--add-full-rollout does: it must reproduce the run's row exactly), save that teacher (where "
                        "none is saved) and label the control with it")
    p.add_argument("--bptt-only", action="store_true",
                   help="run only BPTT for --bptt-multiples x --bptt-seconds (<stem>_bptt[_x<multiples>].json)")
    p.add_argument("--stop-after", type=positive_float, default=None, metavar="SECONDS",
                   help="with --bptt-only: a BPTT row still short of its budget this many seconds after this "
                        "command started (one deadline for every seed and multiple) saves a checkpoint "
                        "(<out>/checkpoints/) and writes no row, and no row starts after it; --resume continues it")
    p.add_argument("--resume", action="store_true",
                   help="with --bptt-only: continue the rows --stop-after stopped (same machine and settings), keep "
                        "the rows the JSON has")
    p.add_argument("--bptt-seconds", type=positive_float, default=None,
                   help="BPTT's wall-clock budget (default: the measured wall-clock of joint SMT + one-step DMT)")
    p.add_argument("--no-full-rollout", action="store_true", help="skip the full-rollout DMT row")
    # smt_hf's BACKBONES, copied: --help imports no torch (tests/test_recipe_config.py)
    p.add_argument("--backbone", default="transformer", choices=["transformer", "mlp", "gru"],
                   help="the student's updater, every row (default transformer)")
    p.add_argument("--bptt-lr", type=positive_float, default=None,
                   help=f"BPTT learning rate (default {BPTT['learning_rate']:g})")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"folder for JSON, plots, tables (default {DEFAULT_OUT}; "
                   "a seed whose JSON is there is refused unless a row is added to it)")
    return p


def cli(argv=None):
    a = build_parser().parse_args(argv)
    stop_at = None if a.stop_after is None else time.time() + a.stop_after
    if a.bptt_only and not a.bptt_seconds:
        build_parser().error("--bptt-only needs --bptt-seconds")
    if (a.stop_after is not None or a.resume) and not a.bptt_only:
        build_parser().error("--stop-after and --resume run --bptt-only rows in segments: give them with --bptt-only")
    adds_rows = [a.bptt_only, a.continue_dmt, a.add_full_rollout, a.dmt_from_init is not None]  # to a run in --out
    if sum(adds_rows) > 1:  # (run() raises the same ValueError; here it is a usage error before any seed runs)
        build_parser().error("--bptt-only, --continue-dmt, --add-full-rollout and --dmt-from-init are separate runs: "
                             "give one of them")
    if a.retrain_teacher and a.dmt_from_init is None:
        build_parser().error("--retrain-teacher re-trains the teacher of the --dmt-from-init control: give both")
    try:  # an unknown family, or --fig3 over a folder with no runs of this length: usage errors
        a.seq_len = a.seq_len or (family_settings(a.family)["seq_len"] if a.family else 32)
        if a.fig3:
            fig3(a.out, a.seq_len, require_runs=True)
            return print(open(os.path.join(a.out, f"fig3_T{a.seq_len}.md")).read())
    except (KeyError, FileNotFoundError) as e:
        build_parser().error(str(e.args[0] if isinstance(e, KeyError) else e))
    args = sys.argv[1:] if argv is None else list(argv)
    command = "python " + " ".join(shlex.quote(x) for x in [os.path.relpath(__file__)] + args)
    if not any(adds_rows):  # every seed, first
        refuse_existing_runs(a.out, a.family or a.task, a.seq_len, a.seeds)
    for s in a.seeds:
        run(a.task, a.seq_len, s, a.smt_steps, a.dmt_steps, a.out, a.threads, not a.no_bptt, not a.no_full_rollout,
            bptt_seconds=a.bptt_seconds, bptt_only=a.bptt_only, continue_dmt=a.continue_dmt,
            add_full_rollout=a.add_full_rollout,
            dmt_from_init=False if a.dmt_from_init is None else tuple(a.dmt_from_init) or True,
            retrain_teacher=a.retrain_teacher,
            smt_memory_noise=a.smt_memory_noise, dmt_stride=a.dmt_stride, dmt_schedule=a.dmt_schedule,
            causal_teacher=a.causal_teacher, dmt_matched_steps=a.dmt_matched_steps,
            reuse_from=[p.replace("{seed}", str(s)) for p in a.reuse_rows] if a.reuse_rows else None,
            family=a.family, bptt_multiples=a.bptt_multiples, command=command, backbone=a.backbone, bptt_lr=a.bptt_lr,
            stop_at=stop_at, resume=a.resume)


if __name__ == "__main__":
    cli()
