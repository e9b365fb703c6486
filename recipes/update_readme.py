"""Regenerate README.md's Results section from the files the recipes wrote under recipes/results/.

    python recipes/update_readme.py

The section between `<!-- results:start -->` and `<!-- results:end -->` is replaced by, in order:
the needle end-to-end tables (recipes/needle_e2e.py), the main-job summary (recipes/smt.py), the benchmark
tables (recipes/bench.py) and the paper-claims report (recipes/reproduce.py report -> recipes/RESULTS.md).
Nothing in the section is typed by hand.
"""

from __future__ import annotations

import glob
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "recipes", "results")
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _demote(markdown: str, levels: int = 2) -> str:
    """Push markdown headings down so they nest under README's '## Results'."""
    return re.sub(r"^(#+)", lambda m: "#" * min(6, len(m.group(1)) + levels), markdown, flags=re.M)


def needle_section() -> str:
    """The no-BPTT end-to-end tables (recipes/needle_e2e.py, over seeds) and the DMT lever ablation."""
    parts = []
    for path in sorted(glob.glob(os.path.join(RESULTS, "*_e2e_T*.md"))):
        name = os.path.basename(path)[: -len(".md")]  # <task>_e2e_T<T>
        task, T = name.split("_e2e_T")
        pngs = sorted(glob.glob(os.path.join(RESULTS, f"{name}_s*_drift.png")))
        plot = f"\n![drift]({os.path.relpath(pngs[0], ROOT)})\n" if pngs else ""
        parts.append(f"#### {task}, T={T} (`python recipes/needle_e2e.py --task {task} --seq-len {T} --seeds ...`)\n\n"
                     f"{open(path).read().strip()}\n{plot}")
    for path in sorted(glob.glob(os.path.join(RESULTS, "dmt_ablation*.md"))):
        parts.append("#### What closes the drift without BPTT (`python recipes/dmt_ablation.py`)\n\n" + open(path).read().strip() + "\n")
    return "### SMT -> one-step DMT vs BPTT, end to end\n\n" + "\n".join(parts) if parts else ""


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
    extra = ""
    cpu = os.path.join(RESULTS, "bench_cpu.json")
    if os.path.exists(cpu):
        summ = json.load(open(cpu)).get("summary", {})
        pre = sorted((k, v) for k, v in summ.items() if k.startswith("prefill_B1_parallel_speedup_at_"))
        trans = sorted((k, v) for k, v in summ.items() if k.startswith("prefixes_T") and k.endswith("transitions_per_s_ratio"))
        lat = sorted(((k, v) for k, v in summ.items() if k.endswith("_latency_ratio") and k.startswith(("student_B", "llama_B"))),
                     key=lambda kv: (not kv[0].startswith("student"), int(kv[0].split("_")[1][1:])))
        if "bptt_over_smt_at_Tmax" in summ:
            extra += (f" From the shortest to the longest T, the SMT step grows {summ['smt_time_ratio_Tmax_Tmin']:.1f}x "
                      f"(its encoder attends over Tc = T) and BPTT's {summ['bptt_time_ratio_Tmax_Tmin']:.1f}x; at the longest "
                      f"T BPTT is still {summ['bptt_over_smt_at_Tmax']:.1f}x slower per step.")
        if lat:
            ctx = lat[0][0].split("_")[2].replace("v", " vs ")  # e.g. "16384 vs 256"
            extra += (f" Per-token latency at context {ctx}: "
                      + ", ".join(f"{k.split('_')[0].replace('llama', 'KV-cache Llama')} batch {k.split('_')[1][1:]} "
                                  f"{v:.2f}x" for k, v in lat) + ".")
        if pre:
            extra += (f" Parallel prefill (the carried teacher encoder over the last Tc tokens) gives the first token "
                      f"{pre[-1][1]:.0f}x sooner than the recurrent prefill at a {pre[-1][0].rsplit('_', 1)[1]}-token prompt "
                      "(batch 1), and its cost does not grow with the prompt.")
        if trans:
            extra += (" The causal-context teacher's all-prefix SMT step supervises "
                      + ", ".join(f"{v:.1f}x (T={k.split('_')[1][1:]})" for k, v in trans)
                      + " more transitions per second than one split per sequence.")
    return ("### Speed and memory (`python recipes/bench.py --preset cpu`)\n\n"
            "SMT's training step is one parallel pass whatever T; BPTT runs T sequential steps. The student's state "
            "and per-token cost stay flat in the context length, while a KV-cache Transformer's grow." + extra +
            " No GPU was available to the sessions so far, so the GPU targets are unmeasured (`--preset gpu` is "
            "ready).\n" + links + "\n" + "\n\n".join(parts) + "\n")


def paper_section() -> str:
    path = os.path.join(ROOT, "recipes", "RESULTS.md")
    if not os.path.exists(path):
        return ""
    text = open(path).read().strip()
    if text.startswith("## Results"):
        text = text.split("\n", 1)[1].strip()
    text = text.replace("](results/", "](recipes/results/")  # RESULTS.md links are relative to recipes/
    return "### The paper's claims at small scale (`python recipes/reproduce.py run all`)\n\n" + _demote(text, 1)


def main() -> None:
    readme_path = os.path.join(ROOT, "README.md")
    readme = open(readme_path).read()
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no {START} ... {END} block")
    body = "\n\n".join(p for p in (needle_section(), main_job_section(), bench_section(), paper_section()) if p)
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    open(readme_path, "w").write(f"{head}{START}\n{body}\n{END}{tail}")
    print(f"README.md Results section: {len(body.splitlines())} lines")


if __name__ == "__main__":
    main()
