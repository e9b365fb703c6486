"""Helpers and experiment items for `recipes/reproduce.py` (paper figures 3, 4/5, 10-13 at small scale).

Every item is planned by `plan_<name>(P) -> (units, assemble)`: `units` is a list of independent work units
`(function, args)` - module-level functions with picklable arguments, so `reproduce.py --jobs N` can run them in N
worker processes (one CPU thread each) - and `assemble(results)` turns their results, in order, into the item's JSON
payload (settings, per-run numbers). `reproduce.py` adds machine/seed/wall-clock metadata and writes the JSON; the
matching `render_<name>(result, out_dir) -> markdown` draws the PNG and the table from the JSON alone.
"""

from __future__ import annotations

import copy
import math
import os
import time

import numpy as np
import torch

from smt_hf.analysis import bigram_bits, bptt_gradient_norms, complete_after_prefix, smt_gradient_norms
from smt_hf.benchmark import md_table
from smt_hf.callbacks import TimeBudget
from smt_hf.data import load_mnist, load_sketches, load_text, make_task, stream_windows, task_vocab_size
from smt_hf.evaluation import evaluate_smt, summarize
from smt_hf.trainer import SMTTrainer
from smt_hf.training_args import SMTTrainingArguments
from smt_hf.viz import plot_bars, plot_curves, plot_gradient_norms, save_pixel_grid

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Task settings for every item (saved in each JSON). Associative recall with 3 stored pairs (5 queries per
# 16-token sequence instead of 1) and the affine-map task mod 11 (9 maps): the defaults (7 pairs; mod 17, 16 maps)
# left the CPU-sized teacher near chance.
TASK_KW = {"needle": {"vocab_size": 16}, "string_copy": {"vocab_size": 16}, "parity": {},
           "associative_recall": {"n_keys": 4}, "icl_modular": {"vocab_size": 11}}


# ============================================================================ building blocks
def worker_init() -> None:
    """Each worker process: one CPU thread (tiny models on a shared machine run far faster that way), quiet logs."""
    import transformers
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()


def timed(fn, args, log_path: str | None = None):
    """Run one work unit; returns (result, seconds). Module-level, so worker processes can unpickle it.
    With `log_path`, the unit's printed output (training logs) goes to that file instead of the terminal."""
    t0 = time.time()
    if log_path is None:
        res = fn(*args)
    else:
        import contextlib

        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "w", buffering=1) as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            res = fn(*args)
    return res, time.time() - t0


def build_pair(vocab: int, m: dict, max_ctx: int, backbone: str = "transformer", seed: int = 0,
               encoder_causal: bool = False):
    """Student + teacher for model sizes `m` (seeded), built by recipes/smt.py's build_models."""
    from smt import build_models

    torch.manual_seed(seed)
    student, teacher = build_models(
        {"teacher": dict(hidden_size=m["d"], memory_tokens=m["K"], num_encoder_layers=m["enc"], num_decoder_layers=m["dec"],
                         num_attention_heads=m["heads"], intermediate_size=2 * m["d"], encoder_causal=encoder_causal),
         "student": dict(backbone=backbone, updater_layers=m["upd"], updater_intermediate_size=2 * m["d"])}, vocab, max_ctx)
    return student.to(DEVICE), teacher.to(DEVICE)


def run_phase(student, teacher, mode: str, train, ev, steps: int, bs: int, lr: float, seed: int, budget_s=None,
              eval_bs: int = 256, **kw) -> dict:
    """One SMTTrainer phase then `evaluate()`. Returns steps, seconds, eval (last_eval), last logged losses."""
    a = SMTTrainingArguments(
        output_dir=os.path.join("outputs", "repro_tmp", mode), mode=mode, max_steps=steps,
        per_device_train_batch_size=bs, per_device_eval_batch_size=eval_bs, learning_rate=lr, warmup_steps=10,
        logging_steps=max(1, min(50, steps // 4)), report_to="none", save_strategy="no", disable_tqdm=True,
        use_cpu=DEVICE == "cpu", seed=seed, dataloader_num_workers=0, **kw)
    callbacks = [TimeBudget(budget_s)] if budget_s else None
    tr = SMTTrainer(model=student, teacher=None if mode == "bptt" else teacher, args=a, train_dataset=train,
                    eval_dataset=ev, callbacks=callbacks)
    t0 = time.time()
    tr.train()
    sec = time.time() - t0
    tr.evaluate()
    logs = [h for h in tr.state.log_history if "loss" in h]
    last = {k: v for k, v in (logs[-1] if logs else {}).items() if k.endswith("_loss") or k == "loss"}
    ev_ = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in tr.last_eval.items()}
    print(f"  [{mode}] {tr.state.global_step} steps {sec:.1f}s " + " ".join(
        f"{k}={v:.3f}" for k, v in ev_.items() if isinstance(v, float) and k in
        ("teacher_acc", "onestep_acc", "student_acc", "student_loss", "drift_last")), flush=True)
    return {"mode": mode, "steps": tr.state.global_step, "seconds": round(sec, 1), "eval": ev_, "last_losses": last,
            "curve": [(h["step"], h["loss"]) for h in logs]}


def smt_dmt_bptt(name: str, T: int, seed: int, S: dict, m: dict, backbone="transformer", bptt=True, dmt_modes=("full_rollout",)):
    """Item-1 unit: joint SMT -> DMT on one student, and BPTT on a copy of the same initial student with the same
    training wall-clock as SMT+DMT. Teacher accuracy comes from the SMT phase."""
    kw = TASK_KW.get(name, {})
    vocab = task_vocab_size(name, **kw)
    train = make_task(name, S["n_train"], T, seed, **kw)
    ev = make_task(name, S["n_eval"], T, seed + 10**6, **kw)
    student, teacher = build_pair(vocab, m, T, backbone, seed)
    init_student = copy.deepcopy(student)
    out = {"task": name, "T": T, "seed": seed, "backbone": backbone, "vocab": vocab,
           "student_params": student.num_parameters(), "teacher_params": teacher.num_parameters()}
    out["smt"] = run_phase(student, teacher, "joint", train, ev, S["smt_steps"], S["bs"], S["smt_lr"], seed,
                           budget_s=S.get("smt_s"), context_length=T, future_length=T, lambda_dyn=1.0,
                           dmt_stride=S["stride"])  # stride: drift eval
    smt_state = copy.deepcopy(student.state_dict())
    sec = out["smt"]["seconds"]
    for g in dmt_modes:  # "full_rollout" / "one_step", or (gradient, learning rate) for a non-default DMT learning rate
        g, lr = (g, S["dmt_lr"]) if isinstance(g, str) else g
        student.load_state_dict(smt_state)
        r = run_phase(student, teacher, "dmt", train, ev, S["dmt_steps"], S["dmt_bs"], lr, seed,
                      budget_s=S.get("dmt_s"), context_length=T, rollout_length=T - T % S["stride"], dmt_stride=S["stride"], dmt_start="initial",
                      dmt_gradient=g)
        out[f"dmt_{g}" if lr == S["dmt_lr"] else f"dmt_{g}_lr{lr:g}"] = r
    sec += out["dmt_full_rollout"]["seconds"] if "dmt_full_rollout" in out else 0.0
    if bptt:
        out["bptt"] = run_phase(init_student, None, "bptt", train, ev, 100000, S["bs"], S["smt_lr"], seed,
                                budget_s=sec, context_length=T)
    return out


def meanstd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{np.mean(xs):.2f} ± {np.std(xs):.2f}"


# ============================================================================ item 1 / 8: synthetic tasks
def plan_synthetic(P):
    S, m = P["synthetic"], P["model"]
    units = [(smt_dmt_bptt, (name, T, seed, S, m)) for name in S["tasks"] for T in S["lengths"][name]
             for seed in S["seeds"]]
    return units, lambda runs: {"settings": {"schedule": S, "model": m, "task_kwargs": TASK_KW}, "runs": runs}


def _synthetic_rows(runs):
    groups = {}
    for r in runs:
        groups.setdefault((r["task"], r["T"], r.get("backbone", "transformer")), []).append(r)
    rows = []
    for (task, T, bb), rs in groups.items():
        g = lambda ph, k: [x[ph]["eval"].get(k) for x in rs if ph in x]  # noqa: E731
        rows.append([task, T, bb, len(rs), meanstd(g("smt", "teacher_acc")), meanstd(g("bptt", "student_acc")),
                     meanstd(g("smt", "onestep_acc")), meanstd(g("smt", "student_acc")),
                     meanstd(g("dmt_full_rollout", "student_acc")),
                     f"{np.mean([x['smt']['steps'] for x in rs]):.0f}+{np.mean([x['dmt_full_rollout']['steps'] for x in rs]):.0f}",
                     f"{np.mean([x['bptt']['steps'] for x in rs]):.0f}" if all('bptt' in x for x in rs) else "-"])
    return rows


SYN_HEADER = ["task", "T", "backbone", "seeds", "teacher* acc", "BPTT acc", "SMT one-step acc", "SMT standalone acc",
              "SMT->DMT (full_rollout) standalone acc", "SMT+DMT steps", "BPTT steps (same wall-clock)"]


def _bar_plot(rows, path, title):
    labels = [f"{r[0]}\nT={r[1]}" + (f"\n{r[2]}" if r[2] != "transformer" else "") for r in rows]
    cols = [(4, "teacher*"), (5, "BPTT"), (7, "SMT"), (8, "SMT->DMT")]
    series = {name: [float(str(r[c]).split(" ")[0]) if r[c] != "-" else 0 for r in rows] for c, name in cols}
    plot_bars(labels, series, path, title, "accuracy at target positions")


def render_synthetic(res, out, stem="repro_synthetic"):
    rows = _synthetic_rows(res["runs"])
    _bar_plot(rows, os.path.join(out, stem + ".png"), "Synthetic tasks: standalone student accuracy (mean over seeds)")
    md = md_table(SYN_HEADER, rows)
    md += ("\n*teacher = the Transformer teacher's first-step prediction from its own memory (a reference, not an RNN), "
           "on the last target positions of each sequence; student accuracies are over all target positions.\n")
    per = [[r["task"], r["T"], r["seed"]] + [f"{x:.2f}" for x in (
        r["smt"]["eval"]["teacher_acc"], r["bptt"]["eval"]["student_acc"], r["smt"]["eval"]["onestep_acc"],
        r["smt"]["eval"]["student_acc"], r["dmt_full_rollout"]["eval"]["student_acc"])] + [r["bptt"]["steps"]] for r in res["runs"]]
    md += "\n<details><summary>per seed</summary>\n\n" + md_table(
        ["task", "T", "seed", "teacher*", "BPTT", "SMT one-step", "SMT", "SMT->DMT", "BPTT steps"], per) + "\n</details>\n"
    return md


def plan_backbones(P):
    S, m = P["backbones"], P["model"]
    units = [(smt_dmt_bptt, (name, T, seed, S, m, bb)) for bb in S["backbones"] for name, T in S["cases"]
             for seed in S["seeds"]]
    return units, lambda runs: {"settings": {"schedule": S, "model": m, "task_kwargs": TASK_KW}, "runs": runs}


def render_backbones(res, out):
    runs = list(res["runs"])
    syn = os.path.join(out, "repro_synthetic.json")
    cases = {(n, T) for n, T in res["settings"]["schedule"]["cases"]}
    seeds = set(res["settings"]["schedule"]["seeds"])
    if os.path.isfile(syn):  # the transformer rows come from item 1 (same schedule), same seeds
        import json
        runs = [r for r in json.load(open(syn))["runs"] if (r["task"], r["T"]) in cases and r["seed"] in seeds] + runs
    rows = sorted(_synthetic_rows(runs), key=lambda r: (r[0], r[1], r[2]))
    _bar_plot(rows, os.path.join(out, "repro_backbones.png"), "Backbones: standalone student accuracy")
    md = md_table(SYN_HEADER, rows)
    md += (f"\nTransformer rows are item 1's runs with the same seeds; the {'/'.join(res['settings']['schedule']['backbones'])} "
           "rows use the same teacher size, data and schedule.\n")
    return md


# ============================================================================ item 2: joint vs detached SMT
def joint_run(mode: str, Tf: int, seed: int, S: dict, m: dict) -> dict:
    """Item-2 unit: one SMT run (`joint` or detached `smt`) with decoder horizon Tf."""
    T, name = S["T"], S["task"]
    kw = TASK_KW[name]
    train = make_task(name, S["n_train"], T, 0, **kw)
    ev = make_task(name, S["n_eval"], T, 10**6, **kw)
    print(f"[joint] {mode} Tf={Tf} seed={seed}", flush=True)
    student, teacher = build_pair(task_vocab_size(name, **kw), m, T, seed=seed)
    r = run_phase(student, teacher, mode, train, ev, S["steps"], S["bs"], S["lr"], seed, budget_s=S.get("smt_s"),
                  context_length=T, future_length=Tf, lambda_dyn=1.0)
    return {"mode": mode, "Tf": Tf, "seed": seed, **r}


def plan_joint(P):
    S, m = P["joint"], P["model"]
    units = [(joint_run, (mode, Tf, seed, S, m)) for mode in ("joint", "smt") for Tf in S["horizons"] for seed in S["seeds"]]
    return units, lambda runs: {"settings": {"schedule": S, "model": m, "task_kwargs": TASK_KW}, "runs": runs}


def render_joint(res, out):
    S = res["settings"]["schedule"]
    curves, rows = {}, []
    for mode in ("joint", "smt"):
        for key in ("onestep_acc", "teacher_acc"):
            ys = [np.mean([r["eval"][key] for r in res["runs"] if r["mode"] == mode and r["Tf"] == Tf]) for Tf in S["horizons"]]
            curves[f"{'joint' if mode == 'joint' else 'detached'} SMT: {key.replace('_acc', '')}"] = (S["horizons"], ys)
        for Tf in S["horizons"]:
            rs = [r for r in res["runs"] if r["mode"] == mode and r["Tf"] == Tf]
            rows.append(["joint" if mode == "joint" else "detached (smt)", Tf,
                         meanstd([r["eval"]["teacher_acc"] for r in rs]), meanstd([r["eval"]["onestep_acc"] for r in rs]),
                         meanstd([r["eval"]["student_acc"] for r in rs]), meanstd([r["eval"]["teacher_loss"] for r in rs]),
                         meanstd([r["last_losses"].get("decoder_loss") for r in rs])])
    plot_curves(None, curves, os.path.join(out, "repro_joint.png"), title=f"{S['task']} T={S['T']}: joint vs detached SMT",
                xlabel="decoder horizon Tf", ylabel="accuracy at the needle", logx=True, markers=True)
    return md_table(["SMT", "Tf", "teacher acc", "one-step acc", "standalone acc (no DMT)", "teacher loss (nats)",
                     "train decoder loss (last log)"], rows)


# ============================================================================ item 3: gradient norms
def plan_gradients(P):
    return [(gradients_run, (P["gradients"], P["model"]))], lambda rs: rs[0]


def gradients_run(S: dict, m: dict) -> dict:
    T, B = S["T"], S["batch"]
    data = make_task("needle", B, T, 123, vocab_size=16)
    x = torch.tensor(data["input_ids"], device=DEVICE)  # (B, T)
    target = x[:, -1]
    out = {"settings": {"schedule": S, "model": m}, "bptt": {}, "smt": {}}
    for backbone in S["backbones"]:
        for seed in S["seeds"]:
            for init in S["init_ranges"]:
                mm = dict(m)
                student, teacher = build_pair(16, mm, T, backbone, seed)
                if init != 0.02:  # re-draw every weight matrix with std `init` (the default is 0.02)
                    with torch.no_grad():
                        for mod in (student, teacher):
                            for p in mod.parameters():
                                if p.dim() >= 2:
                                    p.normal_(0.0, init)
                key = f"{backbone} seed{seed} init{init}"
                out["bptt"][key] = bptt_gradient_norms(student, x, target)  # the memory after T-1 tokens -> needle
                if backbone == S["backbones"][0]:
                    lab = torch.full_like(x, -100)
                    lab[:, -1] = x[:, -1]
                    out["smt"][f"seed{seed} init{init}"] = smt_gradient_norms(student, teacher, x, lab)
                print(f"[gradients] {key}: bptt |g| at t=0 {out['bptt'][key][0]:.2e}, t=T-2 {out['bptt'][key][-1]:.2e}", flush=True)
    return out


def render_gradients(res, out):
    S = res["settings"]["schedule"]
    lines = [(f"BPTT {k.split(' ')[0]}", k.split("init")[-1], v) for k, v in res["bptt"].items()] + \
            [("SMT (teacher memories)", k.split("init")[-1], v) for k, v in res["smt"].items()]
    plot_gradient_norms(lines, os.path.join(out, "repro_gradients.png"), f"Gradient norms at initialisation, needle "
                        f"T={S['T']}, loss at the last step ({len(S['seeds'])} seeds)")
    rows = []
    for name, d in (("BPTT", res["bptt"]), ("SMT", res["smt"])):
        for k, v in d.items():
            v = np.array(v)
            rows.append([name, k, f"{v[0]:.2e}", f"{v[len(v) // 2]:.2e}", f"{v[-1]:.2e}",
                         f"{(v.max() / max(v.min(), 1e-30)):.1e}"])
    return md_table(["method", "init", "t=0", "t=T/2", "t=T-2", "max/min over t"], rows)


# ============================================================================ item 4: DMT and drift
def plan_dmt(P):
    S, m = P["dmt"], P["model"]
    units = [(smt_dmt_bptt, (S["task"], S["T"], 0, S, m, "transformer", False, S["variants"]))]
    return units, lambda rs: {"settings": {"schedule": S, "model": m}, "run": rs[0]}


def render_dmt(res, out):
    r = res["run"]
    curves = {"after SMT": (r["smt"]["eval"]["drift_steps"], r["smt"]["eval"]["drift_curve"])}
    phases = [k for k in r if k.startswith("dmt_")]
    label = lambda k: "+ DMT, " + ("full_rollout (truncated BPTT)" if "full_rollout" in k else "one_step (no BPTT)") + (  # noqa: E731
        f", lr {k.split('_lr')[1]}" if "_lr" in k else f", lr {res['settings']['schedule']['dmt_lr']:g}")
    for k in phases:
        e = r[k]["eval"]
        curves[label(k)] = (e["drift_steps"], e["drift_curve"])
    plot_curves(None, curves, os.path.join(out, "repro_dmt.png"), title=f"Rollout drift, {r['task']} T={r['T']}",
                xlabel="rollout step", ylabel="1 - R^2 (student vs teacher memory)", markers=True)
    rows = []
    for ph in ["smt"] + phases:
        e = r[ph]["eval"]
        rows.append(["after joint SMT" if ph == "smt" else label(ph), r[ph]["steps"], f"{e['student_loss']:.3f}", f"{e['student_acc']:.2f}", f"{e['onestep_acc']:.2f}",
                     f"{e['drift_mean']:.2f}", f"{e['drift_last']:.2f}"])
    md = md_table(["student", "steps", "student loss (nats)", "standalone acc", "one-step acc", "drift mean",
                   "drift last"], rows)
    syn = os.path.join(out, "repro_synthetic.json")
    if os.path.isfile(syn):
        import json
        runs = json.load(open(syn))["runs"]
        agg = []
        for x in runs:
            a, b = x["smt"]["eval"], x["dmt_full_rollout"]["eval"]
            agg.append([x["task"], x["T"], x["seed"], f"{a['drift_last']:.2f}", f"{b['drift_last']:.2f}",
                        f"{a['student_loss']:.3f}", f"{b['student_loss']:.3f}"])
        d0 = np.mean([x["smt"]["eval"]["drift_last"] for x in runs])
        d1 = np.mean([x["dmt_full_rollout"]["eval"]["drift_last"] for x in runs])
        md += (f"\nAcross all {len(runs)} item-1 runs (DMT with dmt_gradient=full_rollout, i.e. truncated BPTT): final-step drift "
               f"{d0:.2f} after SMT -> {d1:.2f} after DMT (mean).\n\n<details><summary>per run</summary>\n\n" +
               md_table(["task", "T", "seed", "drift last (SMT)", "drift last (DMT)", "loss SMT", "loss DMT"], agg) +
               "\n</details>\n")
    return md


# ============================================================================ item 5: length generalisation
def _acc_at_length(student, teacher, L, n, seed, positions=None):
    ev = make_task("parity", n, L, seed)
    ids, lab = torch.tensor(ev["input_ids"], device=DEVICE), torch.tensor(ev["labels"], device=DEVICE)
    res = []
    for i in range(0, n, 64):
        res.append(evaluate_smt(student, teacher, ids[i:i + 64], lab[i:i + 64], L, eval_positions=positions or L,
                                drift_stride=L))
    s = summarize(res)
    return {k: s.get(k) for k in ("student_acc", "teacher_acc", "onestep_acc", "student_loss", "teacher_loss")}


def plan_length(P):
    return [(length_run, (P["length"], P["model"]))], lambda rs: rs[0]


def length_run(S: dict, m: dict) -> dict:
    T = S["T"]
    train = make_task("parity", S["n_train"], T, 0)
    ev = make_task("parity", S["n_eval"], T, 10**6)
    student, teacher = build_pair(4, m, max(S["eval_lengths"]), seed=0)
    bptt_student = copy.deepcopy(student)
    smt = run_phase(student, teacher, "joint", train, ev, S["smt_steps"], S["bs"], S["smt_lr"], 0, context_length=T,
                    budget_s=S.get("smt_s"), future_length=T, lambda_dyn=1.0)
    smt_student = copy.deepcopy(student)  # evaluated too: DMT can also make a good SMT student worse
    dmt = run_phase(student, teacher, "dmt", train, ev, S["dmt_steps"], S["dmt_bs"], S["dmt_lr"], 0, context_length=T,
                    budget_s=S.get("dmt_s"), rollout_length=T, dmt_stride=S["stride"], dmt_start="initial", dmt_gradient="full_rollout")
    bptt = run_phase(bptt_student, None, "bptt", train, ev, 100000, S["bs"], S["smt_lr"], 0,
                     budget_s=smt["seconds"] + dmt["seconds"], context_length=T)
    rows = []
    for L in S["eval_lengths"]:
        a = _acc_at_length(student, teacher, L, S["n_eval"], 7, S.get("eval_positions"))
        b = _acc_at_length(bptt_student, None, L, S["n_eval"], 7)
        c = _acc_at_length(smt_student, None, L, S["n_eval"], 7)
        rows.append({"L": L, "teacher_acc": a["teacher_acc"], "student_acc": a["student_acc"],
                     "smt_acc": c["student_acc"], "smt_loss": c["student_loss"],
                     "student_loss": a["student_loss"], "teacher_loss": a["teacher_loss"],
                     "bptt_acc": b["student_acc"], "bptt_loss": b["student_loss"]})
        print(f"[length] L={L}: {rows[-1]}", flush=True)
    return {"settings": {"schedule": S, "model": m}, "phases": {"smt": smt, "dmt": dmt, "bptt": bptt}, "rows": rows}


def render_length(res, out):
    S = res["settings"]["schedule"]
    Ls = [r["L"] for r in res["rows"]]
    plot_curves(Ls, {"Transformer teacher*": [r["teacher_acc"] for r in res["rows"]],
                     "SMT->DMT RNN": [r["student_acc"] for r in res["rows"]],
                     **({"SMT RNN (before DMT)": [r["smt_acc"] for r in res["rows"]]} if "smt_acc" in res["rows"][0] else {}),
                     "BPTT RNN": [r["bptt_acc"] for r in res["rows"]]},
                os.path.join(out, "repro_length.png"), title=f"Parity, trained at T={S['T']}",
                xlabel="evaluation length", ylabel="accuracy (all targets)", markers=True, logx=True)
    f = lambda r, k: f"{r[k]:.3f}" if r.get(k) is not None else "-"  # noqa: E731
    return md_table(["eval length", "teacher* acc", "SMT acc", "SMT->DMT acc", "BPTT acc", "teacher* loss", "SMT loss",
                     "SMT->DMT loss", "BPTT loss"],
                    [[r["L"]] + [f(r, k) for k in ("teacher_acc", "smt_acc", "student_acc", "bptt_acc", "teacher_loss",
                                                   "smt_loss", "student_loss", "bptt_loss")] for r in res["rows"]])


# ============================================================================ item 6: byte-level text
def _sample_text(student, prompt: bytes, n: int, seed: int, temperature=0.8) -> str:
    ids = torch.tensor([list(prompt)], device=DEVICE)
    out = complete_after_prefix(student, ids, len(prompt) + n, seed=seed, temperature=temperature)
    return bytes(out[0].tolist()).decode("utf-8", errors="replace")


def text_run(method: str, S: dict, m: dict) -> dict:
    """Item-6 unit. method "smt_dmt": joint SMT then DMT on one student (plus the bigram baseline); "bptt": the same
    initial student trained by BPTT for SMT+DMT's wall-clock budget. Both return their phases and samples."""
    Tc, Tf = S["Tc"], S["Tf"]
    tr_text, ev_text = load_text("auto", split="train"), load_text("auto", split="test")
    train = stream_windows(tr_text.tokens, Tc + Tf, S["n_train"], 0)
    ev = stream_windows(ev_text.tokens, Tc + Tf, S["n_eval"], 1)
    student, teacher = build_pair(256, m, Tc, seed=0)
    common = dict(context_length=Tc, future_length=Tf, split="last", rollout_length=Tf, dmt_stride=S["stride"],
                  eval_bs=32)
    out = {"source": tr_text.source, "phases": {}}
    if method == "smt_dmt":
        out["phases"]["smt"] = run_phase(student, teacher, "joint", train, ev, 100000, S["bs"], S["smt_lr"], 0,
                                         budget_s=S["smt_s"], lambda_dyn=1.0, **common)
        out["phases"]["dmt"] = run_phase(student, teacher, "dmt", train, ev, 100000, S["bs"], S["dmt_lr"], 0,
                                         budget_s=S["dmt_s"], dmt_start="teacher", dmt_gradient="full_rollout", **common)
        # unigram / bigram baselines on the train split, scored on the eval windows (bits per byte)
        out["bigram_bits"] = bigram_bits(tr_text.tokens, ev["input_ids"], 256)
    else:
        out["phases"]["bptt"] = run_phase(student, None, "bptt", train, ev, 100000, S["bs"], S["smt_lr"], 0,
                                          budget_s=S["smt_s"] + S["dmt_s"], **common)
    prompts = [b"ROMEO:\n", b"The king ", b"First Citizen:\n"]
    out["samples"] = [_sample_text(student, p, S["sample_len"], i) for i, p in enumerate(prompts)]
    return out


def plan_text(P):
    S, m = P["text"], P["model_text"]

    def assemble(rs):
        a, b = rs
        return {"settings": {"schedule": S, "model": m, "source": a["source"]}, "phases": {**a["phases"], **b["phases"]},
                "bigram_bits": a["bigram_bits"], "samples": {"smt_dmt": a["samples"], "bptt": b["samples"]}}
    return [(text_run, ("smt_dmt", S, m)), (text_run, ("bptt", S, m))], assemble


def render_text(res, out):
    ph = res["phases"]
    ln2 = math.log(2)
    curves = {"joint SMT (total loss)": ph["smt"]["curve"], "BPTT (CE nats)": ph["bptt"]["curve"]}
    curves = {k: ([a for a, _ in v], [b for _, b in v]) for k, v in curves.items() if v}
    if curves:
        plot_curves(None, curves, os.path.join(out, "repro_text.png"), title="Byte-level text: training loss",
                    xlabel="optimizer step", ylabel="loss")
    rows = [["BPTT student", ph["bptt"]["steps"], ph["bptt"]["seconds"], f"{ph['bptt']['eval']['student_bits']:.3f}", "-"],
            ["joint SMT student (no DMT)", ph["smt"]["steps"], ph["smt"]["seconds"], f"{ph['smt']['eval']['student_bits']:.3f}",
             f"{ph['smt']['eval']['teacher_loss'] / ln2:.3f}"],
            ["SMT->DMT student", f"{ph['smt']['steps']}+{ph['dmt']['steps']}", round(ph["smt"]["seconds"] + ph["dmt"]["seconds"], 1),
             f"{ph['dmt']['eval']['student_bits']:.3f}", f"{ph['dmt']['eval']['teacher_loss'] / ln2:.3f}"],
            ["bigram (train counts)", "-", "-", f"{res['bigram_bits']:.3f}", "-"]]
    md = md_table(["model", "steps", "train seconds", "student bits/byte (eval windows, from m_0)",
                   "teacher* first-step bits/byte"], rows)
    md += ("\nStudent bits are over whole eval windows read from m_0 (cold start included, for BPTT and SMT alike); the "
           "teacher column is its first-step prediction at the last 16 bytes of each window from up to Tc bytes of context.\n")
    md += "\nSamples (standalone student, temperature 0.8, prompt then generated bytes):\n\n"
    for k, label in (("smt_dmt", "SMT->DMT"), ("bptt", "BPTT")):
        for s in res["samples"][k]:
            md += f"- {label}: `{s!r}`\n"
    return md


# ============================================================================ item 7: pixels
def _downsample(ds, side: int, n: int) -> list:
    a = np.asarray(ds["input_ids"][:n], dtype=np.float64).reshape(-1, 28, 28)
    f = 28 // side
    a = a.reshape(-1, side, f, side, f).mean(axis=(2, 4))
    return np.rint(a).astype(np.int64).reshape(len(a), -1)


def _as_dataset(pix):
    from datasets import Dataset
    return Dataset.from_dict({"input_ids": pix.tolist(), "labels": pix.tolist()})


def pixels_run(kind: str, method: str, S: dict, m: dict) -> dict:
    """Item-7 unit on `kind` (mnist / sketches). method "smt_dmt": joint SMT then DMT, completions from a teacher
    prefill of the top half and from m_0; "bptt": BPTT for SMT+DMT's wall-clock budget, completions by the RNN alone."""
    side = S["side"]
    L = side * side
    loader = {"mnist": load_mnist, "sketches": load_sketches}[kind]
    print(f"[pixels] {kind} {method}", flush=True)
    tr_raw, ev_raw = loader("auto", split="train"), loader("auto", split="test")
    train = _as_dataset(_downsample(tr_raw, side, S["n_train"]))
    ev = _as_dataset(_downsample(ev_raw, side, S["n_eval"]))
    student, teacher = build_pair(256, m, L, seed=0)
    kw = dict(context_length=L, eval_bs=32)
    real = torch.tensor(ev["input_ids"][: S["n_show"]], device=DEVICE)
    half = (side // 2) * side
    out = {"source": tr_raw.info.description, "phases": {}, "grid": {}}
    if method == "smt_dmt":
        out["phases"]["smt"] = run_phase(student, teacher, "joint", train, ev, 100000, S["bs"], S["smt_lr"], 0,
                                         budget_s=S["smt_s"], future_length=S["Tf"], lambda_dyn=1.0, **kw)
        out["phases"]["dmt"] = run_phase(student, teacher, "dmt", train, ev, 100000, S["dmt_bs"], S["dmt_lr"], 0,
                                         budget_s=S["dmt_s"], rollout_length=L, dmt_stride=side, dmt_start="initial",
                                         dmt_gradient="full_rollout", **kw)
        out["grid"] = {"real": real.cpu().tolist(),
                       "smt_dmt_completion": complete_after_prefix(student, real[:, :half], L, teacher, seed=0).tolist(),
                       "smt_dmt_unconditional": complete_after_prefix(student, real[:, :0], L, seed=1).tolist()}
    else:
        out["phases"]["bptt"] = run_phase(student, None, "bptt", train, ev, 100000, S["dmt_bs"], S["smt_lr"], 0,
                                          budget_s=S["smt_s"] + S["dmt_s"], **kw)
        out["grid"] = {"bptt_completion": complete_after_prefix(student, real[:, :half], L, seed=0).tolist(),
                       "bptt_unconditional": complete_after_prefix(student, real[:, :0], L, seed=1).tolist()}
    return out


PIXEL_KINDS = ("mnist", "sketches")


def plan_pixels(P):
    S, m = P["pixels"], P["model_pixels"]

    def assemble(rs):
        out = {"settings": {"schedule": S, "model": m}, "datasets": {}}
        for i, kind in enumerate(PIXEL_KINDS):
            a, b = rs[2 * i], rs[2 * i + 1]
            out["datasets"][kind] = {"source": a["source"], "phases": {**a["phases"], **b["phases"]},
                                     "grid": {**a["grid"], **b["grid"]}}
        return out
    return [(pixels_run, (kind, method, S, m)) for kind in PIXEL_KINDS for method in ("smt_dmt", "bptt")], assemble


def render_pixels(res, out):
    S = res["settings"]["schedule"]
    side = S["side"]
    rows = []
    ln2 = math.log(2)
    for kind, d in res["datasets"].items():
        ph = d["phases"]
        seqs, titles = [], []
        for key, label in (("real", "test"), ("smt_dmt_completion", "SMT>DMT half"), ("bptt_completion", "BPTT half"),
                           ("smt_dmt_unconditional", "SMT>DMT m0"), ("bptt_unconditional", "BPTT m0")):
            for s in d["grid"][key]:
                seqs.append(s)
                titles.append(label)
        save_pixel_grid(seqs, os.path.join(out, f"repro_pixels_{kind}.png"), side, side, ncols=len(d["grid"]["real"]),
                        titles=titles, suptitle=f"{kind} {side}x{side}: rows = test, SMT->DMT completes bottom half (teacher "
                        "prefill), BPTT completes, SMT->DMT from m0, BPTT from m0")
        rows.append([kind, "BPTT", ph["bptt"]["steps"], ph["bptt"]["seconds"], f"{ph['bptt']['eval']['student_bits']:.3f}", "-"])
        rows.append([kind, "joint SMT (no DMT)", ph["smt"]["steps"], ph["smt"]["seconds"],
                     f"{ph['smt']['eval']['student_bits']:.3f}", f"{ph['smt']['eval']['teacher_loss'] / ln2:.3f}"])
        rows.append([kind, "SMT->DMT", f"{ph['smt']['steps']}+{ph['dmt']['steps']}",
                     round(ph["smt"]["seconds"] + ph["dmt"]["seconds"], 1), f"{ph['dmt']['eval']['student_bits']:.3f}",
                     f"{ph['dmt']['eval']['teacher_loss'] / ln2:.3f}"])
    md = md_table(["data", "student", "steps", "train seconds", "student bits/pixel (whole image, from m_0)",
                   "teacher* first-step bits/pixel (last 16 pixels only)"], rows)
    md += ("\n*The teacher column is measured only at the last 16 pixels of each image (the evaluation's probe positions: "
           "bottom rows, mostly background), so it is not comparable with the whole-image student columns.\n")
    md += "".join(f"\n![{k}](repro_pixels_{k}.png)\n" for k in res["datasets"])
    return md


# ============================================================================ extra: causal-context teacher
def prefixes_run(name: str, T: int, seed: int, S: dict, m: dict) -> dict:
    """Extra-item unit: a causal-context teacher trained by joint SMT on the split path (one supervised transition
    per sequence, `smt_steps`) and, from the same initialisation, on the all-prefix path (every transition) for the
    same training wall-clock; then the same DMT phase on each student."""
    kw = TASK_KW.get(name, {})
    vocab = task_vocab_size(name, **kw)
    train = make_task(name, S["n_train"], T, seed, **kw)
    ev = make_task(name, S["n_eval"], T, seed + 10**6, **kw)
    out = {"task": name, "T": T, "seed": seed}
    budget = None
    for path, flag in (("split", False), ("all_prefixes", True)):
        student, teacher = build_pair(vocab, m, T, seed=seed, encoder_causal=True)
        print(f"[prefixes] {name} T={T} seed={seed} {path}", flush=True)
        smt = run_phase(student, teacher, "joint", train, ev, S["smt_steps"] if budget is None else 100000, S["bs"],
                        S["smt_lr"], seed, budget_s=S.get("smt_s") if budget is None else budget, context_length=T, future_length=T, lambda_dyn=1.0,
                        dmt_stride=S["stride"], smt_all_prefixes=flag)
        budget = budget or smt["seconds"]
        dmt = run_phase(student, teacher, "dmt", train, ev, S["dmt_steps"], S["dmt_bs"], S["dmt_lr"], seed,
                        budget_s=S.get("dmt_s"), context_length=T, rollout_length=T - T % S["stride"],
                        dmt_stride=S["stride"], dmt_start="initial", dmt_gradient="full_rollout")
        out[path] = {"smt": smt, "dmt": dmt}
    return out


def plan_prefixes(P):
    S, m = P["prefixes"], P["model"]
    units = [(prefixes_run, (name, T, seed, S, m)) for name, T in S["cases"] for seed in S["seeds"]]
    return units, lambda runs: {"settings": {"schedule": S, "model": m, "task_kwargs": TASK_KW}, "runs": runs}


def render_prefixes(res, out):
    rows, labels, vals = [], [], {"split": [], "all_prefixes": []}
    for r in res["runs"]:
        for path, name in (("split", "one split per sequence"), ("all_prefixes", "all prefixes")):
            a, b = r[path]["smt"], r[path]["dmt"]
            rows.append([r["task"], r["T"], r["seed"], name, a["steps"], a["seconds"], f"{a['eval']['teacher_acc']:.2f}",
                         f"{a['eval']['onestep_acc']:.2f}", f"{a['eval']['student_acc']:.2f}",
                         f"{a['eval']['drift_last']:.2f}", f"{b['eval']['student_acc']:.2f}"])
            vals[path].append(b["eval"]["student_acc"])
        labels.append(f"{r['task']}\nT={r['T']} s{r['seed']}")
    plot_bars(labels, {"one split per sequence": vals["split"], "all prefixes": vals["all_prefixes"]},
              os.path.join(out, "repro_prefixes.png"),
              "Causal-context teacher: split path vs all prefixes\n(same SMT wall-clock)", "standalone acc after SMT->DMT")
    return md_table(["task", "T", "seed", "SMT path", "SMT steps", "SMT seconds", "teacher* acc", "one-step acc",
                     "standalone acc (SMT)", "drift last (SMT)", "standalone acc (SMT->DMT)"], rows)
