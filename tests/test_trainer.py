"""SMTTrainer: gradient paths per mode, frozen teacher, checkpoints, resume, errors, logging."""

import glob
import json
import os

import pytest
import torch
from conftest import tiny_teacher_config

from smt_hf import SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherModel
from smt_hf.data import SMTDataCollator, make_task
from smt_hf.trainer import NonFiniteLossError, SMTTrainer
from smt_hf.training_args import SMTTrainingArguments
from smt_hf.training_module import SMTTrainingModule, make_student_standalone

T = 16


def models(backbone="transformer", seed=0):
    torch.manual_seed(seed)
    tc = tiny_teacher_config(max_context_length=T)
    teacher = SMTTeacherModel(tc)
    student = SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(tc, backbone=backbone, updater_layers=1))
    return student, teacher


def targs(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), context_length=T, future_length=T, rollout_length=T, dmt_stride=4,
                per_device_train_batch_size=8, per_device_eval_batch_size=16, max_steps=4, logging_steps=2,
                report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, learning_rate=1e-3)
    base.update(kw)
    return SMTTrainingArguments(**base)


def data(n=64, seed=0):
    return make_task("needle", n, T, seed=seed, vocab_size=16)


def smt_batch(mode, n=8):
    return SMTDataCollator(mode=mode, context_length=T, future_length=T)([data(n)[i] for i in range(n)])


@pytest.mark.parametrize("mode", ["smt", "joint"])
def test_dynamics_gradient_reaches_teacher_only_in_joint(tmp_path, mode):
    student, teacher = models()
    module = SMTTrainingModule(student, teacher, targs(tmp_path, mode=mode))
    parts = module(**smt_batch(mode))
    parts["dynamics"].backward()
    enc_grad = sum(float(p.grad.abs().sum()) for p in teacher.encoder.parameters() if p.grad is not None)
    upd_grad = sum(float(p.grad.abs().sum()) for p in student.model.updater.parameters() if p.grad is not None)
    assert upd_grad > 0
    if mode == "smt":
        assert enc_grad == 0.0
    else:
        assert enc_grad > 0


@pytest.mark.parametrize("gradient", ["detach", "through"])
def test_dmt_leaves_teacher_bit_identical_and_trains_student(tmp_path, gradient):
    student, teacher = models()
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_s = {k: v.clone() for k, v in student.state_dict().items()}
    args = targs(tmp_path, mode="dmt", dmt_start="initial", dmt_gradient=gradient)
    SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=data()).train()
    assert all(torch.equal(before_t[k], v) for k, v in teacher.state_dict().items())
    assert any(not torch.equal(before_s[k], v) for k, v in student.state_dict().items())
    assert not teacher.training


def test_dmt_gradient_modes_differ_only_in_path(tmp_path):
    """'detach' and 'through' give the same loss value; only 'through' sends the memory loss to early steps."""
    student, teacher = models()
    batch = SMTDataCollator(mode="dmt")([data(4)[i] for i in range(4)])
    vals, grads = {}, {}
    for g in ("detach", "through"):
        student.zero_grad()
        module = SMTTrainingModule(student, teacher, targs(tmp_path, mode="dmt", dmt_start="initial", dmt_gradient=g))
        parts = module(**batch)
        parts["dmt_dynamics"].backward()
        vals[g] = float(parts["dmt_dynamics"].detach())
        grads[g] = student.model.initial_state.grad
    assert vals["detach"] == pytest.approx(vals["through"], rel=1e-6)
    assert grads["detach"] is None or float(grads["detach"].abs().sum()) == 0.0
    assert float(grads["through"].abs().sum()) > 0


def test_dmt_batched_teacher_memories_equal_per_step_encoding(tmp_path):
    student, teacher = models()
    teacher.eval()
    batch = SMTDataCollator(mode="dmt")([data(3)[i] for i in range(3)])
    x = batch["input_ids"]
    from smt_hf.data import prefix_contexts

    ends = torch.arange(0, T + 1, 4)
    ids, mask = prefix_contexts(x, ends, T)
    batched = teacher.encode(ids.flatten(0, 1), mask.flatten(0, 1)).view(3, len(ends), 2, 32)
    for j, e in enumerate(ends.tolist()):
        single = teacher.encode(x[:, :e], torch.ones(3, e, dtype=torch.long)) if e else teacher.empty_memory(3)
        torch.testing.assert_close(batched[:, j], single, rtol=1e-4, atol=1e-5)


def test_bptt_runs_without_teacher_and_needs_one_otherwise(tmp_path):
    student, _ = models()
    trainer = SMTTrainer(model=student, args=targs(tmp_path, mode="bptt"), train_dataset=data())
    trainer.train()
    assert trainer.state.global_step == 4
    with pytest.raises(ValueError, match="needs a teacher"):
        SMTTrainer(model=student, args=targs(tmp_path, mode="joint"), train_dataset=data())


def test_invalid_arguments_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="must divide `rollout_length`"):
        targs(tmp_path, rollout_length=10, dmt_stride=4)
    with pytest.raises(ValueError, match="future_length"):
        targs(tmp_path, future_length=0)
    with pytest.raises(ValueError, match="mode"):
        targs(tmp_path, mode="rl")
    student, teacher = models()
    with pytest.raises(ValueError, match="needs >= 48"):
        SMTTrainer(model=student, teacher=teacher, train_dataset=data(),
                   args=targs(tmp_path, mode="dmt", dmt_start="initial", rollout_length=48, dmt_stride=4))


def test_non_finite_loss_names_step_and_part(tmp_path):
    student, teacher = models()
    with torch.no_grad():
        teacher.lm_head.weight.fill_(float("nan"))
    trainer = SMTTrainer(model=student, teacher=teacher, args=targs(tmp_path, mode="joint"), train_dataset=data())
    with pytest.raises(NonFiniteLossError, match=r"step 0 .*'decoder'"):
        trainer.train()


def test_checkpoint_folders_load_and_student_generates_alone(tmp_path):
    student, teacher = models()
    args = targs(tmp_path, mode="joint", save_strategy="steps", save_steps=4)
    trainer = SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=data())
    trainer.train()
    ckpt = os.path.join(args.output_dir, "checkpoint-4")
    assert sorted(os.listdir(os.path.join(ckpt, "student")))[:2] == ["config.json", "generation_config.json"]
    assert not glob.glob(os.path.join(ckpt, "**", "*.bin"), recursive=True)  # weights and arguments: no pickles
    assert json.load(open(os.path.join(ckpt, "smt_training_args.json")))["mode"] == "joint"
    del teacher, trainer
    loaded = SMTRecurrentForCausalLM.from_pretrained(os.path.join(ckpt, "student")).eval()
    loaded_teacher = SMTTeacherModel.from_pretrained(os.path.join(ckpt, "teacher")).eval()
    # standalone: readout == teacher first-step prediction, m_0 == E(empty)
    torch.testing.assert_close(loaded.initial_memory(1), loaded_teacher.empty_memory(1), rtol=1e-5, atol=1e-6)
    m = loaded_teacher.encode(torch.randint(1, 16, (2, 5)))
    torch.testing.assert_close(loaded.readout(m), loaded_teacher.readout(m), rtol=1e-5, atol=1e-5)
    out = loaded.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=6, do_sample=False)
    assert out.shape == (1, 9)


def test_make_standalone_rejects_mismatched_readout():
    tc = tiny_teacher_config()
    teacher = SMTTeacherModel(tc)
    student = SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(tc, readout_layers=2, updater_layers=1))
    with pytest.raises(ValueError, match="from_teacher"):
        make_student_standalone(student, teacher)


@pytest.mark.parametrize("mode", ["joint", "dmt"])
def test_interrupt_and_resume_matches_uninterrupted(tmp_path, mode):
    extra = dict(mode=mode, max_steps=6, save_strategy="steps", save_steps=3, dmt_start="initial")
    student, teacher = models()
    full = SMTTrainer(model=student, teacher=teacher, args=targs(tmp_path / "a", **extra), train_dataset=data())
    full.train()
    ref = {k: v.clone() for k, v in student.state_dict().items()}
    # a second run, stopped after checkpoint-3 (the files of steps 4-6 are removed), then resumed
    student2, teacher2 = models()
    first = SMTTrainer(model=student2, teacher=teacher2, args=targs(tmp_path / "b", **extra), train_dataset=data())
    first.train()
    out = targs(tmp_path / "b", **extra).output_dir
    import shutil

    shutil.rmtree(os.path.join(out, "checkpoint-6"))
    student3, teacher3 = models(seed=123)  # different init: everything must come from the checkpoint
    resumed = SMTTrainer(model=student3, teacher=teacher3, args=targs(tmp_path / "b", **extra), train_dataset=data())
    resumed.train(resume_from_checkpoint=os.path.join(out, "checkpoint-3"))
    bad = [k for k, v in student3.state_dict().items() if not torch.allclose(v, ref[k], rtol=1e-5, atol=1e-6)]
    assert not bad, bad


def test_loss_parts_logged_and_eval_metrics(tmp_path):
    student, teacher = models()
    trainer = SMTTrainer(model=student, teacher=teacher, args=targs(tmp_path, mode="joint"),
                         train_dataset=data(), eval_dataset=data(32, seed=9))
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all({"decoder_loss", "dynamics_loss", "uniformity_loss"} <= set(h) for h in logged)
    metrics = trainer.evaluate()
    for key in ("eval_teacher_loss", "eval_teacher_acc", "eval_onestep_acc", "eval_student_loss", "eval_student_acc",
                "eval_drift_mean"):
        assert key in metrics
    assert 0.0 <= metrics["eval_student_acc"] <= 1.0
    trainer.save_summary(str(tmp_path / "s.json"))
    assert "drift_curve" in json.load(open(tmp_path / "s.json"))["eval"]


def test_tensorboard_has_separate_loss_curves(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    student, teacher = models()
    args = targs(tmp_path, mode="joint", report_to=["tensorboard"])
    SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=data()).train()
    events = glob.glob(os.path.join(args.output_dir, "**", "events.out.tfevents*"), recursive=True)
    assert events
    acc = EventAccumulator(os.path.dirname(events[0]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/decoder_loss", "train/dynamics_loss", "train/uniformity_loss"} <= tags


def test_sync_free_recurrent_step_gives_identical_dmt_training(tmp_path):
    weights = []
    for compile_mode in (None, "none"):
        student, teacher = models()
        args = targs(tmp_path / str(compile_mode), mode="dmt", dmt_start="initial", dmt_gradient="through",
                     recurrent_step_compile=compile_mode)
        SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=data()).train()
        weights.append({k: v.clone() for k, v in student.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def _one_sgd_step(tmp_path, fp16_scaler):
    student, teacher = models()
    args = targs(tmp_path, mode="joint", max_steps=1, optim="sgd", learning_rate=1.0, lr_scheduler_type="constant",
                 weight_decay=0.0, max_grad_norm=1.0, clip_per_model=True)
    trainer = SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=data(16))
    if fp16_scaler:  # what accelerate sets up for fp16=True on CUDA: native AMP with a GradScaler (loss x 2^16)
        acc = trainer.accelerator
        acc.native_amp, acc.state._mixed_precision = True, "fp16"
        acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    norms = []
    clip = trainer._clip_grad_norm
    trainer._clip_grad_norm = lambda m: norms.append(clip(m)) or norms[-1]
    trainer.train()
    return float(norms[0]), {n: p.detach() - before[n] for n, p in student.named_parameters()}


def test_per_model_clipping_sees_unscaled_fp16_gradients(tmp_path):
    """Per-model clipping unscales the fp16 GradScaler's gradients first: the same norm and the same update as
    without loss scaling (it used to clip scale * g, i.e. every step shrank to max_grad_norm / 2^16)."""
    ref_norm, ref_step = _one_sgd_step(tmp_path / "fp32", fp16_scaler=False)
    norm, step = _one_sgd_step(tmp_path / "fp16", fp16_scaler=True)
    assert norm == pytest.approx(ref_norm, rel=1e-2) and ref_norm > 1.0  # the clip is active
    flat = lambda d: torch.cat([v.flatten() for v in d.values()])  # noqa: E731
    a, b = flat(step), flat(ref_step)  # fp16 autocast changes the forward slightly, not the update's size
    assert (a - b).norm() / b.norm() < 0.05 and b.norm() > 0.1
