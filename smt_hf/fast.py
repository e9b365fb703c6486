"""Fast paths for the recurrent student, each behind the same public API and tested equal to the plain path.

    compile_step(model, mode="reduce-overhead")   the transition m_{t+1} = f(m_t, x) under torch.compile; returned
                                                  (install=False: what SMTTrainer passes to its training module)
                                                  or installed on the instance for forward / step / generate
    restore_step(model)                           back to the eager transition
    fast_generate(model, input_ids, max_new_tokens, do_sample=False, temperature=1.0, top_k=None)
    FastGenerator(model, ...)                     the same with reusable compiled functions / CUDA graphs
    compile_module(module)                        torch.compile an `SMTTrainingModule` (whole training forward)

Generation here is greedy/sampling decoding with a preallocated (B, N) output buffer. One decode step is
readout + pick + update fused in one static-shaped function (`fast_core.py`; optionally compiled); on CUDA the whole step,
including the write of the token into the output buffer at a device-side position counter, is captured
in one CUDA graph and replayed N times: no `.item()`, no host-device sync, no allocation inside the loop.
The prompt is read by the recurrence without storing the (B, T, K, d) memory stack, so prefill memory is
O(1) in the prompt length too.

Notation: B batch, T prompt length, N new tokens, K memory tokens, d width, V vocabulary.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .fast_core import (
    CPU_DECODE_OPTIONS,
    base_model,
    eager_step,
    make_chunk,
    make_core,
    module_parts,
    recurrent_core,
    same_parts,
)
from .fast_settings import generation_setting, unsupported_settings
from .modeling_utils import check_attention_mask, check_memory, check_token_ids

__all__ = [
    "compile_step",
    "restore_step",
    "compile_module",
    "FastGenerator",
    "fast_generate",
    "recurrent_core",
]


# ----------------------------------------------------------------------------- helpers
def compile_step(
    model: nn.Module,
    mode: str | None = "reduce-overhead",
    *,
    dynamic: bool = False,
    fullgraph: bool = True,
    install: bool = True,
    skip_id_checks: bool = True,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Compile the student's transition `_step(memory (B, K, d), token_embedding (B, d)) -> (B, K, d)`.

    With `install=False` the model is left as it is and the function is only returned: pass it on, as
    `SMTTrainer` does for `recurrent_step_compile` (`SMTTrainingModule(..., step_fn=...)` runs it in DMT
    rollouts, SMT transitions and BPTT, without the per-call token-id check).
    With `install=True` the compiled function replaces `model.model._step` (an instance attribute, so the
    class and saved weights are untouched); `forward`, `step`, `generate`, the DMT rollout and BPTT then
    all run it. With `skip_id_checks=True` the installed `model.model.step` also skips the per-call
    token-id range check, whose `int(ids.min())` is a host-device sync inside every rollout loop (the ids
    are validated once elsewhere: DMT encodes the same tokens with the teacher, which checks them).

    mode: a `torch.compile` mode, or None for no compilation (eager, but still sync-free). On CUDA
    "reduce-overhead" records CUDA graphs (CUDAGraph Trees): best for inference loops; for training
    loops that call the step many times per iteration (DMT, BPTT) prefer "default" or
    "max-autotune-no-cudagraphs". On CPU every mode compiles with the inductor C++ backend.
    Returns the (compiled) step function. `restore_step(model)` undoes the installation.
    """
    core = recurrent_core(model)
    fn = eager_step(core)
    if mode is not None:
        fn = torch.compile(fn, mode=mode, dynamic=dynamic, fullgraph=fullgraph)
    if install:
        core._step = fn
        if skip_id_checks:
            embed = core.embed_tokens
            K, d = core.config.memory_tokens, core.config.hidden_size

            def step(memory: torch.Tensor, input_ids: torch.LongTensor) -> torch.Tensor:
                check_memory(memory, K, d)  # shape only: no sync
                return fn(memory, embed(input_ids))

            core.step = step
    return fn


def restore_step(model: nn.Module) -> None:
    """Remove what `compile_step(..., install=True)` installed: the class's eager `_step` / `step` again."""
    core = recurrent_core(model)
    for name in ("_step", "step"):
        core.__dict__.pop(name, None)


def compile_module(module: nn.Module, mode: str | None = None, dynamic: bool = False) -> nn.Module:
    """torch.compile a whole `SMTTrainingModule` (SMT / joint forward+backward is one static-shaped graph;
    the id checks are skipped while compiling). Same as `SMTTrainingArguments(torch_compile=True)` in the
    HF Trainer. Returns the compiled wrapper; its state_dict keys gain an `_orig_mod.` prefix.

    Known fault: on an NVIDIA H200 (torch 2.11, bf16 autocast) the bench GPU preset's joint step compiled this way got
    non-finite teacher gradients at its first step (something Inductor adds: backend="aot_eager" stayed finite; the
    tiny test model was fine): recipes/results/gpu_logs/compile_nan_probe.md. `recurrent_step_compile` (the student's
    update only) stayed finite there."""
    return torch.compile(module, mode=mode, dynamic=dynamic)


# ----------------------------------------------------------------------------- token choice
class _Graph:
    """One CUDA graph of `body()`, which reads and writes only preallocated (static) tensors."""

    def __init__(self, body: Callable[[], None], warmup: int = 2, reset: Callable[[], None] | None = None):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up (compilation, cuBLAS workspaces) off the capture
            for _ in range(warmup):
                body()
        torch.cuda.current_stream().wait_stream(stream)
        if reset is not None:
            reset()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            body()

    def replay(self) -> None:
        self.graph.replay()


# ----------------------------------------------------------------------------- generator
class FastGenerator:
    """Greedy / sampling decoding of an `SMTRecurrentForCausalLM` with fused, static-shaped steps.

    Args:
        model: the student (or a PEFT-wrapped student); put it in eval mode.
        do_sample, temperature, top_k: as `model.generate` (temperature then top-k, HF order); None takes the
            model's generation config, else transformers' defaults (temperature 1.0, top_k 50), as `generate` does.
            A generation config with settings not implemented here (top_p < 1 when sampling; num_beams,
            repetition_penalty, guidance_scale, ... always: smt_hf/fast_settings.py) is refused: its tokens would
            differ. Eos / pad ids outside the vocabulary are refused; so is a call after the model's embedding,
            updater or head was replaced (`stale`).
        min_new_tokens: eos is banned until this many new tokens (default: the generation config's, and its
            `min_length` counting the prompt), as `model.generate`'s min-length logits processors; needs an eos.
        generation_config: the config the defaults above come from and that is checked (default the model's;
            `model.generate()` on the fast path passes the call's own).
        compile: False, or a `torch.compile` mode ("default", "max-autotune-no-cudagraphs", ...) for the
            fused step functions. "reduce-overhead" is taken as "default" when `cuda_graph` is on (the
            graph here already covers the whole step plus the buffer writes); with `cuda_graph=False` it
            uses torch.compile's own CUDA graphs (CUDAGraph Trees) for the fused step.
        cuda_graph: capture prefill and decode steps in CUDA graphs (default: True on CUDA, ignored on CPU).
        eos_token_id / pad_token_id: default to the model's generation config; finished rows get pad ids
            and the output is cut after the step where every row finished (one sync, after the loop).
        autocast_dtype: run the fused functions under `torch.autocast(device, dtype)` (e.g. torch.bfloat16).
        sampler: "multinomial" or "exponential" (default: multinomial unless compiled or graphed).
        compile_prefill: also compile the prefill step (False: eager prefill step, still graphed on CUDA;
            saves one compilation per batch size when prefill speed does not matter).
        prefill: "recurrent" | "parallel" (default `config.prefill`, as `model.generate`): "parallel" builds the
            state from the prompt's last Tc tokens with the carried prefill encoder in one pass.
        decode_chunk: on CPU, decode steps per call of one fused function (default 8 with `compile`, else 1).
            With `compile` the chunk is one inductor graph with the C++ wrapper (`CPU_DECODE_OPTIONS`), so the
            Python, guard and wrapper costs are paid once per chunk (bench CPU model, batch 1: ~13x the eager
            tokens/s); compile time grows with the chunk. Same tokens and memories as step by step. Ignored on CUDA.

    `generate(input_ids, max_new_tokens, attention_mask=None)` -> (B, T + N) like `model.generate`.
    Greedy output equals `model.generate(..., do_sample=False)` token for token. Sampling uses
    `torch.multinomial` on the plain path (the same draws as `model.generate` under the same seed) and the
    exponential race on compiled / graphed paths (same distribution, different draws).
    Graphs and compiled functions are cached per batch size (and per N for the decode graph).
    """

    def __init__(
        self,
        model: nn.Module,
        do_sample: bool = False,
        temperature: float | None = None,
        top_k: int | None = None,
        compile: bool | str = False,
        cuda_graph: bool | None = None,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        autocast_dtype: torch.dtype | None = None,
        sampler: str | None = None,
        compile_prefill: bool = True,
        prefill: str | None = None,
        decode_chunk: int | None = None,
        min_new_tokens: int | None = None,
        generation_config=None,
    ):
        if sampler not in (None, "multinomial", "exponential"):
            raise ValueError(f"`sampler` must be None, 'multinomial' or 'exponential', got {sampler!r}.")
        self.model = model
        self.base = base_model(model)
        self.config = self.base.config
        gen = generation_config if generation_config is not None else getattr(self.base, "generation_config", None)
        # sampling settings as model.generate resolves them: argument, else generation config, else HF's defaults
        temperature, top_k = generation_setting(gen, "temperature", temperature), generation_setting(gen, "top_k", top_k)
        if do_sample and temperature <= 0:
            raise ValueError(f"`temperature` must be > 0 when sampling, got {temperature}.")
        bad = unsupported_settings(gen, do_sample)
        if bad:
            raise ValueError(f"The generation config sets {', '.join(bad)}, which FastGenerator does not implement "
                             "(temperature, top_k, eos / pad and min-length only): its tokens would differ from "
                             "`model.generate`'s. Use "
                             "`model.generate`, or unset them on `model.generation_config` (e.g. `top_p = 1.0`, "
                             "`repetition_penalty = None`).")
        self.do_sample, self.temperature, self.top_k = do_sample, float(temperature), top_k
        self.prefill_mode = self.base.prefill_mode(prefill)
        self.device = next(self.base.parameters()).device
        self.cuda_graph = (self.device.type == "cuda") if cuda_graph is None else bool(cuda_graph and self.device.type == "cuda")
        eos = eos_token_id if eos_token_id is not None else getattr(gen, "eos_token_id", None)
        self.eos = None if eos is None else torch.as_tensor(eos, device=self.device).view(-1)  # (E,)
        pad = pad_token_id if pad_token_id is not None else getattr(gen, "pad_token_id", None)
        self.pad = pad if pad is not None else (None if self.eos is None else int(self.eos[0]))
        V = self.config.vocab_size
        for name, ids in (("eos_token_id", [] if self.eos is None else self.eos.tolist()), ("pad_token_id", [self.pad])):
            if any(i is not None and not 0 <= i < V for i in ids):  # (an IndexError inside the loop, before)
                raise ValueError(f"{name}={ids if len(ids) > 1 else ids[0]} is outside the model's vocabulary [0, {V - 1}]: "
                                 "FastGenerator needs token ids the model can emit and read: use the matching "
                                 "tokenizer's ids.")
        self._parts = module_parts(model)  # the modules the fused functions call (checked before each use: `stale`)
        self.min_new_tokens = int(min_new_tokens if min_new_tokens is not None else getattr(gen, "min_new_tokens", None) or 0)
        self.min_length = int(getattr(gen, "min_length", None) or 0) if min_new_tokens is None else 0  # counts the prompt
        self.autocast_dtype = autocast_dtype
        decode, prefill = make_core(model, do_sample, self.temperature, top_k)
        # CPU: decode in chunks of several steps (see make_chunk), compiled as one graph when `compile`
        cpu_compiled = bool(compile) and self.device.type == "cpu"
        self.decode_chunk = int(decode_chunk if decode_chunk is not None else (8 if cpu_compiled else 1))
        if self.decode_chunk < 1:
            raise ValueError(f"`decode_chunk` must be >= 1, got {decode_chunk}.")
        self._chunk_fn = None
        if self.device.type == "cpu" and (cpu_compiled or self.decode_chunk > 1):
            chunk = make_chunk(decode, self.decode_chunk)
            self._chunk_fn = torch.compile(chunk, dynamic=False, options=CPU_DECODE_OPTIONS) if cpu_compiled else chunk
        if compile:
            mode = "default" if compile is True else compile
            if mode == "reduce-overhead" and self.cuda_graph:
                mode = "default"
            decode = torch.compile(decode, mode=mode, dynamic=False)
            if compile_prefill:
                prefill = torch.compile(prefill, mode=mode, dynamic=False)
        self.compiled = bool(compile)
        # torch.compile's own CUDA graphs (CUDAGraph Trees) when asked for them without the manual capture
        self._mark_step = compile == "reduce-overhead" and not self.cuda_graph and self.device.type == "cuda"
        if sampler is None:  # multinomial (HF's draws) on the plain path; the exponential race when compiled/graphed
            sampler = "exponential" if (self.compiled or self.cuda_graph) else "multinomial"
        self.sampler = sampler
        self._decode_fn, self._prefill_fn = decode, prefill
        self._graphs: dict = {}

    # -- fused functions under the chosen autocast
    def _autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _use_noise(self) -> bool:
        return self.do_sample and self.sampler == "exponential"

    @property
    def stale(self) -> bool:
        """True once a module or parameter storage of the model's embedding, updater, read-out or output head changed
        after this generator was built (`fast_core.module_parts`): its fused functions would run the old ones."""
        return not same_parts(self._parts, module_parts(self.model))

    def _check(self, memory: torch.Tensor | None = None, batch: int | None = None) -> torch.Tensor | None:
        """Refuse a stale generator; check a given memory (B, K, d) (and its batch) and cast it to the model's dtype."""
        if self.stale:
            raise ValueError("The model's embedding, updater, read-out or output head changed (a module replaced or "
                             "added, e.g. LoRA, or weights moved) after this FastGenerator was built; it would run the "
                             "old ones. Build a new FastGenerator.")
        if memory is None:
            return None
        check_memory(memory, self.config.memory_tokens, self.config.hidden_size)
        if batch is not None and memory.shape[0] != batch:
            raise ValueError(f"`memory` holds {memory.shape[0]} sequences but the input has {batch} rows.")
        return memory.to(self.base.model.initial_state.dtype)

    # -- prefill
    @torch.no_grad()
    def prefill(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                memory: torch.Tensor | None = None) -> torch.Tensor:
        """Read a (left-padded) prompt (B, T) from `memory` (default m_0); return the memory (B, K, d).
        Positions with attention_mask 0 leave the memory unchanged, as in `model.forward`. Nothing of size
        O(T) is allocated beyond the caller's tensors (no (B, T, K, d) memory stack, no (B, T) mask copy)."""
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must be (batch, length), got shape {tuple(input_ids.shape)}.")
        check_token_ids(input_ids, self.config.vocab_size)  # once, before the loop
        B, T = input_ids.shape
        memory = self._check(memory, B)
        if attention_mask is not None:
            check_attention_mask(attention_mask, B, T)
        if self.prefill_mode == "parallel" and memory is None and T > 0:  # the carried encoder, one pass
            with self._autocast():
                m = self.base.prefill_memory(input_ids.to(self.device),
                                             None if attention_mask is None else attention_mask.to(self.device))
            return m.to(self.base.model.initial_state.dtype).contiguous()
        core = recurrent_core(self.model)
        m = core.initial_memory(B) if memory is None else memory
        m = m.detach().to(self.device).clone().contiguous()  # (B, K, d) state buffer
        if T == 0:
            return m
        ids = input_ids.to(self.device)
        keep = None if attention_mask is None else attention_mask[:, -T:].to(self.device)  # (B, T)
        all_keep = torch.ones(B, dtype=torch.bool, device=self.device)  # (B,)
        if not self.cuda_graph:
            with self._autocast():
                for t in range(T):
                    if self._mark_step:
                        torch.compiler.cudagraph_mark_step_begin()
                    m = self._prefill_fn(m, ids[:, t], all_keep if keep is None else keep[:, t].bool())
                    if self._mark_step:
                        m = m.clone()  # a graph output is overwritten by the next replay
            return m
        key = ("prefill", B, m.dtype)
        if key not in self._graphs:
            bufs = dict(m=m.clone(), ids=ids[:, 0].clone(), keep=all_keep.clone())

            def body(b=bufs):
                with self._autocast():
                    b["m"].copy_(self._prefill_fn(b["m"], b["ids"], b["keep"]))

            self._graphs[key] = (_Graph(body), bufs)
        graph, bufs = self._graphs[key]
        bufs["m"].copy_(m)
        bufs["keep"].fill_(True)
        for t in range(T):  # 1-2 small copies + 1 replay per token; no sync
            bufs["ids"].copy_(ids[:, t])
            if keep is not None:
                bufs["keep"].copy_(keep[:, t])
            graph.replay()
        return bufs["m"].clone()

    # -- decode
    def _decode_body(self, b: dict) -> None:
        """One step on static buffers: pick a token from m, write it at out[:, pos], m <- f(m, token)."""
        if self._mark_step:
            torch.compiler.cudagraph_mark_step_begin()  # outputs of the last replay were consumed below
        noise = None
        if self._use_noise():
            noise = torch.empty(b["m"].shape[0], self.config.vocab_size, device=self.device).exponential_()  # (B, V)
        if self.eos is None:
            with self._autocast():
                new_m, tok = self._decode_fn(b["m"], noise)
        else:
            all_before = b["done"].all()  # every row had finished before this step: the output is already cut
            ban = b["eos_mask"] & (b["pos"] < b["min_new"]) if "eos_mask" in b else None  # (V,)
            with self._autocast():
                new_m, tok = self._decode_fn(b["m"], noise, b["done"], b["pad"], ban)
            b["done"].logical_or_(torch.isin(tok, self.eos))
            b["all_done"].index_copy_(0, b["pos"], b["done"].all().view(1))
            b["m_cut"].copy_(torch.where(all_before, b["m_cut"], new_m))  # the memory after the last kept token
        b["out"].index_copy_(1, b["pos"], tok.view(-1, 1))  # out[:, pos] = tok
        b["m"].copy_(new_m)
        b["pos"].add_(1)

    def _eos_mask(self) -> torch.Tensor:
        """(V,) bool: True at the eos ids."""
        mask = torch.zeros(self.config.vocab_size, dtype=torch.bool, device=self.device)
        return mask.index_fill_(0, self.eos, True)

    @torch.no_grad()
    def decode(self, memory: torch.Tensor, max_new_tokens: int,
               min_new_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate N tokens from memories (B, K, d). Returns tokens (B, N') and the memory after reading
        them, N' <= N (cut after the step where all rows met eos). No host sync inside the loop.
        min_new_tokens (default `self.min_new_tokens`): eos is banned in the first steps, as in `model.generate`."""
        B, N = memory.shape[0], int(max_new_tokens)
        n_min = self.min_new_tokens if min_new_tokens is None else int(min_new_tokens)
        n_min = n_min if (self.eos is not None and n_min > 0) else 0
        memory = self._check(memory)
        if self._chunk_fn is not None and N > 0:
            return self._decode_chunked(memory, N, n_min)
        key = ("decode", B, N, memory.dtype, n_min > 0)
        if key in self._graphs:
            graph, b = self._graphs[key]
        else:
            graph, b = None, dict(
                m=memory.detach().clone().contiguous(),
                out=torch.zeros(B, N, dtype=torch.long, device=self.device),  # (B, N) preallocated
                pos=torch.zeros(1, dtype=torch.long, device=self.device),
                done=torch.zeros(B, dtype=torch.bool, device=self.device),
                all_done=torch.zeros(N, dtype=torch.bool, device=self.device),
                m_cut=memory.detach().clone().contiguous(),
                pad=torch.tensor(0 if self.pad is None else self.pad, dtype=torch.long, device=self.device),
            )
            if n_min > 0:
                b.update(eos_mask=self._eos_mask(), min_new=torch.zeros(1, dtype=torch.long, device=self.device))
        if N == 0:
            return b["out"], memory

        def reset():
            b["m"].copy_(memory)
            b["pos"].zero_()
            b["done"].zero_()
            b["all_done"].zero_()
            b["m_cut"].copy_(memory)
            if n_min > 0:
                b["min_new"].fill_(n_min)

        if self.cuda_graph and graph is None:
            graph = _Graph(lambda: self._decode_body(b), warmup=2, reset=reset)
            self._graphs[key] = (graph, b)
        reset()
        for _ in range(N):
            if graph is not None:
                graph.replay()
            else:
                self._decode_body(b)
        out = b["out"].clone()
        if self.eos is not None:
            finished = b["all_done"]
            if bool(finished.any()):  # one sync, after the loop
                out = out[:, : int(finished.to(torch.int8).argmax()) + 1]
        return out, (b["m"] if self.eos is None else b["m_cut"]).clone()

    def _decode_chunked(self, memory: torch.Tensor, N: int, n_min: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """`decode` on CPU in compiled chunks of `decode_chunk` steps (same tokens and memories as step by step)."""
        U, (B, V) = self.decode_chunk, (memory.shape[0], self.config.vocab_size)
        n = -(-N // U) * U  # N rounded up to whole chunks
        m = memory.detach().clone().contiguous()
        m_cut, done = m.clone(), torch.zeros(B, dtype=torch.bool, device=self.device)
        out = torch.empty(B, n, dtype=torch.long, device=self.device)
        all_done = torch.zeros(n, dtype=torch.bool, device=self.device)
        pad = torch.tensor(0 if self.pad is None else self.pad, dtype=torch.long, device=self.device)
        full = torch.tensor([U], device=self.device)
        eos_mask = self._eos_mask() if n_min > 0 else None  # (V,)
        for start in range(0, N, U):
            min_left = torch.tensor([n_min - start], device=self.device) if n_min > start else None
            limit = full if start + U <= N else torch.tensor([N - start], device=self.device)
            noise = torch.empty(U, B, V, device=self.device).exponential_() if self._use_noise() else None  # (U, B, V)
            with self._autocast():
                m, m_cut, done, toks, fin = self._chunk_fn(m, m_cut, done, pad, limit, noise, self.eos,
                                                           None if min_left is None else eos_mask, min_left)
            out[:, start:start + U] = toks
            if fin is not None:
                all_done[start:start + U] = fin
        out, all_done = out[:, :N], all_done[:N]
        if self.eos is not None and bool(all_done.any()):
            out = out[:, : int(all_done.to(torch.int8).argmax()) + 1]
        return out, (m if self.eos is None else m_cut).clone()

    @torch.no_grad()
    def generate(self, input_ids: torch.LongTensor, max_new_tokens: int,
                 attention_mask: torch.Tensor | None = None, return_memory: bool = False):
        """prompt (B, T) -> sequences (B, T + N) (and the memory after reading them if `return_memory`).
        Without `attention_mask`, pad tokens in the prompt are masked when the pad id is not an eos id, as
        `model.generate` infers it. Eos is banned until `min_new_tokens` new tokens and `min_length` in all."""
        if attention_mask is None and self.pad is not None and (self.eos is None or self.pad not in self.eos.tolist()):
            pads = input_ids.eq(self.pad)
            if bool(pads.any()):  # one sync, before the loop
                attention_mask = (~pads).long()
        m = self.prefill(input_ids, attention_mask)
        new, m = self.decode(m, max_new_tokens, max(self.min_new_tokens, self.min_length - input_ids.shape[1]))
        seq = torch.cat([input_ids.to(self.device), new], dim=1)
        return (seq, m) if return_memory else seq

    __call__ = generate


def fast_generate(
    model: nn.Module,
    input_ids: torch.LongTensor,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float | None = None,
    top_k: int | None = None,
    attention_mask: torch.Tensor | None = None,
    compile: bool | str = False,
    cuda_graph: bool | None = None,
    **kwargs,
) -> torch.LongTensor:
    """One-shot `FastGenerator(model, ...).generate(input_ids, max_new_tokens)`: (B, T) -> (B, T + N).
    Greedy output equals `model.generate(input_ids, max_new_tokens=N, do_sample=False)`. For repeated calls
    keep a `FastGenerator` so compiled functions and CUDA graphs are reused."""
    gen = FastGenerator(model, do_sample=do_sample, temperature=temperature, top_k=top_k, compile=compile,
                        cuda_graph=cuda_graph, **kwargs)
    return gen.generate(input_ids, max_new_tokens, attention_mask=attention_mask)
