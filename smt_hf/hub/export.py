"""Export a student or teacher as a self-contained Hub folder that loads without `smt_hf` installed.

    export_for_hub(student, "out/")   # then, anywhere with transformers + torch:
    AutoModelForCausalLM.from_pretrained("out/", trust_remote_code=True)

The folder holds `config.json` (with `auto_map`), `model.safetensors`, `generation_config.json` (student),
the tokenizer files (with their own `auto_map`), a `README.md` model card, and FLAT copies of the
package's code: `smt_hf/backbones/gru.py` becomes `backbones_gru.py`, `smt_hf/backbones/__init__.py`
becomes `backbones.py`, and every relative import is rewritten to `from .<flat_name> import ...`.
transformers' dynamic-module loader follows such single-dot imports among files of one folder.

Nothing here calls `register_for_auto_class()` (it would mark the in-memory model as remote code and
copy the package modules with their subpackage imports broken); the shipped files never call
`Auto*.register` (that would override `auto_map`).

Cards and `model_kind` come from `smt_hf.hub.card`, the upload from `smt_hf.hub.push` (one way: neither
imports this module). `push_trainer` is what `SMTTrainer.push_to_hub` calls. Importable as `smt_hf.export` too.

CLI: `smt-export --model PATH --out DIR [--part student|teacher] [--run-info run.json] [--push --repo-id USER/NAME]`;
PATH is a `save_pretrained` folder or an SMTTrainer output folder (e.g. `outputs/needle_cpu/final`).
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .card import MODEL_KINDS, RUN_INFO_KEYS, _version, folder_run_info, make_model_card, model_kind  # noqa: F401  (re-exported)
from .push import push_folder

logger = logging.getLogger(__name__)

PACKAGE = "smt_hf"
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # smt_hf/

# What each exported kind exposes through `auto_map`: Auto class -> (package module, class name).
AUTO_MAP = {
    "student": {
        "AutoConfig": ("smt_hf.configuration_smt", "SMTRecurrentConfig"),
        "AutoModel": ("smt_hf.modeling_recurrent", "SMTRecurrentForCausalLM"),
        "AutoModelForCausalLM": ("smt_hf.modeling_recurrent", "SMTRecurrentForCausalLM"),
    },
    "teacher": {
        "AutoConfig": ("smt_hf.configuration_smt", "SMTTeacherConfig"),
        "AutoModel": ("smt_hf.modeling_teacher", "SMTTeacherModel"),
    },
}
TOKENIZER_ENTRY = ("smt_hf.tokenization_smt", "SMTByteTokenizer")

_FROM_IMPORT = re.compile(r"^(?P<indent>[ \t]*)from[ \t]+(?P<module>\.+[\w.]*|smt_hf(?:\.[\w.]+)?)[ \t]+import\b", re.M)
_PLAIN_IMPORT = re.compile(r"^[ \t]*import[ \t]+smt_hf\b", re.M)
_REGISTER_CALL = re.compile(r"\bAuto\w+\.register\s*\(")
_HEADER = "# Exported from "  # first line of every shipped code file (marks files a re-export may replace)


# ----------------------------------------------------------------------------------------------- code
def flat_module_name(dotted: str) -> str:
    """`smt_hf.backbones.gru` -> `backbones_gru`; `smt_hf.backbones` (a package) -> `backbones`."""
    if dotted != PACKAGE and not dotted.startswith(PACKAGE + "."):
        raise ValueError(f"{dotted!r} is not a module of the {PACKAGE} package.")
    parts = dotted.split(".")[1:]
    if not parts:
        raise ValueError(f"Cannot ship the package root {PACKAGE!r} itself (its __init__ registers Auto classes).")
    return "_".join(parts)


def _source_path(dotted: str) -> tuple[Path, bool]:
    """(file, is_package) of a package module."""
    rel = Path(*dotted.split(".")[1:])
    pkg_init = PACKAGE_DIR / rel / "__init__.py"
    if pkg_init.is_file():
        return pkg_init, True
    module = PACKAGE_DIR / rel.with_suffix(".py")
    if module.is_file():
        return module, False
    raise FileNotFoundError(f"No source file for module {dotted!r} under {PACKAGE_DIR}.")


def _absolute(importer: str, importer_is_package: bool, module: str) -> str:
    """Resolve the module part of `from <module> import` (relative or absolute) to a dotted name."""
    if not module.startswith("."):
        return module
    level = len(module) - len(module.lstrip("."))
    rest = module[level:]
    base = importer.split(".") if importer_is_package else importer.split(".")[:-1]
    if level - 1 > len(base) - 1:
        raise ValueError(f"Relative import {module!r} in {importer} goes above the {PACKAGE} package.")
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([rest] if rest else []))


def flatten_source(dotted: str) -> tuple[str, list[str]]:
    """The source of one package module with its package imports rewritten flat.

    Returns (text, dotted names of the package modules it imports). Raises ValueError for what a flat
    folder cannot express: `from . import x`, `import smt_hf...`, and `Auto*.register(...)` calls.
    """
    path, is_pkg = _source_path(dotted)
    text = path.read_text(encoding="utf-8")
    ast.parse(text)  # fail early on a broken file
    if _PLAIN_IMPORT.search(text):
        raise ValueError(f"{path}: `import smt_hf...` cannot be flattened; use `from .module import name` instead.")
    if _REGISTER_CALL.search(text):
        raise ValueError(
            f"{path} calls Auto*.register(...): shipped remote code must not register Auto classes (it overrides "
            "`auto_map`). Move the registration to smt_hf/__init__.py."
        )
    deps: list[str] = []

    def rewrite(match: re.Match) -> str:
        if not match["module"].strip("."):
            raise ValueError(
                f"{path}: `from {match['module']} import <module>` cannot be flattened; write "
                "`from .<module> import <name>` instead."
            )
        target = _absolute(dotted, is_pkg, match["module"])
        if target == PACKAGE:
            raise ValueError(
                f"{path}: `from {match['module']} import ...` imports from the package root; import from the "
                "defining module instead (e.g. `from .configuration_smt import SMTRecurrentConfig`)."
            )
        if not target.startswith(PACKAGE + "."):
            raise ValueError(f"{path}: relative import {match['module']!r} resolves outside {PACKAGE}: {target!r}.")
        deps.append(target)
        return f"{match['indent']}from .{flat_module_name(target)} import"

    text = _FROM_IMPORT.sub(rewrite, text)
    rel = path.relative_to(PACKAGE_DIR.parent).as_posix()
    header = f"{_HEADER}{rel} by smt_hf.export (smt-hf {_version()}); edit the package, not this copy.\n"
    return header + text, deps


def collect_code(entry_modules: list[str]) -> dict[str, str]:
    """Flat file name -> rewritten source, for the entry modules and everything they import from the package."""
    files: dict[str, str] = {}
    todo, seen = list(entry_modules), set()
    while todo:
        dotted = todo.pop()
        if dotted in seen:
            continue
        seen.add(dotted)
        text, deps = flatten_source(dotted)
        files[flat_module_name(dotted) + ".py"] = text
        todo.extend(deps)
    return files


# ----------------------------------------------------------------------------------------------- export
@dataclass
class ExportedFolder:
    """What `export_for_hub` wrote: the folder, the model kind, the code files and (when pushed) the commit."""

    path: Path
    kind: str
    code_files: list[str]
    commit: object | None = None

    def __fspath__(self) -> str:
        return str(self.path)


def _update_json(path: Path, **fields) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(fields)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _default_tokenizer(model):
    """The byte tokenizer for byte-vocabulary models (V = 256); None otherwise (synthetic-task vocabularies)."""
    if getattr(model.config, "vocab_size", None) == 256:
        from ..tokenization_smt import SMTByteTokenizer

        return SMTByteTokenizer()
    logger.info("vocab_size=%s is not the byte vocabulary: no tokenizer exported.", model.config.vocab_size)
    return None


_OPTIONAL_FILES = ("generation_config.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.json")


def _remove_previous_export(out: Path) -> None:
    """Delete what an earlier export may have written but this one might not (so no stale auto_map survives)."""
    for py in out.glob("*.py"):
        with open(py, encoding="utf-8", errors="replace") as f:
            if f.readline().startswith(_HEADER):
                py.unlink()
    for name in _OPTIONAL_FILES:
        (out / name).unlink(missing_ok=True)


def _plot_files(run_info: dict, out: Path) -> list[tuple[Path, Path]]:
    """(source, destination) of the run's plot files, checked before anything is written: relative paths (to
    `run_info["run_dir"]`, else the current folder) keep their relative location, absolute ones go to `plots/`.
    A missing file raises FileNotFoundError; a relative path leaving the export folder ('..') raises ValueError (it
    was copied outside it, and the card linked a file the Hub repo would not have)."""
    base, files = Path(run_info.get("run_dir") or "."), []
    for plot in run_info.get("plots") or []:
        if "://" in str(plot["path"] if isinstance(plot, dict) else plot):
            raise ValueError(f"Plot {plot!r}: give a local file (copied into the export), not a URL.")
        rel = Path(plot["path"] if isinstance(plot, dict) else plot)
        src = rel if rel.is_absolute() else base / rel
        dst = out / "plots" / rel.name if rel.is_absolute() else out / rel
        if not rel.is_absolute() and ".." in rel.parts:
            raise ValueError(f"Plot path {rel} leaves the export folder: give it without '..' (relative to "
                             "run_info['run_dir']) or as an absolute path (copied to plots/).")
        if not src.is_file():
            raise FileNotFoundError(f"Plot {src} does not exist; fix run_info['plots'] or set run_info['run_dir'].")
        files.append((src, dst))
    return files


def _copy_plots(files: list[tuple[Path, Path]]) -> None:
    for src, dst in files:
        if src.resolve() != dst.resolve():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def export_for_hub(
    model,
    save_directory: str | Path,
    tokenizer=None,
    generation_config=None,
    run_info: dict | None = None,
    push_to_hub: bool = False,
    repo_id: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    blocking: bool = True,
) -> ExportedFolder:
    """Write a folder that loads with `trust_remote_code=True` and no `smt_hf` (and optionally push it).

    Args:
        model: an `SMTRecurrentForCausalLM` (student) or `SMTTeacherModel` (teacher). Merge LoRA adapters first.
        save_directory: the folder to write. Files a previous export wrote there (code files carrying the export
            header, tokenizer and generation configs) are removed first; other files are left alone.
        tokenizer: tokenizer to ship; `None` ships `SMTByteTokenizer` for byte models (vocab_size 256) and
            nothing otherwise; `False` ships none. An `SMTByteTokenizer` also ships its code and `auto_map`.
        generation_config: a `GenerationConfig` to write instead of the model's own (students only).
        run_info: a run summary dict (see `model_cards/examples/`) for the model card; a minimal card otherwise.
        push_to_hub, repo_id, private, token, commit_message, revision, blocking: upload the folder with one
            `huggingface_hub.HfApi.create_commit` after writing it (`repo_id` is required; `push_folder`).
    Returns:
        An [`ExportedFolder`] (path-like): the folder, kind, code files and the commit info when pushed.
    """
    kind = model_kind(model)
    if push_to_hub and not repo_id:
        raise ValueError("push_to_hub=True needs `repo_id='user/name'`.")
    if generation_config is not None and kind != "student":
        raise ValueError("Only the student generates; drop `generation_config` when exporting a teacher.")
    out = Path(save_directory)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder.")
    plots = _plot_files(run_info or {}, out)  # before anything is written: no half export
    out.mkdir(parents=True, exist_ok=True)
    _remove_previous_export(out)

    # 1. weights, config (+ generation config for the student)
    model.save_pretrained(out)
    entries = AUTO_MAP[kind]
    auto_map = {auto: f"{flat_module_name(mod)}.{cls}" for auto, (mod, cls) in entries.items()}
    _update_json(out / "config.json", auto_map=auto_map)
    if generation_config is not None:
        generation_config.save_pretrained(out)

    # 2. tokenizer (+ its auto_map when it is ours)
    code_modules = sorted({mod for mod, _ in entries.values()})
    if tokenizer is None:
        tokenizer = _default_tokenizer(model)
    elif tokenizer is False:
        tokenizer = None
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
        if type(tokenizer).__name__ == TOKENIZER_ENTRY[1]:
            mod, cls = TOKENIZER_ENTRY
            code_modules.append(mod)
            _update_json(out / "tokenizer_config.json", auto_map={"AutoTokenizer": [f"{flat_module_name(mod)}.{cls}", None]})

    # 3. flat code
    code = collect_code(code_modules)
    for name, text in sorted(code.items()):
        (out / name).write_text(text, encoding="utf-8")

    # 4. model card (+ the plot files it links to)
    _copy_plots(plots)
    card = make_model_card(run_info or {}, model=model, kind=kind, has_tokenizer=tokenizer is not None)
    card.save(str(out / "README.md"))

    result = ExportedFolder(path=out, kind=kind, code_files=sorted(code))
    if push_to_hub:
        result.commit = push_folder(out, repo_id, private=private, token=token, commit_message=commit_message,
                                    revision=revision, blocking=blocking)
    return result


def export_dir(trainer, part: str = "student") -> str:
    """Where a trainer's pushes write the exported `part` before uploading it: `<output_dir>/hub_export/<part>`."""
    return os.path.join(trainer.args.output_dir, "hub_export", part)


def push_target(trainer, repo_id: str | None = None) -> str:
    """The repo `push_trainer` pushes to: `repo_id`, else `args.hub_model_id`, else the repo `Trainer` created for
    `push_to_hub=True` (`trainer.hub_model_id`). ValueError for a PEFT student or when there is none (every process
    can check this: it reads no file and calls no collective)."""
    if getattr(trainer, "peft_student", None) is not None:
        raise ValueError("This trainer's student is a PeftModel: push the adapter with "
                         "`trainer.peft_student.push_to_hub(repo_id)`, or the merged student with "
                         "`export_for_hub(trainer.peft_student.merge_and_unload(), folder, push_to_hub=True, ...)`.")
    repo_id = repo_id or trainer.args.hub_model_id or getattr(trainer, "hub_model_id", None)
    if not repo_id:
        raise ValueError("push_to_hub needs `repo_id` or `SMTTrainingArguments(hub_model_id=...)`.")
    return repo_id


def push_trainer(trainer, repo_id: str | None = None, commit_message: str = "End of training", private=None,
                 token=None, push_teacher: bool = False, run_info: dict | None = None, revision: str | None = None,
                 blocking: bool = True):
    """Push an `SMTTrainer`'s standalone student as a self-contained Hub repo (config with `auto_map`, safetensors,
    code, tokenizer, generation config and a model card), and optionally the teacher to `<repo_id>-teacher`.

    The folders are written under `<output_dir>/hub_export/{student,teacher}` first. As the HF Trainer's
    `push_to_hub`: `token`, `private` and `revision` default to the arguments' `hub_token`, `hub_private_repo` and
    `hub_revision`; `repo_id` as `push_target` says (ValueError there). `blocking=False` returns the student's upload
    as a `Future` (it reads the export folder while it runs; the teacher's, with `push_teacher`, is done first).
    Returns the student's `CommitInfo`."""
    repo_id = push_target(trainer, repo_id)
    a = trainer.args
    hub = dict(private=a.hub_private_repo if private is None else private, token=a.hub_token if token is None else token,
               revision=a.hub_revision if revision is None else revision, commit_message=commit_message)
    trainer.sync_readout()  # smt/joint: the student's readout and m_0 are the current teacher's
    info = trainer.run_info(**(run_info or {}))
    if push_teacher and trainer.teacher is not None:
        export_for_hub(trainer.teacher, export_dir(trainer, "teacher"), tokenizer=False, run_info=info,
                       push_to_hub=True, repo_id=f"{repo_id}-teacher", **hub)
    out = export_for_hub(trainer.student, export_dir(trainer, "student"), tokenizer=trainer.processing_class,
                         run_info=info, push_to_hub=True, repo_id=repo_id, blocking=blocking, **hub)
    return out.commit


def model_folder(path: str | Path, part: str = "student") -> Path:
    """The folder holding `config.json`: `path` itself (a `save_pretrained` folder) or, for an `SMTTrainer`
    output (`trainer.save_model(dir)` / `<output_dir>/final` / a `checkpoint-N`), its `student/` or `teacher/`
    sub-folder, chosen by `part`. Raises FileNotFoundError naming the folders that would work."""
    if part not in ("student", "teacher"):
        raise ValueError(f"part must be 'student' or 'teacher', got {part!r}.")
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    if (path / part / "config.json").is_file():
        return path / part
    for adapter in (path / "adapter_config.json", path / part / "adapter_config.json"):
        if adapter.is_file():
            raise FileNotFoundError(
                f"{adapter.parent} holds a PEFT adapter (a PEFT student's checkpoint), not a model: merge it first, "
                "`PeftModel.from_pretrained(SMTRecurrentForCausalLM.from_pretrained(base), folder).merge_and_unload()"
                ".save_pretrained(merged)`, and export the merged folder.")
    found = [str(p.parent) for p in sorted(path.glob("*/config.json"))] if path.is_dir() else []
    raise FileNotFoundError(
        f"{path} has no config.json{' and no ' + part + '/config.json' if path.is_dir() else ' (no such folder)'}: "
        "pass a folder written by save_pretrained, or an SMTTrainer output folder (holding student/ and teacher/)"
        + (f"; folders here that would work: {', '.join(found)}" if found else ".")
    )


def load_model(path: str | Path, part: str = "student"):
    """Load a saved student or teacher folder with the package's own classes (no remote code).

    `path` is a `save_pretrained` folder or an SMTTrainer output folder (then its `part` sub-folder is used);
    see `model_folder`."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from .. import SMTRecurrentConfig  # noqa: F401  (registers the Auto classes)

    path = model_folder(path, part)
    config = AutoConfig.from_pretrained(path)
    if config.model_type == "smt_recurrent":
        return AutoModelForCausalLM.from_pretrained(path)
    if config.model_type == "smt_teacher":
        return AutoModel.from_pretrained(path)
    raise ValueError(f"{path} holds a {config.model_type!r} model; smt-export exports smt_recurrent or smt_teacher.")


def main(argv: list[str] | None = None) -> int:
    """`smt-export --model PATH --out DIR`: export a saved student/teacher folder for the Hub."""
    parser = argparse.ArgumentParser(prog="smt-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True,
                        help="folder written by save_pretrained, or an SMTTrainer output folder such as <output_dir>/final "
                             "(its student/ sub-folder is exported; --part teacher for the teacher)")
    parser.add_argument("--part", choices=("student", "teacher"), default=None,
                        help="which model of an SMTTrainer output folder to export (default: student); with a "
                             "save_pretrained folder, it must name that folder's model")
    parser.add_argument("--out", required=True, help="folder to write the Hub export to")
    parser.add_argument("--run-info", help="run summary JSON for the model card (see model_cards/examples/); default: "
                        "the training settings (and a checkpoint's log history) of an SMTTrainer output folder")
    parser.add_argument("--no-tokenizer", action="store_true", help="ship no tokenizer")
    parser.add_argument("--push", action="store_true", help="upload the folder after writing it")
    parser.add_argument("--repo-id", help="Hub repository for --push, e.g. user/smt-student")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    args = parser.parse_args(argv)
    if args.push and not args.repo_id:
        parser.error("--push needs --repo-id (e.g. user/smt-student)")
    if args.private and not args.push:
        parser.error("--private sets the visibility of the repository --push creates: give it with --push")
    if not args.out.strip():
        parser.error("--out must name a folder")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    run_info = None
    if args.run_info:
        try:
            run_info = json.loads(Path(args.run_info).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            parser.error(f"--run-info {args.run_info}: {e}")
        if not isinstance(run_info, dict):
            parser.error(f"--run-info {args.run_info}: a JSON object is expected (see model_cards/examples/)")
        read = RUN_INFO_KEYS - {"config", "kind"}  # (the exported model's own config and kind are used)
        if run_info and not set(run_info) & read:
            hint = ""
            if "rows" in run_info and "task" in run_info:
                hint = " (a recipes/needle_e2e.py JSON: its card is `python model_cards/generate_card.py JSON --e2e`)"
            elif "phases" in run_info:
                hint = (" (a recipes/smt.py summary.json: merge it into a run summary with `python "
                        "model_cards/generate_card.py CARD.json --summary SUMMARY --run-info-out RUN_INFO.json`)")
            parser.error(f"--run-info {args.run_info} has none of the run-summary keys the model card reads for a "
                         f"model ({', '.join(sorted(read))}){hint}; see model_cards/examples/")

    from transformers import AutoTokenizer

    part = args.part or "student"
    try:  # an explicit --part names the sub-folder even where the folder itself was exported into
        folder = Path(args.model) / part if args.part and (Path(args.model) / part / "config.json").is_file() \
            else model_folder(args.model, part)
    except FileNotFoundError as e:
        parser.error(str(e))
    model = load_model(folder)
    if args.part and model_kind(model) != args.part:
        parser.error(f"--model {folder} holds the {model_kind(model)}, not the {args.part} that --part names")
    if run_info is None:  # an SMTTrainer output folder (or its student/ or teacher/): the card names its training
        run_dir = folder.parent if folder.name in ("student", "teacher") else folder
        try:
            run_info = folder_run_info(run_dir)
        except ValueError as e:
            parser.error(str(e))
        if run_info is not None:
            print(f"model card: training settings from {run_dir / 'smt_training_args.json'}")
    tokenizer = False if args.no_tokenizer else None
    if tokenizer is None and (folder / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(folder)
    result = export_for_hub(
        model, args.out, tokenizer=tokenizer, run_info=run_info, push_to_hub=args.push, repo_id=args.repo_id,
        private=args.private or None,
    )
    print(f"exported {result.kind} to {result.path}: {', '.join(sorted(p.name for p in result.path.iterdir()))}")
    if result.commit is not None:
        print(f"pushed: {getattr(result.commit, 'commit_url', result.commit)}")
    return 0


__all__ = ["export_for_hub", "ExportedFolder", "collect_code", "flatten_source", "flat_module_name", "load_model",
           "model_folder", "push_trainer", "main"]


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
