"""Why the SMT teacher does not learn associative recall: the register read-out of a lookup, probed alone (CPU).

The full teacher stays at 0.21-0.23 on associative recall (recipes/results/teacher_curves.md) while a causal LM of
the same size learns it in 400 steps. This probe strips the teacher down to the question in between: can K
registers of a causal-context memory encoder (`MemoryEncoder.encode_prefixes`: the memory of every prefix x[:t]
from one pass) deliver an answer through a linear head on register K-1, with the densest signal there is (every
prefix's memory against its label, no decoder, no split sampling)? Variants, same width/heads/optimiser:

    lm           causal Transformer LM on the tokens (no registers): the task is learnable at this size
    copy         the registers give the LAST context token (label t = x_{t-1}): reading a fixed offset
    lookup       the registers give the looked-up value (the task's labels): a lookup, then the read-out
    lookup_deep  as lookup, plus a next-token loss on the token stream after block L-1
                 (`MemoryEncoder.token_states`, the idea of SMTTrainingArguments.lambda_encoder_lm): the tokens
                 compute the lookup by then, and block L is left for the registers to read it

    python recipes/assoc_recall_probe.py --out recipes/results        # writes assoc_recall_probe.{json,md,png}

Each variant stops at 0.99 held-out accuracy (at the labelled positions) or its wall-clock budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sibling recipe modules (cli_types)
from cli_types import positive_float  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("lm", "copy", "lookup", "lookup_deep")


def targets(variant: str, ids, labels):
    """The labels a variant trains on, (N, T): the task's (label t = the value answering the query x_{t-1}), or
    for `copy` label t = x_{t-1}, the last token of the prefix x[:t] (-100 at t = 0)."""
    import torch

    if variant != "copy":
        return labels
    return torch.cat([torch.full_like(ids[:, :1], -100), ids[:, :-1]], 1)


def run(variant: str, layers: int, K: int = 8, seconds: float = 300, seed: int = 0, T: int = 32, d: int = 64,
        lr: float = 1e-3, batch: int = 64, eval_every: int = 50, num_train: int = 50000) -> dict:
    """Train one variant; returns {variant, layers, K, curve: [[step, seconds, acc]], reached_at_step}."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from smt_hf import SMTTeacherConfig
    from smt_hf.data import make_task, task_vocab_size
    from smt_hf.modeling_encoder import MemoryEncoder

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    V = task_vocab_size("associative_recall")
    tr, ev = make_task("associative_recall", num_train, T, seed=seed), make_task("associative_recall", 512, T, seed=10**6)
    X, Y = torch.tensor(tr["input_ids"]), torch.tensor(tr["labels"])  # (N, T)
    Xe, Ye = torch.tensor(ev["input_ids"]), torch.tensor(ev["labels"])
    Y, Ye = targets(variant, X, Y), targets(variant, Xe, Ye)
    cfg = SMTTeacherConfig(vocab_size=V, hidden_size=d, memory_tokens=K, num_encoder_layers=layers,
                           num_decoder_layers=1, num_attention_heads=4, max_context_length=T, encoder_causal=True)
    enc = MemoryEncoder(cfg, layers, 4 * d, causal=True)  # PyTorch default init; registers drawn below
    nn.init.normal_(enc.registers, std=d**-0.5)
    head, aux = nn.Linear(d, V), nn.Linear(d, V)
    params = [*enc.parameters(), *head.parameters(), *aux.parameters()]

    def shift(h):  # (B, T, .) state at t-1 -> prediction of label t (position 0 has read nothing: zeros)
        return torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)

    def logits(x):  # (B, T) -> (B, T, V): logits[:, t] predicts labels[:, t] from x[:t]
        if variant == "lm":
            return head(shift(enc.token_states(x)))
        return head(enc.encode_prefixes(x)[:, :-1, -1])  # register K-1 of the memory of x[:t]

    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    curve, t0, step = [], time.time(), 0
    while time.time() - t0 < seconds:
        i = torch.randint(0, len(X), (batch,))
        loss = F.cross_entropy(logits(X[i]).flatten(0, 1), Y[i].flatten(), ignore_index=-100)
        if variant == "lookup_deep":
            deep = aux(shift(enc.token_states(X[i], None, layers - 1)))
            loss = loss + F.cross_entropy(deep.flatten(0, 1), Y[i].flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % eval_every == 0:
            with torch.no_grad():
                m = Ye != -100
                acc = (logits(Xe).argmax(-1)[m] == Ye[m]).float().mean().item()
            curve.append([step, round(time.time() - t0, 1), acc])
            print(f"[{variant} L{layers}] step {step} {curve[-1][1]:.0f}s acc {acc:.3f}", flush=True)
            if acc >= 0.99:
                break
    hit = next((c[0] for c in curve if c[2] >= 0.99), None)
    sys.path.insert(0, HERE)
    from smt import machine

    return {"machine": machine(), "variant": variant, "layers": layers, "K": K, "width": d, "lr": lr, "batch": batch, "budget_s": seconds,
            "curve": curve, "reached_at_step": hit}


def write(out: str, runs: list[dict]) -> str:
    """<out>/assoc_recall_probe.json (the runs), .md (table), .png (curves); returns the markdown."""
    machines = "; ".join(sorted({r["machine"] for r in runs}))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "assoc_recall_probe.json"), "w") as f:
        json.dump({"machine": machines, "runs": runs}, f, indent=2)
    lines = [f"# Associative recall: the register read-out of a lookup (recipes/assoc_recall_probe.py)\n\nMachine: "
             f"{machines}, shared with one other job. T=32, 7 pairs over 16 keys / 16 values, width 64, 4 heads, "
             "AdamW lr 1e-3, batch 64, every prefix supervised (dense); accuracy at the labelled positions of 512 "
             "held-out episodes; each run stops at 0.99 or its budget.\n",
             "| variant | encoder blocks | K | reached 0.99 at step | final acc | steps | wall-clock s |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        if not r["curve"]:  # the budget ended before the first evaluation
            lines.append(f"| {r['variant']} | {r['layers']} | {'-' if r['variant'] == 'lm' else r['K']} | not reached | "
                         "- (no evaluation within the budget) | - | - |")
            continue
        c = r["curve"][-1]
        lines.append(f"| {r['variant']} | {r['layers']} | {'-' if r['variant'] == 'lm' else r['K']} | "
                     f"{r['reached_at_step'] or 'not reached'} | {c[2]:.3f} | {c[0]} | {c[1]:.0f} |")
    md = "\n".join(lines) + "\n\n![curves](assoc_recall_probe.png)\n"
    with open(os.path.join(out, "assoc_recall_probe.md"), "w") as f:
        f.write(md)
    try:
        from smt_hf.viz import plot_curves

        curves = {f"{r['variant']} ({r['layers']} blocks)": ([c[0] for c in r["curve"]], [c[2] for c in r["curve"]])
                  for r in runs}
        plot_curves(None, curves, os.path.join(out, "assoc_recall_probe.png"), xlabel="step",
                    ylabel="held-out accuracy", title="Associative recall through K registers (dense signal)")
    except ImportError:  # matplotlib is optional
        pass
    return md


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", default=[f"{v}:{n}" for v, n in
                                                     (("lm", 2), ("copy", 2), ("lookup", 2), ("lookup_deep", 3))],
                   help="variant:encoder_blocks pairs, variants from " + ", ".join(VARIANTS))
    p.add_argument("--seconds", type=positive_float, default=300, help="wall-clock budget per variant")
    p.add_argument("--out", default="outputs/assoc_recall_probe",
                   help="folder for the JSON, table and plot (default %(default)s)")
    a = p.parse_args(argv)
    pairs = [s.split(":") for s in a.variants]
    if any(len(x) != 2 or x[0] not in VARIANTS or not x[1].isdigit() or int(x[1]) < 1 for x in pairs):
        p.error(f"--variants takes variant:encoder_blocks pairs such as lookup:2, variants from {', '.join(VARIANTS)}; "
                f"got {a.variants}")
    runs = [run(v, int(n), seconds=a.seconds) for v, n in pairs]
    print(write(a.out, runs))


if __name__ == "__main__":
    main()
