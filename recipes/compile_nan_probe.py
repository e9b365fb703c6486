"""Where does the torch.compile'd joint-SMT training step go non-finite on a GPU?

On the 2026-12-04 H200 run (recipes/results/gpu_logs/run1_bench.log) `bench.py`'s smt_step section ran the eager
step 14 times, then compiled the same models' step: its first loss was finite, its second was NaN in every part, so
the first compiled backward gave non-finite gradients. This recipe replays that condition and splits it:

  the bench GPU preset's models (recipes/configs/bench/gpu.yaml), its smt batch (B, Tc, Tf), bf16 autocast,
  `--eager-steps` eager optimizer steps from the seed-0 weights (14: what smt_step's eager variant runs), then for
  each variant, from those same weights, a fresh optimizer and `--steps` optimizer steps, recording each step's
  loss parts, gradient norm before clipping, whether every gradient is finite and the first non-finite ones by name.

  eager                   the reference (no compilation)
  inductor                torch.compile as bench.py / `torch_compile=True` run it (the failing case)
  aot_eager               AOT Autograd's captured forward/backward graphs run by eager kernels (no Inductor
                          decompositions, rewrites or generated kernels)
  inductor_no_cudnn_sdp   Inductor with cuDNN's attention backend disabled while tracing and running
  inductor_parts          Inductor, step 0's gradients of each loss part alone (decoder, dynamics, uniformity); one
                          backward graph serves all parts (the others get zero gradients, and 0 x NaN is NaN), so a
                          NaN here does not clear the part that is not backpropagated
  inductor_gram_uniformity  Inductor with the uniformity loss's squared distances from the Gram matrix (no pdist)
  inductor_no_mask        Inductor, the batch without its all-ones attention_mask (no attention mask in SDPA)
  inductor_math_sdp       Inductor with SDPA limited to its math backend while tracing and running
  aot_eager_decomp_partition  aot_eager plus Inductor's decompositions and partitioner (no generated kernels)

    python recipes/compile_nan_probe.py --out outputs/nan_probe.json           # on a GPU (1-2 min per Inductor variant)
    python recipes/compile_nan_probe.py --preset dry --out /tmp/p.json        # the same code path on CPU

Inductor's caches are off (every variant compiles afresh; flags set for one variant must reach its code) and TF32 is
on as in bench.py. Prints a table and writes JSON (after each variant, so a run cut short keeps what finished).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_types import positive_float, positive_int  # noqa: E402

VARIANTS = ("eager", "inductor", "aot_eager", "inductor_no_cudnn_sdp", "inductor_parts", "inductor_gram_uniformity",
            "inductor_no_mask", "inductor_math_sdp", "aot_eager_decomp_partition")


def gram_uniformity_loss(memory, num_samples=512, t=2.0, generator=None):
    """`smt_hf.losses.uniformity_loss` with ||u_i - u_j||^2 = 2 - 2 u_i.u_j from the Gram matrix (fp32) instead of
    torch.pdist(u) ** 2: the same value, no square root (whose derivative is infinite at coincident tokens)."""
    import math

    import torch.nn.functional as F

    u = F.normalize(memory.reshape(-1, memory.shape[-1]).float(), dim=-1)
    if u.shape[0] > num_samples:
        u = u[torch.randperm(u.shape[0], device=u.device, generator=generator)[:num_samples]]
    n = u.shape[0]
    if n < 2:
        return u.new_zeros(())
    with torch.autocast(u.device.type, enabled=False):
        i, j = torch.triu_indices(n, n, offset=1, device=u.device)
        sq = (2 - 2 * (u @ u.T)[i, j]).clamp_min(0)
    return torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel())


def parts_report(name, step):
    """Step 0's gradients of each loss part alone (forward under the step's autocast): which part is non-finite."""
    rows = []
    for key in ("decoder", "dynamics", "uniformity"):
        torch.manual_seed(0)
        with torch.autocast(step.device.type, dtype=step.autocast, enabled=step.autocast is not None):
            parts = step.fwd(**step.batch)
        step.module.zero_grad(set_to_none=True)
        parts[key].backward()
        norm, bad = grad_report(step.module)
        rows.append(dict(variant=name, step=f"0, {key} only", loss=float(parts[key]), grad_norm=norm,
                         nonfinite_grads=len(bad), nonfinite=bad))
        print(f"  {name} {key} only: {rows[-1]['loss']:.4f} grad norm {norm:.4g} non-finite grads {len(bad)} "
              f"{bad[:3]}", flush=True)
    step.module.zero_grad(set_to_none=True)
    return rows


def grad_report(module):
    """(gradient norm over all parameters, names of parameters whose gradient has a non-finite entry)."""
    named = [(n.removeprefix("_orig_mod."), p.grad) for n, p in module.named_parameters() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for _, g in named]))
    return float(norm), [n for n, g in named if not torch.isfinite(g).all()]


def run_variant(name, step, steps):
    """`steps` optimizer steps of a TrainStep (its `fwd` already set for the variant); one row per step."""
    from smt_hf.trainer import NonFiniteLossError

    tr, rows = step.trainer, []
    for i in range(steps):
        t0 = time.perf_counter()
        row = dict(variant=name, step=i)
        seen = {}

        def inspect():  # the loss parts the trainer accumulated, and the gradients before clipping
            seen["parts"] = {k: float(v) for k, v in tr._parts_sum.items()}
            tr._parts_sum, tr._parts_count = {}, 0
            seen["norm"], seen["bad"] = grad_report(step.module)

        try:
            loss = step(after_backward=inspect)
        except NonFiniteLossError as e:
            row.update(loss=float("nan"), error=str(e).splitlines()[0][:200])
            rows.append(row)
            print(f"  {name} step {i}: {row['error']}", flush=True)
            break
        parts, norm, bad = seen["parts"], seen["norm"], seen["bad"]
        weights_finite = all(bool(torch.isfinite(p).all()) for p in step.module.parameters())
        row.update(loss=float(loss), parts=parts, grad_norm=norm, nonfinite_grads=len(bad), nonfinite=bad,
                   weights_finite_after=weights_finite, seconds=round(time.perf_counter() - t0, 2))
        rows.append(row)
        print(f"  {name} step {i}: loss {row['loss']:.4f} grad norm {norm:.4g} non-finite grads {len(bad)} "
              f"{bad[:3]} ({row['seconds']} s)", flush=True)
    return rows


def run_variants(a, variants, res, start, student, teacher, weights, args, seqs, device, autocast):
    """Each variant from the same `weights`: fresh dynamo state, optimizer and compile; rows into res (JSON after each)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from smt_hf import losses
    from smt_hf.benchmark import TrainStep

    for name in variants:
        if a.budget_seconds is not None and time.perf_counter() - start > a.budget_seconds:
            res["rows"].append(dict(variant=name, error="not run: --budget-seconds spent"))
            continue
        student.load_state_dict(weights[0])
        teacher.load_state_dict(weights[1])
        torch._dynamo.reset()
        cudnn_sdp = torch.backends.cuda.cudnn_sdp_enabled()
        torch.backends.cuda.enable_cudnn_sdp(name != "inductor_no_cudnn_sdp" and cudnn_sdp)
        unif = losses.uniformity_loss
        if name == "inductor_gram_uniformity":
            losses.uniformity_loss = gram_uniformity_loss
        try:
            step = TrainStep(student, teacher, args, seqs, device, autocast)
            if name == "inductor_no_mask":
                step.batch = {k: v for k, v in step.batch.items() if k != "attention_mask"}
            if name != "eager":
                backend = name if name.startswith("aot_eager") else "inductor"
                step.fwd = torch.compile(step.module, backend=backend)
            with sdpa_kernel([SDPBackend.MATH]) if name == "inductor_math_sdp" else contextlib.nullcontext():
                res["rows"] += parts_report(name, step) if name == "inductor_parts" else run_variant(name, step, a.steps)
        finally:
            torch.backends.cuda.enable_cudnn_sdp(cudnn_sdp)
            losses.uniformity_loss = unif
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


def main(argv=None):
    from torch._inductor import config as inductor_config

    from bench import DRY, PRESETS
    from smt_hf.benchmark import TrainStep, random_seqs
    from smt_hf.benchmark_sections import build_models, training_args

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpu", choices=["gpu", "dry"],
                    help="gpu: the bench GPU preset's sizes; dry: every size shrunk, the code path on CPU "
                    "(default %(default)s)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {VARIANTS}")
    ap.add_argument("--eager-steps", type=positive_int, default=14,
                    help="eager optimizer steps before the variants (default %(default)s)")
    ap.add_argument("--steps", type=positive_int, default=3, help="optimizer steps per variant (default %(default)s)")
    ap.add_argument("--budget-seconds", type=positive_float, default=None,
                    help="start no new variant after this many seconds")
    ap.add_argument("--out", default="outputs/compile_nan_probe.json", help="JSON path (default %(default)s)")
    a = ap.parse_args(argv)
    variants = a.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        ap.error(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    P = {**PRESETS["gpu"], **(DRY if a.preset == "dry" else {})}  # dry: the gpu preset with every size shrunk
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":  # as bench.py
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    s, mc = P["smt"], P["model"]
    start = time.perf_counter()
    res = dict(device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu", torch=torch.__version__,
               preset=a.preset, setting=dict(B=s["B"], Tc=s["Tc"], Tf=s["Tf"], autocast=str(P["autocast"]),
                                             eager_steps=a.eager_steps, steps=a.steps), rows=[])
    teacher, student = build_models(mc, s["Tc"], device)
    args = training_args("joint", context_length=s["Tc"], future_length=s["Tf"], split="last")
    seqs = random_seqs(s["B"], s["Tc"] + s["Tf"], mc["V"])
    warm = TrainStep(student, teacher, args, seqs, device, P["autocast"])
    for _ in range(a.eager_steps):
        warm()
    print(f"{a.eager_steps} eager steps done ({time.perf_counter() - start:.0f} s)", flush=True)
    weights = copy.deepcopy((student.state_dict(), teacher.state_dict()))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with inductor_config.patch(force_disable_caches=True):  # a cached graph would ignore a variant's flags
        run_variants(a, variants, res, start, student, teacher, weights, args, seqs, device, P["autocast"])
    res["seconds"] = round(time.perf_counter() - start, 1)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"\n{res['device']}, torch {res['torch']}, {res['setting']}, {res['seconds']} s")
    print("| variant | step | loss | grad norm | non-finite grads | first non-finite (all in the JSON) |\n|---|---|---|---|---|---|")
    for r in res["rows"]:
        print(f"| {r['variant']} | {r.get('step', '')} | {r.get('loss', '')} | {r.get('grad_norm', '')} | "
              f"{r.get('nonfinite_grads', '')} | {', '.join(r.get('nonfinite', [])[:6]) or r.get('error', '')} |")


if __name__ == "__main__":
    main()
