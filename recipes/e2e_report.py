"""Tables and plots over the run JSONs of recipes/needle_e2e.py (the Fig 3 recipe): one family's table over its
seeds (`write_summary`), paper Fig 3 over the families in a folder (`fig3`), accuracy vs SeqFLOPs and tokens, and the
longer one-step DMT curve. Reads JSON only; needle_e2e.py runs the training and calls these."""

from __future__ import annotations

import glob
import json
import math
import os
import re
import sys
from collections import Counter

ROWS = ("joint SMT", "SMT -> DMT one_step", "SMT -> DMT full_rollout", "BPTT (same wall-clock)", "BPTT (4x wall-clock)")
# the control of SMT's part in DMT (`--dmt-from-init`): DMT from the untrained student (BPTT's initialisation), the
# run's SMT-trained teacher labelling; one_step, then full_rollout
FROM_INIT = ("DMT one_step from init (no SMT)", "DMT full_rollout from init (no SMT)")
METRICS = ("teacher_acc", "onestep_acc", "student_acc", "drift_mean", "drift_last")
PHASE_BATCH = {"smt": 64, "dmt": 32, "full_rollout": 32, "bptt": 64}  # needle_e2e's batches, for JSONs without settings


def from_init_row(gradient: str, steps: int | None = None) -> str:
    """Row name of the DMT-from-init control with `gradient`; `steps` other than the one-step DMT row's: in the name."""
    name = FROM_INIT[("one_step", "full_rollout").index(gradient)]
    return name if steps is None else f"{name[:-1]}, {steps} steps)"


def bptt_row(multiple: float) -> str:
    """Row name of BPTT given `multiple` x the wall-clock of joint SMT + one-step DMT."""
    return ROWS[3] if multiple == 1 else ROWS[4] if multiple == 4 else f"BPTT ({multiple:g}x wall-clock)"


def row_label(name: str, run: dict) -> str:
    """The printed name of a row: the SMT row (stored as ROWS[0]) says which SMT mode the run used."""
    mode = run.get("settings", {}).get("smt", {}).get("mode", "joint")
    return name if name != ROWS[0] or mode == "joint" else f"SMT (mode {mode})"


def step_seqflops(run: dict) -> dict[str, int]:
    """SeqFLOPs of one training step of each row (smt_hf.seqflops), per sequence, for the run's models."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from smt import build_models

    from smt_hf.data import task_vocab_size
    from smt_hf.seqflops import component_flops, seq_flops

    T = run["seq_len"]
    student, teacher = build_models(run["model"], task_vocab_size(run["task"], **run["task_kwargs"]), T)
    F = component_flops(student.eval(), teacher.eval(), context_length=T, future_length=T)
    return {ROWS[0]: seq_flops("joint", F), ROWS[1]: seq_flops("dmt", F, rollout_length=T, dmt_gradient="one_step"),
            ROWS[2]: seq_flops("dmt", F, rollout_length=T, dmt_gradient="full_rollout"),
            ROWS[3]: seq_flops("bptt", F, seq_len=T), ROWS[4]: seq_flops("bptt", F, seq_len=T)}


def mean_spread(xs: list[float]) -> str:
    """"mean ± half-range" of per-seed values (2 decimals; the value alone for one seed, "-" for none)."""
    if not xs:
        return "-"
    if any(x != x for x in xs):  # an undefined value (nan drift: a collapsed memory); max/min would depend on order
        return "nan"
    return f"{sum(xs) / len(xs):.2f}" + (f" ± {(max(xs) - min(xs)) / 2:.2f}" if len(xs) > 1 else "")


def mixed_steps(row: str, steps: list) -> bool:
    """Whether the seeds of a fixed-step row (not BPTT, whose steps a wall-clock budget sets) ran different step
    counts: such a row names each seed's steps instead of their mean."""
    return not row.startswith("BPTT") and len(set(steps) - {None}) > 1


def table(runs: list[dict]) -> str:
    """Markdown table over runs (one per seed): mean ± half-range of each metric, per row name; SeqFLOPs per step
    (the longest sequential chain of one training step, per sequence; smt_hf.seqflops). Steps and wall-clock: the mean
    over seeds, or each seed's ("s0 300 / s1 800") where a row's seeds ran different step counts (not BPTT, whose steps
    a wall-clock budget sets)."""
    flops = step_seqflops(runs[0])
    lines = ["| run | DMT gradient | steps | wall-clock s | SeqFLOPs / step | teacher acc | one-step acc | standalone acc | "
             "drift 1-R^2 mean | per seed standalone |", "|---|---|---|---|---|---|---|---|---|---|"]
    extra = list(dict.fromkeys(r["run"] for run in runs for r in run["rows"] if r["run"] not in ROWS + FROM_INIT))
    bptt = [x for x in extra if x.startswith("BPTT")]  # other multiples of the wall-clock: beside the 1x BPTT row
    init = [x for x in extra if x.startswith("DMT ")]  # the DMT-from-init control at other step counts: with it, last
    seeds = {run.get("seed") for run in runs}
    order = [*ROWS[:2], *(x for x in extra if x not in bptt + init), *ROWS[2:4], *bptt, *ROWS[4:], *FROM_INIT, *init]
    for name in order:
        ran = [(run.get("seed"), r) for run in runs for r in run["rows"] if r["run"] == name]
        if not ran:
            continue
        rs = [r for _, r in ran]
        # a row that only some seeds ran names its seeds in the per-seed column ("s2: 0.66"), not a bare value
        named = len({seed for seed, _ in ran}) < len(seeds)
        col = lambda k: [r[k] for r in rs if r.get(k) is not None]  # noqa: E731
        # a row not in ROWS costs per step what the row it is a variant of costs (by its gradient)
        like = ROWS[3] if name.startswith("BPTT") else ROWS[2] if rs[0]["dmt_gradient"] == "full_rollout" else ROWS[1]
        grad = {"one_step": "one_step (no BPTT)", "full_rollout": "full_rollout (truncated BPTT)"}.get(rs[0]["dmt_gradient"], "-")
        # seeds that ran a fixed-step row for different step counts: each seed's steps and seconds, not a mean
        mixed = mixed_steps(name, col("steps"))
        each = lambda k: (" / ".join(f"s{seed} " + ("-" if r.get(k) is None else f"{r[k]:.0f}") for seed, r in ran)  # noqa: E731
                          if mixed else f"{sum(col(k)) / len(rs):.0f}")
        lines.append(f"| {row_label(name, runs[0])} | {grad} | {each('steps')} | {each('seconds')} | "
                     f"{flops.get(name, flops[like]) / 1e6:.1f} M | "
                     f"{mean_spread(col('teacher_acc'))} | {mean_spread(col('onestep_acc'))} | {mean_spread(col('student_acc'))} | "
                     f"{mean_spread(col('drift_mean'))} | "
                     + ", ".join((f"s{seed}: " if named else "") + f"{r['student_acc']:.2f}" + ("†" if r.get("reused_from") else "")
                                 for seed, r in ran if r.get("student_acc") is not None) + " |")
    if any(r.get("reused_from") for run in runs for r in run["rows"]):
        lines.append("\n† from another run of the same seed whose joint-SMT row is identical (`--reuse-rows`, or as noted): "
                     + ", ".join(sorted({r["reused_from"] for run in runs for r in run["rows"] if r.get("reused_from")})))
    def segments(r):  # a row run in segments (needle_e2e --stop-after / --resume): each one's wall-clock
        return (f" [{len(r['segments'])} segments: " + " + ".join(f"{s['seconds']:.0f}" for s in r["segments"])
                + " s]") if r.get("segments") else ""

    budgets = [f"s{run['seed']} {r['budget_seconds']:.0f} s" + ("" if r["run"] == ROWS[3] else f" ({r['run'].removeprefix('BPTT (')}")
               + segments(r) for run in runs for r in run["rows"] if r.get("budget_seconds")]  # a row other than 1x names its multiple
    if budgets:
        lines.append("\nBPTT wall-clock budget per seed: " + ", ".join(budgets))
    return "\n".join(lines)


def compute_paths(runs: list[dict]) -> dict[str, list[tuple[float, float, float]]]:
    """Mean over seeds of (cumulative SeqFLOPs per sequence, training tokens, standalone accuracy) at the end of each
    phase: SMT -> one-step DMT and SMT -> full-rollout DMT as two-stage paths from the end of SMT, BPTT as one point.
    Cumulative SeqFLOPs = steps x SeqFLOPs/step of each phase (`step_seqflops`); tokens = steps x batch x T."""
    flops, T = step_seqflops(runs[0]), runs[0]["seq_len"]

    def batch(run, name):  # the phase's batch as the JSON records it (older JSONs: the recipe's, as it was then)
        phase = {ROWS[0]: "smt", ROWS[1]: "dmt", ROWS[2]: "full_rollout"}.get(name, "bptt")
        return run.get("settings", {}).get(phase, {}).get("per_device_train_batch_size", PHASE_BATCH[phase])

    def mean_point(name, base=None):
        pts = []
        for run in runs:
            r = next((r for r in run["rows"] if r["run"] == name), None)
            if r is None or r.get("student_acc") is None:
                continue
            b = next((x for x in run["rows"] if x["run"] == base), None) if base else None
            f0, t0 = (b["steps"] * flops[base], b["steps"] * batch(run, base) * T) if b else (0, 0)
            pts.append((f0 + r["steps"] * flops[name], t0 + r["steps"] * batch(run, name) * T, r["student_acc"]))
        return tuple(sum(p[i] for p in pts) / len(pts) for i in range(3)) if pts else None

    smt = mean_point(ROWS[0])
    paths = {"SMT -> DMT one_step (no BPTT)": [smt, mean_point(ROWS[1], ROWS[0])],
             "SMT -> DMT full_rollout (truncated BPTT)": [smt, mean_point(ROWS[2], ROWS[0])],
             "BPTT": [mean_point(ROWS[3])], "BPTT, 4x wall-clock": [mean_point(ROWS[4])]}
    return {k: v for k, v in paths.items() if all(v)}


def plot_compute(runs: list[dict], path: str) -> str:
    """Standalone accuracy against cumulative SeqFLOPs and against training tokens (paper Fig 6): `compute_paths`."""
    from smt_hf.viz import plot_panels

    paths = compute_paths(runs)
    curves = [{k: ([p[i] for p in v], [p[2] for p in v]) for k, v in paths.items()} for i in (0, 1)]
    plot_panels([dict(curves=curves[0], xlabel="cumulative SeqFLOPs per sequence", ylabel="standalone accuracy",
                      logx=True, markers=True, title="vs sequential compute", data_xticks=False),
                 dict(curves=curves[1], xlabel="training tokens", ylabel="standalone accuracy", logx=True,
                      markers=True, title="vs tokens", data_xticks=False)],
                path, suptitle=f"{runs[0]['task']} T={runs[0]['seq_len']}, mean over the seeds that ran each row "
                                f"(seeds {sorted({r['seed'] for r in runs})})")
    return path


def family_name(run: dict) -> str:
    """The family a run JSON belongs to: its --family, or `<task> (recipe model)` for a run without one."""
    return run.get("family") or f"{run['task']} (recipe model)"


def student_backbone(run: dict) -> str:
    """The student's updater a run JSON trained (`--backbone`); runs from before it was recorded used the transformer."""
    return (run.get("model") or {}).get("student", {}).get("backbone", "transformer")


def load_runs(out: str, pattern: str) -> list[dict]:
    """The run JSONs in `out` matching `pattern`, in name order (s<seed>.json before s<seed>_bptt*.json), with each
    (family, seed, row) kept once: the first file that has it."""
    runs, seen = [], set()
    for path in sorted(glob.glob(os.path.join(out, pattern))):
        run = json.load(open(path))
        key = (family_name(run), run["seed"])
        run["rows"] = [r for r in run["rows"] if (*key, r["run"]) not in seen]
        seen |= {(*key, r["run"]) for r in run["rows"]}
        runs.append(run)
    return runs


def continued_dmt(runs: list[dict]) -> dict[int, dict[str, list[tuple[float, float]]]]:
    """For each seed whose one-step DMT was continued (`--continue-dmt` rows): standalone accuracy against cumulative
    training wall-clock, {seed: {curve: [(seconds, accuracy), ...]}}. "SMT -> one-step DMT": the end of SMT, of the
    first DMT phase and of each continuation, seconds summed over the phases before; each BPTT row of that seed (from
    any of its JSONs) is a point at its own training seconds."""
    out = {}
    for seed in sorted({r["seed"] for r in runs}):
        rows = [x for r in runs if r["seed"] == seed for x in r["rows"]]
        dmt = [x for x in rows if x["run"] == ROWS[1] or x["run"].startswith(ROWS[1] + " (+")]
        if len(dmt) < 2 or not any(x["run"] == ROWS[0] for x in rows):
            continue
        t, path = 0.0, []
        for x in [next(x for x in rows if x["run"] == ROWS[0])] + dmt:
            t += x["seconds"]
            path.append((t, x["student_acc"]))
        out[seed] = {"SMT -> one-step DMT (no BPTT)": path,
                     **{x["run"]: [(x["seconds"], x["student_acc"])] for x in rows if x["run"].startswith("BPTT")}}
    return out


def plot_continued_dmt(task: str, T: int, seed: int, curves: dict, path: str) -> str:
    """`continued_dmt` of one seed as a picture: accuracy against cumulative wall-clock."""
    from smt_hf.viz import plot_curves

    plot_curves(None, {k: ([p[0] for p in v], [p[1] for p in v]) for k, v in curves.items()}, path, markers=True,
                title=f"{task} T={T}, seed {seed}: longer one-step DMT" + (" vs BPTT" if len(curves) > 1 else ""),
                xlabel="training wall-clock s",
                ylabel="standalone accuracy", data_xticks=False)
    return path


def machines_of(runs: list[dict]) -> str:
    """The machine of a family's runs: its name when all ran on one, else each machine with the seeds that ran there
    (a folder can hold seeds from different sessions)."""
    seeds: dict[str, set] = {}
    for r in runs:
        seeds.setdefault(r["machine"], set()).add(r["seed"])
    if len(seeds) == 1:
        return next(iter(seeds))
    return "; ".join(f"{m} (seed{'s' if len(s) > 1 else ''} {', '.join(map(str, sorted(s)))})"
                     for m, s in sorted(seeds.items(), key=lambda kv: min(kv[1])))


def write_summary(out: str, task: str, T: int) -> str:
    runs = load_runs(out, f"{task}_e2e_T{T}_s*.json")
    if not runs:
        return ""
    head = (f"{task}, T={T}, seeds {sorted({r['seed'] for r in runs})}, {machines_of(runs)}, {runs[0]['threads']} thread(s); "
            "wall-clock = that phase's training time on a shared machine; BPTT gets the wall-clock of joint SMT + one-step DMT "
            "unless a row's budget says otherwise")
    train_kw = {json.dumps(r.get("train_task_kwargs") or {}, sort_keys=True) for r in runs}
    if train_kw != {"{}"}:  # a family's train_task_kwargs: the training episodes differ from the held-out ones
        head += (f"; training episodes with {' / '.join(sorted(train_kw))} on top of the task's kwargs "
                 f"{json.dumps(runs[0]['task_kwargs'])} (held-out episodes: the task's kwargs only)")
    students = {json.dumps(r["model"]["student"]) for r in runs if r.get("model")}  # (older JSONs: none recorded)
    head += f"; student `{json.loads(students.pop())}`" if len(students) == 1 else ""
    full = [r for r in runs if any(x["run"] == ROWS[0] for x in r["rows"])]  # (not the BPTT-only runs)
    settings = {json.dumps(r.get("settings", {}), sort_keys=True) for r in full}
    if len(settings) == 1 and full[0].get("settings"):
        st = full[0]["settings"]
        names = {"smt": row_label(ROWS[0], full[0]), "dmt": "one-step DMT", "full_rollout": "full-rollout DMT", "bptt": "BPTT"}
        head += (".\n\nSettings (set by the recipe for every phase: context_length = future_length = rollout_length = T, "
                 "eval batch 128; BPTT stops at its wall-clock budget; other fields: SMTTrainingArguments defaults): ") + "; ".join(f"{names.get(k, k)} `{v}`" for k, v in st.items())
    elif len(settings) > 1:
        head += ". Seeds ran with different settings (see each JSON's `settings`)"
    if not (len(settings) == 1 and "bptt" in full[0].get("settings", {})):  # else the Settings line names BPTT's
        bptt = {json.dumps(r["settings"]["bptt"]) for r in runs if "bptt" in r.get("settings", {})
                and any(x["run"].startswith("BPTT") for x in r["rows"])}
        head += f". BPTT `{json.loads(bptt.pop())}`" if len(bptt) == 1 else (
            ". BPTT settings differ between runs (see each JSON's `settings`)" if bptt else "")
    md = f"{head}\n\n{table(runs)}\n" + _plot_link("accuracy vs SeqFLOPs and tokens", lambda: plot_compute(
        runs, os.path.join(out, f"{task}_e2e_T{T}_seqflops.png")))
    for seed, curves in continued_dmt(runs).items():
        bptt = [f"{k} {v[0][1]:.2f} in {v[0][0]:.0f} s" for k, v in curves.items() if k.startswith("BPTT")]
        rate = [f"{x['steps'] / x['seconds']:.2f}" for r in runs if r["seed"] == seed for x in r["rows"]
                if x["run"] == ROWS[0] or x["run"].startswith(ROWS[1])]
        png = os.path.join(out, f"{task}_e2e_T{T}_s{seed}_dmt_steps.png")
        md += (f"\nLonger one-step DMT, seed {seed} (`--continue-dmt`: each continuation runs its steps on the saved "
               "student with a fresh schedule; the DMT rows above marked `+N steps`): standalone accuracy at cumulative "
               "training wall-clock s (SMT, then each DMT phase): "
               + ", ".join(f"{t:.0f} s: {a:.2f}" for t, a in curves["SMT -> one-step DMT (no BPTT)"])
               + f" (steps/s of each phase, a measure of the machine's load: {', '.join(rate)})"
               + ("; BPTT: " + ", ".join(bptt) if bptt else "; no BPTT run of this seed here") + ".\n")
        md += _plot_link(f"longer one-step DMT, seed {seed}",
                         lambda: plot_continued_dmt(task, T, seed, curves, png))
    with open(os.path.join(out, f"{task}_e2e_T{T}.md"), "w") as f:
        f.write(md)
    return md


def _plot_link(label: str, plot) -> str:
    """`plot()` (returns the PNG path) and a markdown image link to it by file name; "" without matplotlib."""
    try:
        return f"\n![{label}]({os.path.basename(plot())})\n"
    except ImportError:  # matplotlib is optional
        return ""


FIG3_COLUMNS = (("teacher", ROWS[0], "teacher_acc"), ("SMT one-step", ROWS[0], "onestep_acc"),
                ("SMT standalone", ROWS[0], "student_acc"), ("SMT -> DMT one_step (no BPTT)", ROWS[1], "student_acc"),
                ("SMT -> DMT full_rollout (truncated BPTT)", ROWS[2], "student_acc"),
                ("BPTT, same wall-clock", ROWS[3], "student_acc"), ("BPTT, 4x wall-clock", ROWS[4], "student_acc"))

# the control of what SMT gives DMT, beside the rows it controls: (column, row), DMT from the SMT state then from init;
# FROM_INIT_LONGER[gradient] stands for the row from init with that DMT gradient run for more steps than the SMT -> DMT
# row with it (`from_init_row(gradient, steps)`, one step count per family: `longer_from_init_steps`); a column no
# family ran is left out
FROM_INIT_LONGER = {"one_step": "DMT one_step from init, more steps", "full_rollout": "DMT full_rollout from init, more steps"}
SMT_DMT_ROW = {"one_step": ROWS[1], "full_rollout": ROWS[2]}  # the SMT -> DMT row a control row with that gradient mirrors
CONTROL_COLUMNS = (("SMT -> DMT one_step (no BPTT)", ROWS[1]), ("DMT one_step from init (no SMT, no BPTT)", FROM_INIT[0]),
                   ("DMT one_step from init, more steps (no SMT, no BPTT)", FROM_INIT_LONGER["one_step"]),
                   ("SMT -> DMT full_rollout (truncated BPTT)", ROWS[2]),
                   ("DMT full_rollout from init (no SMT, truncated BPTT)", FROM_INIT[1]),
                   ("DMT full_rollout from init, more steps (no SMT, truncated BPTT)", FROM_INIT_LONGER["full_rollout"]))


def longer_from_init_steps(seeds: dict[int, dict[str, dict]], gradient: str = "one_step") -> int | None:
    """The step count of a family's 'more steps' column with `gradient` (one_step, full_rollout): of the runs of DMT
    from init with that gradient for more steps than the seed's SMT -> DMT row with it (a seed without that row: its
    one-step row's steps) (rows named `from_init_row(gradient, steps)`; seeds: rows by name, per seed), the step count
    the most seeds ran; on a tie, the one whose runs' wall-clock is nearest (as a ratio) that of their seeds' joint SMT +
    SMT -> DMT `gradient` rows, the column's budget (so a deliberately longer run, e.g. parity T=32's 10000 full-rollout
    steps at about 2.7x that time, beside the matched 3500 on as many seeds, does not take the column over; a count
    with no seed that has both rows and nonzero seconds counts as farthest, and among such counts the longest wins);
    None if no seed ran one. So a seed's extra run at another step count (e.g. its own wall-clock budget) stays in its
    JSON and per-seed table without taking the column over."""
    def mirror_steps(rows):
        return (rows.get(SMT_DMT_ROW[gradient]) or rows.get(ROWS[1], {})).get("steps", 0)
    counts = Counter(steps for rows in seeds.values() for steps in {
        r["steps"] for name, r in rows.items() if name == from_init_row(gradient, r["steps"]) and r["steps"] > mirror_steps(rows)})

    def off_budget(steps):  # mean |log(a run's seconds / its seed's SMT + SMT -> DMT seconds)|; inf: no budget known
        name, mirror = from_init_row(gradient, steps), SMT_DMT_ROW[gradient]
        pairs = [(rows[name]["seconds"], rows[ROWS[0]]["seconds"] + rows[mirror]["seconds"])
                 for rows in seeds.values() if name in rows and ROWS[0] in rows and mirror in rows]
        ratios = [ran / budget for ran, budget in pairs if ran > 0 and budget > 0]
        return sum(abs(math.log(x)) for x in ratios) / len(ratios) if ratios else math.inf
    return max(counts, key=lambda steps: (counts[steps], -off_budget(steps), steps), default=None)


def matched_from_init_steps(out: str, stem: str, gradient: str = "one_step",
                             round_to: int = 100) -> tuple[int, dict]:
    """The step count a 'more steps' DMT-from-init run with `gradient` (one_step, full_rollout) is given: the mean over
    the seeds in `out` that ran the control at the SMT -> DMT rows' own step count (a `from_init_row(gradient)` row
    in `<stem>_s<seed>.json`, beside its joint SMT and SMT -> DMT `gradient` rows) of their joint SMT + SMT -> DMT
    `gradient` wall-clock (s), over the mean of those control rows' seconds per step,
    to the nearest `round_to` steps: as many DMT steps from init as fit SMT's and DMT's time, at the control's own pace
    (fig3/dmt_from_init/README.md, 'More steps'). Returns (steps, details: seeds, budget_s, s_per_step, exact).
    ValueError where no seed has that control row (run `needle_e2e.py --dmt-from-init <gradient>` first)."""
    budget, pace, seeds = [], [], []
    paths = [p for p in glob.glob(os.path.join(out, f"{stem}_s[0-9]*.json"))
             if os.path.basename(p)[len(stem) + 2:-5].isdigit()]  # not <stem>_s<seed>_bptt*.json: BPTT only
    for path in sorted(paths, key=lambda p: int(os.path.basename(p)[len(stem) + 2:-5])):
        run = json.load(open(path))
        rows = {r["run"]: r for r in run["rows"]}
        control = rows.get(from_init_row(gradient))
        if control is None or ROWS[0] not in rows or SMT_DMT_ROW[gradient] not in rows:
            continue
        budget.append(rows[ROWS[0]]["seconds"] + rows[SMT_DMT_ROW[gradient]]["seconds"])
        pace.append(control["seconds"] / control["steps"])
        seeds.append(run["seed"])
    if not seeds:
        raise ValueError(f"no {stem}_s<seed>.json in {out} has a {from_init_row(gradient)!r} row with its "
                         f"{ROWS[0]!r} and {SMT_DMT_ROW[gradient]!r} rows: run --dmt-from-init {gradient} first")
    exact = (sum(budget) / len(budget)) / (sum(pace) / len(pace))
    return int(round(exact / round_to) * round_to), {"seeds": seeds, "budget_s": sum(budget) / len(budget),
                                                     "s_per_step": sum(pace) / len(pace), "exact": exact}


# Fig 3's headline: one family per task, chosen by hand: the setting whose teacher learned the task
# (recipes/results/teacher_curves.md) and that has the most rows run. Another family of a task that has its headline
# family in the folder is listed below as a setting tried; a family of any other task stays in the headline.
# string_copy_T64_cosine_full: T=64's string-copy headline, with BPTT on 3 seeds and at 4x on one (string_copy_T64_mixed
# and string_copy_T64_k16_smt, whose teacher copies on 2 seeds of 3 but whose BPTT ran on 2, are settings tried).
# parity_enc_lm_curriculum_T64_cosine: T=64's parity headline, 3 seeds with BPTT (the recipe's own model, whose teacher
# stays at chance, is a setting tried).
FIG3_MAIN = ("needle (recipe model)", "string_copy", "parity_enc_lm_curriculum", "stack", "associative_recall_curriculum",
             "icl_modular_smt", "string_copy_T64_cosine_full", "parity_enc_lm_curriculum_T64_cosine")
FIG3_TASK_ORDER = ("needle", "string_copy", "parity", "stack", "associative_recall", "icl_modular")  # the paper's:
# retrieval, copying, state tracking (x2), associative recall, in-context learning


def fig3(out: str, T: int, require_runs: bool = False) -> dict:
    """Paper Fig 3 over the families run into `out` at length T: per family and column (FIG3_COLUMNS) the mean,
    half-range and per-seed values of the accuracy over the seeds that ran that row, and the wall-clock of each row
    (mean s). Writes <out>/fig3_T<T>.json (with `main`: the headline families, see FIG3_MAIN, in the paper's task
    order), .md (a table of the headline families, then one of the other settings tried) and .png (the headline
    families: bars with half-range error bars and a dot per seed); where runs have the DMT-from-init control, `control`
    in the JSON (and `control_smt_dmt_seconds`, `control_smt_full_rollout_seconds`: the SMT + SMT -> DMT one-step /
    full-rollout wall-clock that a 'more steps' column with that gradient is set against), a table of it
    (CONTROL_COLUMNS, over the seeds that ran it) and dmt_from_init_T<T>.png; returns the families' dict.
    `require_runs`: FileNotFoundError when `out` holds no run of length T (else the tables are empty)."""
    found = load_runs(out, f"*_e2e_T{T}_s*.json")
    if not found and require_runs:  # (--fig3: a header-only table, or a traceback for a missing folder, before)
        raise FileNotFoundError(f"no *_e2e_T{T}_s*.json in {out}: give the --out and --seq-len of the runs")
    runs: dict[str, dict[int, dict[str, dict]]] = {}  # family -> seed -> row name -> row
    for run in found:
        runs.setdefault(family_name(run), {}).setdefault(run["seed"], {}).update(
            {r["run"]: {**r, "machine": run["machine"]} for r in run["rows"]})
    def column(seeds: dict[int, dict[str, dict]], row: str, key: str, steps: bool = False) -> dict | None:
        got = {s: rs[row] for s, rs in sorted(seeds.items()) if rs.get(row, {}).get(key) is not None}
        xs = [r[key] for r in got.values()]
        # a fixed-step row whose seeds ran different step counts keeps them too (its cell names them)
        keep_steps = steps or mixed_steps(row, [r.get("steps") for r in got.values()])
        return {"mean": sum(xs) / len(xs), "half_range": (max(xs) - min(xs)) / 2, "seeds": list(got), "values": xs,
                "seconds": sum(r["seconds"] for r in got.values()) / len(got),
                **({"steps": [r.get("steps") for r in got.values()]} if keep_steps else {})} if xs else None

    def where(seeds: dict[int, dict[str, dict]], row: str, key: str) -> str:  # the machine(s) a cell's seeds ran on
        short = lambda m: " ".join(re.sub(r"\((R|TM)\)| Processor", "", m.split(",")[0].removeprefix("CPU ")).split())  # noqa: E731
        return " / ".join(sorted({short(rs[row]["machine"]) for rs in seeds.values() if rs.get(row, {}).get(key) is not None}))

    res = {fam: {col: column(seeds, row, key) for col, row, key in FIG3_COLUMNS} for fam, seeds in sorted(runs.items())}
    places = {fam: {col: where(seeds, row, key) for col, row, key in FIG3_COLUMNS} for fam, seeds in runs.items()}
    # the control over the seeds that ran a row of it (SMT -> DMT over those seeds too; n in each cell); a family's
    # 'more steps' column per DMT gradient: the step count most seeds ran (nearest the budget on a tie), over those seeds
    control, control_places = {}, {}
    budget = {g: {} for g in FROM_INIT_LONGER}  # a 'more steps' family's SMT + SMT -> DMT wall-clock (mean s, its seeds)
    for fam, seeds in sorted(runs.items()):
        ran = {s: dict(rs) for s, rs in seeds.items()}
        for grad, longer in FROM_INIT_LONGER.items():
            more = longer_from_init_steps(seeds, grad)
            chosen = from_init_row(grad, more) if more else None
            for rs in ran.values():
                if chosen in rs:
                    rs[longer] = rs[chosen]
        ran = {s: rs for s, rs in ran.items() if {*FROM_INIT, *FROM_INIT_LONGER.values()} & set(rs)}
        if ran:
            control[fam] = {col: column(ran, row, "student_acc", steps=True) for col, row in CONTROL_COLUMNS}
            control_places[fam] = {col: where(ran, row, "student_acc") for col, row in CONTROL_COLUMNS}
            for grad, longer in FROM_INIT_LONGER.items():
                mirror = SMT_DMT_ROW[grad]
                both = [rs[ROWS[0]]["seconds"] + rs[mirror]["seconds"] for rs in ran.values()
                        if longer in rs and ROWS[0] in rs and mirror in rs]
                if both:
                    budget[grad][fam] = sum(both) / len(both)
    control_cols = [c for c in CONTROL_COLUMNS if any(cols[c[0]] for cols in control.values())]  # columns run
    machines = sorted({run["machine"] for run in found})
    task = {family_name(run): run["task"] for run in found}
    backbone = {fam: ", ".join(sorted({student_backbone(run) for run in found if family_name(run) == fam})) for fam in res}
    updaters = sorted(set(backbone.values()))
    covered = {task[fam] for fam in FIG3_MAIN if fam in res}
    main = sorted((fam for fam in res if fam in FIG3_MAIN or task[fam] not in covered),
                  key=lambda fam: (FIG3_TASK_ORDER.index(task[fam]) if task[fam] in FIG3_TASK_ORDER else len(FIG3_TASK_ORDER),
                                   fam not in FIG3_MAIN, fam))
    with open(os.path.join(out, f"fig3_T{T}.json"), "w") as f:
        json.dump({"seq_len": T, "machine": machines, "student_backbone": backbone, "main": main, "families": res,
                   "control": control, "control_smt_dmt_seconds": budget["one_step"],
                   "control_smt_full_rollout_seconds": budget["full_rollout"]}, f, indent=2)
    def cell(c, place):  # each seed's step count only where the seeds of a cell ran different ones; the machine
        if c is None:    # only where the table's runs ran on more than one
            return "-"
        mixed = len(set(c.get("steps", ())) - {None}) > 1
        steps = " / ".join(f"s{seed} {n}" for seed, n in zip(c["seeds"], c["steps"])) + " steps, " if mixed else ""
        where = f", {place}" if len(machines) > 1 else ""
        return f"{mean_spread(c['values'])} (n={len(c['values'])}, {steps}{c['seconds']:.0f} s{where})"
    lines = [f"Fig 3 at T={T}: accuracy at the target positions of held-out episodes, mean ± half-range over seeds "
             f"(n = seeds, mean wall-clock of that row's training). Machine: {'; '.join(machines)}. Teacher and SMT "
             "one-step read the teacher's memories (reference only); every other column is the standalone RNN. The figure "
             "shows every column but SMT one-step and SMT standalone. "
             + ("Each cell names the machine its seeds ran on. " if len(machines) > 1 else "") +
             "Per-family settings: each `<family>_e2e_T<T>.md` here; a family named `<task> (recipe model)` ran without "
             "--family (the recipe's own MODEL and SMT settings, in its JSON). Student updater: "
             + (f"{updaters[0]} (every family)." if len(updaters) == 1 else
                "; ".join(f"{fam}: {b}" for fam, b in sorted(backbone.items())) + ".")]

    def rows(fams, cols=FIG3_COLUMNS, cells=res, where=places):
        return ["", "| family | " + " | ".join(c[0] for c in cols) + " |", "|---" * (len(cols) + 1) + "|",
                *(f"| {fam} | " + " | ".join(cell(cells[fam][c[0]], where[fam][c[0]]) for c in cols) + " |"
                  for fam in fams)]

    lines += rows(main)
    others = [fam for fam in res if fam not in main]
    if others:
        lines += ["", "Other settings tried at this length, for the same tasks (not in the headline; each family's "
                  "`<family>_e2e_T<T>.md` says what differs):", *rows(others)]
    md = "\n".join(lines) + "\n"

    def bars(cells, fams, cols, name, **kw):  # one bar per column and family: mean, half-range, a dot per seed
        from smt_hf.viz import plot_bars

        get = lambda fam, col, k: cells[fam][col][k] if cells[fam][col] else float("nan")  # noqa: E731
        return lambda: plot_bars(fams, {c: [get(f, c, "mean") for f in fams] for c in cols},
                                 os.path.join(out, f"{name}_T{T}.png"), missing="not run",
                                 errors={c: [get(f, c, "half_range") for f in fams] for c in cols},
                                 points={c: [cells[f][c]["values"] if cells[f][c] else [] for f in fams] for c in cols},
                                 **kw)

    shown = [c[0] for c in FIG3_COLUMNS if c[0] not in ("SMT one-step", "SMT standalone")]  # standalone and teacher
    md += _plot_link("Fig 3", bars(res, main, shown, "fig3", ylabel="accuracy",
                                   title=f"Synthetic families, T={T}: standalone accuracy (teacher = reference)"
                                   + (f", {updaters[0]} student" if len(updaters) == 1 else "")))
    if control:
        fams = [fam for fam in main + others if fam in control]  # the order of the tables above
        def more_steps(grad, lead):  # the step counts of a 'more steps' column, and the wall-clock they are set against
            longer = next(c[0] for c in CONTROL_COLUMNS if c[1] == FROM_INIT_LONGER[grad])
            if not any(control[fam][longer] for fam in fams):
                return ""
            what = grad.replace("_", "-")  # one-step, full-rollout
            return (f" {lead} (per family: " + "; ".join(
                f"{fam} {control[fam][longer]['steps'][0]} steps"
                + (f", against SMT + SMT -> DMT {what}'s {budget[grad][fam]:.0f} s" if fam in budget[grad] else "")
                for fam in fams if control[fam][longer]) + ").")

        md += "\n".join(["", "The control, DMT without SMT (`needle_e2e.py --dmt-from-init`): DMT from the untrained "
                          "student (the initialisation SMT and BPTT start from), the run's SMT-trained teacher labelling, "
                          "with the steps and settings of the SMT -> DMT rows; standalone accuracy over the seeds that "
                          "ran the control, beside the SMT -> DMT rows of those seeds."
                          + more_steps("one_step", "'More steps': the same DMT from init for more steps than SMT -> DMT's")
                          + more_steps("full_rollout", "Full rollout, 'more steps': the same full-rollout DMT from init "
                                                       "for more steps than SMT -> DMT full_rollout's"),
                          *rows(fams, control_cols, control, control_places)]) + "\n"
        md += _plot_link("DMT without SMT", bars(control, fams, [c[0] for c in control_cols], "dmt_from_init",
                                                 ylabel="standalone accuracy",
                                                 title=f"DMT from the SMT state vs from init (no SMT), T={T}"))
    with open(os.path.join(out, f"fig3_T{T}.md"), "w") as f:
        f.write(md)
    return res


if __name__ == "__main__":  # python recipes/e2e_report.py --matched-steps one_step --stem stack_e2e_T32 --out <dir>
    import argparse

    p = argparse.ArgumentParser(description="print the step count of a 'more steps' DMT-from-init run "
                                "(matched_from_init_steps), then how it was computed")
    p.add_argument("--matched-steps", choices=["one_step", "full_rollout"], required=True, help="the DMT gradient")
    p.add_argument("--stem", required=True, help="<family>_e2e_T<T> (the recipe model: <task>_e2e_T<T>)")
    p.add_argument("--out", required=True, help="the folder of the run JSONs")
    a = p.parse_args()
    try:
        n, d = matched_from_init_steps(a.out, a.stem, a.matched_steps)
    except ValueError as e:
        sys.exit(str(e))
    print(n)
    print(f"{a.stem} {a.matched_steps}: seeds {d['seeds']}, mean SMT + SMT -> DMT {d['budget_s']:.0f} s over the "
          f"control rows' mean {d['s_per_step']:.3f} s per step = {d['exact']:.0f} steps", file=sys.stderr)
