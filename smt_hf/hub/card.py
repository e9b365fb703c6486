"""Model cards and run summaries: the bottom layer of `smt_hf.hub` (it imports no other hub module).

`make_model_card(run_info, model=...)` fills `smt_hf/hub/model_card.md` (a Jinja template for
`huggingface_hub.ModelCard.from_template`) from a run summary and the model's config, with `model-index`
metadata built from `ModelCardData(eval_results=[EvalResult(...)])`.

A run summary (`run_info`) is a dict; every key is optional. `trainer_run_info(trainer, **extra)` (what
`SMTTrainer.run_info` returns) gives `eval`, `log_history` and `training`; `save_summary(trainer, path, **extra)`
(`SMTTrainer.save_summary`) writes `eval` and `log_history` as JSON; recipes add the rest as `extra`.
See `model_cards/examples/`.

    model_name   str    card title and model-index name
    repo_id      str    shown in the usage snippet
    kind         str    "student" | "teacher" (taken from the model when one is given)
    description  str    a paragraph under the title
    config       dict   model config (taken from the model when one is given)
    dataset      dict   name, id (Hub id), source (URL or how it was built), split, notes
    training     dict   mode ("smt" | "dmt" | "joint" | "bptt" | "smt+dmt"), steps, stages [{mode, steps,
                        dmt_gradient?}], dmt_gradient (for "dmt"),
                        batch_size, learning_rate, context_length, teacher, wall_time, ...
    hardware     str    e.g. "1x NVIDIA H200"
    eval         dict   metric -> number (lists such as drift curves are skipped)
    samples      list   {prompt, output, settings}
    plots        list   {path, caption}; paths relative to the card (export copies them to plots/)
    limitations  list   extra lines for the Limitations section
    license, tags, language
    log_history  list   trainer log; the last "step" fills training.steps when that is missing
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

# The run-summary keys the card reads (the table above, plus `run_dir`: where relative plot paths are found).
RUN_INFO_KEYS = frozenset({
    "model_name", "repo_id", "kind", "description", "config", "dataset", "training", "hardware", "eval", "samples",
    "plots", "limitations", "license", "tags", "language", "log_history", "run_dir",
})

# The SMTTrainingArguments fields `training_summary` reads (the DMT ones only in mode "dmt").
DMT_TRAINING_KEYS = ("dmt_gradient", "dmt_stride", "rollout_length", "dmt_matched_steps")
TRAINING_KEYS = ("mode", "learning_rate", "per_device_train_batch_size", "context_length", "future_length",
                 *DMT_TRAINING_KEYS)

# What each model class is, for cards and exports (matched by class name, so remote-code copies count too).
MODEL_KINDS = {"SMTRecurrentForCausalLM": "student", "SMTTeacherModel": "teacher"}
TEMPLATE_PATH = Path(__file__).resolve().parent / "model_card.md"

# Known evaluation keys (SMTTrainer / smt_hf.evaluation.summarize) -> (metric type, readable name).
METRIC_NAMES = {
    "student_loss": ("loss", "Standalone student loss (nats/token, teacher-forced rollout from m_0)"),
    "student_bits": ("bits_per_byte", "Standalone student bits per byte"),
    "student_acc": ("accuracy", "Standalone student accuracy at target positions"),
    "teacher_loss": ("loss", "Teacher loss (nats/token, first decoder step)"),
    "teacher_acc": ("accuracy", "Teacher accuracy at target positions"),
    "onestep_acc": ("accuracy", "Student one step from the teacher's memory, accuracy"),
    "drift_mean": ("rollout_drift", "Rollout drift 1-R^2, mean over steps"),
    "drift_last": ("rollout_drift", "Rollout drift 1-R^2, last step"),
    "perplexity": ("perplexity", "Perplexity"),
}

STUDENT_LIMITS = [
    "Needs the teacher only for training: this standalone student generates from its stored initial memory "
    "m_0 (the teacher's empty-context memory) with no teacher at inference.",
    "The whole state is a fixed-size memory; information beyond what it holds is lost, and quality on "
    "sequences longer than those seen in training is not guaranteed.",
    "Generation is one recurrent step per token (no parallel prefill without the teacher encoder).",
]
PREFILL_LIMIT = ("Generation is one recurrent step per token; the parallel prefill reads only the prompt's last "
                 "context-length tokens (earlier ones are dropped).")
TEACHER_LIMITS = [
    "A training-time model: it encodes at most `max_context_length` tokens into a memory and decodes a "
    "short future from it; it is not a `generate()` language model.",
    "Its memories are the supervision targets of the student; its empty-context memory initialises the student.",
]


def _fence(text: str) -> str:
    """A backtick fence longer than any backtick run inside `text`."""
    longest = max((len(run) for run in text.split("\n") for run in _backtick_runs(run)), default=0)
    return "`" * max(3, longest + 1)


def _backtick_runs(line: str) -> list[str]:
    runs, cur = [], ""
    for ch in line:
        if ch == "`":
            cur += ch
        elif cur:
            runs.append(cur)
            cur = ""
    return runs + ([cur] if cur else [])


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def _config_dict(run_info: dict, model) -> dict:
    if model is not None:
        cfg = model.config.to_diff_dict()
    else:
        cfg = dict(run_info.get("config") or {})
    return {k: v for k, v in cfg.items() if v is not None and k not in ("transformers_version", "auto_map", "architectures")}


def _prefill_context_length(config: dict) -> int | None:
    """Tc of the carried prefill encoder (the `prefill_encoder` sub-config, or the flat `prefill_*` keys of a config
    written before it), None without one."""
    encoder = config.get("prefill_encoder")
    if isinstance(encoder, dict):
        return encoder.get("context_length")
    return config.get("prefill_context_length") if config.get("prefill_layers") else None


def _config_rows(config: dict) -> list[tuple[str, object]]:
    """(key, value) rows of the card's configuration table, a sub-config's fields as `name.field` rows."""
    rows = []
    for key, value in config.items():
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", v) for k, v in value.items() if k not in ("model_type", "dtype")]
        else:
            rows.append((key, value))
    return sorted(rows)


def _training_text(training: dict, log_history: list | None) -> tuple[str, int | None]:
    training = dict(training or {})
    steps = training.get("steps")
    if steps is None and log_history:
        steps = max((e.get("step", 0) for e in log_history if isinstance(e, dict)), default=None)
    lines = []
    mode = training.pop("mode", None)
    lines.append(f"- **Mode:** {mode or 'not recorded'}")
    lines.append(f"- **Steps:** {steps if steps is not None else 'not recorded'}")
    training.pop("steps", None)
    for stage in training.pop("stages", []) or []:
        grad = stage.get("dmt_gradient")
        what = {"one_step": " (dmt_gradient=one_step: no gradient across steps, no BPTT)",
                "full_rollout": " (dmt_gradient=full_rollout: gradient through the rollout, i.e. truncated BPTT)"}
        lines.append(f"  - stage `{stage.get('mode', '?')}`: {stage.get('steps', '?')} steps{what.get(grad, '')}")
    for key, value in training.items():
        lines.append(f"- **{key.replace('_', ' ')}:** {value}")
    return "\n".join(lines), steps


def _data_text(dataset: dict) -> str:
    if not dataset:
        return "Not recorded."
    lines = [f"- **Dataset:** {dataset.get('name') or dataset.get('id') or 'unnamed'}"]
    if dataset.get("id"):
        lines.append(f"- **Hub id:** `{dataset['id']}`")
    lines.append(f"- **Source:** {dataset.get('source', 'not recorded')}")
    for key in ("split", "size", "tokenization", "notes"):
        if dataset.get(key):
            lines.append(f"- **{key}:** {dataset[key]}")
    return "\n".join(lines)


def _plot_links(plots: list) -> list[dict]:
    out = []
    for plot in plots or []:
        path = str(plot["path"] if isinstance(plot, dict) else plot)
        caption = plot.get("caption", Path(path).stem) if isinstance(plot, dict) else Path(path).stem
        if "://" in path:
            raise ValueError(f"Plot {path!r}: use a path relative to the card (the file ships in the repo), not a URL.")
        if Path(path).is_absolute():
            path = f"plots/{Path(path).name}"  # export_for_hub copies the file there
        out.append({"path": Path(path).as_posix(), "caption": caption})
    return out


def eval_results(run_info: dict):
    """`huggingface_hub.EvalResult`s (the card's model-index) for the numeric entries of `run_info["eval"]`."""
    from huggingface_hub import EvalResult

    dataset = run_info.get("dataset") or {}
    kind = run_info.get("kind", "student")
    results = []
    for key, value in (run_info.get("eval") or {}).items():
        value = _number(value)
        if value is None:
            continue
        metric_type, metric_name = METRIC_NAMES.get(key, (key, key.replace("_", " ")))
        results.append(
            EvalResult(
                task_type="text-generation" if kind == "student" else "feature-extraction",
                dataset_type=dataset.get("id") or dataset.get("name") or "custom",
                dataset_name=dataset.get("name") or dataset.get("id") or "custom",
                dataset_split=dataset.get("split"),
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=value,
            )
        )
    return results


def make_model_card(
    run_info: dict, model=None, kind: str | None = None, template_path: str | Path | None = None, has_tokenizer: bool | None = None
):
    """A `huggingface_hub.ModelCard` from a run summary (see the module docstring) and, optionally, the model.

    Raises ValueError for an unknown `kind` or a plot given as a URL. Warns (UserWarning) naming the keys of
    `run_info` the card does not read (`RUN_INFO_KEYS` are the ones it does), so a misspelt or foreign summary is
    not silently dropped.
    """
    from huggingface_hub import ModelCard, ModelCardData

    run_info = dict(run_info or {})
    unused = sorted(set(run_info) - RUN_INFO_KEYS)
    if unused:
        warnings.warn(f"run_info keys the model card does not read: {', '.join(map(str, unused))} (it reads: "
                      f"{', '.join(sorted(RUN_INFO_KEYS))}; see smt_hf.hub.card)", UserWarning, stacklevel=2)
    if model is not None:
        kind = model_kind(model)
    kind = kind or run_info.get("kind", "student")
    if kind not in ("student", "teacher"):
        raise ValueError(f"kind must be 'student' or 'teacher', got {kind!r}.")
    run_info["kind"] = kind
    config = _config_dict(run_info, model)
    backbone = config.get("backbone")
    model_name = run_info.get("model_name") or (f"smt-{backbone}-student" if kind == "student" else "smt-teacher")
    dataset = run_info.get("dataset") or {}
    training_text, steps = _training_text(run_info.get("training"), run_info.get("log_history"))
    results = eval_results(run_info)
    tags = ["smt", "supervised-memory-training", "recurrent", "custom_code", f"smt-{kind}"]
    tags += [f"backbone-{backbone}"] if backbone else []
    tags += [t for t in run_info.get("tags", []) if t not in tags]
    card_data = ModelCardData(
        model_name=model_name,
        license=run_info.get("license", "apache-2.0"),
        language=run_info.get("language"),
        library_name="transformers",
        pipeline_tag="text-generation" if kind == "student" else None,
        tags=tags,
        datasets=[dataset["id"]] if dataset.get("id") else None,
        eval_results=results or None,
    )
    samples = []
    for s in run_info.get("samples") or []:
        output = str(s.get("output", ""))
        samples.append(
            {
                "prompt_inline": str(s.get("prompt", "")).replace("`", "'").replace("\n", "\\n"),
                "output": output,
                "fence": _fence(output),
                "settings": s.get("settings", ""),
            }
        )
    eval_rows = [(METRIC_NAMES.get(k, (k, k))[1], f"{v:.4g}") for k, v in (run_info.get("eval") or {}).items() if _number(v) is not None]
    hardware = run_info.get("hardware") or "not recorded"
    summary = (
        f"A recurrent student ({backbone} updater) trained with Supervised Memory Training: an RNN whose whole "
        f"state is a memory of {config.get('memory_tokens', 'K')} tokens of width {config.get('hidden_size', 'd')}."
        if kind == "student"
        else "An SMT teacher: an encoder with learned register tokens that compresses a context into a memory, and a "
        "causal decoder that predicts the future from it; it supervises the recurrent student."
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path or TEMPLATE_PATH),
        title=model_name,
        summary=summary,
        description=run_info.get("description", ""),
        kind=kind,
        repo_id=run_info.get("repo_id") or f"<user>/{model_name}",
        has_tokenizer=config.get("vocab_size") == 256 if has_tokenizer is None else has_tokenizer,
        example_prompt="Once upon a time",
        vocab_size=config.get("vocab_size", "V"),
        memory_tokens=config.get("memory_tokens", "K"),
        hidden_size=config.get("hidden_size", "d"),
        prefill_context_length=_prefill_context_length(config),
        prefill_default=config.get("prefill") or "recurrent",
        config_rows=_config_rows(config),
        data_text=_data_text(dataset),
        training_text=training_text,
        steps=steps,
        hardware=hardware,
        eval_rows=eval_rows,
        samples=samples,
        plots=_plot_links(run_info.get("plots")),
        limitations=([x if not (_prefill_context_length(config) and "parallel prefill" in x) else PREFILL_LIMIT
                      for x in STUDENT_LIMITS] if kind == "student" else TEACHER_LIMITS)
        + list(run_info.get("limitations") or []),
        package_version=_version(),
    )


def _version() -> str:
    """The package version: `smt_hf.__version__`, the one source (pyproject.toml reads it for the distribution)."""
    from .. import __version__

    return __version__


def model_kind(model) -> str:
    """"student" or "teacher"; raises a ValueError naming the fix for anything else (PEFT wrappers included)."""
    from ..peft_utils import has_adapter_layers, is_peft_model

    if is_peft_model(model):
        raise ValueError(
            "export_for_hub got a PEFT model: call `model = model.merge_and_unload()` first (the exported folder "
            "holds plain weights), or save the adapter alone with `model.save_pretrained(dir)`."
        )
    if hasattr(model, "modules") and has_adapter_layers(model):
        raise ValueError(
            "export_for_hub got a model with PEFT adapter layers in it (a PeftModel's get_base_model()?): export "
            "`peft_model.merge_and_unload()` (plain weights), or push the adapter alone with "
            "`peft_model.push_to_hub(...)`.")
    for cls in type(model).__mro__:
        if cls.__name__ in MODEL_KINDS:
            return MODEL_KINDS[cls.__name__]
    raise ValueError(
        f"export_for_hub exports SMTRecurrentForCausalLM (student) or SMTTeacherModel (teacher), got "
        f"{type(model).__name__}. Wrap an SMTRecurrentModel in SMTRecurrentForCausalLM first."
    )


def training_summary(args: dict, steps: int | None = None, world_size: int | None = None) -> dict:
    """The card's `training` entry from `SMTTrainingArguments` as a dict (`args.to_dict()`, or the
    `smt_training_args.json` an `SMTTrainer` writes with each checkpoint and `save_model`).

    `batch_size` is the global one when `world_size` is known, else the entry is `per_device_batch_size`. In `dmt` it
    names the gradient setting: one_step (no BPTT) or full_rollout (truncated BPTT)."""
    a = dict(args)
    info = {"mode": a.get("mode"), "steps": steps, "learning_rate": a.get("learning_rate")}
    if world_size is None:
        info["per_device_batch_size"] = a.get("per_device_train_batch_size")
    else:
        info["batch_size"] = a.get("per_device_train_batch_size") * world_size
    info.update(context_length=a.get("context_length"), future_length=a.get("future_length"))
    if a.get("mode") == "dmt":
        info.update({k: a.get(k) for k in DMT_TRAINING_KEYS})
    return info


def trainer_run_info(trainer, **extra) -> dict:
    """A run summary for `make_model_card` from an `SMTTrainer`: its last evaluation, log history and training
    settings (`training_summary`), updated with `extra`."""
    a = trainer.args
    info = {
        "eval": dict(trainer.last_eval),
        "log_history": trainer.state.log_history,
        "training": training_summary({k: getattr(a, k) for k in TRAINING_KEYS}, trainer.state.global_step,
                                     a.world_size),
    }
    info.update(extra)
    return info


def folder_run_info(folder: str | Path) -> dict | None:
    """A run summary from an `SMTTrainer` output folder (a `checkpoint-N`, or a `save_model` folder such as
    `<output_dir>/final`): `training` from its `smt_training_args.json`, `log_history` and the step from its
    `trainer_state.json` (checkpoints have one); settings missing from an older file are left out. None when the
    folder has no `smt_training_args.json`; ValueError naming a file that is not a JSON object."""
    folder = Path(folder)
    args_file, state_file = folder / "smt_training_args.json", folder / "trainer_state.json"
    if not args_file.is_file():
        return None
    args, state = (_json_object(f) if f.is_file() else {} for f in (args_file, state_file))
    training = {k: v for k, v in training_summary(args, state.get("global_step")).items() if v is not None}
    info = {"training": training}
    if isinstance(state.get("log_history"), list) and state["log_history"]:
        info["log_history"] = state["log_history"]
    return info


def _json_object(path: Path) -> dict:
    """The JSON object in `path`; ValueError naming the file for anything else."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): fix or remove it") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object: fix or remove it")
    return data


def save_summary(trainer, path: str, **extra) -> None:
    """Write an `SMTTrainer`'s last evaluation and log history (and `extra`) as JSON (used by recipes and cards)."""
    with open(path, "w") as f:
        json.dump({"eval": trainer.last_eval, "log_history": trainer.state.log_history, **extra}, f, indent=2, default=str)


__all__ = ["make_model_card", "RUN_INFO_KEYS", "eval_results", "model_kind", "trainer_run_info", "training_summary",
           "folder_run_info", "save_summary", "TEMPLATE_PATH", "METRIC_NAMES", "MODEL_KINDS"]
