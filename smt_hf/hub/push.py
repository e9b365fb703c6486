"""Uploads to the Hub: a folder in one commit (`push_folder`, `commit_folder`). Imports only `card`; `export` builds on it."""

from __future__ import annotations

from pathlib import Path

from .card import _version

_API = None


def hub_api():
    """The one `HfApi` of this package (created on first use): its worker thread runs background commits
    (`blocking=False`) one at a time, in order, as transformers' shared `hf_api()` does for the Trainer."""
    global _API
    if _API is None:
        from huggingface_hub import HfApi

        _API = HfApi(library_name="smt-hf", library_version=_version())
    return _API


def push_folder(folder: str | Path, repo_id: str, private: bool | None = None, token=None, commit_message: str | None = None,
                revision: str | None = None, blocking: bool = True):
    """Create `repo_id` if needed and upload every file under `folder` (an export: it must hold config.json) in ONE
    commit: `commit_folder`. Returns the `CommitInfo`, or with `blocking=False` a `Future` of it."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: write it with export_for_hub(model, folder) first.")
    repo_id = hub_api().create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    return commit_folder(folder, repo_id, token=token, commit_message=commit_message or "Upload SMT model (smt_hf.export)",
                         revision=revision, blocking=blocking)


def commit_folder(folder: str | Path, repo_id: str, path_in_repo: str = "", token=None, commit_message: str = "Upload",
                  revision: str | None = None, blocking: bool = True):
    """Upload every file under `folder` (at `path_in_repo` in the repo) in ONE `HfApi.create_commit`, the call
    transformers' `push_to_hub` makes, to branch `revision` (default: main). Returns the `CommitInfo`, or with
    `blocking=False` a `Future` of it (the files are read while it uploads: leave `folder` alone until done)."""
    from huggingface_hub import CommitOperationAdd

    folder = Path(folder)
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
    )
    prefix = f"{path_in_repo.strip('/')}/" if path_in_repo.strip("/") else ""
    operations = [CommitOperationAdd(path_in_repo=prefix + p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                  for p in files]
    return hub_api().create_commit(repo_id=repo_id, operations=operations, commit_message=commit_message, token=token,
                                   revision=revision, run_as_future=not blocking)


__all__ = ["commit_folder", "hub_api", "push_folder"]
