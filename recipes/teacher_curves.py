"""Teacher calibration per synthetic family: does the Transformer teacher learn the task at all, and how fast (CPU).

SMT's student can only be as good as its teacher's memories, so every family of the Fig 3 comparison first needs
a teacher that solves it. For each family in the YAML (default recipes/configs/calibration/teachers.yaml) this trains a
teacher + student in `smt` mode (the student's transition is trained on detached memories, so it does not shape the
teacher) under a wall-clock budget, evaluates every `eval_steps` steps on held-out episodes, and stops once the
teacher reaches `target` accuracy (or the budget ends; a family whose `smt_training` schedules the decoder loss with
`lambda_dec_start_step` / `lambda_dec_ramp_steps`, or a `seq_len_curriculum`, runs at least until the whole loss is on). Learning curve = teacher
accuracy (first-step prediction at the last target positions, `smt_hf.evaluation`) against step and seconds; each
point also records the SMT one-step accuracy (the student's transition, trained on detached memories, one step from
the teacher's memory): a teacher can answer each query yet keep a memory no RNN can carry forward.

    python recipes/teacher_curves.py                                  # every family of the YAML, one thread
    python recipes/teacher_curves.py --only needle parity --seeds 0   # a subset
    python recipes/teacher_curves.py --out recipes/results            # update the shipped results

Writes <out>/teacher_curves.json (merged with what is already there, one entry per family/T/seed), .md and .png.
Default out: outputs/teacher_curves.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sibling recipe modules (cli_types)
from cli_types import positive_float, positive_int  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, "configs", "calibration", "teachers.yaml")
# keys of a family's end-to-end run (recipes/needle_e2e.py), not of the calibration: left out of its settings
E2E_KEYS = ("smt_steps", "dmt_steps", "dmt_training")


def run_one(name: str, spec: dict, defaults: dict, seed: int, threads: int = 1) -> dict:
    """Train one teacher; returns `result(...)`: the curve is [(step, seconds, teacher_acc, onestep_acc)]."""
    import torch
    from transformers import TrainerCallback

    sys.path.insert(0, HERE)
    from smt import build_models

    from smt_hf.callbacks import TimeBudget
    from smt_hf.data import task_vocab_size
    from smt_hf.trainer import SMTTrainer
    from smt_hf.training_args import SMTTrainingArguments

    cfg = {**defaults, **spec}
    if cfg.get("reference_lm"):
        return run_reference_lm(name, cfg, seed, threads)
    task, T, kw = cfg["task"], cfg["seq_len"], dict(cfg.get("task_kwargs") or {})
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    vocab = task_vocab_size(task, **kw)
    train, ev = episode_sets(cfg, seed)
    student, teacher = build_models({"teacher": cfg["teacher"], "student": cfg["student"]}, vocab, T)
    curve: list[list[float]] = []
    t0 = [0.0]
    full_loss_at = full_loss_step(cfg)

    class Curve(TrainerCallback):  # teacher (and SMT one-step) accuracy after each evaluation; stop at the target
        def on_train_begin(self, args, state, control, **kw):
            t0[0] = time.time()

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            acc = metrics.get("eval_teacher_acc")
            if acc is None:
                raise ValueError(f"[{name}] evaluation returned no teacher accuracy (no target positions?): {metrics}")
            one = metrics.get("eval_onestep_acc")
            curve.append([state.global_step, round(time.time() - t0[0], 1), acc, one])
            print(f"[{name} s{seed}] step {state.global_step} {curve[-1][1]:.0f}s teacher_acc {acc:.3f} "
                  f"onestep_acc {fmt(one)}", flush=True)
            if acc >= cfg["target"] and state.global_step >= full_loss_at:  # a loss schedule runs through
                control.should_training_stop = True

    args = SMTTrainingArguments(**{  # a family's `training` overrides any of these (e.g. future_length)
        "output_dir": "outputs/teacher_curves/tmp", "mode": "smt", "max_steps": cfg["max_steps"], "context_length": T,
        "future_length": T, "per_device_train_batch_size": cfg["batch_size"], "per_device_eval_batch_size": 256,
        "learning_rate": cfg["learning_rate"], "warmup_steps": cfg["warmup_steps"], "eval_strategy": "steps",
        "eval_steps": cfg["eval_steps"], "report_to": "none", "save_strategy": "no", "use_cpu": True,
        "logging_steps": 10**6, "disable_tqdm": True, "seed": seed, **(cfg.get("training") or {}),
        **(cfg.get("smt_training") or {})})
    tr = SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=train, eval_dataset=ev,
                    callbacks=[Curve(), TimeBudget(cfg["budget_seconds"])])
    tr.train()
    if not curve or curve[-1][0] != tr.state.global_step:  # the budget ended between evaluations
        tr.evaluate()
    return result(name, cfg, seed, threads, curve)


def episode_sets(cfg: dict, seed: int):
    """(training, held-out) episodes of a family's run (`datasets.Dataset`s of `smt_hf.data.make_task`):
    `num_train` drawn with `seed` and `num_eval` with seed 10**6 + seed, both with `task_kwargs`; a family's
    `train_task_kwargs` go on top for the training episodes only (e.g. string_copy's `min_string_len`: mixed
    lengths to train on, full-length strings held out). ValueError if they would change the vocabulary."""
    from smt_hf.data import make_task, task_vocab_size

    task, T, kw = cfg["task"], cfg["seq_len"], dict(cfg.get("task_kwargs") or {})
    train_kw = {**kw, **(cfg.get("train_task_kwargs") or {})}
    v_train, v = task_vocab_size(task, **train_kw), task_vocab_size(task, **kw)
    if v_train != v:
        raise ValueError(f"train_task_kwargs {cfg.get('train_task_kwargs')} change {task}'s vocabulary "
                         f"({v_train} vs {v}): training and held-out episodes must share one model")
    return (make_task(task, cfg["num_train"], T, seed=seed, **train_kw),
            make_task(task, cfg["num_eval"], T, seed=10**6 + seed, **kw))


def full_loss_step(cfg: dict) -> int:
    """Optimizer steps after which a family's schedules have trained at least one step on the whole loss (0 without
    one): the decoder-loss schedule (`lambda_dec_start_step` / `lambda_dec_ramp_steps`; step index k has the full
    weight from k = start + ramp - 1 (a ramp) or k = start (a step change), i.e. after start + max(ramp, 1) steps)
    and the `seq_len_curriculum` (its last length from step index (stages - 1) * seq_len_curriculum_steps)."""
    sched = {**(cfg.get("training") or {}), **(cfg.get("smt_training") or {})}
    start, ramp = sched.get("lambda_dec_start_step", 0), sched.get("lambda_dec_ramp_steps", 0)
    dec = start + max(ramp, 1) if start or ramp else 0
    lens = sched.get("seq_len_curriculum") or []
    return max(dec, (len(lens) - 1) * sched.get("seq_len_curriculum_steps", 0) + 1 if lens else 0)


def result(name: str, cfg: dict, seed: int, threads: int, curve: list) -> dict:
    """One run's record: {family, task, T, seed, machine, settings, curve: [(step, seconds, teacher_acc[,
    onestep_acc])], final_teacher_acc, final_onestep_acc, reached_at}. `reached_at` is the first point at the target
    with the whole loss on (after a decoder-loss schedule; `full_loss_step`)."""
    sys.path.insert(0, HERE)
    from smt import machine

    reached = next((c for c in curve if c[2] >= cfg["target"] and c[0] >= full_loss_step(cfg)), None)
    return {"family": name, "task": cfg["task"], "seq_len": cfg["seq_len"], "seed": seed, "machine": machine(),
            "threads": threads, "settings": {k: v for k, v in cfg.items() if k not in E2E_KEYS}, "curve": curve,
            "final_teacher_acc": curve[-1][2],
            "final_onestep_acc": curve[-1][3] if len(curve[-1]) > 3 else None,
            "reached_at": None if reached is None else {"step": reached[0], "seconds": reached[1]}}


def lm_accuracy(logits_fn, input_ids, labels, per_row: int) -> float:
    """Accuracy of a causal LM scored like the teacher: at the teacher's positions (smt_hf.evaluation: the last
    `per_row` targets t >= 1 of each row) the logits at t-1, which have read x[:t], against labels[t].
    logits_fn: (B, L) ids -> (B, L, V)."""
    import torch

    from smt_hf.evaluation import _target_positions

    rows, cols = _target_positions(labels, per_row)
    with torch.no_grad():
        return (logits_fn(input_ids)[rows, cols - 1].argmax(-1) == labels[rows, cols]).float().mean().item()


def run_reference_lm(name: str, cfg: dict, seed: int, threads: int = 1) -> dict:
    """A family with `reference_lm: true`: no teacher, a plain causal Transformer LM (the teacher's width, heads and
    encoder depth, AdamW with the family's lr / warm-up / batch) on the same episodes, scored like the teacher (the
    prediction of labels[t] from x[:t] at the last `eval_positions` target positions; a `seq_len_curriculum` in
    `training` / `smt_training` masks the labels as SMTTrainer does). It tells whether the task is
    learnable at this size at all, apart from squeezing the answer through K registers and the decoder. Same return
    value as `run_one`."""
    import torch
    from torch import nn

    from smt_hf.data import task_vocab_size
    from smt_hf.modeling_layers import TransformerStack
    from smt_hf.losses import readout_loss
    from smt_hf.training_args import SMTTrainingArguments
    from smt_hf.training_module import curriculum_length, mask_labels_from

    task, T, kw, t = cfg["task"], cfg["seq_len"], dict(cfg.get("task_kwargs") or {}), cfg["teacher"]
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    vocab, d = task_vocab_size(task, **kw), t["hidden_size"]
    model = nn.ModuleDict({"embed": nn.Embedding(vocab, d), "head": nn.Linear(d, vocab),
                           "body": TransformerStack(d, t["num_encoder_layers"], t["num_attention_heads"], 4 * d)})

    def logits(x):  # (B, L) -> (B, L, V); position t-1 (has read x[:t]) predicts labels[t]
        return model["head"](model["body"](model["embed"](x), causal=True))

    data = episode_sets(cfg, seed)
    (ids, lab), (eids, elab) = [(torch.tensor(ds["input_ids"]), torch.tensor(ds["labels"])) for ds in data]
    per_row = (cfg.get("training") or {}).get("eval_positions", 16)
    curriculum = {k: v for k, v in {**(cfg.get("training") or {}), **(cfg.get("smt_training") or {})}.items()
                  if k in ("seq_len_curriculum", "seq_len_curriculum_steps")}
    if curriculum:  # SMTTrainingArguments' checks (lengths, steps per stage, last stage before max_steps)
        SMTTrainingArguments(output_dir="outputs/teacher_curves/tmp", mode="bptt", max_steps=cfg["max_steps"],
                             use_cpu=True, report_to="none", **curriculum)
    lens, stage = curriculum.get("seq_len_curriculum"), curriculum.get("seq_len_curriculum_steps", 0)  # as SMTTrainer
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["learning_rate"], betas=(0.9, 0.95), weight_decay=0.01)
    warm = max(int(cfg["warmup_steps"]), 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
    curve, t0, step = [], time.time(), 0
    while step < cfg["max_steps"] and time.time() - t0 < cfg["budget_seconds"]:
        b = torch.randint(0, len(ids), (cfg["batch_size"],))
        y = mask_labels_from(lab[b], curriculum_length(lens, stage, step)) if lens else lab[b]
        loss = readout_loss(logits(ids[b, :-1]), y[:, 1:])  # mean over the targets, 0 when a batch has none
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % cfg["eval_steps"] == 0:
            acc = lm_accuracy(logits, eids, elab, per_row)
            curve.append([step, round(time.time() - t0, 1), acc])
            print(f"[{name} s{seed}] step {step} {curve[-1][1]:.0f}s reference LM acc {acc:.3f}", flush=True)
            if acc >= cfg["target"] and step >= full_loss_step(cfg):
                break
    if not curve or curve[-1][0] != step:  # the budget ended between evaluations (or before the first): score the end
        curve.append([step, round(time.time() - t0, 1), lm_accuracy(logits, eids, elab, per_row)])
    return result(name, cfg, seed, threads, curve)


def extra(s: dict) -> str:
    """The settings a row's other columns do not show: task kwargs, causal encoder, training arguments."""
    kv = {**(s.get("task_kwargs") or {}), **{f"train {k}": v for k, v in (s.get("train_task_kwargs") or {}).items()},
          **({"encoder_causal": True} if s["teacher"].get("encoder_causal") else {}),
          **(s.get("training") or {}), **(s.get("smt_training") or {})}
    return ", ".join(f"{k}={v}" for k, v in kv.items()) or "-"


def fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def table(runs: list[dict]) -> str:
    lines = ["| family | T | seed | width d | K | enc/dec layers | lr | batch | target | budget s | reached at step | "
             "reached at s | final teacher acc | final SMT one-step acc | steps run | wall-clock s | other settings |",
             "|---|" + "---|" * 16]
    for r in sorted(runs, key=lambda r: (r["family"], r["seq_len"], r["seed"])):
        s, t = r["settings"], r["settings"]["teacher"]
        hit = r["reached_at"]
        lines.append(
            f"| {r['family']} | {r['seq_len']} | {r['seed']} | {t['hidden_size']} | "
            + ("- (causal LM) | " if s.get("reference_lm") else f"{t['memory_tokens']} | ")
            + f"{t['num_encoder_layers']}/{0 if s.get('reference_lm') else t['num_decoder_layers']} | "
            f"{s['learning_rate']:g} | {s['batch_size']} | "
            f"{s['target']} | {s['budget_seconds']} | {hit['step'] if hit else 'not reached'} | {hit['seconds'] if hit else '-'} | "
            f"{r['final_teacher_acc']:.3f} | {fmt(r.get('final_onestep_acc'))} | {r['curve'][-1][0]} | {r['curve'][-1][1]:.0f} | {extra(s)} |")
    return "\n".join(lines)


def write(out: str, new: list[dict]) -> str:
    path = os.path.join(out, "teacher_curves.json")
    runs = json.load(open(path)) if os.path.exists(path) else []
    key = lambda r: (r["family"], r["seq_len"], r["seed"])  # noqa: E731
    runs = [r for r in runs if key(r) not in {key(n) for n in new}] + new
    with open(path, "w") as f:
        json.dump(runs, f, indent=2)
    machines = sorted({r["machine"] for r in runs})
    md = (f"# Teacher calibration per family (recipes/teacher_curves.py)\n\nMachine: {'; '.join(machines)}, "
          "shared with other jobs (wall-clock, evaluation included, is an upper bound). Mode `smt`, "
          "teacher accuracy = first-step prediction at the last target positions of held-out episodes; each run "
          "stops at its target or its wall-clock budget. Final SMT one-step acc = the student's one step from the "
          "teacher's memory (`-`: a run recorded before this column or a reference LM).\n\n" + table(runs) + "\n\n![curves](teacher_curves.png)\n")
    with open(os.path.join(out, "teacher_curves.md"), "w") as f:
        f.write(md)
    try:
        plot(runs, os.path.join(out, "teacher_curves.png"))
    except ImportError:  # matplotlib is optional
        pass
    return md


def plot(runs: list[dict], path: str) -> str:
    """One panel per task (its families, lengths and seeds as curves): accuracy against wall-clock, log scale (runs
    last from seconds to 40 minutes); the panel's target (the highest of its runs) as a dashed line."""
    from smt_hf.viz import plot_panels

    task = lambda r: r.get("task") or r["settings"]["task"]  # noqa: E731
    tasks = sorted({task(r) for r in runs})
    panels = [{"curves": {f"{r['family']}" + (f" T={r['seq_len']}" if f"T{r['seq_len']}" not in r["family"] else "")
                          + (f" s{r['seed']}" if r["seed"] else ""): ([max(c[1], 1.0) for c in r["curve"]], [c[2] for c in r["curve"]])
                          for r in sorted(runs, key=lambda r: (r["family"], r["seq_len"], r["seed"])) if task(r) == t},
               "title": t, "xlabel": "wall-clock s (log)", "ylabel": "accuracy", "logx": True, "data_xticks": False,
               "hline": max(r.get("settings", {}).get("target", 0.95) for r in runs if task(r) == t)}
              for t in tasks]
    return str(plot_panels(panels, path, suptitle="Teacher (or causal-LM reference, *_lm) accuracy while training, "
                                                   "held-out episodes; dashed: the target", ncols=2))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="the families' YAML (default: recipes/configs/calibration/teachers.yaml)")
    p.add_argument("--only", nargs="+", default=None, help="family names of the YAML's `families` to run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="one run per family and seed (default %(default)s)")
    p.add_argument("--threads", type=positive_int, default=1, help="CPU threads (default %(default)s)")
    p.add_argument("--out", default="outputs/teacher_curves",
                   help="folder for JSON, table and plot (default %(default)s)")
    p.add_argument("--budget-seconds", type=positive_float, default=None,
                   help="wall-clock budget of every run, instead of the family's `budget_seconds` (recorded in its "
                        "settings); a run that hits it keeps the curve so far")
    a = p.parse_args(argv)
    budget = None if a.budget_seconds is None else int(a.budget_seconds) if a.budget_seconds.is_integer() else a.budget_seconds
    from smt_hf.recipe_config import load_preset  # (after --help: no torch for it)

    cfg = load_preset(a.config)  # the recipes' one YAML loader (smt_hf.recipe_config)
    families = cfg["families"]
    unknown = set(a.only or []) - set(families)
    if unknown:
        p.error(f"--only {sorted(unknown)}: not in {a.config}; choose from {sorted(families)}")
    os.makedirs(a.out, exist_ok=True)
    for name in a.only or families:
        for seed in a.seeds:
            spec = families[name] if budget is None else {**families[name], "budget_seconds": budget}
            print(write(a.out, [run_one(name, spec, cfg["defaults"], seed, a.threads)]), flush=True)


if __name__ == "__main__":
    main()
