"""Tiny configs shared by the tests (CPU, milliseconds per forward). Tests never reach the hub."""

import concurrent.futures
import os
import shutil
import time
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import huggingface_hub  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny ops: one thread is faster, and much faster on a loaded 2-core machine.
torch.set_num_threads(1)

from smt_hf import SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherConfig, SMTTeacherModel  # noqa: E402
from smt_hf.data import SMTDataCollator, SplitSampler, smt_windows  # noqa: E402

BACKBONES = ["transformer", "mlp", "gru"]


def smt_split_batch(features, context_length, future_length, splits_per_sequence=1, split="random", generator=None,
                    split_points=None, pad_token_id=0):
    """An smt/joint batch the way the training step builds one: padded sequences (`SMTDataCollator`), split points
    (`SplitSampler`, or the given (B, S) `split_points`), windows (`smt_windows`)."""
    b = SMTDataCollator(pad_token_id=pad_token_id)(features)
    lengths = b["attention_mask"].sum(1)
    if split_points is None:
        split_points = SplitSampler(splits_per_sequence, split, context_length, generator)(lengths)
    return smt_windows(b["input_ids"], b["labels"], lengths, split_points, context_length, future_length, pad_token_id)


def tiny_teacher_config(**kw):
    base = dict(
        vocab_size=16,
        hidden_size=32,
        memory_tokens=2,
        num_encoder_layers=2,
        num_decoder_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_context_length=128,
    )
    base.update(kw)
    return SMTTeacherConfig(**base)


def tiny_student_config(backbone="transformer", **kw):
    base = dict(updater_layers=2, updater_intermediate_size=64)
    base.update(kw)
    return SMTRecurrentConfig.from_teacher(tiny_teacher_config(), backbone=backbone, **base)


@pytest.fixture
def teacher():
    torch.manual_seed(0)
    return SMTTeacherModel(tiny_teacher_config()).eval()


@pytest.fixture(params=BACKBONES)
def student(request):
    torch.manual_seed(0)
    return SMTRecurrentForCausalLM(tiny_student_config(request.param)).eval()


def load_generate_card():
    """`model_cards/generate_card.py` (a script, not a package module) loaded as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "model_cards" / "generate_card.py"
    spec = importlib.util.spec_from_file_location("generate_card", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def end_launch() -> None:
    """The end of a test launch script (fsdp_trainer.py, fsdp_train.py, dist_train.py): every rank done with its
    collectives (a rank that left while the other still worked aborted in C++, "terminate called without an active
    exception", under load), the process group destroyed, then the process ended with `os._exit(0)`: one has still
    aborted so at exit after the barrier and the destroy (a loaded CI run, twice in a row), where gloo's threads meet
    the interpreter's finalization (pytorch/pytorch#179291). The caller writes and closes its report before."""
    import sys

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """Fake Hub, no network: `HfApi.create_repo` / `create_commit` (which transformers' PushToHubMixin, `upload_folder`
    and `smt_hf.hub` call) record their keywords; committed files land in `hub.repos[repo_id]`. As the
    real upload, a `run_as_future` commit runs on one worker thread and reads its files later (after `hub.delay` s)."""
    state = SimpleNamespace(repos={}, created=[], commits=[], delay=0.2, futures=[])
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def create_repo(self, repo_id, *args, **kwargs):
        state.created.append((repo_id, kwargs))
        return SimpleNamespace(repo_id=repo_id)

    def commit(repo_id, operations, commit_message, kwargs, delay):
        time.sleep(delay)
        dest = state.repos.setdefault(repo_id, tmp_path / "hub" / repo_id.replace("/", "__"))
        for op in operations:
            target = dest / op.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            with op.as_file() as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        state.commits.append(dict(repo_id=repo_id, message=commit_message, files=sorted(o.path_in_repo for o in operations),
                                  **kwargs))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0", oid="0" * 40)

    def create_commit(self, repo_id, operations, commit_message=None, run_as_future=False, **kwargs):
        if run_as_future:
            state.futures.append(worker.submit(commit, repo_id, operations, commit_message, kwargs, state.delay))
            return state.futures[-1]
        return commit(repo_id, operations, commit_message, kwargs, 0)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", create_commit)
    yield state
    worker.shutdown(wait=True)
    assert [f.exception() for f in state.futures] == [None] * len(state.futures)  # a background commit that failed
