"""Speed benchmark of SMT training and SMT-student generation (CPU and GPU), all ratios measured side by side.

    python recipes/bench.py --preset cpu                  # tiny config, < 4 min on 2 cores -> outputs/bench/bench_cpu.*
    python recipes/bench.py --preset gpu                  # reference architecture, bf16 -> outputs/bench/bench_gpu.*
    python recipes/bench.py --preset cpu  --out recipes/results/bench_cpu.json     # update the shipped results
    python recipes/bench.py --preset gpu --dry-run                                  # shrunk GPU code path (runs on CPU)

Presets: recipes/configs/bench/{cpu,gpu}.yaml; --dry-run replaces their sizes with recipes/configs/bench/dry.yaml.

Sections (JSON keys; a markdown table is written next to the JSON, `.md`), measured by
`smt_hf.benchmark_sections.bench_<section>`:
    smt_step    one SMT (joint) training step, SMTTrainer's own (training_step + clip + optimizer step; `TrainStep`):
                eager and torch.compile'd; FLOPs (FlopCounterMode), tokens/s, model FLOP utilisation (GPU)
    train_sweep step time and memory vs sequence length T for SMT (Tc = T) and BPTT (T steps), same student
    dmt         one DMT step: plain (id check = host sync per rollout step), sync-free step, compiled step
    train_compile  SMTTrainer's step for smt (joint), dmt and bptt: eager vs recurrent_step_compile (same losses)
    generation  per-token decode latency and memory vs context, student (prefill then decode) vs an
                equal-width/depth `transformers` LlamaForCausalLM with a KV cache, batch 1 and a large batch
    prefill     time to first token vs prompt length: recurrent prefill (FastGenerator.prefill, T sequential
                steps) vs parallel prefill (the carried teacher encoder over the last Tc tokens, one pass)
    prefixes    causal-context teacher: supervised RNN transitions per second of a joint-SMT step, one split
                per sequence (B transitions) vs every prefix from one encoder pass (B*T, smt_all_prefixes)
On a GPU each section runs in its own process (--isolate; --no-isolate to turn it off), and --budget-seconds stops
the section still running when the run's time is spent, keeping what it had measured.
Memory: on GPU torch.cuda.max_memory_allocated (minus what was allocated before, i.e. weights and inputs);
on CPU the bytes of tensors saved for backward (training) and the state bytes (student memory vs KV cache).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sibling recipe modules (cli_types)
from cli_types import positive_float, positive_int  # noqa: E402

PRESET_NAMES = ("cpu", "gpu")  # recipes/configs/bench/<name>.yaml (loaded below the torch import), plus dry.yaml
DEFAULT_OUT = "outputs/bench"  # not the tracked recipes/results unless --out says so


SECTION_NAMES = ("smt_step", "train_sweep", "dmt", "generation", "prefill", "prefixes", "train_compile")


def _sections(text: str) -> str:
    bad = [s for s in text.split(",") if s not in SECTION_NAMES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown section(s) {bad}; choose from {','.join(SECTION_NAMES)}")
    return text


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=PRESET_NAMES, default="cpu",
                    help="model sizes and sections of recipes/configs/bench/<preset>.yaml (default %(default)s)")
    ap.add_argument("--out", default=None, help=f"JSON path (default {DEFAULT_OUT}/bench_<preset>.json)")
    ap.add_argument("--dry-run", action="store_true",
                    help="shrink every size (checks the code path, e.g. GPU preset on CPU)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (eager only)")
    ap.add_argument("--threads", type=positive_int, default=None,
                    help="CPU threads (default: the preset's, else torch's)")
    ap.add_argument("--sections", default=",".join(SECTION_NAMES), type=_sections,
                    help=f"comma-separated, from {','.join(SECTION_NAMES)}")
    ap.add_argument("--no-plot", action="store_true", help="write the JSON and table only")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the .md and plot from an existing --out JSON (also a .partial.json left by a "
                    "killed run)")
    ap.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                    help="run each section in its own Python process (default: on a GPU), so an out-of-memory error, "
                         "a leak or a crash in one section cannot spill into the next; the numbers are merged into one run")
    ap.add_argument("--budget-seconds", type=positive_float, default=None,
                    help="wall-clock cap of the whole run: with --isolate, a section still running when it is spent is "
                         "stopped and recorded as an error (the finished sections are kept)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one isolated section: no report printed
    ap.add_argument("--merge", action="store_true",
                    help="keep the other sections of an existing --out JSON (re-run only --sections); each section's "
                         "ratios are still measured side by side within that section")
    return ap


if __name__ == "__main__":
    build_parser().parse_args()  # --help and usage errors answer here, before torch and transformers load

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, also from a checkout not pip-installed

from smt_hf.benchmark_sections import (bench_dmt, bench_generation, bench_prefill, bench_prefixes,  # noqa: E402
                                       bench_smt_step, bench_train_compile, bench_train_sweep, check_targets,
                                       markdown, plot_panels_for, summarize)
from smt_hf.hardware import cpu_name  # noqa: E402


def load_presets(folder=os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "bench")) -> dict:
    """recipes/configs/bench/<name>.yaml (read by smt_hf.recipe_config.load_preset) -> {name: preset} (`autocast` as a
    torch dtype or None)."""
    from smt_hf.recipe_config import load_preset

    out = {name: load_preset(os.path.join(folder, f"{name}.yaml")) for name in (*PRESET_NAMES, "dry")}
    for p in out.values():
        if p.get("autocast") is not None:
            p["autocast"] = getattr(torch, p["autocast"])
    return out


PRESETS = load_presets()
DRY = PRESETS.pop("dry")  # --dry-run: everything shrunk, same code path


# ----------------------------------------------------------------------------- the run (the measurements, ratios and
# markdown tables are in smt_hf.benchmark_sections; this recipe runs the sections, keeps each finished one and writes files)
def plot(res, path):
    from smt_hf.viz import plot_panels

    panels = plot_panels_for(res)
    if panels:
        return plot_panels(panels, path, suptitle=f"smt-hf bench, preset {res['preset']} on {res['machine']['name']}")


def run_isolated(sec, a, out, res, timeout_s):
    """Run one section in a child `python bench.py --sections <sec> --no-isolate` and copy its numbers (and error)
    into `res`. A child that outlives `timeout_s` is stopped (SIGTERM, then SIGKILL after 20 s): the rows it had
    measured (its .partial.json) are kept, with an error entry; a child that crashes leaves an error and no numbers."""
    part = out.with_name(f"{out.stem}.section_{sec}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--preset", a.preset, "--sections", sec, "--out", str(part),
           "--no-plot", "--no-isolate", "--child"]
    cmd += ["--dry-run"] * a.dry_run + ["--no-compile"] * a.no_compile + (["--threads", str(a.threads)] if a.threads else [])
    proc = subprocess.Popen(cmd)
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the child saves what it measured (KeyboardInterrupt -> .partial.json)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        rc = f"stopped after {timeout_s:.0f} s (--budget-seconds)"
    got = part if part.is_file() else part.with_suffix(".partial.json")
    if got.is_file():
        sub = json.loads(got.read_text())
        if sec in sub:
            res[sec] = sub[sec]
        for key in ("errors", "cuda_allocated_after"):
            if sec in sub.get(key, {}):
                res.setdefault(key, {})[sec] = sub[key][sec]
    if not part.is_file() and rc != 0:
        msg = "section process ended " + ("before the end; what it had measured is kept" if sec in res
                                          else "without results")
        res.setdefault("errors", {})[sec] = f"{msg} ({rc})"
    for p in (part, part.with_suffix(".md"), part.with_suffix(".partial.json")):
        p.unlink(missing_ok=True)


def main(argv=None):
    ap = build_parser()
    a = ap.parse_args(argv)
    if a.report_only:
        out = Path(a.out or f"{DEFAULT_OUT}/bench_{a.preset}.json")
        res = json.loads(out.read_text())
        if "summary" not in res:  # a .partial.json left by a killed run
            res["summary"] = summarize(res)
            res["targets"] = check_targets(res, res["summary"])
        out.with_suffix(".md").write_text(markdown(res))
        if not a.no_plot:
            plot(res, out.with_suffix(".png"))
        return res
    if a.child:  # the parent's stop (SIGTERM) becomes KeyboardInterrupt, which saves the rows measured so far
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    P = copy.deepcopy(PRESETS[a.preset])
    if a.dry_run:
        P.update(copy.deepcopy(DRY))
    if a.no_compile:
        P["compile"] = False
    device = torch.device("cuda" if a.preset == "gpu" and torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and P["autocast"] is not None and not a.dry_run:
        print("no GPU: running the gpu preset on CPU (use --dry-run for a quick check)")
    threads = a.threads or P["threads"]
    if threads and device.type == "cpu":
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    import transformers

    name = torch.cuda.get_device_name() if device.type == "cuda" else cpu_name()
    res = dict(preset=a.preset, dry_run=a.dry_run, machine=dict(
        device=device.type, name=name, torch=torch.__version__, transformers=transformers.__version__,
        threads=torch.get_num_threads(), cpu_count=os.cpu_count(), python=platform.python_version()),
        config=dict(model=P["model"], compile=P["compile"], autocast=str(P["autocast"])))
    print(f"bench preset={a.preset} dry_run={a.dry_run} on {name} ({device}), torch {torch.__version__}", flush=True)
    t0 = time.perf_counter()
    sections = dict(smt_step=bench_smt_step, train_sweep=bench_train_sweep, dmt=bench_dmt,
                    train_compile=bench_train_compile, generation=bench_generation,
                    prefill=bench_prefill, prefixes=bench_prefixes)
    out = Path(a.out or f"{DEFAULT_OUT}/bench_{a.preset}{'_dry' if a.dry_run else ''}.json")
    if a.merge and out.is_file():  # refuse before measuring: the kept sections must come from the same settings
        old = json.loads(out.read_text())
        cpu = device.type == "cpu" and old.get("machine", {}).get("device", "cpu") == "cpu"  # --threads: CPU only
        ours = dict(preset=a.preset, dry_run=bool(a.dry_run), threads=res["machine"]["threads"] if cpu else None,
                    compile=res["config"]["compile"])
        theirs = dict(preset=old.get("preset"), dry_run=bool(old.get("dry_run")),
                      threads=old.get("machine", {}).get("threads") if cpu else None,
                      compile=old.get("config", {}).get("compile"))
        wrong = [k for k in ours if theirs[k] != ours[k] and (theirs[k] is not None or k == "preset")]
        if wrong:
            raise SystemExit(f"bench.py: --merge into {out}, a run of " + " ".join(f"{k}={theirs[k]!r}" for k in wrong)
                             + ", with " + " ".join(f"{k}={ours[k]!r}" for k in wrong) + ": its kept sections would "
                             "be labelled with this run's settings; use another --out (or the same flags)")
    partial = out.with_suffix(".partial.json")  # each finished section, in case the run is killed (device time limit)
    partial.parent.mkdir(parents=True, exist_ok=True)

    def save_partial():
        partial.write_text(json.dumps(dict(res, total_s=time.perf_counter() - t0, partial=True), indent=2, default=str))

    isolate = a.isolate if a.isolate is not None else device.type == "cuda"
    res["isolated"] = isolate
    for sec in a.sections.split(","):
        print(f"[{sec}]", flush=True)
        ts = time.perf_counter()
        left = None if a.budget_seconds is None else a.budget_seconds - (ts - t0)
        if left is not None and left < 1:
            res.setdefault("errors", {})[sec] = "not run: --budget-seconds spent"
            continue
        if isolate:
            run_isolated(sec, a, out, res, left)
        else:
            try:
                sections[sec](P, device, res)
            except Exception as e:  # keep the other sections' numbers
                traceback.print_exc()
                res.setdefault("errors", {})[sec] = f"{type(e).__name__}: {e}"
            except KeyboardInterrupt:  # stopped (Ctrl-C, or SIGTERM in a --child): keep what was measured
                res.setdefault("errors", {})[sec] = "interrupted"
                save_partial()
                raise
            if device.type == "cuda":  # what the section left allocated for the next one (a leak shows here)
                gc.collect()
                torch.cuda.empty_cache()
                res.setdefault("cuda_allocated_after", {})[sec] = torch.cuda.memory_allocated()
        res.setdefault("section_s", {})[sec] = time.perf_counter() - ts
        save_partial()
    res["total_s"] = time.perf_counter() - t0
    if a.merge and out.is_file():
        old = json.loads(out.read_text())
        kept = [k for k in ("smt_step", "train_sweep", "dmt", "train_compile", "generation", "prefill", "prefixes")
                if k in old and k not in res]
        for k in kept:
            res[k] = old[k]
            res.setdefault("section_s", {})[k] = old.get("section_s", {}).get(k)
        res["merged"] = {"sections": kept, "from_machine": old["machine"], "total_s": old.get("total_s")}
        res["total_s"] += old.get("total_s") or 0.0
    res["summary"] = summarize(res)
    res["targets"] = check_targets(res, res["summary"])
    out.write_text(json.dumps(res, indent=2, default=str))
    partial.unlink(missing_ok=True)
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    if not a.no_plot:
        plot(res, out.with_suffix(".png"))
    if not a.child:
        print(md)
    return res


if __name__ == "__main__":
    main()
