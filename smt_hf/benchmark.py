"""Measure SMT training and generation: timing, memory and FLOPs of the real `SMTTrainer` step (used by recipes/bench.py,
through `smt_hf.benchmark_sections`, and recipes/decode_cpu.py).

    from smt_hf.benchmark import TrainStep, compare_compiled, timed
    step = TrainStep(student, teacher, SMTTrainingArguments(...), seqs, torch.device("cpu"), autocast=None)
    seconds = timed(step, torch.device("cpu"), warmup=1, iters=5)          # median seconds per optimizer step

`TrainStep` is one optimizer step exactly as `Trainer.train` runs it for an `SMTTrainer` (its `training_step`, the
per-model gradient clipping, its optimizer and LR schedule), so a number measured here is the trainer's, not a
re-implementation's. `compare_compiled` times two such steps side by side in one process (eager vs
`SMTTrainingArguments(recurrent_step_compile=...)`) and checks they compute the same losses.
Memory: on GPU `torch.cuda.max_memory_allocated` (minus what was allocated before); on CPU the bytes of tensors
saved for backward (`SavedBytes`). `llama_for` / `llama_decode` are the KV-cache baseline of the same width and depth,
`mamba_like` an SSM of the same state size; `hf_decode_seconds`, `fast_generate_seconds` and
`interleaved_decode_seconds` time decoding (recipes/decode_cpu.py).
"""

from __future__ import annotations

import inspect
import time
from typing import Callable

import torch

from .fast import compile_module
from .trainer import SMTTrainer

# dense bf16 peak of the GPUs we expect (FLOP/s), for model FLOP utilisation
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def sync(device):
    """Wait for queued CUDA work (no-op on CPU), so a timer reads the work done."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, warmup=1, iters=3, budget_s=None):
    """Median seconds of fn() over `iters` runs after `warmup` runs (fewer when one run exceeds the budget)."""
    for _ in range(warmup):
        fn()
    times = []
    for i in range(iters):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if budget_s is not None and sum(times) > budget_s:
            break
    times.sort()
    return times[len(times) // 2]


class SavedBytes:
    """Bytes of non-parameter tensors saved for backward during a forward (activation memory, CPU proxy)."""

    def __init__(self, params):
        self.skip = {p.untyped_storage().data_ptr() for p in params}
        self.seen, self.total = set(), 0

    def pack(self, t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in self.skip and ptr not in self.seen:
            self.seen.add(ptr)
            self.total += t.untyped_storage().nbytes()
        return t

    def __enter__(self):
        self.ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self.ctx.__exit__(*exc)


def gpu_mem_start(device):
    """Reset the CUDA peak counter; returns the bytes allocated now (0 on CPU). Pair with gpu_mem_peak."""
    if device.type != "cuda":
        return 0
    sync(device)
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def gpu_mem_peak(device, start):
    """Peak bytes allocated since gpu_mem_start beyond what was allocated then (None on CPU)."""
    if device.type != "cuda":
        return None
    sync(device)
    return torch.cuda.max_memory_allocated() - start


def gpu_mem_total():
    """Peak CUDA bytes allocated since the last reset (None without a GPU)."""
    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def random_seqs(B, L, V):
    """B random token sequences of length L, (B, L) on CPU (seeded: every call gives the same tokens)."""
    return torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(0))


class TrainStep:
    """One optimizer step exactly as `Trainer.train` runs it for an `SMTTrainer`: `trainer.training_step` (the
    trainer's `compute_loss` under autocast, then backward), `trainer._clip_grad_norm` (per model for smt/joint),
    the trainer's optimizer and LR schedule, `zero_grad`. The batch is `seqs` (B, L) through the trainer's own data
    collator, as its dataloader yields it (smt/joint split points are drawn inside the step, as in training)."""

    def __init__(self, student, teacher, args, seqs, device, autocast, compiled=False):
        self.trainer = tr = SMTTrainer(model=student, teacher=teacher if args.mode != "bptt" else None, args=args)
        self.module, self.device, self.autocast = tr.module.train(), device, autocast
        self.fwd = compile_module(self.module) if compiled else self.module
        if autocast is not None:  # what accelerate's mixed precision wraps around a prepared model's forward
            tr.autocast_smart_context_manager = lambda cache_enabled=True: torch.autocast(device.type, dtype=autocast)
        tr.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop (no accumulation here)
        tr.create_optimizer_and_scheduler(num_training_steps=10**6)
        self.opt = tr.optimizer
        self.batch = {k: v.to(device) for k, v in tr.data_collator([{"input_ids": x} for x in seqs.cpu()]).items()}

    def loss(self, eager=False):
        with self.trainer.compute_loss_context_manager():
            return self.trainer.compute_loss(self.module if eager else self.fwd, self.batch)

    def __call__(self, after_backward: Callable[[], None] | None = None) -> float:
        """One optimizer step; returns its training loss (the value `Trainer.train` logs). `after_backward()`, if
        given, runs between the backward pass and gradient clipping (to inspect the raw gradients)."""
        tr = self.trainer
        loss = tr.training_step(self.fwd, self.batch)
        if after_backward is not None:
            after_backward()
        if tr.args.max_grad_norm > 0:
            tr._clip_grad_norm(self.fwd)
        self.opt.step()
        tr.lr_scheduler.step()
        self.module.zero_grad()
        tr.state.global_step += 1  # as Trainer.train: step-dependent loss weights (lambda_dec_start_step) follow
        return float(loss)


def loss_rtol(autocast: torch.dtype | None) -> float:
    """Relative tolerance for the same training loss from two code paths (eager vs compiled): 1e-4 in fp32; 1e-2 under
    16-bit autocast, where fused kernels round differently (bf16 keeps 8 bits: 2**-8 = 0.4% per rounding) and the two
    paths' weights part after the first optimizer step (H200, bf16, DMT step, 11 steps: 0.02% at the first, at most
    0.26%, at the third; recipes/results/gpu_logs/run3_bench.log)."""
    return 1e-2 if autocast in (torch.bfloat16, torch.float16) else 1e-4


def compare_compiled(make_step: Callable[[str | None], TrainStep], compile_mode: str = "default",
                     device: torch.device | str = "cpu", iters: int = 5, rtol: float = 1e-4, atol: float = 1e-5) -> dict:
    """An eager and a compiled training step timed side by side in one process, with the same losses checked.

    make_step(recurrent_step_compile) -> TrainStep: called with None (the eager step) and with `compile_mode`
        (`SMTTrainingArguments.recurrent_step_compile`); both must start from the same weights and batch.
    Both steps run 1 + iters optimizer steps (the torch seed set alike before each), alternating eager / compiled call
    by call, so a shared machine's load falls on both alike. The first call of each is timed apart (`compile_s`: the compiled first call minus the eager
    one, i.e. tracing and code generation). Returns eager_ms, compiled_ms (medians of the `iters` later calls),
    ratio (eager_ms / compiled_ms: above 1 the compiled step is faster), compile_s, max_loss_diff and the losses.

    Raises:
        AssertionError: a step's loss differs between the two paths by more than atol + rtol * |eager loss|
            (the message lists both loss sequences).
    """
    device = torch.device(device)
    steps = {"eager": make_step(None), "compiled": make_step(compile_mode)}
    losses = {k: [] for k in steps}
    times = {k: [] for k in steps}
    for i in range(1 + iters):
        for k, step in steps.items():
            torch.manual_seed(i)  # the same random draws (split points, DMT starts) on both paths
            sync(device)
            t0 = time.perf_counter()
            losses[k].append(step())
            sync(device)
            times[k].append(time.perf_counter() - t0)
    diffs = [abs(a - b) for a, b in zip(losses["eager"], losses["compiled"])]
    bad = [i for i, (d, a) in enumerate(zip(diffs, losses["eager"])) if not d <= atol + rtol * abs(a)]
    assert not bad, (f"recurrent_step_compile={compile_mode!r} changed the loss at step(s) {bad}: eager "
                     f"{losses['eager']} vs compiled {losses['compiled']}")
    med = {k: sorted(v[1:])[len(v[1:]) // 2] for k, v in times.items()}
    return dict(eager_ms=1e3 * med["eager"], compiled_ms=1e3 * med["compiled"], ratio=med["eager"] / med["compiled"],
                compile_s=times["compiled"][0] - times["eager"][0], max_loss_diff=max(diffs), losses=losses)


def measure_train(step, device, warmup, iters, budget_s=None):
    """Median step seconds, peak memory (GPU) and saved-for-backward bytes (one extra forward)."""
    start = gpu_mem_start(device)
    sec = timed(step, device, warmup, iters, budget_s)
    peak = gpu_mem_peak(device, start)
    step.opt.zero_grad(set_to_none=True)
    with SavedBytes(step.module.parameters()) as sb:
        loss = step.loss(eager=True)
    del loss
    return dict(ms=1e3 * sec, peak_bytes=peak, saved_bytes=sb.total)


def count_flops(step):
    """FLOPs of one forward + backward of `step` (a TrainStep), counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    step.opt.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as fc:
        step.loss(eager=True).backward()
    step.opt.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def peak_flops(device):
    """Dense bf16 peak FLOP/s of the CUDA device (PEAK_BF16 by name), for model FLOP utilisation; None on CPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def llama_for(student_cfg, max_len, device, dtype):
    """A `transformers` LlamaForCausalLM of the student's width and depth (updater + readout layers), SDPA
    attention, seeded, in eval mode: the KV-cache baseline for decoding."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = student_cfg
    cfg = LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.updater_intermediate_size,
                      num_hidden_layers=c.updater_layers + c.readout_layers, num_attention_heads=c.num_attention_heads,
                      num_key_value_heads=c.num_attention_heads, max_position_embeddings=max_len,
                      tie_word_embeddings=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()


def kv_bytes(cache):
    """Bytes of the key / value tensors held by a transformers cache (DynamicCache or legacy tuples)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return sum(t.numel() * t.element_size() for l in layers for t in (l.keys, l.values) if torch.is_tensor(t))
    return sum(t.numel() * t.element_size() for kv in cache for t in kv)


def _cache_kw(llama):
    """transformers >= 5.24 names the cache argument `cache` (older: `past_key_values`)."""
    return "cache" if "cache" in inspect.signature(llama.forward).parameters else "past_key_values"


@torch.no_grad()
def llama_decode(llama, ctx, N, device):
    """Prefill ctx (B, T) then N greedy tokens with the KV cache; returns (per-token s, KV bytes, peak extra)."""
    kw = _cache_kw(llama)
    start = gpu_mem_start(device)
    out = llama(input_ids=ctx, use_cache=True, logits_to_keep=1)
    past, tok = getattr(out, kw), out.logits[:, -1].argmax(-1, keepdim=True)  # tok (B, 1)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(N):
        out = llama(input_ids=tok, use_cache=True, **{kw: past})
        past, tok = getattr(out, kw), out.logits[:, -1].argmax(-1, keepdim=True)
    sync(device)
    return (time.perf_counter() - t0) / N, kv_bytes(past), gpu_mem_peak(device, start)


def mamba_like(student_cfg, hidden_size=32, state_size=2, num_hidden_layers=2, expand=2):
    """An untrained, seeded `transformers` MambaForCausalLM (eval mode) whose SSM state holds as many floats per
    sequence as the student's memory: num_hidden_layers * expand * hidden_size * state_size == K * d (plus Mamba's
    conv state). The defaults fit the bench CPU student (K 4, d 64).

    Raises:
        ValueError: the sizes do not multiply to K * d (the message names the product to reach).
    """
    from transformers import MambaConfig, MambaForCausalLM

    c = student_cfg
    state = num_hidden_layers * expand * hidden_size * state_size
    if state != c.memory_tokens * c.hidden_size:
        raise ValueError(f"mamba_like: num_hidden_layers * expand * hidden_size * state_size = {state}, but the student's "
                         f"memory holds memory_tokens * hidden_size = {c.memory_tokens * c.hidden_size} floats; pass sizes "
                         "whose product is that")
    cfg = MambaConfig(vocab_size=c.vocab_size, hidden_size=hidden_size, state_size=state_size,
                      num_hidden_layers=num_hidden_layers, expand=expand, conv_kernel=4)
    torch.manual_seed(0)
    return MambaForCausalLM(cfg).eval()


def hf_decode_seconds(model, prompt, N, repeats=3):
    """Seconds per decoded token of HF `generate()` (greedy, exactly n new tokens): (t(N + 1 new) - t(1 new)) / N, so
    the prompt's prefill cancels; best of `repeats` after one warm-up call. prompt: (B, T) token ids."""
    def run(n):
        t0 = time.perf_counter()
        model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - t0

    run(2)
    return min((run(N + 1) - run(1)) / N for _ in range(repeats))


def fast_generate_seconds(student, prompt, N, chunk, compile="default"):
    """`student.generate()` with the fast path (`enable_fast_decode(decode_chunk=chunk, strict=True)`): returns
    (seconds per decoded token as `hf_decode_seconds`, first-call seconds incl. compilation). The fast path is
    disabled again on return.

    Raises:
        AssertionError: its greedy tokens differ from the standard loop's.
    """
    ref = student.generate(prompt, max_new_tokens=N, do_sample=False)  # the standard loop
    student.enable_fast_decode(compile=compile, decode_chunk=chunk, strict=True)  # strict: never timed on the standard loop
    try:
        t0 = time.perf_counter()
        out = student.generate(prompt, max_new_tokens=N, do_sample=False)  # compiles for this batch size
        first = time.perf_counter() - t0
        assert torch.equal(out, ref), "generate() with the fast path: tokens differ from the standard loop"
        return hf_decode_seconds(student, prompt, N), first
    finally:
        student.disable_fast_decode()


def interleaved_decode_seconds(generators: dict, memory, N, repeats=7) -> dict:
    """Seconds per token of each generator's `decode(memory, N)` (e.g. `FastGenerator`s: eager, compiled), the best of
    `repeats` rounds in which the generators take turns (so a shared machine's load hits all alike).

    Raises:
        AssertionError: a generator's tokens differ from the first generator's (the message names it).
    """
    first = next(iter(generators.values()))
    ref = first.decode(memory, N)[0]
    best = dict.fromkeys(generators, float("inf"))
    for _ in range(repeats):
        for name, g in generators.items():
            t0 = time.perf_counter()
            out = g.decode(memory, N)[0]
            best[name] = min(best[name], (time.perf_counter() - t0) / N)
            assert torch.equal(out, ref), f"{name}: tokens differ from {next(iter(generators))}"
    return best


def md_table(header: list, rows: list) -> str:
    """A markdown table: one header row, then one row per list of cells (each cell written with str())."""
    s = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    return s + "".join("| " + " | ".join(str(c) for c in r) + " |\n" for r in rows)
