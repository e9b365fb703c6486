"""Regenerate README.md's Results section from the files the recipes wrote under recipes/results/.

    python recipes/update_readme.py            # rewrite README.md's Results section
    python recipes/update_readme.py --check    # only say whether it is up to date (exit 1 if not); writes nothing

The section between `<!-- results:start -->` and `<!-- results:end -->` is replaced by, in order:
Fig 3 over the families, the DMT-from-init control on re-runs, the needle end-to-end tables (recipes/needle_e2e.py), the text tables
(recipes/text_e2e.py), the teacher calibration (recipes/teacher_curves.py), the main-job summary (recipes/smt.py), the benchmark
tables (recipes/bench.py) and the archived paper-claims report (recipes/results/archive/RESULTS.md, written by the
retired recipes/reproduce.py; superseded). Nothing in the section is typed by hand.
"""

from __future__ import annotations

import glob
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "recipes", "results")
ARCHIVE = os.path.join(RESULTS, "archive")  # superseded results, kept with a README naming the commit that made them
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _demote(markdown: str, levels: int = 2) -> str:
    """Push markdown headings down so they nest under README's '## Results'."""
    return re.sub(r"^(#+)", lambda m: "#" * min(6, len(m.group(1)) + levels), markdown, flags=re.M)


def _results_links(markdown: str, folder: str = "recipes/results") -> str:
    """Image links written next to the results (`![x](a.png)`) point into `folder` (relative to README)."""
    return re.sub(r"!\[([^\]]*)\]\(([^/)]+\.png)\)", rf"![\1]({folder}/\2)", markdown)


def _fig3_tables(folder: str) -> list[tuple[int, str]]:
    """(T, path) of each fig3_T<T>.md in `folder` (e2e_report.fig3's tables), by T (T=128 after T=64)."""
    paths = glob.glob(os.path.join(folder, "fig3_T*.md"))
    return sorted((int(os.path.basename(p)[len("fig3_T"): -len(".md")]), p) for p in paths)


def fig3_section() -> str:
    """Paper Fig 3 over the synthetic families (recipes/results/fig3/fig3_T<T>.md, `needle_e2e.py --fig3`)."""
    parts = []
    for T, path in _fig3_tables(os.path.join(RESULTS, "fig3")):
        parts.append(f"#### T={T} (a family's rows: `python recipes/needle_e2e.py --family <family> --seq-len {T} "
                     f"--seeds <seeds> --bptt-multiples 1 4 --out recipes/results/fig3`, steps and DMT settings from "
                     f"the family in recipes/configs/calibration/teachers.yaml; the seeds and BPTT multiples each "
                     f"family has are in its table: "
                     f"`recipes/results/fig3/<family>_e2e_T{T}.md`)\n\n"
                     + _results_links(open(path).read().strip(), "recipes/results/fig3") + "\n")
    return "### Fig 3: the synthetic families, SMT vs BPTT\n\n" + "\n".join(parts) if parts else ""


CONTROL_START = "The control, DMT without SMT"  # where e2e_report.fig3 starts the control table in fig3_T<T>.md
MACHINE = re.compile(r"Machine: (.+?)\. Teacher and SMT")  # the machines e2e_report.fig3 names above its tables


def control_section() -> str:
    """The DMT-from-init control run on re-runs of Fig 3's SMT (recipes/results/fig3/dmt_from_init/fig3_T<T>.md,
    `needle_e2e.py --no-bptt` then `--dmt-from-init`): each T's control table and figure, with the machines the
    table's runs name, without the re-runs' own Fig 3 table above them. The control on the headline runs themselves
    closes fig3_section's tables. Raises ValueError where a table has the control but no machine line (the wording
    e2e_report.fig3 writes changed)."""
    parts = []
    for T, path in _fig3_tables(os.path.join(RESULTS, "fig3", "dmt_from_init")):
        text = open(path).read()
        if CONTROL_START not in text:
            continue
        machine = MACHINE.search(text)
        if machine is None:
            raise ValueError(f"{path}: no 'Machine: ... . Teacher and SMT' line above the control table")
        parts.append(f"#### T={T}, on re-runs of the SMT phase (`python recipes/needle_e2e.py [--family <family>] "
                     f"--seq-len {T} --seeds <seed> --no-bptt --out <dir>`, then the same with `--dmt-from-init` "
                     f"instead of `--no-bptt`; more steps: `--dmt-from-init one_step --dmt-steps <N>` (or "
                     f"`full_rollout`; N: `python recipes/e2e_report.py --matched-steps one_step --stem "
                     f"<family>_e2e_T{T} --out <dir>`); the table: `--fig3 --out <dir>`; a family named "
                     f"`<task> (recipe model)` ran without `--family`. Which seeds, steps and machine each row had: "
                     f"`recipes/results/fig3/dmt_from_init/README.md`; the "
                     f"control on the headline runs themselves, where it ran, closes the Fig 3 T={T} table above)\n\n"
                     f"Machine: {machine.group(1)}.\n\n"
                     + _results_links(CONTROL_START + text.split(CONTROL_START, 1)[1].rstrip(),
                                      "recipes/results/fig3/dmt_from_init") + "\n")
    return ("### The control: DMT without SMT, on re-runs\n\n" + "\n".join(parts)) if parts else ""


def text_section() -> str:
    """Byte-level text: the memory-collapse diagnosis and SMT -> DMT vs BPTT (recipes/text_e2e.py)."""
    parts = []
    for name, title in (("text_diagnosis", "Teacher memory by SMT setting (`python recipes/text_e2e.py --diagnose "
                                           "--steps 1500 --out recipes/results/text`)"),
                        ("text_e2e", "Standalone student vs BPTT (`python recipes/text_e2e.py --compare "
                                     "joint_dyn0.1_gamma0.9 --smt-steps 4000 --dmt-steps 300 --seed <seed> --out "
                                     "recipes/results/text`)")):
        path = os.path.join(RESULTS, "text", name + ".md")
        if os.path.exists(path):
            parts.append(f"#### {title}\n\n" + _results_links(open(path).read().strip(), "recipes/results/text") + "\n")
    return "### Text: Shakespeare bytes, SMT vs BPTT\n\n" + "\n".join(parts) if parts else ""


def needle_section() -> str:
    """The no-BPTT end-to-end tables of the recipe's own model (recipes/needle_e2e.py --task, over seeds; read from
    recipes/results/fig3, where the Fig 3 table reads them too) and the DMT lever ablation."""
    parts, family_plots = [], []
    for path in sorted(glob.glob(os.path.join(RESULTS, "fig3", "*_e2e_T*.md"))):
        name = os.path.basename(path)[: -len(".md")]  # <task>_e2e_T<T>
        task, T = name.split("_e2e_T")
        seeds = sorted(glob.glob(os.path.join(RESULTS, "fig3", f"{name}_s[0-9].json")))
        if not seeds or json.load(open(seeds[0])).get("family") is not None:
            png = os.path.join(RESULTS, "fig3", f"{name}_seqflops.png")
            if seeds and os.path.exists(png):
                family_plots.append(f"[{task}, T={T}]({os.path.relpath(png, ROOT)})")
            continue  # a --family run: its table is linked from Fig 3; here only the recipe's own model (--task)
        pngs = sorted(glob.glob(os.path.join(RESULTS, "fig3", f"{name}_s*_drift.png")))
        plot = f"\n![drift]({os.path.relpath(pngs[0], ROOT)})\n" if pngs else ""
        parts.append(f"#### {task}, T={T} (`python recipes/needle_e2e.py --task {task} --seq-len {T} --seeds ... --out recipes/results/fig3`)\n\n"
                     f"{_results_links(open(path).read().strip(), 'recipes/results/fig3')}\n{plot}")
    for path in sorted(glob.glob(os.path.join(RESULTS, "dmt_ablation*.md"))):
        parts.append("#### What closes the drift without BPTT (`python recipes/dmt_ablation.py`)\n\n" + open(path).read().strip() + "\n")
    intro = ("The recipe's own models (`--task`): needle, and parity with the reference teacher, which stays at chance "
             "(it is not the headline parity of Fig 3, `parity_enc_lm_curriculum`). Accuracy vs SeqFLOPs and tokens for "
             "the families of Fig 3: " + ", ".join(family_plots) + ".\n\n") if family_plots else ""
    return "### SMT -> one-step DMT vs BPTT, end to end\n\n" + intro + "\n".join(parts) if parts else ""


def teacher_section() -> str:
    """Teacher calibration per family (recipes/teacher_curves.py) and the associative-recall probe
    (recipes/assoc_recall_probe.py)."""
    paths = [os.path.join(RESULTS, n) for n in ("teacher_curves.md", "assoc_recall_probe.md")]
    return "".join(_demote(_results_links(open(p).read().strip()), 2) + "\n" for p in paths if os.path.exists(p))


def main_job_section() -> str:
    """One table per main-job run found (recipes/results/main_job_summary*.json: the README command, other seeds)."""
    paths = sorted(glob.glob(os.path.join(RESULTS, "main_job_summary*.json")))
    if not paths:
        return ""
    cols = ["teacher_acc", "onestep_acc", "student_acc", "drift_mean"]
    out = "### The main job (`python recipes/smt.py --config recipes/configs/needle_cpu.yaml`)\n\n"
    for path in paths:
        s = json.load(open(path))
        rows = ["| phase | DMT gradient | steps | seconds | " + " | ".join(cols) + " |", "|---|---|---|---|" + "---|" * len(cols)]
        for i, p in enumerate(s["phases"]):
            grad = s["config"]["phases"][i].get("dmt_gradient", "one_step") if p["mode"] == "dmt" else "-"
            rows.append(f"| {p['mode']} | {grad} | {p['steps']} | {p['seconds']} | "
                        + " | ".join(f"{p['eval'][c]:.3f}" for c in cols) + " |")
        out += (f"Seed {s['config'].get('seed', 0)}. Data: {s['data']}. Machine: {s['machine']}.\n\n" + "\n".join(rows) + "\n\n")
    return out


def bench_section() -> str:
    parts = []
    for path in sorted(glob.glob(os.path.join(RESULTS, "bench_*.md"))):
        parts.append(_demote(open(path).read().strip(), 3))
    png = sorted(glob.glob(os.path.join(RESULTS, "bench_*.png")))
    links = "".join(f"\n![bench]({os.path.relpath(p, ROOT)})\n" for p in png)
    if not parts:
        return ""
    # tables only: what they show is written by people, in README's Results summary
    return ("### Speed and memory (`python recipes/bench.py --preset cpu`; `--preset gpu` through `recipes/gpu_session.sh bench`)\n" + links + "\n" + "\n\n".join(parts) + "\n")


def paper_section() -> str:
    """The archived reproduce.py report, headed as superseded, its links pointing into recipes/results/archive/."""
    path = os.path.join(ARCHIVE, "RESULTS.md")
    if not os.path.exists(path):
        return ""
    text = open(path).read().strip()
    if text.startswith("## Results"):
        text = text.split("\n", 1)[1].strip()
    text = re.sub(r"\]\((repro_[^)/]+|README\.md)\)", r"](recipes/results/archive/\1)", text)
    return ("### Earlier evidence, archived and superseded (`recipes/reproduce.py`, removed; see "
            "[recipes/results/archive/README.md](recipes/results/archive/README.md))\n\n" + _demote(text, 1))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the section differs from what the results give")
    args = parser.parse_args(argv)
    readme_path = os.path.join(ROOT, "README.md")
    readme = open(readme_path).read()
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no {START} ... {END} block")
    body = "\n\n".join(p for p in (fig3_section(), control_section(), text_section(), needle_section(), teacher_section(),
                                    main_job_section(), bench_section(), paper_section()) if p)
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{body}\n{END}{tail}"
    if args.check:
        print("README.md Results section: " + ("up to date" if new == readme else "out of date (run without --check)"))
        return int(new != readme)
    open(readme_path, "w").write(new)
    print(f"README.md Results section: {len(body.splitlines())} lines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
