"""Evaluation (smt_hf.evaluation, SMTTrainer.evaluate): metrics over the whole eval set, whatever its batching;
padded rows; the standalone readout during training; dict eval datasets; parallel-prefill students."""

import copy
import math

import pytest
import torch
from conftest import tiny_student_config, tiny_teacher_config

from smt_hf import SMTRecurrentForCausalLM, SMTTeacherModel
from smt_hf.data import SMTDataCollator, make_task
from smt_hf.evaluation import evaluate_smt, summarize
from smt_hf.metrics import rollout_drift
from smt_hf.trainer import SMTTrainer
from smt_hf.training_args import SMTTrainingArguments

T, TC = 16, 16


def pair():
    torch.manual_seed(0)
    teacher = SMTTeacherModel(tiny_teacher_config()).eval()
    student = SMTRecurrentForCausalLM(tiny_student_config("gru")).eval()
    return student, teacher


def run(student, teacher, batches):
    out = []
    for feats in batches:
        b = SMTDataCollator(mode="eval")(feats)
        out.append(evaluate_smt(student, teacher, b["input_ids"], b["labels"], TC, drift_stride=4,
                                attention_mask=b["attention_mask"]))
    return summarize(out)


def test_metrics_do_not_depend_on_batching():
    """One batch of 17 == batches of 16 + 1 (a single-sequence batch has no spread: it used to give 1-R^2 ~ 1e13)
    == 9 + 8; and one batch's drift equals rollout_drift on it."""
    student, teacher = pair()
    data = list(make_task("needle", 17, T, seed=0, vocab_size=16))
    whole = run(student, teacher, [data])
    for split in ([data[:16], data[16:]], [data[:9], data[9:]]):
        got = run(student, teacher, split)
        assert got["drift_steps"] == whole["drift_steps"] == [4, 8, 12, 16]
        for k in ("drift_curve", "student_loss", "student_acc", "teacher_acc", "onestep_acc"):
            assert got[k] == pytest.approx(whole[k], rel=1e-5)
    b = SMTDataCollator(mode="eval")(data)
    with torch.no_grad():
        mem = student(b["input_ids"], output_memories=True).memories[:, [3, 7, 11, 15]]
        tgt = torch.stack([teacher.encode(b["input_ids"][:, max(0, e - TC):e]) for e in (4, 8, 12, 16)], 1)
    assert whole["drift_curve"] == pytest.approx(rollout_drift(mem, tgt).tolist(), rel=1e-4)


def test_drift_counts_only_rows_that_long():
    """Batches of different lengths merge by step (it raised IndexError), and a padded row's drift at a step past
    its end is left out (it was compared with the teacher's memory of a window running into padding)."""
    student, teacher = pair()
    long = list(make_task("needle", 8, T, seed=0, vocab_size=16))
    short = list(make_task("needle", 8, 8, seed=1, vocab_size=16))
    mixed = run(student, teacher, [long[:4] + short[:4], long[4:] + short[4:]])  # padded batches
    separate = run(student, teacher, [long, short])  # unpadded batches of one length each
    assert mixed["drift_steps"] == separate["drift_steps"] == [4, 8, 12, 16]
    assert mixed["drift_curve"] == pytest.approx(separate["drift_curve"], rel=1e-4)


def test_parallel_prefill_student_evaluates_recurrently():
    student, teacher = pair()
    data = list(make_task("needle", 8, T, seed=0, vocab_size=16))
    ref = run(student, teacher, [data])
    student.add_prefill_encoder(teacher, context_length=TC, use_by_default=True)
    got = run(student, teacher, [data])  # it raised: per-position memories need the recurrent forward
    assert got.keys() == ref.keys() and all(got[k] == pytest.approx(ref[k]) for k in ref)


def targs(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), mode="joint", context_length=T, future_length=T, max_steps=6,
                per_device_train_batch_size=8, per_device_eval_batch_size=16, logging_steps=3, report_to="none",
                save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, learning_rate=1e-3)
    base.update(kw)
    return SMTTrainingArguments(**base)


def test_eval_during_training_uses_the_standalone_readout(tmp_path):
    """An evaluation inside the training loop (eval_strategy='steps') measures the student the way evaluate()
    after train() does: readout from the teacher decoder, m_0 = E(empty) (it used the untrained readout)."""
    student, teacher = pair()
    trainer = SMTTrainer(model=student, teacher=teacher, args=targs(tmp_path, eval_strategy="steps", eval_steps=6),
                         train_dataset=make_task("needle", 64, T, seed=0, vocab_size=16),
                         eval_dataset=make_task("needle", 32, T, seed=9, vocab_size=16))
    trainer.train()
    during = next(h for h in trainer.state.log_history if "eval_student_loss" in h)
    after = trainer.evaluate()
    for k in ("eval_student_loss", "eval_student_acc", "eval_onestep_acc", "eval_teacher_loss"):
        assert during[k] == pytest.approx(after[k], rel=1e-6)


def test_dict_eval_dataset_gives_metrics_per_name(tmp_path):
    student, teacher = pair()
    sets = {"needle": make_task("needle", 16, T, seed=9, vocab_size=16),
            "copy": make_task("needle", 16, T, seed=3, vocab_size=16)}
    trainer = SMTTrainer(model=student, teacher=teacher, args=targs(tmp_path), eval_dataset=sets)
    metrics = trainer.evaluate()
    alone = trainer.evaluate(sets["copy"])
    assert metrics["eval_copy_student_loss"] == pytest.approx(alone["eval_student_loss"])
    assert {"eval_needle_student_acc", "eval_copy_drift_mean"} <= set(metrics)
    assert trainer.evaluate(copy.deepcopy(sets), metric_key_prefix="test").keys() == {
        k.replace("eval_", "test_", 1) for k in metrics}


def test_trainer_evaluate_runs_the_hf_eval_loader_and_equals_evaluation_over_its_batches(tmp_path):
    """SMTTrainer.evaluate takes its batches from the HF `get_eval_dataloader` (sharded under several processes;
    `tests/dist_train.py` checks two processes against one) and returns exactly `summarize` over `evaluate_smt` of
    those batches (13 sequences in batches of 5, 5, 3); a dict eval dataset is loaded by name and prefixed."""
    student, teacher = pair()
    data = list(make_task("needle", 13, T, seed=4, vocab_size=16))
    args = targs(tmp_path, per_device_eval_batch_size=5, dmt_stride=4)
    trainer = SMTTrainer(model=student, teacher=teacher, args=args, eval_dataset={"a": data})
    asked = []
    loader = trainer.get_eval_dataloader
    trainer.get_eval_dataloader = lambda ds=None: asked.append(ds) or loader(ds)
    got = trainer.evaluate()
    alone = trainer.evaluate(data)
    assert got.pop("epoch") == alone.pop("epoch") == 0  # (added by HF's `log`)
    assert asked == ["a", data]  # the name of the dict entry (HF's loader key), then the dataset itself
    ref = run(student, teacher, [data[:5], data[5:10], data[10:]])
    for metrics, prefix in ((got, "eval_a"), (alone, "eval")):  # HF's speed metrics: 13 samples, 3 batches
        speed = {k: metrics.pop(f"{prefix}_{k}") for k in ("runtime", "samples_per_second", "steps_per_second")}
        assert speed["samples_per_second"] / speed["steps_per_second"] == pytest.approx(13 / 3, rel=1e-2)
    assert got == {f"eval_a_{k}": v for k, v in ref.items() if not isinstance(v, list)}
    assert alone == {f"eval_{k}": v for k, v in ref.items() if not isinstance(v, list)}


def test_drift_is_nan_where_teacher_memories_do_not_vary():
    """summarize's 1 - R^2 where every sequence's teacher memory is the same (a collapsed memory) is nan (0.0 where the
    student matches it); it divided by 1e-12 (about 1e10). A varying step matches rollout_drift."""
    torch.manual_seed(0)
    y = torch.randn(1, 6).expand(3, 6)  # 3 rows, one constant memory of size 6

    def stats(pred, ref):  # what evaluate_smt records per step: sum err, sum m, sum ||m||^2, rows
        return float((pred - ref).pow(2).sum()), ref.sum(0), float(ref.pow(2).sum()), float(len(ref))

    var_y = torch.randn(3, 6)
    got = summarize([{"drift_stats": {4: stats(y + 0.5, y), 8: stats(y, y), 12: stats(var_y + 0.1, var_y)}}])
    assert math.isnan(got["drift_curve"][0]) and got["drift_curve"][1] == 0.0
    assert math.isnan(got["drift_mean"])  # undefined at one step: undefined mean, not a number that hides it
    # where rounding leaves the spread unresolved, a wrong prediction is nan, never a perfect-looking 0.0
    tiny = y + 1e-4 * torch.randn(3, 6)
    near = summarize([{"drift_stats": {4: stats(tiny.mean(0, keepdim=True).expand(3, 6), tiny)}}])["drift_curve"][0]
    assert math.isnan(near) or near == pytest.approx(1.0, abs=0.2)
    # elsewhere the very value it gave before (needle_e2e --add-full-rollout re-checks saved rows bit for bit)
    err, y_sum, yy, n = stats(var_y + 0.1, var_y)
    assert got["drift_curve"][2] == err / (yy - float(y_sum.pow(2).sum()) / n)
    assert got["drift_curve"][2] == pytest.approx(float(rollout_drift((var_y + 0.1)[:, None], var_y[:, None])[0]),
                                                  rel=1e-5)
