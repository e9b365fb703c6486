"""Reproduce the paper's experiments (arXiv 2606.06479) at small scale and render the README "Results" section.

    python recipes/reproduce.py run all                      # CPU preset, writes outputs/repro/repro_*.{json,md,png}
    python recipes/reproduce.py run synthetic joint          # some items
    python recipes/reproduce.py run all --quick              # smoke test: a few steps each, into outputs/repro_quick
    python recipes/reproduce.py run all --preset gpu         # bigger sizes, same code (CUDA if available)
    python recipes/reproduce.py run joint --set joint.steps=100   # one preset value changed
    python recipes/reproduce.py report                       # outputs/repro/RESULTS.md from the JSONs (no training)

The shipped results (recipes/results/, recipes/RESULTS.md) are only written when asked for:
`run ... --out recipes/results` and `report --out recipes/results --dest recipes/RESULTS.md`.

Presets are YAML: recipes/configs/reproduce/{cpu,gpu}.yaml (item -> its settings; `--set ITEM.KEY=VALUE` overrides one).

Items (paper figure): synthetic (Fig 3), joint (Fig 10), gradients (Fig 11), dmt (Fig 12), length (Fig 13),
text (Fig 6/7, bytes), pixels (Fig 4/5), backbones (Fig 3 with GRU/MLP updaters).
Every run is single-threaded on CPU (`torch.set_num_threads(1)`; tiny models on a shared machine run far faster
that way). Budgets are in optimizer steps, except where a row says "same wall-clock": there BPTT trains until its
training time equals SMT+DMT's.
On a terminal a progress bar counts the work units and each unit's training log goes to
outputs/reproduce_logs/<time>/<item>_<unit>.log; piped into a file, the logs are printed inline instead.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

ITEMS = ["synthetic", "joint", "gradients", "dmt", "length", "text", "pixels", "backbones"]
EXTRA_ITEMS = ["prefixes"]  # not in `run all` (the CPU preset's 45 minutes): `run prefixes`
PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "reproduce")
PRESET_NAMES = tuple(sorted(f[:-5] for f in os.listdir(PRESET_DIR) if f.endswith(".yaml")))  # cpu, gpu
DEFAULT_OUT = "outputs/repro"  # never the tracked recipes/results unless --out says so


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train/evaluate items and write their JSON/PNG/markdown")
    r.add_argument("items", nargs="+", help=f"'all' (= {ITEMS}) or some of {ITEMS + EXTRA_ITEMS}")
    r.add_argument("--preset", choices=PRESET_NAMES, default="cpu", help="recipes/configs/reproduce/<preset>.yaml")
    r.add_argument("--set", action="append", default=[], metavar="ITEM.KEY=VALUE",
                   help="override one preset value, e.g. --set synthetic.smt_steps=200 (repeatable)")
    r.add_argument("--quick", action="store_true", help="a few steps per item (smoke test); default output outputs/repro_quick")
    r.add_argument("--out", default=None, help=f"output folder (default {DEFAULT_OUT}, or outputs/repro_quick with "
                                               "--quick; --out recipes/results updates the shipped results)")
    r.add_argument("--jobs", type=int, default=None,
                   help="worker processes, one CPU thread each (default: 2 for --preset cpu, 8 for gpu, at most the "
                        "CPU count); 1 runs everything in this process")
    p = sub.add_parser("report", help="render RESULTS.md from the JSONs")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"folder with the repro_*.json (default {DEFAULT_OUT})")
    p.add_argument("--dest", default=None, help="markdown to write (default <out>/RESULTS.md)")
    return ap


if __name__ == "__main__":
    build_parser().parse_args()  # --help and usage errors answer here, before torch and transformers load


os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import transformers  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import reproduce_items as R  # noqa: E402
from smt_hf.hardware import machine_info  # noqa: E402

transformers.logging.set_verbosity_error()
HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
ROOT_DIR = os.path.dirname(HERE)
TITLES = {
    "synthetic": "1. Synthetic tasks: BPTT vs SMT vs SMT->DMT (paper Fig 3)",
    "joint": "2. Joint vs detached SMT over the decoder horizon Tf (paper Fig 10)",
    "gradients": "3. Gradient norms per timestep at initialisation (paper Fig 11)",
    "dmt": "4. DMT and rollout drift (paper Fig 12)",
    "length": "5. Length generalisation on parity (paper Fig 13)",
    "text": "6. Byte-level text (paper Fig 6/7, Shakespeare offline instead of TinyStories)",
    "pixels": "7. Pixel sequences: MNIST and sketches (paper Fig 4/5)",
    "backbones": "8. Backbones: Transformer vs GRU updater (paper Fig 3, other RNNs; MLP only in the GPU preset)",
    "prefixes": "Extra: causal-context teacher, every transition supervised vs one split per sequence (issue 6, stretch 2)",
}

# the report renders tables and plots only; what they show is written, from these numbers, in README's Results summary
FINDINGS = "What this item shows: see the summary at the top of README.md's Results section."

# ----------------------------------------------------------------------------- presets
def load_preset(name: str, overrides=()) -> dict:
    """The preset `recipes/configs/reproduce/<name>.yaml` (item -> settings) with each `ITEM.KEY=VALUE` override
    applied, read by smt_config.load_preset (the loader of recipes/smt.py's configs).

    Raises:
        ConfigError: an unknown preset, or an override whose ITEM.KEY is not in the preset (the message lists the
            valid keys).
    """
    from smt_config import ConfigError
    from smt_config import load_preset as load

    if name not in PRESET_NAMES:
        raise ConfigError(f"unknown preset {name!r}: choose one of {list(PRESET_NAMES)} (files in {PRESET_DIR})")
    return load(os.path.join(PRESET_DIR, f"{name}.yaml"), overrides)


def training_budget_s(P: dict) -> dict:
    """Training seconds each item's units are capped at (sum over units), from the `*_s` caps of a time-capped
    preset; None for an item with a phase capped only in steps. `run all --jobs N` takes about sum / N plus
    evaluation and start-up. (BPTT gets SMT+DMT's budget; DMT runs once per variant.)"""
    def cell(S, n_dmt=1, bptt=True):
        if S.get("smt_s") is None or S.get("dmt_s") is None:
            return None
        return S["smt_s"] + n_dmt * S["dmt_s"] + (S["smt_s"] + S["dmt_s"] if bptt else 0)
    syn, bb = P["synthetic"], P["backbones"]
    n_syn = sum(len(v) for v in syn["lengths"].values()) * len(syn["seeds"])
    n_bb = len(bb["backbones"]) * len(bb["cases"]) * len(bb["seeds"])
    j = P["joint"]
    out = {"synthetic": None if cell(syn) is None else n_syn * cell(syn),
           "backbones": None if cell(bb) is None else n_bb * cell(bb),
           "joint": None if j.get("smt_s") is None else 2 * len(j["horizons"]) * len(j["seeds"]) * j["smt_s"],
           "gradients": 0.0,
           "dmt": cell(P["dmt"], n_dmt=len(P["dmt"]["variants"]), bptt=False),
           "length": cell(P["length"]),
           "text": 2 * (P["text"]["smt_s"] + P["text"]["dmt_s"]),
           "pixels": 2 * len(R.PIXEL_KINDS) * (P["pixels"]["smt_s"] + P["pixels"]["dmt_s"])}
    return out


def quick(P: dict) -> dict:
    """A smoke-test version of a preset: same code paths and model sizes, a few steps and few sequences."""
    P = copy.deepcopy(P)
    for k, S in P.items():
        if k.startswith("model"):
            continue
        for key, val in list(S.items()):
            if key.endswith("_steps") or key == "steps":
                S[key] = 3 if key != "dmt_steps" else 2
            elif key.endswith("_s"):
                S[key] = 2
            elif key in ("n_train",):
                S[key] = 256
            elif key in ("n_eval",):
                S[key] = 8
            elif key in ("seeds",):
                S[key] = val[:1]
            elif key == "sample_len":
                S[key] = 16
            elif key == "n_show":
                S[key] = 2
            elif key == "batch":
                S[key] = 4
            elif key in ("bs", "dmt_bs"):  # the GPU preset's batches do not fit a small CPU machine's memory
                S[key] = min(val, 8)
        if k == "synthetic":
            S["lengths"] = {t: v[:1] for t, v in S["lengths"].items()}
        if k == "length":
            S["eval_positions"] = 8
        if k == "gradients":  # the SMT part batches every split point: keep it short
            S["T"], S["init_ranges"] = min(S["T"], 64), S["init_ranges"][:1]
    return P


def machine() -> dict:
    return machine_info()


def machine_str(mc: dict) -> str:
    dev = mc.get("gpu") or f"{mc.get('cpu')} ({mc.get('cpu_count')} cores, shared)"
    return f"{dev}, torch {mc.get('torch')}, {mc.get('threads')} thread(s)"


# ----------------------------------------------------------------------------- report text
def intro(out: str, dest: str | None = None) -> str:
    """The report's opening paragraph, for the preset the JSONs in `out` were run with."""
    metas = []
    for item in ITEMS:
        path = os.path.join(out, f"repro_{item}.json")
        if os.path.isfile(path):
            metas.append(json.load(open(path)).get("meta", {}))
    presets = {m.get("preset") for m in metas} or {"cpu"}
    rel = os.path.relpath(out, ROOT_DIR)
    cmd = f"python recipes/reproduce.py report --out {rel}"
    if dest and os.path.abspath(dest) != os.path.abspath(os.path.join(out, "RESULTS.md")):
        cmd += f" --dest {os.path.relpath(dest, ROOT_DIR)}"
    if presets == {"gpu"}:
        mc = metas[0].get("machine", {})
        how = (f"GPU preset: larger models, every phase capped in seconds, {metas[0].get('jobs')} worker processes "
               f"sharing {mc.get('gpu') or mc.get('cpu')}")
        gpu_note = "The CPU preset's results are in recipes/RESULTS.md."
    else:
        how = ("CPU preset: width-64 models, hundreds of optimizer steps, run as independent work units in 2 worker "
               "processes with one CPU thread each")
        gpu_note = ("`--preset gpu` runs the same code at larger sizes, every phase capped in seconds to fit ~6 minutes "
                    "on one H100/H200 " + ("(results: recipes/RESULTS_GPU.md)." if os.path.isfile(os.path.join(HERE, "RESULTS_GPU.md"))
                                           else "(not run yet: no session has had a GPU)."))
    return ("## Results\n\n"
            f"Small-scale reproductions of the paper's experiments, produced by `recipes/reproduce.py` ({how}). They test "
            "the *direction* of the paper's claims at toy scale, not its numbers. Everything below is rendered from "
            f"`{rel}/repro_*.json` by `{cmd}`; no seed was dropped. {gpu_note}\n")


# ----------------------------------------------------------------------------- run / report
# Longest units first, so N workers finish together (text/pixel units are the longest, gradients the shortest).
SCHEDULE = ["text", "pixels", "synthetic", "prefixes", "backbones", "joint", "length", "dmt", "gradients"]


def default_jobs(preset: str) -> int:
    """Worker processes: the CPU preset is sized for 2 cores (one 1-thread worker per core); on a GPU the tiny
    models are launch-bound, so several processes share the device."""
    n = os.cpu_count() or 1
    return max(1, min(n, 2 if preset == "cpu" else 8))


def _write_item(item, res, out, preset, is_quick, compute_s, jobs, t_start, overrides=()):
    res["meta"] = {"item": item, "preset": preset, "quick": is_quick, "machine": machine(), "jobs": jobs,
                   "compute_s": round(compute_s, 1), "elapsed_s": round(time.time() - t_start, 1),
                   "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "command": f"python recipes/reproduce.py run {item} --preset {preset}" + (" --quick" if is_quick else "")
                   + "".join(f" --set {o}" for o in overrides)}
    with open(os.path.join(out, f"repro_{item}.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    md = getattr(R, f"render_{item}")(res, out)
    with open(os.path.join(out, f"repro_{item}.md"), "w") as f:
        f.write(md)
    tqdm.write(md)  # printed above the progress bar, not through it
    tqdm.write(f"=== {item}: {compute_s / 60:.1f} min of compute, done at {(time.time() - t_start) / 60:.1f} min ===")


def run(items, preset: str, is_quick: bool, out: str, jobs: int = 1, log_dir: str = "outputs/reproduce_logs",
        overrides=()) -> dict:
    """Plan every item's work units, run them (in `jobs` worker processes when jobs > 1, longest items first),
    and write each item's JSON/markdown/PNG as soon as its last unit is done. Returns the run summary, also written
    to `<out>/repro_run.json` (items, jobs, wall-clock) when all items are run."""
    import concurrent.futures as cf
    import multiprocessing
    import traceback

    P = load_preset(preset, overrides)
    P = quick(P) if is_quick else P
    os.makedirs(out, exist_ok=True)
    items = sorted(items, key=SCHEDULE.index)
    plans = {it: getattr(R, f"plan_{it}")(P) for it in items}
    queue = [(it, i, fn, args) for it in items for i, (fn, args) in enumerate(plans[it][0])]
    results = {it: [None] * len(plans[it][0]) for it in items}
    left = {it: len(plans[it][0]) for it in items}
    compute = dict.fromkeys(items, 0.0)
    failed = []
    t_start = time.time()
    print(f"=== reproduce: {len(items)} item(s), {len(queue)} work units, preset {preset}"
          f"{' (quick)' if is_quick else ''}, {jobs} worker(s) ===", flush=True)
    # a progress bar on a terminal (disable=None: off when stderr is not a TTY, e.g. a log; then one line per unit).
    # Under the bar, each unit's training logs go to a file instead of scrolling the bar away.
    bar = tqdm(total=len(queue), desc="reproduce", unit="unit", disable=None, dynamic_ncols=True)
    logs = None if bar.disable else os.path.join(log_dir, time.strftime("%Y%m%d-%H%M%S"))
    log_of = lambda it, i: None if logs is None else os.path.join(logs, f"{it}_{i:03d}.log")  # noqa: E731
    if logs:
        tqdm.write(f"training logs of each unit: {logs}/<item>_<unit>.log")

    def done(it, i, res_sec, err=None):
        if err is not None:
            tqdm.write(f"!!! {it} unit {i} failed:\n{err}")
            if it not in failed:
                failed.append(it)
        else:
            results[it][i], sec = res_sec
            compute[it] += sec
        left[it] -= 1
        n_done = sum(len(v) for v in results.values()) - sum(left.values())
        bar.update(1)
        bar.set_postfix_str(f"{it} done" if left[it] == 0 else f"{it} {len(plans[it][0]) - left[it]}/{len(plans[it][0])}")
        if bar.disable:
            print(f"[reproduce] {n_done}/{len(queue)} units done, {(time.time() - t_start) / 60:.1f} min", flush=True)
        if left[it] == 0 and it not in failed:
            _write_item(it, plans[it][1](results[it]), out, preset, is_quick, compute[it], jobs, t_start, overrides)

    if jobs <= 1:
        R.worker_init()
        for it, i, fn, args in queue:
            try:
                done(it, i, R.timed(fn, args, log_of(it, i)))
            except Exception:
                done(it, i, None, traceback.format_exc())
    else:
        ctx = multiprocessing.get_context("spawn")  # CUDA-safe, and no forked torch thread pools
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=R.worker_init) as pool:
            futs = {pool.submit(R.timed, fn, args, log_of(it, i)): (it, i) for it, i, fn, args in queue}
            for f in cf.as_completed(futs):
                it, i = futs[f]
                try:
                    done(it, i, f.result())
                except Exception:
                    done(it, i, None, traceback.format_exc())
    bar.close()
    summary = {"preset": preset, "quick": is_quick, "jobs": jobs, "items": items, "failed": failed,
               "wall_clock_s": round(time.time() - t_start, 1), "compute_s": {k: round(v, 1) for k, v in compute.items()},
               "machine": machine(), "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if set(items) == set(ITEMS) and not failed:
        with open(os.path.join(out, "repro_run.json"), "w") as f:
            json.dump(summary, f, indent=1)
    print(f"=== reproduce: {summary['wall_clock_s'] / 60:.1f} min wall-clock with {jobs} worker(s)"
          + (f"; FAILED: {failed}" if failed else "") + " ===", flush=True)
    return summary


def _item_section(item: str, out: str, dest: str) -> tuple[str, float]:
    """One item's markdown (header line, table, plot, findings) from its JSON, and its compute seconds."""
    path = os.path.join(out, f"repro_{item}.json")
    head = f"\n### {TITLES[item]}\n"
    if not os.path.isfile(path):
        return head + f"\nNot run yet: `python recipes/reproduce.py run {item}`.\n", 0.0
    res = json.load(open(path))
    meta = res["meta"]
    compute_s = meta.get("compute_s", meta.get("wall_clock_s", 0.0))
    seeds = sorted({s for k, v in res["settings"].items() if isinstance(v, dict) for s in v.get("seeds", [])}) or [0]
    parts = [head, f"\nCommand: `{meta['command']}` · machine: {machine_str(meta['machine'])} · seeds: {seeds} · "
                   f"compute: {compute_s / 60:.1f} min of one CPU thread ({meta['finished']})"
                   + (" · **quick smoke run, not a result**" if meta.get("quick") else "") + "\n\n"]
    md = getattr(R, f"render_{item}")(res, out)
    with open(os.path.join(out, f"repro_{item}.md"), "w") as f:  # keep the per-item table in sync
        f.write(md)
    parts.append(md)
    if item != "pixels":  # the pixel grids are linked from its markdown
        rel = os.path.relpath(os.path.join(out, f"repro_{item}.png"), os.path.dirname(os.path.abspath(dest)))
        parts.append(f"\n![{item}]({rel})\n")
    parts.append(f"\n{FINDINGS}\n")
    return "".join(parts), compute_s


def report(out: str, dest: str) -> str:
    parts, total = [intro(out, dest)], 0.0
    for item in ITEMS:
        md, sec = _item_section(item, out, dest)
        parts.append(md)
        total += sec
    run_path = os.path.join(out, "repro_run.json")
    if os.path.isfile(run_path):
        rs = json.load(open(run_path))
        parts.append(f"\nThe whole `run all --preset {rs['preset']}` (items 1-8): {rs['wall_clock_s'] / 60:.1f} min "
                     f"wall-clock with {rs['jobs']} worker process(es) on {machine_str(rs['machine'])} "
                     f"({total / 60:.1f} min of compute in all; finished {rs['finished']}).\n")
    else:
        parts.append(f"\nTotal compute for items 1-8: {total / 60:.1f} min of one CPU thread.\n")
    for item in EXTRA_ITEMS:
        if os.path.isfile(os.path.join(out, f"repro_{item}.json")):
            parts.append(_item_section(item, out, dest)[0])
    text = "".join(parts)
    if os.path.isfile(os.path.join(out, "repro_pixels.json")):
        rel = os.path.relpath(out, os.path.dirname(os.path.abspath(dest)))
        text = text.replace("](repro_pixels_", f"]({rel}/repro_pixels_")
    with open(dest, "w") as f:
        f.write(text)
    return text


def cli(argv=None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    if a.cmd == "run":
        items = ITEMS if a.items == ["all"] else a.items
        bad = [i for i in items if i not in ITEMS + EXTRA_ITEMS]
        if bad:
            ap.error(f"unknown item(s) {bad}; choose from {ITEMS + EXTRA_ITEMS}")
        try:
            load_preset(a.preset, a.set)  # a bad --set fails here, before any work
        except ValueError as e:
            ap.error(str(e))
        summary = run(items, a.preset, a.quick, a.out or ("outputs/repro_quick" if a.quick else DEFAULT_OUT),
                      a.jobs or default_jobs(a.preset), overrides=a.set)
        return 1 if summary["failed"] else 0
    else:
        if not any(os.path.isfile(os.path.join(a.out, f"repro_{i}.json")) for i in ITEMS + EXTRA_ITEMS):
            ap.error(f"no repro_*.json in {a.out}: run `python recipes/reproduce.py run all` first (writes "
                     f"{DEFAULT_OUT}), or pass --out recipes/results for the shipped results")
        dest = a.dest or os.path.join(a.out, "RESULTS.md")
        report(a.out, dest)
        print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
