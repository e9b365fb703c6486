"""Run an SMT config: build its data and models, train every phase with `SMTTrainer`, evaluate, reload the
standalone student and sample (the runner behind `python recipes/smt.py --config ...`).

    from smt_hf.recipe import run_config
    from smt_hf.recipe_config import load_config
    summary = run_config(load_config("recipes/configs/needle_cpu.yaml", ["phases.0.max_steps=50"]))

A config has `output_dir`, `data` (a synthetic task, `text`, `mnist`, `sketches` or a `datasets` corpus), `teacher`
and `student` config fields, `common` SMTTrainingArguments shared by all phases, and `phases`: a list of
SMTTrainingArguments overrides run in order (e.g. joint SMT, then DMT); `smt_hf.recipe_config` checks every key.
`build_models` and `build_data` are usable alone (the other recipes build their models with `build_models`).
"""

from __future__ import annotations

import json
import os
import time

from .recipe_config import ConfigError, offline_source, validate_config

PIXEL_TASKS = ("mnist", "sketches")
SAMPLE_EDGE = 32  # a printed token prompt longer than 2 * SAMPLE_EDGE shows its first and last SAMPLE_EDGE tokens

# torch and the models are imported inside the functions below, where they are needed.


def build_data(data: dict) -> tuple:
    """Returns (train_dataset, eval_dataset, vocab_size or tokenizer, description)."""
    from .data import (load_mnist, load_sketches, load_text, load_text_dataset, make_task, stream_windows,
                             task_vocab_size)

    data = dict(data)
    kind = data.pop("task")
    if kind == "dataset":  # {path, name, data_files, split, text_column, tokenizer, streaming, seq_len, ...}
        got = load_text_dataset(**data)
        return got.train, got.eval, got.tokenizer, got.description
    seq_len = data.pop("seq_len")
    n_train, n_eval = data.pop("num_train", 20000), data.pop("num_eval", 256)
    seed = data.pop("seed", 0)
    if kind == "text":
        source, max_docs = data.pop("source", "auto"), data.pop("max_documents", None)
        train_text = load_text(source, split="train", max_documents=max_docs)
        eval_text = load_text(source, split="test", max_documents=max_docs)
        train = stream_windows(train_text.tokens, seq_len, n_train, seed)
        ev = stream_windows(eval_text.tokens, seq_len, n_eval, seed + 1)
        return train, ev, 256, f"text ({train_text.source}), windows of {seq_len} bytes"
    if kind in PIXEL_TASKS:
        loader = {"mnist": load_mnist, "sketches": load_sketches}[kind]
        source = data.pop("source", "auto")
        train = loader(source, split="train")
        ev = loader(source, split="test")
        ev = ev.select(range(min(n_eval, len(ev))))
        return train, ev, 256, f"{kind} ({train.info.description})"
    train = make_task(kind, n_train, seq_len, seed, **data)
    ev = make_task(kind, n_eval, seq_len, seed + 10**6, **data)
    return train, ev, task_vocab_size(kind, **data), f"task {kind} (T={seq_len}, {data})"


def announce_source(data: dict) -> str:
    """The line naming where the data comes from, printed before it loads. For an offline source (e.g.
    text `source: shakespeare`) it also sets HF_HUB_OFFLINE=1, so nothing waits on hub retries."""
    kind, source = data["task"], data.get("source", "auto")
    if kind == "dataset":
        return (f"[smt] data source: datasets corpus {data.get('path')!r} tokenised with {data.get('tokenizer')!r} "
                "(a local folder/files, or the hub when online)")
    if kind not in ("text",) + PIXEL_TASKS:
        return f"[smt] data source: built-in synthetic task {kind!r} (generated locally, no download)"
    if offline_source(data):
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        return f"[smt] data source: {kind} from {source!r} (offline; the hub is not contacted)"
    if source == "auto":
        return (f"[smt] data source: {kind} from 'auto' = the hub dataset when online, else the offline default "
                "(set data.source to the offline source, or HF_HUB_OFFLINE=1, to skip the hub)")
    return f"[smt] data source: {kind} from {source!r} (downloads from the hub)"


def build_models(config: dict, vocab, seq_len: int):
    """(student, teacher) of a config's `teacher` / `student` sections (SMTTeacherConfig / SMTRecurrentConfig
    arguments; the student copies vocab_size, hidden_size and memory_tokens from the teacher). Seed torch first for
    reproducible weights.

    Args:
        config: a mapping with optional `teacher` and `student` dicts (`student.backbone` defaults to transformer).
        vocab: a vocabulary size, or a tokenizer (sets vocab_size and the pad / bos / eos ids).
        seq_len: the teacher's `max_context_length` unless the teacher section sets it (at least 1).

    Raises:
        ValueError: a config value the SMT config classes reject (the message names the field).
    """
    from .configuration_smt import SMTRecurrentConfig, SMTTeacherConfig
    from .data import tokenizer_model_fields
    from .modeling_recurrent import SMTRecurrentForCausalLM
    from .modeling_teacher import SMTTeacherModel

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


def write_json(path: str, obj) -> None:
    """Write `obj` as indented JSON to `path`: written whole to `path + ".tmp"`, then renamed, so an interrupted
    write leaves the earlier file and a reader never sees half a file (the recipes' result JSONs)."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def machine() -> str:
    """One line naming this machine (CPU or GPU, torch version, threads): `smt_hf.hardware.describe_machine`."""
    from .hardware import describe_machine

    return describe_machine()


def phase_arguments(config: dict, seq_len: int, teacher_max_context: int) -> list:
    """SMTTrainingArguments for every phase, built (and checked) before any of them trains.

    Raises ConfigError naming the phase and the fix (a value SMTTrainingArguments rejects, a context_length longer
    than the teacher reads, sequences shorter than the phase's mode needs, a streamed dataset without max_steps)."""
    from .training_args import SMTTrainingArguments

    out_dir = config.get("output_dir", "outputs/smt")
    all_args = []
    for i, phase in enumerate(config["phases"]):
        kw = dict(config.get("common", {}))
        kw.update(phase)
        kw.setdefault("context_length", seq_len)
        kw.setdefault("report_to", "none")
        kw.setdefault("save_strategy", "no")
        kw["output_dir"] = os.path.join(out_dir, f"phase{i}_{kw.get('mode', 'joint')}")
        kw.setdefault("seed", config.get("seed", 0))
        try:
            args = SMTTrainingArguments(**kw)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"phases.{i}: {e}") from None
        from transformers.integrations import get_reporting_integration_callbacks

        try:  # an unknown or uninstalled logger fails here, not when its phase's trainer is built
            for callback in get_reporting_integration_callbacks(args.report_to):
                callback()
        except (ImportError, RuntimeError, ValueError) as e:
            raise ConfigError(f"phases.{i}: report_to={args.report_to}: {e}") from None
        if seq_len < args.min_sequence_length():  # (SMTTrainer checks it too: after the earlier phases trained)
            raise ConfigError(
                f"phases.{i}: mode={args.mode!r} needs sequences of >= {args.min_sequence_length()} tokens (context_length "
                f"{args.context_length}, rollout_length {args.rollout_length}, dmt_start {args.dmt_start!r}, split "
                f"{args.split!r}), the data has {seq_len}: raise data.seq_len or lower those lengths")
        if config.get("data", {}).get("streaming") and args.max_steps <= 0:
            raise ConfigError(f"phases.{i}: a streamed dataset has no length, so the phase needs max_steps > 0 "
                              f"(got {args.max_steps}); set --set phases.{i}.max_steps=N")
        if args.mode != "bptt" and args.context_length > teacher_max_context:
            raise ConfigError(
                f"phases.{i}: context_length={args.context_length} exceeds teacher.max_context_length="
                f"{teacher_max_context}; set --set teacher.max_context_length={args.context_length} "
                f"or lower the context (--set common.context_length={teacher_max_context})")
        all_args.append(args)
    return all_args


# ----------------------------------------------------------------------------- main
def run_config(config: dict) -> dict:
    """Run every phase of a config (validated first, see `smt_hf.recipe_config`) and return the summary dict.

    Writes `<output_dir>/final/{student,teacher}` and `<output_dir>/summary.json`; the summary holds the config, the
    data description, the machine, one entry per phase (mode, steps, seconds, `SMTTrainer.last_eval`) and a greedy
    sample of the standalone student reloaded from disk with no teacher.

    Raises ConfigError (before anything trains) for a key, value or phase setting that cannot work."""
    config = validate_config(config)
    import torch

    from .modeling_recurrent import SMTRecurrentForCausalLM
    from .tokenization_smt import SMTByteTokenizer
    from .trainer import SMTTrainer

    out_dir = config.get("output_dir", "outputs/smt")
    seed = config.get("seed", 0)
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    torch.manual_seed(seed)
    print(announce_source(config["data"]), flush=True)
    try:  # a file, column, tokenizer or size that cannot work: a usage error naming the section, not a traceback
        train, ev, vocab, data_desc = build_data(config["data"])
    except (ValueError, OSError) as e:
        raise ConfigError(f"data: {e}") from e
    seq_len = len(next(iter(train))["input_ids"])  # (iter: a streamed dataset has no [0])
    try:
        student, teacher = build_models(config, vocab, seq_len)
    except ValueError as e:
        raise ConfigError(f"teacher / student: {e}") from e
    all_args = phase_arguments(config, seq_len, teacher.config.max_context_length)
    # the byte tokenizer for byte text only (not for pixels, nor a synthetic task that happens to have 256 tokens)
    byte_text = isinstance(vocab, int) and config["data"]["task"] == "text"
    tokenizer = SMTByteTokenizer() if byte_text else None if isinstance(vocab, int) else vocab
    n_train = len(train) if hasattr(train, "__len__") else "streamed"
    print(f"[smt] data: {data_desc}; train {n_train} / eval {len(ev)} sequences of {seq_len} tokens")
    print(f"[smt] student ({student.config.backbone}): {student.num_parameters():,} params; teacher: {teacher.num_parameters():,}")
    print(f"[smt] machine: {machine()}")
    summary = {"config": config, "data": data_desc, "machine": machine(), "phases": []}
    for i, args in enumerate(all_args):
        trainer = SMTTrainer(
            model=student, teacher=None if args.mode == "bptt" else teacher, args=args,
            train_dataset=train, eval_dataset=ev, processing_class=tokenizer,
        )
        t0 = time.time()
        trainer.train()
        seconds = time.time() - t0
        trainer.evaluate()  # (sets trainer.last_eval: the metrics without the eval_ prefix)
        summary["phases"].append(
            {"mode": args.mode, "dmt_gradient": args.dmt_gradient if args.mode == "dmt" else None,
             "steps": trainer.state.global_step, "seconds": round(seconds, 1),
             "eval": {k: v for k, v in trainer.last_eval.items()}}
        )
        print(f"[smt] phase {i} ({args.mode}): {trainer.state.global_step} steps in {seconds:.0f}s; "
              + ", ".join(f"{k}={v:.3f}" for k, v in trainer.last_eval.items() if isinstance(v, float)))
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
        for key in ("prompt", "continuation", "reference"):
            summary["sample"][f"{key}_text"] = tokenizer.decode(summary["sample"][key])
    print_table(summary)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    print(f"[smt] saved standalone student to {final} (load with `import smt_hf` then "
          "AutoModelForCausalLM.from_pretrained) and summary.json")
    return summary


def _tokens(ids: list) -> str:
    if len(ids) <= 2 * SAMPLE_EDGE:
        return str(ids)
    return f"{ids[:SAMPLE_EDGE]} ... ({len(ids) - 2 * SAMPLE_EDGE} more) ... {ids[-SAMPLE_EDGE:]}"


def format_sample(sample: dict) -> str:
    """One line that shows the prompt, the standalone student's generation and the reference apart.

    Text samples are decoded (`prompt_text` / `continuation_text` / `reference_text`); token samples
    print the whole prompt (its first and last SAMPLE_EDGE tokens when longer), so a needle task's
    key and query can be checked by eye."""
    if "continuation_text" in sample:
        return (f"prompt: {sample['prompt_text']!r} | generated: {sample['continuation_text']!r} | "
                f"reference: {sample['reference_text']!r}")
    return (f"prompt: {_tokens(sample['prompt'])} | generated: {_tokens(sample['continuation'])} | "
            f"reference: {_tokens(sample['reference'])}")


def print_table(summary: dict) -> None:
    """Print a run summary (`run_config`'s) as a markdown table, one row per phase, then its sample line."""
    cols = ["teacher_acc", "onestep_acc", "student_acc", "student_loss", "drift_mean"]
    print("\n| phase | DMT gradient | steps | seconds | " + " | ".join(cols) + " |")
    print("|---|---|---|---|" + "---|" * len(cols))
    names = {"one_step": "one_step (no BPTT)", "full_rollout": "full_rollout (truncated BPTT)"}
    for p in summary["phases"]:
        vals = [f"{p['eval'][c]:.3f}" if c in p["eval"] else "-" for c in cols]
        grad = names.get(p.get("dmt_gradient"), "-")
        print(f"| {p['mode']} | {grad} | {p['steps']} | {p['seconds']} | " + " | ".join(vals) + " |")
    if summary.get("sample"):
        print(f"\nsample (standalone student, greedy): {format_sample(summary['sample'])}")
