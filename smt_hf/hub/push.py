"""Uploads to the Hub: a folder in one commit (`push_folder`). Imports only `card`; `export` builds on it."""

from __future__ import annotations

from pathlib import Path

from .card import _version


def push_folder(folder: str | Path, repo_id: str, private: bool | None = None, token=None, commit_message: str | None = None):
    """Create `repo_id` if needed and upload every file under `folder` in ONE commit (`HfApi.create_commit`, the
    same call transformers' `push_to_hub` makes). Returns the `CommitInfo`."""
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: write it with export_for_hub(model, folder) first.")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
    )
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p)) for p in files]
    api = HfApi(library_name="smt-hf", library_version=_version())
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    return api.create_commit(
        repo_id=repo_id,
        operations=operations,
        commit_message=commit_message or "Upload SMT model (smt_hf.export)",
        token=token,
    )


__all__ = ["push_folder"]
