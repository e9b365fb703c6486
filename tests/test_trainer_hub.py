"""SMTTrainer's Hub and evaluation flags, as the HF Trainer's: push_to_hub's hub_* defaults, push_to_hub=True at
each save, metric_for_best_model checked at construction, evaluate()'s speed and memory metrics.

No network: `HfApi.create_repo` and `HfApi.create_commit` (which `upload_folder` calls too) are replaced by a
recorder that copies committed files into a folder per repo (conftest's `hub`).
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import concurrent.futures

import pytest
import torch
from test_trainer import data, models, targs
from transformers import AutoModelForCausalLM

from smt_hf.evaluation import STUDENT_METRICS, TEACHER_METRICS
from smt_hf.hub import load_model
from smt_hf.trainer import SMTTrainer

torch.set_num_threads(1)


def _trainer(tmp_path, eval_dataset=None, **kw):
    student, teacher = models()
    args = targs(tmp_path, mode="joint", **kw)
    return SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=data(), eval_dataset=eval_dataset)


def test_push_to_hub_takes_token_private_revision_from_the_arguments(hub, tmp_path):
    """As the HF Trainer: hub_token / hub_private_repo / hub_revision are the defaults (they were dropped: the repo
    was created public and the commit sent without the token, to main); keywords given win; others are refused."""
    trainer = _trainer(tmp_path, max_steps=1, hub_model_id="me/smt-x", hub_token="tok-args", hub_private_repo=True,
                       hub_revision="dev")
    trainer.train()
    trainer.push_to_hub()
    assert hub.created == [("me/smt-x", {"private": True, "token": "tok-args", "exist_ok": True})]
    assert (hub.commits[-1]["token"], hub.commits[-1]["revision"]) == ("tok-args", "dev")
    assert "model.safetensors" in hub.commits[-1]["files"]
    trainer.push_to_hub("me/other", token="tok-call", revision="v2", private=False)
    assert hub.created[-1] == ("me/other", {"private": False, "token": "tok-call", "exist_ok": True})
    assert (hub.commits[-1]["token"], hub.commits[-1]["revision"]) == ("tok-call", "v2")
    n = len(hub.commits)
    with pytest.raises(TypeError, match=r"unsupported keyword\(s\) \['tags'\].*run_info"):
        trainer.push_to_hub(tags=["smt"])
    assert len(hub.commits) == n  # nothing pushed


@pytest.mark.parametrize("strategy", ["every_save", "checkpoint", "all_checkpoints"])
def test_push_to_hub_true_pushes_the_saved_student_at_each_save(hub, tmp_path, strategy):
    """push_to_hub=True: each save pushes the checkpoint's student as a loadable standalone model (HF copied only a
    top-level model.safetensors, which an SMT checkpoint keeps in student/: the repo got training_args.bin only);
    hub_strategy='checkpoint' also uploads the checkpoint folder, as HF."""
    trainer = _trainer(tmp_path, max_steps=4, push_to_hub=True, hub_model_id="me/smt-live", save_strategy="steps",
                       save_steps=2, hub_strategy=strategy, hub_revision="dev",
                       hub_always_push=True)  # (else a save while the last upload runs skips its push, as HF: below)
    trainer.train()
    trainer._finish_current_push()
    student_pushes = [c for c in hub.commits if "model.safetensors" in c["files"]]
    assert [c["message"] for c in student_pushes] == ["Training in progress, step 2", "Training in progress, step 4"]
    assert {c["revision"] for c in hub.commits} == {"dev"}
    repo = hub.repos["me/smt-live"]
    pushed = AutoModelForCausalLM.from_pretrained(repo).eval()
    saved = load_model(tmp_path / "out" / "checkpoint-4").eval()
    x = torch.randint(0, 16, (2, 6))
    assert torch.equal(pushed(x).logits, saved(x).logits)
    assert (repo / "last-checkpoint" / "student" / "model.safetensors").is_file() == (strategy == "checkpoint")
    assert (repo / "checkpoint-4" / "student" / "model.safetensors").is_file() == (strategy == "all_checkpoints")
    assert [r for r, _ in hub.created] == ["me/smt-live"]  # by Trainer at the start: no create_repo at a save


def test_a_save_while_an_upload_runs_skips_its_push_as_hf(hub, tmp_path):
    """Without hub_always_push a save whose predecessor is still uploading pushes nothing (HF's rule); the uploads
    that run are all awaited by the end of train()."""
    trainer = _trainer(tmp_path, max_steps=4, push_to_hub=True, hub_model_id="me/smt-live", save_strategy="steps",
                       save_steps=1)
    hub.delay = 3.0  # each upload outlasts the next save (4 tiny steps, a save after each)
    trainer.train()
    pushed = [c["message"] for c in hub.commits]
    assert pushed[0] == "Training in progress, step 1" and len(pushed) < 4
    assert trainer.push_in_progress.is_done()


def test_a_background_push_is_awaited_before_the_export_folder_is_rewritten(hub, tmp_path):
    """push_to_hub(blocking=False) returns a Future and is tracked: the next push waits for it before exporting into
    the same folder (untracked, the first repo received the second push's weights)."""
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.train()
    first = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    future = trainer.push_to_hub("me/first", blocking=False)
    assert isinstance(future, concurrent.futures.Future) and not future.done()
    with torch.no_grad():  # a weight the readout sync leaves alone
        next(p for n, p in trainer.student.named_parameters() if "updater" in n or "layers" in n).add_(1.0)
    trainer.push_to_hub("me/second")
    assert future.done()
    got = AutoModelForCausalLM.from_pretrained(hub.repos["me/first"]).state_dict()
    assert all(torch.equal(got[k], first[k]) for k in first if k in got) and len(got) > 0


def test_push_to_hub_true_under_fsdp_is_refused_before_a_repo_is_made(hub, tmp_path):
    with pytest.raises(ValueError, match="push_to_hub under FSDP is not supported.*smt-export"):
        _trainer(tmp_path, push_to_hub=True, hub_model_id="me/x", fsdp="full_shard")
    assert hub.created == []


def test_metric_for_best_model_is_checked_when_the_trainer_is_built(tmp_path):
    """A name evaluate() never reports failed with a KeyError at the first evaluation, mid-training (and
    reduce_lr_on_plateau's default 'loss' could never work)."""
    for kw in (dict(metric_for_best_model="loss", save_strategy="best", eval_strategy="steps", eval_steps=2),
               dict(lr_scheduler_type="reduce_lr_on_plateau", eval_strategy="steps", eval_steps=2)):
        with pytest.raises(ValueError, match="metric_for_best_model='loss' is not a metric.*'student_loss'"):
            _trainer(tmp_path, eval_dataset=data(16, seed=3), **kw)
    for name in ("student_loss", "eval_teacher_acc", "drift_mean"):
        _trainer(tmp_path, eval_dataset=data(16, seed=3), metric_for_best_model=name)
    _trainer(tmp_path, eval_dataset={"val": data(16, seed=3)}, metric_for_best_model="eval_val_student_acc")
    with pytest.raises(ValueError, match="without a teacher"):  # BPTT has no teacher: no teacher or drift metrics
        SMTTrainer(model=models()[0], args=targs(tmp_path, mode="bptt", metric_for_best_model="teacher_acc"),
                   train_dataset=data())
    # lower is better for bits and drift too (HF's default: greater unless the name ends in "loss")
    assert targs(tmp_path, metric_for_best_model="drift_mean").greater_is_better is False
    assert targs(tmp_path, metric_for_best_model="student_bits").greater_is_better is False
    assert targs(tmp_path, metric_for_best_model="drift_mean", greater_is_better=True).greater_is_better is True
    assert targs(tmp_path, metric_for_best_model="student_acc").greater_is_better is True


def test_length_arguments_of_the_wrong_type_name_the_field(tmp_path):
    """context_length="32" failed with "'<' not supported between 'str' and 'int'", naming no field."""
    for name, value in (("context_length", "32"), ("rollout_length", 8.0), ("dmt_stride", True)):
        with pytest.raises(TypeError, match=f"`{name}` must be an int, got {value!r}"):
            targs(tmp_path, **{name: value})
    args = targs(tmp_path, context_length=__import__("numpy").int64(16))  # numpy ints are ints (as before), stored plain
    assert args.context_length == 16 and type(args.context_length) is int


def test_half_precision_full_eval_is_refused(tmp_path):
    """bf16_full_eval / fp16_full_eval were accepted and evaluate() ran in float32 (identical metrics)."""
    for name in ("bf16_full_eval", "fp16_full_eval"):
        with pytest.raises(ValueError, match=f"{name}=True is not supported by SMTTrainer"):
            targs(tmp_path, mode="dmt", **{name: True})


def test_evaluate_reports_speed_and_memory_metrics(tmp_path):
    """As HF's evaluate(): runtime, samples and steps per second (40 samples in batches of 16: 3 steps), and the
    memory deltas when skip_memory_metrics=False."""
    trainer = _trainer(tmp_path, eval_dataset=data(40, seed=3), skip_memory_metrics=False)
    metrics = trainer.evaluate()
    assert metrics["eval_runtime"] > 0
    assert metrics["eval_samples_per_second"] / metrics["eval_steps_per_second"] == pytest.approx(40 / 3, rel=1e-2)
    assert "eval_mem_cpu_alloc_delta" in metrics
    speed = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}
    reported = {k.removeprefix("eval_") for k in metrics if k not in speed and "mem_" not in k and k != "epoch"}
    assert reported == set(STUDENT_METRICS + TEACHER_METRICS)  # the names metric_for_best_model is checked against
    assert "runtime" not in trainer.last_eval
