"""DMT edge cases found in review: the frozen teacher's mode survives an error, and resume with a replay buffer."""

import pytest
import torch
from conftest import tiny_teacher_config

from smt_hf import SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherModel
from smt_hf.data import SMTDataCollator, make_task
from smt_hf.training_args import SMTTrainingArguments
from smt_hf.training_module import SMTTrainingModule

T = 16


def models(seed=0):
    torch.manual_seed(seed)
    tc = tiny_teacher_config(max_context_length=T)
    return SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(tc, updater_layers=1)), SMTTeacherModel(tc)


def targs(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), mode="dmt", dmt_start="initial", context_length=T, future_length=T,
                rollout_length=T, per_device_train_batch_size=8, max_steps=4, logging_steps=2, report_to="none",
                save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, learning_rate=1e-3)
    base.update(kw)
    return SMTTrainingArguments(**base)


def batch(n=4):
    ds = make_task("needle", n, T, seed=0, vocab_size=16)
    return SMTDataCollator(mode="dmt")([ds[i] for i in range(n)])


def test_dmt_error_in_teacher_encode_restores_teacher_mode(tmp_path):
    """The teacher is switched to eval for its no-grad encoding; an error there leaves it in the caller's mode."""
    student, teacher = models()
    teacher.train()
    module = SMTTrainingModule(student, teacher, targs(tmp_path))
    bad = batch()
    bad["input_ids"][0, 0] = 99  # out of the vocabulary: the teacher's encode raises
    with pytest.raises(ValueError, match="vocab_size"):
        module(**bad)
    assert teacher.training


def test_dmt_resume_with_replay_buffer_matches_uninterrupted(tmp_path):
    """The DAgger replay buffer is training state: checkpoint-3 + resume gives the weights of 6 uninterrupted steps."""
    import os
    import shutil

    from smt_hf.trainer import SMTTrainer

    extra = dict(max_steps=6, save_strategy="steps", save_steps=3, dmt_buffer_size=16, rollout_length=8)
    ds = make_task("needle", 64, T, seed=0, vocab_size=16)

    def run(name, seed=0, resume=None):
        student, teacher = models(seed)
        SMTTrainer(model=student, teacher=teacher, args=targs(tmp_path / name, **extra), train_dataset=ds).train(
            resume_from_checkpoint=resume)
        return student

    ref = run("a").state_dict()
    run("b")
    out = str(tmp_path / "b" / "out")
    shutil.rmtree(os.path.join(out, "checkpoint-6"))
    resumed = run("b", seed=123, resume=os.path.join(out, "checkpoint-3")).state_dict()
    bad = [k for k, v in resumed.items() if not torch.allclose(v, ref[k], rtol=1e-5, atol=1e-6)]
    assert not bad, bad


def test_dmt_activation_checkpointing_leaves_frozen_teacher_unchanged(tmp_path):
    """gradient_checkpointing=True in DMT checkpoints the student only: the caller's frozen teacher (encoded without
    gradient) keeps its own setting, so a later phase on it is not silently checkpointed."""
    from smt_hf.trainer import SMTTrainer

    student, teacher = models()
    args = targs(tmp_path, gradient_checkpointing=True, max_steps=1)
    SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=make_task("needle", 8, T, seed=0)).train()
    assert student.is_gradient_checkpointing and not teacher.is_gradient_checkpointing


def test_make_standalone_refuses_tied_student_head_instead_of_overwriting_its_embedding():
    """A student whose readout head is tied to its token embedding: copying the teacher head in would silently change
    the embedding the updater reads (so the trained transition f). It raises and leaves the student unchanged."""
    from smt_hf.training_module import make_student_standalone

    tc = tiny_teacher_config(max_context_length=T)
    teacher = SMTTeacherModel(tc)
    student = SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(tc, updater_layers=1, tie_word_embeddings=True))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with pytest.raises(ValueError, match="tie_word_embeddings=False"):
        make_student_standalone(student, teacher)
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())
