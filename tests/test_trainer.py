"""SMTTrainer: gradient paths per mode, frozen teacher, checkpoints, resume, errors, logging."""

import glob
import json
import os

import pytest
import torch
from conftest import smt_split_batch, tiny_teacher_config

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
    base = dict(output_dir=str(tmp_path / "out"), context_length=T, future_length=T, rollout_length=T, dmt_stride=4, dmt_teacher_transitions=False,
                per_device_train_batch_size=8, per_device_eval_batch_size=16, max_steps=4, logging_steps=2,
                report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, learning_rate=1e-3)
    base.update(kw)
    return SMTTrainingArguments(**base)


def data(n=64, seed=0):
    return make_task("needle", n, T, seed=seed, vocab_size=16)


def smt_batch(mode, n=8):
    return smt_split_batch([data(n)[i] for i in range(n)], T, T)


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


@pytest.mark.parametrize("mode", ["smt", "joint"])
def test_training_step_draws_split_points_with_its_sampler(tmp_path, mode):
    """A padded sequence batch goes into forward; the module's `SplitSampler` draws the split points from the global
    RNG at that moment and `smt_windows` builds the windows: the loss equals smt_parts on those windows."""
    student, teacher = models()
    module = SMTTrainingModule(student, teacher, targs(tmp_path, mode=mode, splits_per_sequence=2)).eval()
    feats = [data(8)[i] for i in range(6)]
    feats[1] = {"input_ids": feats[1]["input_ids"][:9], "labels": feats[1]["labels"][:9]}  # a right-padded row
    seqs = SMTDataCollator(mode="eval")(feats)
    with torch.no_grad():
        torch.manual_seed(3)
        got = module(**seqs)
        torch.manual_seed(3)
        ref = module.smt_parts(**smt_split_batch(feats, T, T, splits_per_sequence=2))
    assert got.keys() == ref.keys()
    for k in ref:
        assert torch.equal(got[k], ref[k]), k


@pytest.mark.parametrize("gradient", ["one_step", "full_rollout"])
def test_dmt_leaves_teacher_bit_identical_and_trains_student(tmp_path, gradient):
    student, teacher = models()
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_s = {k: v.clone() for k, v in student.state_dict().items()}
    args = targs(tmp_path, mode="dmt", dmt_start="initial", dmt_gradient=gradient)
    SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=data()).train()
    assert all(torch.equal(before_t[k], v) for k, v in teacher.state_dict().items())
    assert any(not torch.equal(before_s[k], v) for k, v in student.state_dict().items())
    assert teacher.training  # the caller's teacher keeps its mode (it is encoded in eval mode, then restored)


def test_dmt_gradient_modes_differ_only_in_path(tmp_path):
    """'one_step' and 'full_rollout' give the same loss value; only 'full_rollout' sends the memory loss to early
    steps (here: to the initial memory, through the whole rollout)."""
    student, teacher = models()
    batch = SMTDataCollator(mode="dmt")([data(4)[i] for i in range(4)])
    vals, grads = {}, {}
    for g in ("one_step", "full_rollout"):
        student.zero_grad()
        module = SMTTrainingModule(student, teacher, targs(tmp_path, mode="dmt", dmt_start="initial", dmt_gradient=g,
                                                           dmt_teacher_transitions=False))
        parts = module(**batch)
        parts["dmt_dynamics"].backward()
        vals[g] = float(parts["dmt_dynamics"].detach())
        grads[g] = student.model.initial_state.grad
    assert vals["one_step"] == pytest.approx(vals["full_rollout"], rel=1e-5)
    assert grads["one_step"] is None or float(grads["one_step"].abs().sum()) == 0.0
    assert float(grads["full_rollout"].abs().sum()) > 0


@pytest.mark.parametrize("stride", [1, 4])
def test_dmt_one_step_equals_per_step_detached_loop(tmp_path, stride):
    """The batched one-step path == a plain loop that detaches the memory after every step (loss and gradients)."""
    student, teacher = models()
    batch = SMTDataCollator(mode="dmt")([data(4)[i] for i in range(4)])
    args = targs(tmp_path, mode="dmt", dmt_start="initial", dmt_stride=stride, dmt_teacher_transitions=False)
    module = SMTTrainingModule(student, teacher, args)
    student.zero_grad()
    module(**batch)["dmt_dynamics"].backward()
    fast = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    # reference: the loop, memory detached after every transition
    student.zero_grad()
    ids, Td = batch["input_ids"], args.rollout_length
    with torch.no_grad():
        ends = torch.arange(0, Td + 1, stride)
        targets = torch.stack([teacher.encode(ids[:, :e]) if e else teacher.empty_memory(len(ids)) for e in ends[1:]], 1)
    m, matched = student.initial_memory(len(ids)), []
    for j in range(Td):
        m = student.step(m, ids[:, j])
        if (j + 1) % stride == 0:
            matched.append(m)
        m = m.detach()
    torch.nn.functional.mse_loss(torch.stack(matched, 1), targets).backward()
    slow = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    assert fast.keys() == slow.keys()
    for n in fast:
        torch.testing.assert_close(fast[n], slow[n], rtol=1e-4, atol=1e-6)


def test_dmt_matched_steps_equals_detached_loop_at_the_drawn_steps(tmp_path):
    """Random matched transitions (`dmt_matched_steps`): per row, the drawn steps j get f(m_hat_j, x_j) -> E(x[:j+1])
    with one-step gradient, equal to a detached loop at those steps (loss and gradients)."""
    student, teacher = models()
    batch = SMTDataCollator(mode="dmt")([data(4)[i] for i in range(4)])
    ids, n = batch["input_ids"], 3
    args = targs(tmp_path, mode="dmt", dmt_start="initial", dmt_stride=1, dmt_matched_steps=n)
    module = SMTTrainingModule(student, teacher, args)
    torch.manual_seed(7)
    student.zero_grad()
    module(**batch)["dmt_dynamics"].backward()
    fast = {k: p.grad.clone() for k, p in student.named_parameters() if p.grad is not None}
    torch.manual_seed(7)
    js = torch.rand(len(ids), T).argsort(1)[:, :n].sort(1).values  # the draw dmt_parts makes first
    assert not torch.equal(js[0], js[1])  # fresh per row
    student.zero_grad()
    with torch.no_grad():
        targets = torch.stack([torch.stack([teacher.encode(ids[b : b + 1, : j + 1])[0] for j in js[b]]) for b in range(len(ids))])
    m, outs = student.initial_memory(len(ids)), []
    for j in range(T):
        outs.append(student.step(m, ids[:, j]))
        m = outs[-1].detach()
    pred = torch.stack(outs, 1)[torch.arange(len(ids)).view(-1, 1), js]  # (B, n, K, d)
    torch.nn.functional.mse_loss(pred, targets).backward()
    slow = {k: p.grad.clone() for k, p in student.named_parameters() if p.grad is not None}
    assert fast.keys() == slow.keys()
    for k in fast:
        torch.testing.assert_close(fast[k], slow[k], rtol=1e-4, atol=1e-6)


def test_dmt_matched_steps_all_equals_stride_one(tmp_path):
    """n = Td random steps are all the steps: the same losses as dmt_stride=1 (teacher transitions off in both)."""
    student, teacher = models()
    batch = SMTDataCollator(mode="dmt")([data(4)[i] for i in range(4)])
    parts = [SMTTrainingModule(student, teacher, targs(tmp_path, mode="dmt", dmt_start="initial", dmt_stride=1, **kw))(**batch)
             for kw in ({"dmt_matched_steps": T}, {})]
    for name in ("dmt_dynamics", "readout"):
        torch.testing.assert_close(parts[0][name], parts[1][name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw, match", [({"dmt_matched_steps": 0}, "1..rollout_length"),
                                       ({"dmt_matched_steps": 4, "dmt_stride": 4}, "dmt_stride=1"),
                                       ({"dmt_matched_steps": 4, "dmt_gradient": "full_rollout"}, "one_step"),
                                       ({"dmt_matched_steps": 4, "dmt_teacher_transitions": True}, "dmt_teacher_transitions")])
def test_dmt_matched_steps_refuses_what_it_cannot_do(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        targs(tmp_path, mode="dmt", **{"dmt_stride": 1, **kw})
    assert targs(tmp_path, mode="dmt", dmt_stride=1, dmt_teacher_transitions=None,
                 dmt_matched_steps=4).dmt_teacher_transitions is False  # auto: off with random steps


def test_dmt_gradient_old_names_raise_naming_new(tmp_path):
    with pytest.raises(ValueError, match="dmt_gradient='one_step'"):
        targs(tmp_path, mode="dmt", dmt_gradient="detach")
    with pytest.raises(ValueError, match="dmt_gradient='full_rollout'"):
        targs(tmp_path, mode="dmt", dmt_gradient="through")


def test_dmt_never_mutates_callers_teacher_and_joint_after_dmt_trains_it(tmp_path):
    """DMT leaves the caller's teacher trainable (requires_grad, train mode); a later joint phase moves its weights."""
    student, teacher = models()
    teacher.train()
    flags = [p.requires_grad for p in teacher.parameters()]
    SMTTrainer(model=student, teacher=teacher, args=targs(tmp_path / "d", mode="dmt", dmt_start="initial"),
               train_dataset=data()).train()
    assert [p.requires_grad for p in teacher.parameters()] == flags and all(flags)
    assert teacher.training
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    SMTTrainer(model=student, teacher=teacher, args=targs(tmp_path / "j", mode="joint"), train_dataset=data()).train()
    assert any(not torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_dmt_replay_buffer_aggregates_visited_transitions(tmp_path):
    """dmt_buffer_size: transitions of earlier rollouts are kept and regressed on (part 'dmt_replay')."""
    student, teacher = models()
    batch = SMTDataCollator(mode="dmt")([data(4)[i] for i in range(4)])
    module = SMTTrainingModule(student, teacher, targs(tmp_path, mode="dmt", dmt_start="initial", dmt_buffer_size=10))
    parts = module(**batch)
    assert "dmt_replay" not in parts and len(module.replay) == 10  # first step: nothing stored yet, then filled
    prev, tok, tgt = module.replay.data
    parts = module(**batch)
    assert torch.isfinite(parts["dmt_replay"]) and len(module.replay) == 10
    # each stored transition is a (student memory, token, teacher memory) triple of the rollout
    Td = module.args.rollout_length
    assert prev.shape[1:] == tgt.shape[1:] and tok.dtype == torch.long
    assert set(tok.tolist()) <= set(batch["input_ids"][:, :Td].flatten().tolist())


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


def test_refused_trainer_flags_name_what_works(tmp_path):
    """Flags SMTTrainer cannot honour are refused when the arguments are built (a recipe builds every phase's first):
    label smoothing and NEFTune (an AttributeError in Trainer.__init__), gradient accumulation in smt/joint
    (micro-batches weighted by count, not by target: one SGD step moved the weights by up to 0.25), and predict()
    (per-batch loss parts returned as predictions)."""
    for kw, match in (({"label_smoothing_factor": 0.1}, "`label_smoothing_factor` is not supported"),
                      ({"neftune_noise_alpha": 5.0}, "`neftune_noise_alpha` is not supported"),
                      ({"mode": "joint", "gradient_accumulation_steps": 2},
                       "not supported in mode 'joint'.*per_device_train_batch_size"),
                      ({"mode": "smt", "gradient_accumulation_steps": 2}, "not supported in mode 'smt'"),
                      ({"gradient_accumulation_steps": 0}, "must be an int >= 1"),
                      ({"mode": "dmt", "gradient_accumulation_steps": 2, "dmt_buffer_size": 64},
                       "with dmt_buffer_size=64 is not supported"),
                      ({"load_best_model_at_end": True}, "load_best_model_at_end is not supported")):
        with pytest.raises(ValueError, match=match):
            targs(tmp_path, **kw)
    student, teacher = models()
    trainer = SMTTrainer(model=student, teacher=teacher, args=targs(tmp_path, mode="joint"), train_dataset=data())
    with pytest.raises(ValueError, match="predict is not supported.*evaluate"):
        trainer.predict(data(8))
    for name in ("compute_metrics", "preprocess_logits_for_metrics"):  # were never called (no key, no error)
        with pytest.raises(ValueError, match=f"`{name}` is not used by SMTTrainer: evaluate.. reports"):
            SMTTrainer(model=student, teacher=teacher, args=targs(tmp_path, mode="joint"), train_dataset=data(),
                       **{name: lambda *a: {"mine": 1.0}})
    accumulate = {"gradient_accumulation_kwargs": {"num_steps": 2}}  # reaches args only inside Trainer.__init__
    with pytest.raises(ValueError, match="gradient_accumulation_steps=2 is not supported in mode 'joint'"):
        SMTTrainer(model=student, teacher=teacher, args=targs(tmp_path, mode="joint", accelerator_config=accumulate),
                   train_dataset=data())
    # fp16 on CPU trained in float32 without a word (the same losses as without it); bf16 is CPU mixed precision
    with pytest.raises(ValueError, match="fp16=True on CPU trains in float32.*bf16=True"):
        targs(tmp_path, mode="dmt", fp16=True)
    half = targs(tmp_path, mode="dmt", dmt_start="initial")
    half.fp16 = True  # set after the arguments were built: the trainer checks again
    with pytest.raises(ValueError, match="fp16=True on CPU trains in float32"):
        SMTTrainer(model=student, teacher=teacher, args=half, train_dataset=data())
    bf16 = targs(tmp_path, mode="dmt", dmt_start="initial", bf16=True)
    assert SMTTrainer(model=student, teacher=teacher, args=bf16, train_dataset=data()).accelerator.mixed_precision == "bf16"


@pytest.mark.parametrize("mode", ["dmt", "bptt"])
def test_gradient_accumulation_equals_the_larger_batch(tmp_path, mode):
    """dmt and bptt take gradient accumulation: on fixed-length episodes with one target per row (every micro-batch
    holds as many targets), one SGD step over 2 micro-batches of 4 gives the weights of one step over the batch of 8
    they make up."""
    weights = []
    for ga, bs in ((1, 8), (2, 4)):
        student, teacher = models()
        args = targs(tmp_path / f"ga{ga}", mode=mode, dmt_start="initial", max_steps=1, per_device_train_batch_size=bs,
                     gradient_accumulation_steps=ga, optim="sgd", learning_rate=0.1, warmup_steps=0,
                     lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1e9)
        SMTTrainer(model=student, teacher=teacher if mode == "dmt" else None, args=args, train_dataset=data()).train()
        weights.append(torch.cat([p.detach().flatten() for p in student.parameters()]))
    assert not torch.equal(weights[0], torch.cat([p.detach().flatten() for p in models()[0].parameters()]))
    torch.testing.assert_close(weights[1], weights[0], rtol=0, atol=1e-6)


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
    assert "torch.compile" not in str(pytest.raises(NonFiniteLossError, trainer.train).value)


def test_non_finite_loss_under_torch_compile_names_the_compiler(tmp_path):
    """A compiled training module's non-finite loss says so (Inductor's NaN gradients on an H200,
    recipes/results/gpu_logs/compile_nan_probe.md): eager is the check to run next."""
    student, teacher = models()
    with torch.no_grad():
        teacher.lm_head.weight.fill_(float("nan"))
    trainer = SMTTrainer(model=student, teacher=teacher, args=targs(tmp_path, mode="joint"), train_dataset=data())
    batch = next(iter(trainer.get_train_dataloader()))
    compiled = torch.compile(trainer.module, backend="eager")
    with pytest.raises(NonFiniteLossError, match=r"'decoder'.*ran under torch.compile.*without torch_compile"):
        trainer.compute_loss(compiled, batch)


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


@torch.no_grad()
def readout_is_teachers(student, teacher) -> bool:
    """The student's readout is the teacher's decoder + head and its m_0 is E(empty), bit for bit."""
    src = {**{f"decoder.{k}": v for k, v in teacher.decoder.state_dict().items()},
           **{f"lm_head.{k}": v for k, v in teacher.lm_head.state_dict().items()}}
    dst = student.readout_head.state_dict()
    was_training = teacher.training
    m0 = teacher.eval().empty_memory(1)[0]
    teacher.train(was_training)
    return dst.keys() == src.keys() and all(torch.equal(dst[k], src[k]) for k in src) and torch.equal(
        student.model.initial_state, m0)


@pytest.mark.parametrize("mode", ["smt", "joint"])
def test_student_readout_is_the_teachers_wherever_it_is_observed(tmp_path, monkeypatch, mode):
    """smt/joint: from the trainer's construction on, after every optimizer step (as a user callback sees it), in
    mid-training evaluation, in a checkpoint on disk, after train() and in a push_to_hub export, the student's readout
    and m_0 are the (training) teacher's."""
    from transformers import TrainerCallback

    import smt_hf.hub.export

    class Observe(TrainerCallback):
        seen = []

        def on_step_end(self, args, state, control, **kwargs):
            self.seen.append(("step", state.global_step, readout_is_teachers(student, teacher)))

        def on_evaluate(self, args, state, control, **kwargs):
            self.seen.append(("eval", state.global_step, readout_is_teachers(student, teacher)))

    student, teacher = models()
    assert not readout_is_teachers(student, teacher)
    args = targs(tmp_path, mode=mode, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=3)
    trainer = SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=data(), eval_dataset=data(16, seed=3),
                         callbacks=[Observe()])
    assert readout_is_teachers(student, teacher)  # a first evaluate() or push sees the standalone student
    before = {k: v.clone() for k, v in teacher.decoder.state_dict().items()}
    trainer.train()
    assert Observe.seen == [("step", 1, True), ("step", 2, True), ("eval", 2, True), ("step", 3, True),
                            ("step", 4, True), ("eval", 4, True)]
    assert readout_is_teachers(student, teacher)
    assert any(not torch.equal(v, before[k]) for k, v in teacher.decoder.state_dict().items())  # the teacher trained
    ckpt = os.path.join(args.output_dir, "checkpoint-3")
    assert readout_is_teachers(SMTRecurrentForCausalLM.from_pretrained(os.path.join(ckpt, "student")),
                               SMTTeacherModel.from_pretrained(os.path.join(ckpt, "teacher")))
    monkeypatch.setattr(smt_hf.hub.export, "push_folder", lambda *a, **k: "commit")  # no network: the folder is kept
    assert trainer.push_to_hub("me/smt") == "commit"
    pushed = SMTRecurrentForCausalLM.from_pretrained(os.path.join(args.output_dir, "hub_export", "student"))
    assert readout_is_teachers(pushed, teacher)


@pytest.mark.parametrize("observe", ["evaluate", "save_model", "push_to_hub"])
def test_teacher_edited_after_init_is_what_evaluate_save_and_push_see(tmp_path, monkeypatch, observe):
    """A teacher changed after the trainer was built (no optimizer step since): evaluate(), save_model() and
    push_to_hub() each see (and write) the student whose readout and m_0 are the edited teacher's."""
    import smt_hf.hub.export

    student, teacher = models()
    args = targs(tmp_path, mode="joint")
    trainer = SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=data(), eval_dataset=data(16, seed=3))
    teacher.load_state_dict(models(seed=7)[1].state_dict())
    assert not readout_is_teachers(student, teacher)  # stale until one of the three runs
    if observe == "evaluate":
        trainer.evaluate()
        assert readout_is_teachers(student, teacher)
        return
    if observe == "save_model":
        trainer.save_model(str(tmp_path / "saved"))
        folder = tmp_path / "saved" / "student"
    else:
        monkeypatch.setattr(smt_hf.hub.export, "push_folder", lambda *a, **k: "commit")  # no network
        trainer.push_to_hub("me/smt")
        folder = os.path.join(args.output_dir, "hub_export", "student")
    assert readout_is_teachers(SMTRecurrentForCausalLM.from_pretrained(folder), teacher)


def test_fsdp1_is_refused_naming_fsdp2(tmp_path):
    """The readout copies and evaluate() work on FSDP2 shards (test_distributed.py); FSDP1's flat parameters are refused
    before the Trainer is built (here in one process, where the HF Trainer would refuse FSDP for another reason)."""
    student, teacher = models()
    args = targs(tmp_path, mode="joint", fsdp=True, fsdp_config={"version": 1})
    with pytest.raises(ValueError, match=r"FSDP2 only.*fsdp_config=\{'version': 2\}"):
        SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=data())


@pytest.mark.parametrize("backbone, blocks", [("transformer", ["Block"]), ("mlp", ["Block", "ResidualMLPBlock"])])
def test_fsdp_auto_wrap_lists_only_the_block_classes_present(tmp_path, backbone, blocks):
    """accelerate's FSDP auto-wrap raises on a `_no_split_modules` class it can't find in the model."""
    student, teacher = models(backbone)
    assert SMTTrainingModule(student, teacher, targs(tmp_path, mode="joint"))._no_split_modules == blocks


@pytest.mark.parametrize("mode", ["dmt", "bptt"])
def test_dmt_and_bptt_leave_the_student_readout_its_own(tmp_path, mode):
    """Only smt/joint take the readout from the teacher: in dmt/bptt it is the student's own, trained."""
    student, teacher = models()
    readout = {k: v.clone() for k, v in student.readout_head.state_dict().items()}
    trainer = SMTTrainer(model=student, teacher=teacher, args=targs(tmp_path, mode=mode, max_steps=2, dmt_start="initial"),
                         train_dataset=data())
    assert all(torch.equal(v, readout[k]) for k, v in student.readout_head.state_dict().items())
    trainer.train()
    assert not readout_is_teachers(student, teacher)
    assert any(not torch.equal(v, readout[k]) for k, v in student.readout_head.state_dict().items())


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


@pytest.mark.parametrize("mode", ["dmt", "bptt"])
def test_sync_free_recurrent_step_gives_identical_training_and_leaves_student_unpatched(tmp_path, mode):
    """recurrent_step_compile='none': the trainer passes the step to its training module (same weights after
    training as the plain step); the user's student object is never patched (no instance `_step` / `step`)."""
    weights = []
    for compile_mode in (None, "none"):
        student, teacher = models()
        args = targs(tmp_path / str(compile_mode), mode=mode, dmt_start="initial", dmt_gradient="full_rollout",
                     recurrent_step_compile=compile_mode)
        trainer = SMTTrainer(model=student, teacher=teacher if mode == "dmt" else None, args=args,
                             train_dataset=data())
        assert (trainer.module.step_fn is None) == (compile_mode is None)
        trainer.train()
        assert "_step" not in vars(student.model) and "step" not in vars(student.model)
        assert type(student.model)._step is student.model._step.__func__
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


@pytest.mark.parametrize("change", [dict(rope_theta=500.0), dict(num_attention_heads=2), dict(rms_norm_eps=1e-3)])
def test_readout_copy_checks_the_function_not_only_shapes(change):
    """Same parameter shapes but a different head count / rope theta / eps: copying would give wrong logits."""
    tc = tiny_teacher_config(max_context_length=T)
    teacher = SMTTeacherModel(tc)
    student = SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(tc, updater_layers=1, **change))
    name = next(iter(change))
    with pytest.raises(ValueError, match=name):
        make_student_standalone(student, teacher)
