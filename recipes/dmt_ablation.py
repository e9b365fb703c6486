"""Which levers close the standalone student's drift WITHOUT backpropagation through time (needle retrieval, CPU).

One joint-SMT student per (T, seed); then DMT variants, each started from that same SMT state, each evaluated as
a standalone student (its own initial memory, whole episodes). Every row names its DMT gradient setting:
`one_step` (no gradient across steps: the no-BPTT method) or `full_rollout` (truncated BPTT, shown for reference).

    python recipes/dmt_ablation.py --seq-len 32 --seed 0            # ~15 CPU minutes, one thread
    python recipes/dmt_ablation.py --seq-len 32 --seed 0 --out recipes/results   # write the shipped results

Prints one table; writes <out>/dmt_ablation_T<T>_s<seed>.json and .md (default out: outputs/dmt_ablation).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sibling recipe modules (cli_types)
from cli_types import positive_float, positive_int  # noqa: E402

# DMT variants: name -> SMTTrainingArguments overrides (on top of the shared DMT settings below)
VARIANTS = {
    "one_step, k=8 (old default)": dict(dmt_gradient="one_step", dmt_stride=8, dmt_teacher_transitions=False),
    "one_step, k=1": dict(dmt_gradient="one_step", dmt_stride=1, dmt_teacher_transitions=False),
    "one_step, k=1, + teacher transitions": dict(dmt_gradient="one_step", dmt_stride=1, dmt_teacher_transitions=True),
    "one_step, k=1, + teacher transitions + replay": dict(dmt_gradient="one_step", dmt_stride=1,
                                                          dmt_teacher_transitions=True, dmt_buffer_size=20000),
    "full_rollout, k=8 (truncated BPTT)": dict(dmt_gradient="full_rollout", dmt_stride=8, dmt_teacher_transitions=False),
    "one_step, k=1, + teacher transitions, cosine lr": dict(dmt_gradient="one_step", dmt_stride=1,
                                                            dmt_teacher_transitions=True, lr_scheduler_type="cosine"),
    "one_step, 8 random steps per sequence": dict(dmt_gradient="one_step", dmt_matched_steps=8),
    "one_step, 8 random steps per sequence, cosine lr": dict(dmt_gradient="one_step", dmt_matched_steps=8,
                                                             lr_scheduler_type="cosine"),
    "one_step, 16 random steps per sequence, cosine lr": dict(dmt_gradient="one_step", dmt_matched_steps=16,
                                                              lr_scheduler_type="cosine"),
}
SMT_VARIANTS = {"joint SMT": {}, "joint SMT + memory noise 0.3": dict(smt_memory_noise=0.3)}


def run(seq_len=32, seed=0, smt_steps=900, dmt_steps=300, out="outputs/dmt_ablation", threads=1, variants=None,
        smt_variants=None, dmt_lr=3e-4):
    import torch

    sys.path.insert(0, os.path.dirname(__file__))
    from needle_e2e import MODEL, SMT  # the same models and SMT phase as the end-to-end recipe
    from smt import build_models, machine

    from smt_hf.data import make_task
    from smt_hf.trainer import SMTTrainer
    from smt_hf.training_args import SMTTrainingArguments

    torch.set_num_threads(threads)
    T = seq_len
    train = make_task("needle", 200000, T, seed=seed, vocab_size=16)
    ev = make_task("needle", 512, T, seed=10**6 + seed, vocab_size=16)
    common = dict(context_length=T, future_length=T, rollout_length=T, per_device_eval_batch_size=128, report_to="none",
                  save_strategy="no", use_cpu=True, disable_tqdm=not sys.stderr.isatty(), logging_steps=100, seed=seed, dmt_stride=1)
    rows = []
    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, f"dmt_ablation_T{T}_s{seed}")

    def record(name, trainer, seconds, steps):
        m = trainer.evaluate()
        row = {"smt": smt_name, "dmt": name, "steps": steps, "seconds": round(seconds, 1),
               **{k: m.get(f"eval_{k}") for k in ("teacher_acc", "onestep_acc", "student_acc", "drift_mean", "drift_last")}}
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(stem + ".json", "w") as f:
            json.dump({"seq_len": T, "seed": seed, "machine": machine(), "threads": threads, "smt_steps": smt_steps,
                       "dmt_steps": dmt_steps, "dmt_lr": dmt_lr, "rows": rows}, f, indent=2)

    for smt_name, smt_kw in (smt_variants or SMT_VARIANTS).items():
        torch.manual_seed(seed)
        student, teacher = build_models(MODEL, 16, T)
        args = SMTTrainingArguments(output_dir="outputs/dmt_ablation/smt", max_steps=smt_steps, **SMT, **common, **smt_kw)
        tr = SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=train, eval_dataset=ev)
        t0 = time.time()
        tr.train()
        smt_seconds = time.time() - t0
        record("none (after SMT)", tr, smt_seconds, tr.state.global_step)
        state = (copy.deepcopy(student.state_dict()), copy.deepcopy(teacher.state_dict()))
        for name, kw in (variants or VARIANTS).items():
            student.load_state_dict(state[0])
            teacher.load_state_dict(state[1])
            torch.manual_seed(seed)
            args = SMTTrainingArguments(output_dir="outputs/dmt_ablation/dmt", mode="dmt", max_steps=dmt_steps,
                                        per_device_train_batch_size=32, learning_rate=dmt_lr, dmt_start="initial",
                                        **{**common, **kw})
            tr = SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=train, eval_dataset=ev)
            t0 = time.time()
            tr.train()
            record(name, tr, smt_seconds + time.time() - t0, tr.state.global_step)
    md = render([json.load(open(stem + ".json"))])
    print("\n" + md)
    with open(stem + ".md", "w") as f:
        f.write(md)
    return rows


def render(runs: list[dict]) -> str:
    """Markdown: one table per (T, seed, SMT steps, DMT steps, lr) group of runs of this recipe."""
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["seq_len"], r["seed"], r["smt_steps"], r["dmt_steps"], r["dmt_lr"]), []).append(r)
    return "\n".join(_render_group(g) for g in groups.values())


def _render_group(runs: list[dict]) -> str:
    """One markdown table over the rows of runs with the same T, seed and schedule."""
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["| SMT phase | DMT setting | DMT steps | wall-clock s (SMT+DMT) | teacher acc | one-step acc | standalone acc | "
             "drift 1-R^2 mean / last |", "|---|---|---|---|---|---|---|---|"]
    for r in [r for run in runs for r in run["rows"]]:
        lines.append(f"| {r['smt']} | {r['dmt']} | {r['steps']} | {r['seconds']:.0f} | {fmt(r['teacher_acc'])} | "
                     f"{fmt(r['onestep_acc'])} | {fmt(r['student_acc'])} | {fmt(r['drift_mean'])} / {fmt(r['drift_last'])} |")
    a = runs[0]
    head = (f"needle retrieval T={a['seq_len']}, vocabulary 16 (chance 1/15), seed {a['seed']}, {a['machine']}, "
            f"{a['threads']} thread(s); joint SMT {a['smt_steps']} steps, each DMT variant {a['dmt_steps']} steps at lr "
            f"{a['dmt_lr']:g}, batch 32, rollouts from m_0 over whole episodes, all started from the same SMT state. "
            "Wall-clock on a shared machine (other jobs running): compare within a run only.")
    return f"{head}\n\n" + "\n".join(lines) + "\n"


def cli(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq-len", type=positive_int, default=32, help="needle episode length T (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the models and data (default %(default)s)")
    p.add_argument("--smt-steps", type=positive_int, default=900,
                   help="joint SMT steps, the shared start (default %(default)s)")
    p.add_argument("--dmt-steps", type=positive_int, default=300, help="DMT steps per variant (default %(default)s)")
    p.add_argument("--dmt-lr", type=positive_float, default=3e-4, help="DMT learning rate (default %(default)s)")
    p.add_argument("--threads", type=positive_int, default=1, help="CPU threads (default %(default)s)")
    p.add_argument("--only", nargs="*", help=f"run only these DMT variants (exact names: {list(VARIANTS)})")
    p.add_argument("--smt-only", nargs="*", help=f"run only these SMT variants (exact names: {list(SMT_VARIANTS)})")
    p.add_argument("--out", default="outputs/dmt_ablation", help="folder for JSON and table (default %(default)s)")
    p.add_argument("--report", nargs="+", metavar="JSON", help="only merge these runs' JSON into <out>/dmt_ablation.md")
    a = p.parse_args(argv)
    if a.report:
        loaded = [json.load(open(path)) for path in a.report]  # a run, or a list of runs (an earlier --report)
        runs = [r for x in loaded for r in (x if isinstance(x, list) else [x])]
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "dmt_ablation.md"), "w") as f:
            f.write(render(runs))
        with open(os.path.join(a.out, "dmt_ablation.json"), "w") as f:
            json.dump(runs, f, indent=2)
        print(render(runs))
        return
    def pick(d, keys):
        if keys and set(keys) - set(d):
            p.error(f"unknown variant(s) {sorted(set(keys) - set(d))}; choose from {list(d)}")
        return {k: d[k] for k in keys} if keys else None

    run(a.seq_len, a.seed, a.smt_steps, a.dmt_steps, a.out, a.threads, pick(VARIANTS, a.only),
        pick(SMT_VARIANTS, a.smt_only), a.dmt_lr)


if __name__ == "__main__":
    cli()
