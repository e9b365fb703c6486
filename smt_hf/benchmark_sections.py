"""The sections of the SMT speed benchmark (`python recipes/bench.py`): each measures one thing side by side on
tiny-to-reference models, with the timing tools of `smt_hf.benchmark`.

    from smt_hf.benchmark_sections import bench_dmt, summarize
    res = {}
    bench_dmt(P, torch.device("cpu"), res)      # res["dmt"]: one row per setting and variant (ms, first call s)

`P` is a preset (recipes/configs/bench/*.yaml, read by `smt_hf.recipe_config.load_preset`): `model` sizes (V vocab,
d width, K memory tokens, H heads, enc/dec teacher depth, upd updater depth, ffn MLP width), one settings entry per
section (`smt`, `sweep`, `dmt`, `train_compile`, `gen`, `prefill`, `prefixes`), `compile` (bool) and `autocast`
(a torch dtype or None). Each `bench_<section>(P, device, res)` stores its rows in `res[<section>]`;
`summarize(res)` and `check_targets(res, summary)` derive the ratios and the GPU targets, `markdown(res)` renders the
report's tables and `plot_panels_for(res)` the figure's panels (drawn by `smt_hf.viz.plot_panels`). Memory: on GPU `torch.cuda.max_memory_allocated` minus what was
allocated before; on CPU the bytes of tensors saved for backward and the state bytes.
"""

from __future__ import annotations

import time

import torch

from .benchmark import (TrainStep, compare_compiled, count_flops, gpu_mem_peak, gpu_mem_start, gpu_mem_total,
                        llama_decode, llama_for, loss_rtol, md_table, measure_train, peak_flops, random_seqs, sync, timed)
from .cache import SMTMemoryCache
from .fast import FastGenerator, compile_step, restore_step
from .trainer import NonFiniteLossError
from .training_args import SMTTrainingArguments

# the GPU targets check_targets compares against (ms per step, tokens/s, ratios)
TARGETS = dict(smt_step_ms=35.0, dmt_step_ms=1400.0, gen_b1_tok_s=1500.0, gen_blarge_tok_s=60000.0,
               student_mem_ratio=1.05, student_latency_ratio=1.1)


# ----------------------------------------------------------------------------- models
def build_models(mc, max_context, device, backbone="transformer", encoder_causal=False):
    """(teacher, student) of the preset's sizes `mc` (keys V, d, K, H, enc, dec, upd, ffn), seeded with 0, built by
    `smt_hf.recipe.build_models` (so the same weights as a config run of those sizes), moved to `device`."""
    from .recipe import build_models as build

    torch.manual_seed(0)
    student, teacher = build({"teacher": dict(hidden_size=mc["d"], memory_tokens=mc["K"], num_attention_heads=mc["H"],
                                              num_encoder_layers=mc["enc"], num_decoder_layers=mc["dec"],
                                              intermediate_size=mc["ffn"], encoder_causal=encoder_causal),
                              "student": dict(backbone=backbone, updater_layers=mc["upd"], updater_intermediate_size=mc["ffn"])},
                             mc["V"], max_context)
    return teacher.to(device), student.to(device)


def training_args(mode, **kw):
    """SMTTrainingArguments for a measured step (no reports, output under /tmp/smt_bench)."""
    return SMTTrainingArguments(output_dir="/tmp/smt_bench", mode=mode, report_to=[], use_cpu=False, **kw)


# ----------------------------------------------------------------------------- sections
def bench_smt_step(P, device, res):
    """One joint-SMT training step (`TrainStep`), eager and (with `P["compile"]`) compiled: ms, tokens/s, FLOPs, MFU."""
    s, mc = P["smt"], P["model"]
    teacher, student = build_models(mc, s["Tc"], device)
    args = training_args("joint", context_length=s["Tc"], future_length=s["Tf"], split="last")
    seqs = random_seqs(s["B"], s["Tc"] + s["Tf"], mc["V"])
    out = dict(setting=dict(B=s["B"], Tc=s["Tc"], Tf=s["Tf"], autocast=str(P["autocast"])))
    flops = count_flops(TrainStep(student, teacher, args, seqs, device, P["autocast"]))
    variants = ["eager"] + (["compiled"] if P["compile"] else [])
    res["smt_step"] = out  # each variant as it finishes: one that fails keeps the others' numbers
    for name in variants:
        t0 = time.perf_counter()
        try:
            step = TrainStep(student, teacher, args, seqs, device, P["autocast"], compiled=name == "compiled")
            step()  # first call (compilation for "compiled")
            sync(device)
            first = time.perf_counter() - t0
            r = measure_train(step, device, s["warmup"], s["iters"])
        except (torch.OutOfMemoryError, NonFiniteLossError) as e:
            out[name] = dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
            print(f"  smt_step {name}: {out[name]['error']}", flush=True)
            continue
        sec = r["ms"] / 1e3
        r.update(first_call_s=first, seq_per_s=s["B"] / sec, tokens_per_s=s["B"] * (s["Tc"] + s["Tf"]) / sec,
                 flops=flops, tflops_per_s=flops / sec / 1e12)
        pk = peak_flops(device)
        r["mfu"] = None if pk is None else flops / sec / pk
        out[name] = r
        print(f"  smt_step {name}: {r['ms']:.1f} ms, {r['seq_per_s']:.0f} seq/s, {r['tflops_per_s']:.3f} TFLOP/s", flush=True)


def bench_train_sweep(P, device, res):
    """Step time and memory vs sequence length T, SMT (Tc = T) vs BPTT (T sequential steps), one student."""
    s, mc = P["sweep"], P["model"]
    rows = []
    teacher, student = build_models(mc, max(s["Ts"]), device)
    for T in s["Ts"]:
        for mode in ("joint", "bptt"):
            row = dict(T=T, mode="smt" if mode == "joint" else "bptt", B=s["B"])
            try:
                if mode == "joint":
                    args = training_args("joint", context_length=T, future_length=s["Tf"], split="last")
                    seqs = random_seqs(s["B"], T + s["Tf"], mc["V"])
                    row["sequential_steps"] = 1
                else:
                    args = training_args("bptt", context_length=T)
                    seqs = random_seqs(s["B"], T, mc["V"])
                    row["sequential_steps"] = T
                step = TrainStep(student, teacher, args, seqs, device, P["autocast"])
                row.update(measure_train(step, device, 1, 3, budget_s=20))
            except torch.OutOfMemoryError:
                row["error"] = "OOM"
                torch.cuda.empty_cache()
            rows.append(row)
            print(f"  sweep T={T} {row['mode']}: {row.get('ms', float('nan')):.1f} ms "
                  f"peak {row.get('peak_bytes')} saved {row.get('saved_bytes')} {row.get('error', '')}", flush=True)
    res["train_sweep"] = rows


def bench_dmt(P, device, res):
    """One DMT step per `P["dmt"]` setting: plain, sync-free (eager `compile_step`) and compiled step."""
    mc, rows = P["model"], []
    for s in P["dmt"]:
        teacher, student = build_models(mc, s["Tc"], device)
        args = training_args("dmt", context_length=s["Tc"], rollout_length=s["Td"], dmt_stride=s["k"])
        seqs = random_seqs(s["B"], s["Tc"] + s["Td"], mc["V"])
        variants = [("plain", None), ("sync-free step", "eager")]
        if P["compile"]:
            variants.append(("compiled step", "default"))
        for name, mode in variants:
            row = dict(setting=s["name"], B=s["B"], Td=s["Td"], k=s["k"], Tc=s["Tc"], variant=name)
            if mode is not None:
                compile_step(student, mode=None if mode == "eager" else mode)
            try:
                step = TrainStep(student, teacher, args, seqs, device, P["autocast"])
                t0 = time.perf_counter()
                step()
                sync(device)
                row["first_call_s"] = time.perf_counter() - t0
                row.update(measure_train(step, device, 1, 5, budget_s=30))
            except torch.OutOfMemoryError:
                row["error"] = "OOM"
            finally:
                restore_step(student)
            rows.append(row)
            print(f"  dmt {s['name']} {name}: {row.get('ms', float('nan')):.1f} ms", flush=True)
    res["dmt"] = rows


def bench_train_compile(P, device, res):
    """SMTTrainer's training step per mode, eager vs `recurrent_step_compile=<mode>` (smt_hf.benchmark.compare_compiled:
    side by side in one process, alternating calls, same losses asserted). Fresh models per path, same weights."""
    c, mc, rows = P["train_compile"], P["model"], []
    res["train_compile"] = rows  # each mode's row as it finishes: a failing mode keeps the others'
    cases = {"smt (joint)": ("joint", c["smt"]["Tc"], c["smt"]["Tc"] + c["smt"]["Tf"],
                             dict(context_length=c["smt"]["Tc"], future_length=c["smt"]["Tf"], split="last")),
             "dmt": ("dmt", c["dmt"]["Tc"], c["dmt"]["Tc"] + c["dmt"]["Td"],
                     dict(context_length=c["dmt"]["Tc"], rollout_length=c["dmt"]["Td"], dmt_stride=c["dmt"]["k"])),
             "bptt": ("bptt", c["bptt"]["T"], c["bptt"]["T"], dict(context_length=c["bptt"]["T"]))}
    for name, (mode, Tc, L, kw) in cases.items():
        B = c[name.split()[0]]["B"]
        seqs = random_seqs(B, L, mc["V"])

        def make(compile_mode, mode=mode, Tc=Tc, kw=kw, seqs=seqs):
            teacher, student = build_models(mc, Tc, device)
            args = training_args(mode, recurrent_step_compile=compile_mode, **kw)
            return TrainStep(student, teacher, args, seqs, device, P["autocast"])

        r = compare_compiled(make, c["mode"], device, iters=c["iters"], rtol=loss_rtol(P["autocast"]))
        rows.append(dict(mode=name, B=B, L=L, compile_mode=c["mode"], **r))
        print(f"  train_compile {name}: eager {r['eager_ms']:.1f} ms, compiled {r['compiled_ms']:.1f} ms "
              f"({r['ratio']:.2f}x), compile {r['compile_s']:.1f} s, max loss diff {r['max_loss_diff']:.1e}", flush=True)


def bench_generation(P, device, res):
    """Decode latency and memory vs context: the student (`generate()` and `FastGenerator` after prefill) vs an
    equal-size KV-cache Llama (`llama_for`), per batch size."""
    g, mc = P["gen"], P["model"]
    dtype = P["autocast"] or torch.float32
    _, student = build_models(mc, 16, device)
    student = student.to(dtype).eval()
    llama = llama_for(student.config, max(g["contexts"]) + g["new_tokens"] + 8, device, dtype)
    compile_mode = "default" if P["compile"] else False
    gen = FastGenerator(student, compile=compile_mode, compile_prefill=False)
    N, R, rows = g["new_tokens"], g.get("repeats", 3), []
    for B in g["batches"]:
        # the plain path: model.generate() (eager, host sync per token), context-independent
        prompt = torch.randint(0, mc["V"], (B, 1), device=device)
        sec = timed(lambda: student.generate(prompt, max_new_tokens=N, do_sample=False, min_new_tokens=N), device, 1, R)
        rows.append(dict(model="student generate()", B=B, context=1, ms_per_token=1e3 * sec / N, tokens_per_s=B * N / sec))
        gen.decode(gen.prefill(prompt), N)  # compile / capture for this batch size
        for T in g["contexts"]:
            ctx = torch.randint(0, mc["V"], (B, T), device=device)
            start = gpu_mem_start(device)
            t0 = time.perf_counter()
            m = gen.prefill(ctx)
            sync(device)
            t_pre = time.perf_counter() - t0
            sec = timed(lambda: gen.decode(m, N), device, 0, R) / N  # median of R decodes of N tokens
            peak = gpu_mem_peak(device, start)
            rows.append(dict(model="student fast", B=B, context=T, ms_per_token=1e3 * sec, tokens_per_s=B / sec,
                             prefill_s=t_pre, state_bytes=SMTMemoryCache(m).nbytes(), peak_bytes=peak,
                             peak_total_bytes=gpu_mem_total()))
            print(f"  gen student B={B} T={T}: {1e3 * sec:.3f} ms/token, prefill {t_pre:.2f} s", flush=True)
            try:
                runs = sorted(llama_decode(llama, ctx, N, device) for _ in range(R))
                sec, kvb, peak = runs[len(runs) // 2]
                rows.append(dict(model="llama kv-cache", B=B, context=T, ms_per_token=1e3 * sec, tokens_per_s=B / sec,
                                 state_bytes=kvb, peak_bytes=peak, peak_total_bytes=gpu_mem_total()))
                print(f"  gen llama   B={B} T={T}: {1e3 * sec:.3f} ms/token, kv {kvb / 2**20:.1f} MiB", flush=True)
            except torch.OutOfMemoryError:
                rows.append(dict(model="llama kv-cache", B=B, context=T, error="OOM"))
                torch.cuda.empty_cache()
            del ctx
    res["generation"] = rows


def bench_prefill(P, device, res):
    """Time to first token (state + first logits) from a prompt of T tokens: the RNN reading it (the fast
    sync-free/compiled recurrent prefill) vs the carried teacher encoder over the last Tc tokens."""
    g, mc, Tc = P["prefill"], P["model"], P["smt"]["Tc"]
    dtype = P["autocast"] or torch.float32
    teacher, student = build_models(mc, Tc, device)
    student.add_prefill_encoder(teacher, context_length=Tc)
    student = student.to(dtype).eval()
    gen = FastGenerator(student, compile="default" if P["compile"] else False, compile_prefill=P["compile"])
    R, rows = g.get("repeats", 3), []
    for B in g["batches"]:
        for T in g["prompts"]:
            x = torch.randint(0, mc["V"], (B, T), device=device)
            with torch.no_grad():
                rec = timed(lambda: student.readout(gen.prefill(x)), device, 1, R, budget_s=60)
                par = timed(lambda: student(x, prefill="parallel"), device, 1, R)
            rows.append(dict(B=B, prompt=T, Tc=Tc, recurrent_ms=1e3 * rec, parallel_ms=1e3 * par, speedup=rec / par))
            print(f"  prefill B={B} T={T}: recurrent {1e3 * rec:.1f} ms, parallel {1e3 * par:.1f} ms ({rec / par:.0f}x)",
                  flush=True)
    res["prefill"] = rows


def bench_prefixes(P, device, res):
    """Joint-SMT training step on episodes of T tokens with a causal-context teacher: the split path (one
    supervised transition per sequence) vs smt_all_prefixes (all T transitions from one encoder pass)."""
    g, mc = P["prefixes"], P["model"]
    rows = []
    for T in g["Ts"]:
        teacher, student = build_models(mc, T, device, encoder_causal=True)
        x = torch.randint(0, mc["V"], (g["B"], T), device=device)
        for name, flag in (("one split per sequence", False), ("all prefixes", True)):
            args = training_args("joint", context_length=T, future_length=min(g["Tf"], T), smt_all_prefixes=flag)
            r = measure_train(TrainStep(student, teacher, args, x, device, P["autocast"]), device, 1, 3, budget_s=30)
            per_step = g["B"] * (T if flag else 1)
            rows.append(dict(T=T, B=g["B"], path=name, ms=r["ms"], transitions_per_step=per_step,
                             transitions_per_s=per_step / (r["ms"] / 1e3), peak_bytes=r["peak_bytes"],
                             saved_bytes=r["saved_bytes"]))
            print(f"  prefixes T={T} {name}: {r['ms']:.1f} ms, {rows[-1]['transitions_per_s']:.0f} transitions/s", flush=True)
    res["prefixes"] = rows


# ----------------------------------------------------------------------------- ratios, targets, figure
def summarize(res):
    """The side-by-side ratios of a results dict (each from two numbers measured in the same section), by name."""
    s, gen = {}, res.get("generation", [])
    st = res.get("smt_step", {})
    best = min((v["ms"] for k, v in st.items() if isinstance(v, dict) and "ms" in v), default=None)
    s["smt_step_ms_best"] = best
    dmt = [r for r in res.get("dmt", []) if "ms" in r]
    s["dmt_step_ms_best"] = min((r["ms"] for r in dmt), default=None)
    sw = {(r["mode"], r["T"]): r.get("ms") for r in res.get("train_sweep", [])}
    Ts = sorted({T for _, T in sw})
    if len(Ts) > 1 and all(sw.get((m, t)) for m in ("smt", "bptt") for t in (Ts[0], Ts[-1])):
        s["smt_time_ratio_Tmax_Tmin"] = sw[("smt", Ts[-1])] / sw[("smt", Ts[0])]
        s["bptt_time_ratio_Tmax_Tmin"] = sw[("bptt", Ts[-1])] / sw[("bptt", Ts[0])]
        s["bptt_over_smt_at_Tmax"] = sw[("bptt", Ts[-1])] / sw[("smt", Ts[-1])]
    for model in ("student fast", "llama kv-cache"):
        for B in sorted({r["B"] for r in gen}):
            rs = sorted((r for r in gen if r["model"] == model and r["B"] == B and "ms_per_token" in r), key=lambda r: r["context"])
            if len(rs) < 2:
                continue
            lo, hi = rs[0], rs[-1]
            key = f"{model.split()[0]}_B{B}_{hi['context']}v{lo['context']}"
            s[key + "_latency_ratio"] = hi["ms_per_token"] / lo["ms_per_token"]
            mem = "peak_bytes" if lo.get("peak_bytes") else "state_bytes"
            s[key + "_memory_ratio"] = hi[mem] / max(lo[mem], 1)
            s[f"{model.split()[0]}_B{B}_tokens_per_s_min"] = min(r["tokens_per_s"] for r in rs)
    for r in res.get("train_compile", []):
        s[f"train_{r['mode'].split()[0]}_eager_over_compiled"] = r["ratio"]
    for T in sorted({r["T"] for r in res.get("prefixes", [])}):
        one, allp = (next(r for r in res["prefixes"] if r["T"] == T and r["path"] == p)
                     for p in ("one split per sequence", "all prefixes"))
        s[f"prefixes_T{T}_transitions_per_s_ratio"] = allp["transitions_per_s"] / one["transitions_per_s"]
        s[f"prefixes_T{T}_step_time_ratio"] = allp["ms"] / one["ms"]
    for B in sorted({r["B"] for r in res.get("prefill", [])}):
        rs = sorted((r for r in res["prefill"] if r["B"] == B), key=lambda r: r["prompt"])
        s[f"prefill_B{B}_parallel_speedup_at_{rs[-1]['prompt']}"] = rs[-1]["speedup"]
        s[f"prefill_B{B}_parallel_ms_ratio_{rs[-1]['prompt']}v{rs[0]['prompt']}"] = rs[-1]["parallel_ms"] / rs[0]["parallel_ms"]
    return s


def check_targets(res, summ):
    """The GPU targets (None on CPU): {name: {value, target, ok}}."""
    if res["machine"]["device"] == "cpu":
        return None
    Bs = sorted({r["B"] for r in res.get("generation", []) if r["model"] == "student fast"})
    got = dict(smt_step_ms=summ.get("smt_step_ms_best"), dmt_step_ms=summ.get("dmt_step_ms_best"))
    if Bs:
        got["gen_b1_tok_s"] = summ.get(f"student_B{Bs[0]}_tokens_per_s_min")
        got["gen_blarge_tok_s"] = summ.get(f"student_B{Bs[-1]}_tokens_per_s_min")
    out = {}
    for k, v in got.items():
        lim = TARGETS[k]
        out[k] = dict(value=v, target=lim, ok=v is not None and (v >= lim if k.endswith("tok_s") else v <= lim))
    for B in Bs:
        for what, lim in (("memory", TARGETS["student_mem_ratio"]), ("latency", TARGETS["student_latency_ratio"])):
            v = next((x for k, x in summ.items() if k.startswith(f"student_B{B}_") and k.endswith(f"_{what}_ratio")), None)
            out[f"student_B{B}_{what}_ratio"] = dict(value=v, target=lim, ok=v is not None and v <= lim)
    return out


def plot_panels_for(res):
    """The figure's panels from a results dict: decode latency and state size vs context (student vs KV-cache
    Llama), training step vs T (SMT vs BPTT), time to first token vs prompt (recurrent vs parallel prefill)."""
    lat, mem, sweep, ttft = {}, {}, {}, {}
    for r in res.get("generation", []):
        if r["model"] != "student generate()" and "ms_per_token" in r:
            for d, v in ((lat, r["ms_per_token"]), (mem, r.get("peak_bytes") or r.get("state_bytes"))):
                if v:
                    xs, ys = d.setdefault(f"{r['model']} B{r['B']}", ([], []))
                    xs.append(r["context"])
                    ys.append(v / 2**20 if d is mem else v)
    for r in res.get("train_sweep", []):
        if r.get("ms"):
            xs, ys = sweep.setdefault(r["mode"].upper(), ([], []))
            xs.append(r["T"])
            ys.append(r["ms"])
    for r in res.get("prefill", []):
        for kind in ("recurrent", "parallel"):
            xs, ys = ttft.setdefault(f"{kind} B{r['B']}", ([], []))
            xs.append(r["prompt"])
            ys.append(r[f"{kind}_ms"])
    on_gpu = res["machine"]["device"] == "cuda"
    panels = [
        dict(curves=lat, title="decode latency vs context", xlabel="context tokens", ylabel="ms per token"),
        dict(curves=mem, title=("peak decode memory" if on_gpu else "state size") + " vs context",
             xlabel="context tokens", ylabel="MiB"),
        dict(curves=sweep, title="training step vs sequence length", xlabel="T", ylabel="ms per step"),
        dict(curves=ttft, title="time to first token vs prompt", xlabel="prompt tokens", ylabel="ms"),
    ]
    return [dict(p, logx=True, logy=True, markers=True) for p in panels if p["curves"]]


# ----------------------------------------------------------------------------- report
def fmt_bytes(b):
    """Bytes as '1.50 MiB' / '12.0 KiB' ('' for None)."""
    return "" if b is None else f"{b / 2**20:.2f} MiB" if b >= 2**20 else f"{b / 2**10:.1f} KiB"


def md_section(title, header, rows):
    """Lines of a '## title' section holding one markdown table."""
    return [f"## {title}", "", *md_table(header, rows).splitlines(), ""]


def markdown(res):
    """The report of a results dict (recipes/bench.py's JSON): the machine line, the notes, one table per section
    measured, the summary ratios and (GPU) the targets."""
    m = res["machine"]
    # two reports of one preset (e.g. a --sections run) differ here; a section that raised is not named
    measured = ", ".join(s for s in res.get("section_s", {}) if s not in res.get("errors", {}))
    L = [f"# SMT benchmark, preset `{res['preset']}`{' (dry run)' if res['dry_run'] else ''}"
         f"{f': {measured}' if measured else ''}", "",
         f"Machine: {m['name']} ({m['cpu_count']} cores{', shared' if m['device'] == 'cpu' else ''}); torch {m['torch']}; transformers {m['transformers']}; threads {m['threads']}; "
         f"autocast {res['config']['autocast']}; compile {res['config']['compile']}. Total {res['total_s']:.0f} s.", ""]
    if res.get("merged"):
        mm = res["merged"]["from_machine"]
        L += [f"Sections {', '.join(res['merged']['sections'])} come from an earlier run of this command on {mm['name']} "
              f"(threads {mm['threads']}); the others were re-run.", ""]
    if res.get("isolated"):
        L += [f"{'The re-run sections each' if res.get('merged') else 'Each section'} ran in its own process (`--isolate`): "
              "one section's failure or memory cannot affect another's.", ""]
    if res.get("errors"):
        L += ["Sections that failed (no numbers, or only those before the failure): "
              + "; ".join(f"{k}: {v.splitlines()[0][:160]}" for k, v in res["errors"].items()), ""]
    L += ["Notes: peak = torch.cuda.max_memory_allocated during the measured calls minus what was allocated before "
          "them (weights, inputs); empty on CPU. saved for bwd = bytes of activations saved for backward (CPU and GPU). "
          "state bytes = SMTMemoryCache.nbytes (student) vs the KV-cache tensors (Llama). Student 'fast' = "
          "smt_hf.fast.FastGenerator (fused readout+pick+update; compiled and CUDA-graphed on GPU); 'generate()' = "
          "the plain HF path. Llama = transformers LlamaForCausalLM of the student's width and depth "
          "(updater + readout layers), SDPA attention, not compiled, DynamicCache; decoded one token per forward call.", ""]
    st = res.get("smt_step")
    if st:
        L += md_section(f"SMT (joint) training step, {', '.join(f'{k} {v}' for k, v in st['setting'].items())}",
                        ["variant", "ms", "seq/s", "tokens/s", "TFLOP/s", "MFU", "peak", "saved for bwd"],
                        [[k, f"{r['ms']:.1f}", f"{r['seq_per_s']:.0f}", f"{r['tokens_per_s']:.0f}",
                          f"{r['tflops_per_s']:.3f}", "" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%",
                          fmt_bytes(r["peak_bytes"]), fmt_bytes(r["saved_bytes"])] if "ms" in r else
                         [k, r["error"], "", "", "", "", "", ""]
                         for k, r in st.items() if k != "setting" and isinstance(r, dict) and ("ms" in r or "error" in r)])
    if res.get("train_sweep"):
        L += md_section("Training step vs sequence length (same student; SMT Tc = T; BPTT unrolls T steps)",
                        ["T", "method", "sequential steps", "ms", "peak", "saved for bwd"],
                        [[r["T"], r["mode"], r.get("sequential_steps", ""), r.get("error") or f"{r['ms']:.1f}",
                          fmt_bytes(r.get("peak_bytes")), fmt_bytes(r.get("saved_bytes"))] for r in res["train_sweep"]])
    if res.get("dmt"):
        L += md_section("DMT training step", ["setting", "B", "Td", "k", "variant", "ms", "first call s"],
                        [[r["setting"], r["B"], r["Td"], r["k"], r["variant"], r.get("error") or f"{r['ms']:.1f}",
                          f"{r.get('first_call_s', 0):.1f}"] for r in res["dmt"]])
    if res.get("train_compile"):
        L += md_section("Training step on this device: eager vs compiled recurrent step (SMTTrainer's own step; the two "
                        "paths measured side by side in one process, calls alternating; losses asserted equal)",
                        ["mode", "B", "tokens/seq", "eager ms/step", "compiled ms/step", "eager/compiled",
                         "compile s (first call)", "steps to repay the compile", "max loss diff"],
                        [[r["mode"], r["B"], r["L"], f"{r['eager_ms']:.1f}", f"{r['compiled_ms']:.1f}", f"{r['ratio']:.2f}",
                          f"{r['compile_s']:.1f}", f"{1e3 * r['compile_s'] / (r['eager_ms'] - r['compiled_ms']):.0f}"
                          if r["eager_ms"] > r["compiled_ms"] else "never", f"{r['max_loss_diff']:.1e}"]
                         for r in res["train_compile"]])
        L += [f"Compiled = `SMTTrainingArguments(recurrent_step_compile={res['train_compile'][0]['compile_mode']!r})`; "
              f"eager = the default (`recurrent_step_compile={SMTTrainingArguments.recurrent_step_compile!r}`).", ""]
    if res.get("generation"):
        L += md_section("Generation (decode after prefill)",
                        ["model", "B", "context", "ms/token", "tokens/s", "state bytes", "peak", "prefill s"],
                        [[r["model"], r["B"], r["context"], r["error"], "", "", "", ""] if "error" in r else
                         [r["model"], r["B"], r["context"], f"{r['ms_per_token']:.3f}", f"{r['tokens_per_s']:.0f}",
                          fmt_bytes(r.get("state_bytes")), fmt_bytes(r.get("peak_bytes")),
                          f"{r['prefill_s']:.2f}" if "prefill_s" in r else ""] for r in res["generation"]])
    if res.get("prefill"):
        L += md_section("Time to first token: recurrent vs parallel prefill",
                        ["B", "prompt tokens", "encoder Tc", "recurrent ms", "parallel ms", "speed-up"],
                        [[r["B"], r["prompt"], r["Tc"], f"{r['recurrent_ms']:.1f}", f"{r['parallel_ms']:.2f}",
                          f"{r['speedup']:.0f}x"] for r in res["prefill"]])
    if res.get("prefixes"):
        L += md_section("Causal-context teacher: supervised transitions per second (joint SMT step)",
                        ["T", "B", "path", "ms/step", "transitions/step", "transitions/s", "saved for bwd"],
                        [[r["T"], r["B"], r["path"], f"{r['ms']:.1f}", r["transitions_per_step"],
                          f"{r['transitions_per_s']:.0f}", fmt_bytes(r["saved_bytes"])] for r in res["prefixes"]])
    L += ["## Summary (ratios measured in this run)", "", "| quantity | value |", "|---|---|"]
    L += [f"| {k} | {v:.3g} |" for k, v in res["summary"].items() if v is not None]
    if res.get("targets"):
        L += ["", "## Targets", "", "| target | value | ok |", "|---|---|---|"]
        L += [f"| {k} | {v['value']} | {v['ok']} |" for k, v in res["targets"].items()]
    return "\n".join(L) + "\n"
