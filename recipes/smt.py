"""Train a recurrent student with SMT (joint or detached), then DMT — or the BPTT baseline — from a YAML config.

    python recipes/smt.py --config recipes/configs/needle_cpu.yaml
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/smt.py --config recipes/configs/tinystories_gpu.yaml
    python recipes/smt.py --config recipes/configs/needle_cpu.yaml --set phases.0.max_steps=50 --set output_dir=/tmp/x

A config has `output_dir`, `data` (a synthetic task, `text`, `mnist`, `sketches`, or `dataset`: any `datasets`
corpus with any HF tokenizer, see `smt_hf.data.load_text_dataset`), `teacher` and `student`
config fields, `common` SMTTrainingArguments shared by all phases, and `phases`: a list of
SMTTrainingArguments overrides run in order (e.g. joint SMT, then DMT). After each phase the student and
teacher are evaluated; at the end the standalone student is reloaded from disk with no teacher and
generates. `main(config)` is importable and returns the summary dict.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import torch
import yaml

from smt_hf import SMTByteTokenizer, SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherConfig, SMTTeacherModel
from smt_hf.hardware import describe_machine
from smt_hf.data import (load_mnist, load_sketches, load_text, load_text_dataset, make_task, stream_windows,
                         task_vocab_size, tokenizer_model_fields)
from smt_hf.trainer import SMTTrainer
from smt_hf.training_args import SMTTrainingArguments

PIXEL_LOADERS = {"mnist": load_mnist, "sketches": load_sketches}


# ----------------------------------------------------------------------------- config
def load_config(path: str | None, overrides: list[str] | None = None) -> dict:
    config = yaml.safe_load(open(path)) if path else {}
    for item in overrides or []:
        key, _, raw = item.partition("=")
        value = yaml.safe_load(raw)
        node = config
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        if isinstance(node, list):
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return config


def build_data(data: dict) -> tuple:
    """Returns (train_dataset, eval_dataset, vocab_size or tokenizer, description)."""
    data = dict(data)
    kind = data.pop("task")
    if kind == "dataset":  # {path, name, data_files, split, text_column, tokenizer, streaming, seq_len, ...}
        got = load_text_dataset(**data)
        return got.train, got.eval, got.tokenizer, got.description
    seq_len = data.pop("seq_len")
    n_train, n_eval = data.pop("num_train", 20000), data.pop("num_eval", 256)
    seed = data.pop("seed", 0)
    if kind == "text":
        source = data.pop("source", "auto")
        train_text, eval_text = load_text(source, split="train"), load_text(source, split="test")
        train = stream_windows(train_text.tokens, seq_len, n_train, seed)
        ev = stream_windows(eval_text.tokens, seq_len, n_eval, seed + 1)
        return train, ev, 256, f"text ({train_text.source}), windows of {seq_len} bytes"
    if kind in PIXEL_LOADERS:
        source = data.pop("source", "auto")
        train = PIXEL_LOADERS[kind](source, split="train")
        ev = PIXEL_LOADERS[kind](source, split="test")
        ev = ev.select(range(min(n_eval, len(ev))))
        return train, ev, 256, f"{kind} ({train.info.description})"
    train = make_task(kind, n_train, seq_len, seed, **data)
    ev = make_task(kind, n_eval, seq_len, seed + 10**6, **data)
    return train, ev, task_vocab_size(kind, **data), f"task {kind} (T={seq_len}, {data})"


def build_models(config: dict, vocab, seq_len: int):
    """vocab: a vocabulary size, or a tokenizer (sets vocab_size and the pad / bos / eos ids)."""
    fields = {"vocab_size": vocab} if isinstance(vocab, int) else tokenizer_model_fields(vocab)
    tkw = dict(config.get("teacher", {}))
    for key, value in fields.items():
        tkw.setdefault(key, value)
    tkw.setdefault("max_context_length", max(seq_len, 1))
    teacher = SMTTeacherModel(SMTTeacherConfig(**tkw))
    skw = dict(config.get("student", {}))
    backbone = skw.pop("backbone", "transformer")
    student = SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(teacher.config, backbone=backbone, **skw))
    return student, teacher


def machine() -> str:
    return describe_machine()


# ----------------------------------------------------------------------------- main
def main(config: dict) -> dict:
    config = copy.deepcopy(config)
    out_dir = config.get("output_dir", "outputs/smt")
    seed = config.get("seed", 0)
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    torch.manual_seed(seed)
    train, ev, vocab, data_desc = build_data(config["data"])
    seq_len = len(next(iter(train))["input_ids"])
    student, teacher = build_models(config, vocab, seq_len)
    tokenizer = vocab if not isinstance(vocab, int) else SMTByteTokenizer() if vocab == 256 else None
    print(f"[smt] data: {data_desc}; train {len(train) if hasattr(train, '__len__') else 'streamed'} / eval {len(ev)} sequences of {seq_len} tokens")
    print(f"[smt] student ({student.config.backbone}): {student.num_parameters():,} params; teacher: {teacher.num_parameters():,}")
    print(f"[smt] machine: {machine()}")
    summary = {"config": config, "data": data_desc, "machine": machine(), "phases": []}
    for i, phase in enumerate(config.get("phases", [{"mode": "joint"}])):
        kw = dict(config.get("common", {}))
        kw.update(phase)
        kw.setdefault("context_length", seq_len)
        kw.setdefault("report_to", "none")
        kw.setdefault("save_strategy", "no")
        kw["output_dir"] = os.path.join(out_dir, f"phase{i}_{kw['mode']}")
        kw.setdefault("seed", seed)
        args = SMTTrainingArguments(**kw)
        trainer = SMTTrainer(
            model=student, teacher=None if args.mode == "bptt" else teacher, args=args,
            train_dataset=train, eval_dataset=ev, processing_class=tokenizer,
        )
        t0 = time.time()
        trainer.train()
        seconds = time.time() - t0
        metrics = trainer.evaluate()
        summary["phases"].append(
            {"mode": args.mode, "steps": trainer.state.global_step, "seconds": round(seconds, 1),
             "eval": {k: v for k, v in trainer.last_eval.items()}}
        )
        print(f"[smt] phase {i} ({args.mode}): {trainer.state.global_step} steps in {seconds:.0f}s; "
              + ", ".join(f"{k[5:]}={v:.3f}" for k, v in metrics.items() if isinstance(v, float) and k != "epoch"))
        trainer.save_model(os.path.join(out_dir, "final"))
    # the standalone student, reloaded from disk with no teacher
    final = os.path.join(out_dir, "final", "student")
    alone = SMTRecurrentForCausalLM.from_pretrained(final).eval()
    # prompt: everything before the first target (tasks), or the first half (text / pixels)
    labels0 = ev[0].get("labels") or ev[0]["input_ids"]
    targets = [t for t, y in enumerate(labels0) if y != -100]
    cut = targets[0] if targets and labels0 != ev[0]["input_ids"] else seq_len // 2
    prompt = torch.tensor([ev[0]["input_ids"][: max(1, cut)]])
    sample = alone.generate(prompt, max_new_tokens=seq_len - prompt.shape[1], do_sample=False)
    summary["sample"] = {"prompt": prompt[0].tolist(), "continuation": sample[0, prompt.shape[1]:].tolist(),
                         "reference": ev[0]["input_ids"][prompt.shape[1]:]}
    if tokenizer is not None:
        summary["sample"]["text"] = tokenizer.decode(sample[0])
    print_table(summary)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    print(f"[smt] saved standalone student to {final} (load with AutoModelForCausalLM.from_pretrained) and summary.json")
    return summary


def print_table(summary: dict) -> None:
    cols = ["teacher_acc", "onestep_acc", "student_acc", "student_loss", "drift_mean"]
    print("\n| phase | steps | seconds | " + " | ".join(cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for p in summary["phases"]:
        vals = [f"{p['eval'][c]:.3f}" if c in p["eval"] else "-" for c in cols]
        print(f"| {p['mode']} | {p['steps']} | {p['seconds']} | " + " | ".join(vals) + " |")
    s = summary.get("sample", {})
    if "text" in s:
        print(f"\nsample (standalone student): {s['text']!r}")
    elif s:
        print(f"\nsample (standalone student): prompt {s['prompt'][-8:]} -> {s['continuation'][-8:]} (reference {s['reference'][-8:]})")


def cli(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "configs", "needle_cpu.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config entry")
    args = parser.parse_args(argv)
    main(load_config(args.config, args.set))


if __name__ == "__main__":
    sys.exit(cli())
