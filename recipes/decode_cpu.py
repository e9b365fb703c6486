"""CPU decoding side by side in one process: eager `FastGenerator` vs its compiled CPU path (decode chunks of U
steps, one inductor graph with the C++ wrapper each), at bench.py's CPU model (V 256, d 64, K 4, H 4,
encoder/decoder/updater 2/1/2), greedy, after a 64-token prompt; the compiled tokens are asserted equal to
the eager ones. Timings are the best of 7 interleaved repeats (the machine may be shared). Beside them, HF
`generate()` decode time per token ((time of N+1 new tokens - time of 1) / N, same prompt) of the student, of a
KV-cache Llama of the student's sizes (`smt_hf.benchmark.llama_for`) and of `MambaForCausalLM` whose SSM state has the
student's K*d floats (hidden 32, expand 2, state 2, 2 layers; plus its conv state), both untrained; and the
student's `generate()` with the fast path (`student.enable_fast_decode(decode_chunk=U, strict=True)`: the same
compiled decode behind HF `generate()`, its tokens asserted equal to the standard loop's; its compile time is the
first call's, after the FastGenerator rows have filled the inductor cache).

    python recipes/decode_cpu.py                 # U = 8 (the default), N = 64 new tokens, batches 1 and 16
    python recipes/decode_cpu.py 4 8 --new 128
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sibling recipe modules (cli_types)
from cli_types import positive_int  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the package, also not pip-installed

from smt_hf.benchmark import (fast_generate_seconds, hf_decode_seconds, interleaved_decode_seconds,  # noqa: E402
                              llama_for, mamba_like)
from smt_hf.benchmark_sections import build_models  # noqa: E402
from smt_hf.fast import FastGenerator  # noqa: E402
from smt_hf.hardware import describe_machine  # noqa: E402
from smt_hf.recipe_config import load_preset  # noqa: E402

BENCH_CPU = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "bench", "cpu.yaml")  # its `model`


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chunks", nargs="*", type=positive_int, default=[8], help="decode_chunk values to compile")
    ap.add_argument("--new", type=positive_int, default=64, help="new tokens per decode")
    ap.add_argument("--batches", type=positive_int, nargs="+", default=[1, 16],
                    help="batch sizes (default %(default)s)")
    ap.add_argument("--repeats", type=positive_int, default=7,
                    help="timed repeats per row, median reported (default %(default)s)")
    ap.add_argument("--out", help="also write the rows as JSON here (e.g. recipes/results/decode_cpu.json)")
    ap.add_argument("--no-baselines", dest="baselines", action="store_false", help="skip the HF generate() rows")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    _, student = build_models(load_preset(BENCH_CPU)["model"], 16, torch.device("cpu"))
    student.eval()
    N = a.new
    prompts = {B: torch.randint(0, 256, (B, 64), generator=torch.Generator().manual_seed(B)) for B in a.batches}
    gens, compile_s = {"eager": FastGenerator(student)}, {}
    for U in a.chunks:
        g = FastGenerator(student, compile="default", compile_prefill=False, decode_chunk=U)
        for B in a.batches:
            t0 = time.perf_counter()
            g.decode(g.prefill(prompts[B]), N)  # compiles for this batch size
            compile_s[(U, B)] = time.perf_counter() - t0
        gens[f"compiled U={U}"] = g
    baselines = {}
    if a.baselines:
        baselines = {"student generate()": student,
                     "llama kv-cache generate()": llama_for(student.config, 64 + N + 8, torch.device("cpu"), torch.float32),
                     "mamba generate()": mamba_like(student.config)}
    print(f"machine: {describe_machine()}; {N} new tokens after a 64-token prompt")
    rows = []
    for B in a.batches:
        best = interleaved_decode_seconds(gens, gens["eager"].prefill(prompts[B]), N, a.repeats)
        for name, sec in best.items():
            row = dict(model=name, B=B, ms_per_token=1e3 * sec, tokens_per_s=B / sec, speedup=best["eager"] / sec)
            if name != "eager":
                row["compile_s"] = compile_s[(int(name.split("=")[1]), B)]
            rows.append(row)
            extra = f"  {row['speedup']:.1f}x eager, compile {row['compile_s']:.0f} s" if "compile_s" in row else ""
            print(f"B={B:3d} {name:>22s}: {row['ms_per_token']:.3f} ms/token {row['tokens_per_s']:9.0f} tokens/s{extra}",
                  flush=True)
        if a.baselines:
            for name, model in baselines.items():
                sec = hf_decode_seconds(model, prompts[B], N)
                rows.append(dict(model=name, B=B, ms_per_token=1e3 * sec, tokens_per_s=B / sec))
                print(f"B={B:3d} {name:>22s}: {1e3 * sec:.3f} ms/token {B / sec:9.0f} tokens/s", flush=True)
            name = f"generate() fast path U={a.chunks[0]}"
            sec, first = fast_generate_seconds(student, prompts[B], N, a.chunks[0])
            rows.append(dict(model=name, B=B, ms_per_token=1e3 * sec, tokens_per_s=B / sec, speedup=best["eager"] / sec,
                             compile_s=first))
            print(f"B={B:3d} {name:>22s}: {1e3 * sec:.3f} ms/token {B / sec:9.0f} tokens/s  {best['eager'] / sec:.1f}x "
                  f"eager, first call {first:.0f} s", flush=True)
    result = {"machine": describe_machine(), "torch": torch.__version__, "new_tokens": N, "prompt": 64, "rows": rows}
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
