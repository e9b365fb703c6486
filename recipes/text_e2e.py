"""Byte-level text that carries information (issue 13, item 3): Shakespeare bytes on CPU, no download.

--diagnose: the memory collapse. One model (recipes/configs/text_cpu.yaml: width 64, K=4, Tc=64, Tf=32) trained
    with each SMT setting in SETTINGS for the same number of steps. Per setting, on held-out windows: the teacher's
    first-step bits/byte (its memory alone predicts the next byte; a memory worth having beats the bigram model,
    which sees only the last byte), its decoder bits over all Tf future bytes (it also reads the earlier future
    bytes, so a local language model can score well with an empty memory), the uniformity of the memory tokens,
    how much memories differ between windows (`memory_spread`: 0 = every window gets the same memory), and the
    student after SMT. Writes <out>/text_diagnosis.{json,md,png}.
--compare SETTING: that setting for --smt-steps, then one-step DMT (no BPTT), and BPTT (the same student from the
    same initialisation) for the wall-clock of SMT + DMT. Scored on bytes Tc..L-1 of every eval window, from m_0
    (the model reads the first Tc bytes itself) and after a teacher prefill of Tc bytes (how the paper scores).
    Writes <out>/text_e2e_s<seed>.json and <out>/text_e2e.md (every seed's rows, then the mean over seeds).

    python recipes/text_e2e.py --diagnose --steps 1000 --out recipes/results/text
    python recipes/text_e2e.py --compare joint_dyn0.1_gamma0.9 --smt-steps 4000 --dmt-steps 300 --seed 1 \\
        --out recipes/results/text
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sibling recipe modules (cli_types)
from cli_types import positive_int  # noqa: E402

PRESET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "text_cpu.yaml")
SMT_BASE = {"mode": "joint", "learning_rate": 1e-3}
# SMT settings compared by --diagnose (each a list of phases: SMTTrainingArguments overrides; steps split evenly)
SETTINGS = {
    "joint_dyn1": [{"lambda_dyn": 1.0}],  # the old text preset
    "joint_dyn0.1": [{"lambda_dyn": 0.1}],  # the reference weight
    "joint_dyn0.1_unif0.1": [{"lambda_dyn": 0.1, "lambda_unif": 0.1}],
    "joint_dyn0.1_gamma0.9": [{"lambda_dyn": 0.1, "gamma": 0.9}],  # the decoder loss weights near futures more
    "joint_dyn0.1_gamma0.8": [{"lambda_dyn": 0.1, "gamma": 0.8}],
    "joint_dyn0.1_Tf8": [{"lambda_dyn": 0.1, "future_length": 8}],  # a shorter future leans on the memory more
    "smt": [{"mode": "smt"}],  # detached SMT: L_dyn never reaches the encoder
    "smt_then_joint": [{"mode": "smt"}, {"lambda_dyn": 0.1}],  # L_dyn warm-up: detached first, joint after
}
DMT = {"mode": "dmt", "learning_rate": 3e-4, "dmt_start": "teacher", "dmt_gradient": "one_step", "dmt_stride": 1}
BPTT = {"mode": "bptt", "learning_rate": 1e-3, "warmup_steps": 10, "recurrent_step_compile": "default"}
PROBE_STRIDE = 4  # the teacher's first-step prediction is scored at bytes Tc, Tc+4, ... of every eval window
COLS = {"teacher_first_bits": "teacher first-step", "teacher_future_bits": "teacher decoder, all Tf",
        "bigram_bits": "bigram", "memory_spread": "memory spread", "uniformity": "L_unif (eval)",
        "student_prefill_bits": "student after teacher prefill", "student_own_bits": "student from m_0"}


def config(setting: list[dict], steps: int, seed: int, out: str, extra: list[dict] = (), source: str = "shakespeare",
           eval_windows: int = 256, train_windows: int | None = None) -> dict:
    """The text_cpu preset with `setting`'s SMT phases (`steps` in all) followed by `extra` phases, on text `source`
    (a `smt_hf.data.load_text` source) with `eval_windows` held-out windows."""
    from smt_hf.recipe_config import load_preset

    cfg = load_preset(PRESET)
    n = len(setting)
    cfg["phases"] = [{**SMT_BASE, **p, "max_steps": steps // n} for p in setting] + list(extra)
    cfg.update(seed=seed, output_dir=out)
    cfg["data"] = {**cfg["data"], "source": source, "num_eval": eval_windows}
    if train_windows:
        cfg["data"]["num_train"] = train_windows
    return cfg


def eval_data(cfg: dict, ev=None) -> tuple:
    """(eval windows (N, L) as a tensor, training token stream) of a config: what `score` reads. `ev`: the config's
    eval dataset when already built."""
    import torch

    from smt_hf.data import load_text
    from smt_hf.recipe import build_data

    ev = ev if ev is not None else build_data(cfg["data"])[1]
    return torch.tensor(ev["input_ids"]), load_text(cfg["data"]["source"], split="train").tokens


def score(cfg: dict, teacher, student, x, train_tokens) -> dict:
    """The held-out numbers of a run (module docstring) on eval windows `x` (N, L); the bigram counts `train_tokens`."""
    import torch
    import torch.nn.functional as F

    from smt_hf.analysis import bigram_bits, continuation_bits, memory_spread
    from smt_hf.losses import uniformity_loss

    Tc = cfg["common"]["context_length"]
    Tf = next((p["future_length"] for p in cfg["phases"] if "future_length" in p), cfg["common"]["future_length"])
    teacher.eval(), student.eval()
    ln2 = math.log(2)
    pos = range(Tc, x.shape[1], PROBE_STRIDE)  # first-step probes: context x[t-Tc:t] predicts x[t]
    with torch.no_grad():
        m = teacher.encode(x[:, :Tc], torch.ones_like(x[:, :Tc]))  # (N, K, d)
        logits = teacher.decode(m, x[:, Tc:Tc + Tf]).float()  # (N, Tf, V): [:, j] predicts x[Tc + j]
        ce = F.cross_entropy(logits.transpose(1, 2), x[:, Tc:Tc + Tf], reduction="none")  # (N, Tf)
        unif = float(uniformity_loss(m, num_samples=512, generator=torch.Generator().manual_seed(0)))
        probes = torch.cat([x[:, t - Tc:t] for t in pos])  # (P*N, Tc)
        first = teacher.readout(teacher.encode(probes, torch.ones_like(probes))).float()
        first_bits = float(F.cross_entropy(first, torch.cat([x[:, t] for t in pos]))) / ln2
    pairs = torch.cat([x[:, t - 1:t + 1] for t in pos]).numpy()
    return {"teacher_first_bits": first_bits, "teacher_future_bits": float(ce.mean()) / ln2,
            "bigram_bits": bigram_bits(train_tokens, pairs),
            "bigram_bits_tail": bigram_bits(train_tokens, x[:, Tc - 1:].numpy()),
            "memory_spread": memory_spread(m), "uniformity": unif,
            "student_prefill_bits": continuation_bits(student, x, Tc, teacher),
            "student_own_bits": continuation_bits(student, x, Tc)}


def _save(path: str, result: dict, label: str, shown: dict) -> None:
    """Print one finished row and rewrite the JSON (a run stopped early keeps what finished; written whole, then
    renamed, so a reader never sees half a file)."""
    from smt_hf.recipe import write_json

    print(f"[text] {label}: " + json.dumps(shown), flush=True)
    write_json(path, result)


def comparable(run: dict) -> tuple:
    """What --compare runs must share to sit in one table: SMT setting, phases, text source, held-out and training
    windows (runs before these were recorded: shakespeare, the preset's training windows)."""
    return (run["setting"], json.dumps(run["phases"]), run.get("source", "shakespeare"), run["eval_windows"],
            run.get("train_windows"))


def check_folder(out: str, run: dict) -> None:
    """Refuse, before any training, a --compare run that `out`'s earlier runs could not share a table with: one of
    another setting, phases or data (another seed's would be mixed in, the same seed's overwritten)."""
    for path in sorted(glob.glob(os.path.join(out, "text_e2e_s*.json"))):
        other = json.load(open(path))
        if comparable(other) != comparable(run):
            what = "overwrite" if other["seed"] == run["seed"] else "share a table with"
            raise ValueError(f"text_e2e: {path} is a run of setting {other['setting']!r} (source "
                             f"{other.get('source', 'shakespeare')!r}, {other['eval_windows']} eval windows, its own "
                             f"phases); this run ({run['setting']!r}) would {what} it: pass another --out")


def load_final(folder: str):
    from smt_hf import SMTRecurrentForCausalLM, SMTTeacherModel

    return (SMTTeacherModel.from_pretrained(os.path.join(folder, "teacher")),
            SMTRecurrentForCausalLM.from_pretrained(os.path.join(folder, "student")))


def work_dir(out: str, *parts: str) -> str:
    """Where a run's checkpoints go: outputs/text_runs/<--out as a name>/..., so jobs with other --out folders never
    load each other's models, and no checkpoint lands in --out (e.g. recipes/results/text)."""
    name = os.path.abspath(out).strip(os.sep).replace(os.sep, "_") or "root"
    return os.path.join("outputs", "text_runs", name, *parts)


def diagnose(names: list[str], steps: int, seed: int, out: str, **data) -> dict:
    from smt_hf.recipe import machine, run_config

    path = os.path.join(out, "text_diagnosis.json")
    result = json.load(open(path)) if os.path.exists(path) else {"runs": {}}
    result.update(machine=machine(), steps=steps, seed=seed, preset=os.path.relpath(PRESET), settings=SETTINGS)
    held_out = None
    for name in names:
        cfg = config(SETTINGS[name], steps, seed, work_dir(out, "text_diagnosis", name), **data)
        held_out = held_out or eval_data(cfg)  # the same windows for every setting
        t0 = time.time()
        summary = run_config(cfg)
        row = {"seconds": round(time.time() - t0, 1), "phases": cfg["phases"],
               "trainer_eval": summary["phases"][-1]["eval"], "data": summary["data"],
               **score(cfg, *load_final(os.path.join(cfg["output_dir"], "final")), *held_out)}
        result["runs"][name], result["data"] = row, summary["data"]
        _save(path, result, name, {k: v for k, v in row.items() if k in COLS})
    write_diagnosis(out, result)
    return result


def write_diagnosis(out: str, result: dict) -> None:
    runs = result["runs"]
    lines = [f"Teacher memory on {result.get('data', 'text')}, {result['steps']} SMT steps per setting, seed {result['seed']} ({result['preset']}; "
             f"held-out windows, Tc=64 context bytes). Machine: {result['machine']}.", "",
             "| setting | " + " | ".join(COLS.values()) + " | run s |", "|---|" + "---|" * (len(COLS) + 1)]
    for name, r in runs.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in COLS) + f" | {r['seconds']:.0f} |")
    lines += ["", ("Bits are bits/byte of held-out bytes. teacher first-step: D(E(x[t-Tc:t]))[0] predicts byte t "
                   "from the memory alone (t = Tc, Tc+4, ..., 124); bigram: add-0.1 bigram counted on the training "
                   "plays, same bytes; teacher decoder, all Tf: bytes Tc..Tc+Tf-1 from E(x[:Tc]) and the true earlier "
                   "bytes (Tf of that setting: 32, or 8 for `_Tf8`); student (after SMT): bytes Tc..127, after a "
                   "teacher prefill of Tc bytes or reading them itself from m_0. memory spread: 1 - ||mean m||^2 / "
                   "mean ||m||^2 over windows (0 = every window the same memory); L_unif: the uniformity loss of the "
                   "pooled memory tokens (0 = collapsed, about -4 = uniform). run s: wall-clock of the whole run (SMT, evaluation, sample), "
                   "2-4 jobs sharing the 2 cores."), "", "![teacher memory by SMT setting](text_diagnosis.png)"]
    with open(os.path.join(out, "text_diagnosis.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        from smt_hf.viz import plot_bars

        names = list(runs)
        plot_bars(names, {"teacher first-step": [runs[n]["teacher_first_bits"] for n in names],
                          "student after teacher prefill": [runs[n]["student_prefill_bits"] for n in names],
                          "bigram (same bytes)": [runs[n]["bigram_bits"] for n in names]},
                  os.path.join(out, "text_diagnosis.png"), ylabel="bits/byte (held out, lower is better)", ylim=None,
                  title=f"Shakespeare bytes: teacher memory by SMT setting (bigram {runs[names[0]]['bigram_bits']:.2f})")
    except ImportError:  # matplotlib is optional
        pass


def compare(name: str, smt_steps: int, dmt_steps: int, seed: int, out: str, **data) -> dict:
    """SMT (`name`'s phases) -> one-step DMT -> BPTT for the same wall-clock, each row scored (module docstring)."""
    import torch

    from smt_hf.callbacks import TimeBudget
    from smt_hf.recipe import build_data, build_models, machine, phase_arguments
    from smt_hf.trainer import SMTTrainer

    cfg = config(SETTINGS[name], smt_steps, seed, work_dir(out, "text_e2e", f"{name}_s{seed}"),
                 [dict(DMT, max_steps=dmt_steps)], **data)
    cfg["phases"].append(dict(BPTT, max_steps=10**6))  # BPTT stops at its wall-clock budget
    torch.set_num_threads(int(cfg.get("threads") or 1))
    torch.manual_seed(seed)
    train, ev, vocab, data_desc = build_data(cfg["data"])
    student, teacher = build_models(cfg, vocab, cfg["data"]["seq_len"])
    init = copy.deepcopy(student.state_dict())
    held_out = eval_data(cfg, ev)
    all_args = phase_arguments(cfg, cfg["data"]["seq_len"], teacher.config.max_context_length)
    result = {"setting": name, "seed": seed, "data": data_desc, "machine": machine(), "phases": cfg["phases"], "rows": {},
              "eval_windows": len(ev), "context_length": cfg["common"]["context_length"], "seq_len": cfg["data"]["seq_len"],
              "source": cfg["data"]["source"], "train_windows": data.get("train_windows")}
    check_folder(out, result)
    path = os.path.join(out, f"text_e2e_s{seed}.json")
    spent, steps = 0.0, []
    for i, args in enumerate(all_args):
        bptt = args.mode == "bptt"
        if bptt:
            student.load_state_dict(init)  # the same initialisation, trained by BPTT for the same wall-clock
        tr = SMTTrainer(model=student, teacher=None if bptt else teacher, args=args, train_dataset=train,
                        eval_dataset=ev, callbacks=[TimeBudget(spent)] if bptt else None)
        t0 = time.time()
        tr.train()
        seconds = time.time() - t0
        if not bptt:
            spent, steps = spent + seconds, steps + [tr.state.global_step]
        last_smt = i == len(SETTINGS[name]) - 1
        if not (bptt or last_smt or args.mode == "dmt"):
            continue
        row = {"seconds": round(seconds if bptt else spent, 1), "steps": tr.state.global_step if bptt else list(steps),
               **score(cfg, teacher, student, *held_out)}
        if bptt:  # BPTT's memory is not the teacher's: no teacher prefill, and the teacher columns are not its own
            for key in ("student_prefill_bits", "teacher_first_bits", "teacher_future_bits", "memory_spread", "uniformity"):
                row.pop(key)
        label = "BPTT (same wall-clock)" if bptt else "SMT -> DMT one_step" if args.mode == "dmt" else "SMT"
        result["rows"][label] = row
        _save(path, result, label, row)
    write_compare(out)
    return result


def write_compare(out: str) -> list[dict]:
    """<out>/text_e2e.md over every <out>/text_e2e_s<seed>.json: each seed's rows, then (2 seeds or more) per model
    the mean ± half-range over the seeds that ran it. Seeds share the data (windows come from the data seed) and
    differ in initialisation and batch order. Refuses runs of different settings or data (their mean means nothing)."""
    runs = sorted((json.load(open(p)) for p in glob.glob(os.path.join(out, "text_e2e_s*.json"))), key=lambda r: r["seed"])
    if not runs:
        return runs
    if len({comparable(r) for r in runs}) > 1:
        raise ValueError(f"text_e2e: runs in {out} differ in setting, phases or data (settings "
                         f"{sorted({r['setting'] for r in runs})}); compare them in separate --out folders")
    first = runs[0]
    cols = {"student_own_bits": "from m_0 (reads the Tc bytes itself)",
            "student_prefill_bits": "after teacher prefill of Tc bytes", "teacher_first_bits": "teacher first-step"}
    Tc, L = first["context_length"], first["seq_len"]
    machines = sorted({r["machine"] for r in runs})
    lines = [f"{first['data']}: bits/byte of bytes {Tc}..{L - 1} of {first['eval_windows']} held-out windows, SMT "
             f"setting `{first['setting']}`, seeds {[r['seed'] for r in runs]}, one-step DMT (no gradient across steps). "
             f"Machine: {'; '.join(machines)}.", "",
             "| seed | model | DMT gradient | steps | wall-clock s | " + " | ".join(cols.values()) + " |",
             "|---|---|---|---|---|" + "---|" * len(cols)]
    grad = {"SMT": "-", "SMT -> DMT one_step": "one_step (no BPTT)", "BPTT (same wall-clock)": "- (full BPTT)"}
    for run in runs:
        for label, r in run["rows"].items():
            lines.append(f"| {run['seed']} | {label} | {grad[label]} | {r['steps']} | {r['seconds']:.0f} | "
                         + " | ".join(f"{r[k]:.3f}" if k in r else "-" for k in cols) + " |")
    def mean(rows, k):  # "mean ± half-range" over the rows that have k
        xs = [r[k] for r in rows if k in r]
        return "-" if not xs else f"{sum(xs) / len(xs):.3f}" + (f" ± {(max(xs) - min(xs)) / 2:.3f}" if len(xs) > 1 else "")

    for label in grad if len(runs) > 1 else ():
        got = [run["rows"][label] for run in runs if label in run["rows"]]
        if len(got) < 2:  # (a seed still running has not written this row yet)
            continue
        seconds = sum(r["seconds"] for r in got) / len(got)
        lines.append(f"| mean (n={len(got)}) | {label} | {grad[label]} | - | {seconds:.0f} | "
                     + " | ".join(mean(got, k) for k in cols) + " |")
    any_row = next(iter(first["rows"].values()))
    lines += ["", f"Bigram on the same bytes: {any_row['bigram_bits_tail']:.3f} bits/byte (on the teacher's "
              f"first-step bytes Tc, Tc+4, ...: {any_row['bigram_bits']:.3f}). "
              + ("Mean ± half-range over the seeds that have the row. " if len(runs) > 1 else "") + "BPTT's "
              "wall-clock includes compiling its recurrent step; SMT -> DMT's is the sum of its phases. Phases: "
              + "; ".join(json.dumps(p) for p in first["phases"])]
    with open(os.path.join(out, "text_e2e.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return runs


def cli(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--diagnose", nargs="*", metavar="SETTING", help=f"settings to run (default all: {list(SETTINGS)})")
    p.add_argument("--compare", choices=sorted(SETTINGS), help="SMT with this setting, then DMT, vs BPTT")
    p.add_argument("--steps", type=positive_int, default=1000, help="SMT steps per setting (--diagnose)")
    p.add_argument("--smt-steps", type=positive_int, default=4000, help="SMT steps (--compare) (default %(default)s)")
    p.add_argument("--dmt-steps", type=positive_int, default=300, help="DMT steps (--compare) (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the models (default %(default)s)")
    p.add_argument("--source", default="shakespeare", help="text source (smt_hf.data.load_text): shakespeare, "
                   "tinystories, fixture or a file path")
    p.add_argument("--eval-windows", type=positive_int, default=256, help="held-out windows of 128 bytes")
    p.add_argument("--train-windows", type=positive_int, default=None, help="training windows (default: the preset's)")
    p.add_argument("--out", default="outputs/text", help="folder for JSON, tables and plots (default %(default)s)")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    if a.diagnose is not None:
        bad = [n for n in a.diagnose if n not in SETTINGS]
        if bad:
            p.error(f"unknown setting(s) {bad}; choose from {list(SETTINGS)}")
        diagnose(a.diagnose or list(SETTINGS), a.steps, a.seed, a.out, source=a.source, eval_windows=a.eval_windows,
                 train_windows=a.train_windows)
    if a.compare:
        compare(a.compare, a.smt_steps, a.dmt_steps, a.seed, a.out, source=a.source, eval_windows=a.eval_windows,
                 train_windows=a.train_windows)
    if a.diagnose is None and not a.compare:
        p.error("pass --diagnose and/or --compare SETTING")


if __name__ == "__main__":
    sys.exit(cli())
