"""`seq_len_curriculum`: a curriculum over sequence length by supervision. Stage i of `seq_len_curriculum_steps`
optimizer steps keeps the labels of positions t < seq_len_curriculum[i] (the rest -100); the last stage lasts to the
end; inputs are unchanged. It is refused where it cannot take effect, and teacher_curves.py runs through it."""

import os
import sys

import pytest
import torch
from test_prefix_teacher import T, args, models
from transformers import TrainerCallback

from smt_hf.data import make_task
from smt_hf.trainer import SMTTrainer
from smt_hf.training_args import SMTTrainingArguments
from smt_hf.training_module import SMTTrainingModule, mask_labels_from

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))


def test_label_horizon_per_stage_then_the_last_length(tmp_path):
    student, teacher = models()
    mod = SMTTrainingModule(student, teacher, args(tmp_path, seq_len_curriculum=[3, 6, 12], seq_len_curriculum_steps=2,
                                                   max_steps=10))
    assert [mod.label_horizon(s) for s in range(7)] + [mod.label_horizon(99)] == [3, 3, 6, 6, 12, 12, 12, 12]
    assert SMTTrainingModule(student, teacher, args(tmp_path)).label_horizon(0) is None


def test_mask_labels_from_keeps_earlier_positions():
    labels = torch.arange(12).view(2, 6)
    got = mask_labels_from(labels, 4)
    assert got.tolist() == [[0, 1, 2, 3, -100, -100], [6, 7, 8, 9, -100, -100]]
    assert labels[0, 5] == 5  # a copy


@pytest.mark.parametrize("mode, all_prefixes", [("smt", True), ("smt", False), ("joint", False), ("bptt", False)])
def test_trainer_supervises_only_positions_below_the_stage_length(tmp_path, mode, all_prefixes):
    """The labels the training module receives at each of 5 steps (curriculum [4, 7, 12], 2 steps per stage) equal
    the batch's labels with positions >= 4 (steps 1-2), >= 7 (steps 3-4) set to -100, all of them at step 5;
    input_ids are untouched; the length is logged. Evaluation reads the unmasked labels."""
    student, teacher = models()
    data = make_task("parity", 64, T, seed=0)
    seen = []

    def grab(module, a, kw):
        seen.append((kw["input_ids"].clone(), kw["labels"].clone(), module.training))

    a = args(tmp_path, mode=mode, max_steps=5, seq_len_curriculum=[4, 7, T], seq_len_curriculum_steps=2,
             per_device_train_batch_size=4, smt_all_prefixes=all_prefixes)
    tr = SMTTrainer(model=student, teacher=teacher, args=a, train_dataset=data)
    tr.module.register_forward_pre_hook(grab, with_kwargs=True)
    tr.train()
    train = [(x, y) for x, y, training in seen if training]
    assert len(train) == 5
    rows = {tuple(r) for r in torch.tensor(data["input_ids"]).tolist()}
    full = {tuple(x): y for x, y in zip(torch.tensor(data["input_ids"]).tolist(), torch.tensor(data["labels"]).tolist())}
    for step, (x, y) in enumerate(train):
        h = (4, 4, 7, 7, T)[step]
        for xi, yi in zip(x.tolist(), y.tolist()):
            assert tuple(xi) in rows  # inputs unchanged
            assert yi == full[tuple(xi)][:h] + [-100] * (T - h)
    logged = [h["seq_len_horizon"] for h in tr.state.log_history if "seq_len_horizon" in h]
    assert logged == [4, 4, 7, 7, T]
    tr.module.eval()  # outside training (evaluation, prediction) the labels pass unmasked
    x, y = torch.tensor(data["input_ids"][:4]), torch.tensor(data["labels"][:4])
    tr.compute_loss(tr.module, {"input_ids": x, "labels": y})
    assert torch.equal(seen[-1][1], y) and not seen[-1][2]


def test_bptt_loss_is_zero_not_nan_before_the_first_target(tmp_path):
    """Needle's only target is the last position: with the stage length below it a BPTT batch has no target, and its
    loss is 0 (was NaN, the trainer stopped with NonFiniteLossError); with targets it is the student's own mean
    next-token CE."""
    student, teacher = models()
    data = make_task("needle", 16, T, seed=0, vocab_size=8)
    labels = torch.tensor(data["labels"])
    assert (labels[:, :T - 2] == -100).all()
    a = args(tmp_path, mode="bptt", smt_all_prefixes=False, max_steps=3, seq_len_curriculum=[4, T],
             seq_len_curriculum_steps=2, per_device_train_batch_size=4)
    tr = SMTTrainer(model=student, teacher=None, args=a, train_dataset=data)
    x = torch.tensor(data["input_ids"][:4])
    assert tr.module.bptt_parts(x, mask_labels_from(labels[:4], 4))["bptt"].item() == 0.0
    assert torch.allclose(tr.module.bptt_parts(x, labels[:4])["bptt"], student(x, labels=labels[:4]).loss)
    tr.train()
    assert [h["seq_len_horizon"] for h in tr.state.log_history if "seq_len_horizon" in h] == [4, 4, T]


def test_a_curriculum_that_cannot_cover_the_batch_is_refused_at_the_first_step(tmp_path):
    """A last length below the sequence length would leave the later positions unsupervised for the whole run, and
    a batch without `labels` (pre-cut windows) cannot be masked by position: both stop with a message."""
    student, teacher = models()
    data = make_task("parity", 16, T, seed=0)
    a = args(tmp_path, mode="smt", max_steps=3, seq_len_curriculum=[4, 8], seq_len_curriculum_steps=1,
             per_device_train_batch_size=4)
    tr = SMTTrainer(model=student, teacher=teacher, args=a, train_dataset=data)
    with pytest.raises(ValueError, match=f"ends at 8 but the batch's sequences have {T} positions"):
        tr.train()
    tr.module.train()
    with pytest.raises(ValueError, match="this batch has none"):
        tr.compute_loss(tr.module, {"input_ids": torch.tensor(data["input_ids"][:2])})


def test_an_epoch_run_that_ends_before_the_last_length_is_refused(tmp_path):
    student, teacher = models()
    data = make_task("parity", 16, T, seed=0)  # 1 epoch = 4 steps of 4
    a = args(tmp_path, mode="smt", max_steps=-1, num_train_epochs=1, per_device_train_batch_size=4,
             seq_len_curriculum=[4, 8], seq_len_curriculum_steps=4)
    with pytest.raises(ValueError, match="reaches its last length at step 4, but this run has 4 optimizer steps"):
        SMTTrainer(model=student, teacher=teacher, args=a, train_dataset=data).train()


def test_curriculum_is_refused_where_it_cannot_take_effect(tmp_path):
    base = dict(output_dir=str(tmp_path), use_cpu=True, mode="smt")
    for bad in ([8, 8], [16, 8], [1, 8], [], 8, [8, 16.5], [True, 8]):
        with pytest.raises(ValueError, match="strictly increasing lengths >= 2"):
            SMTTrainingArguments(seq_len_curriculum=bad, seq_len_curriculum_steps=5, **base)
    with pytest.raises(ValueError, match="needs `seq_len_curriculum_steps` >= 1"):
        SMTTrainingArguments(seq_len_curriculum=[8, 16], **base)
    with pytest.raises(ValueError, match="set both or neither"):
        SMTTrainingArguments(seq_len_curriculum_steps=5, **base)
    with pytest.raises(ValueError, match="reaches its last length at step 10, not below max_steps=10"):
        SMTTrainingArguments(seq_len_curriculum=[4, 8, 16], seq_len_curriculum_steps=5, max_steps=10, **base)
    SMTTrainingArguments(seq_len_curriculum=[4, 8, 16], seq_len_curriculum_steps=5, max_steps=11, **base)
    for where in (dict(mode="smt", split="last"), dict(mode="dmt", dmt_start="teacher")):
        with pytest.raises(ValueError, match="applies to episodes"):
            SMTTrainingArguments(**{**base, **where}, seq_len_curriculum=[4, 8], seq_len_curriculum_steps=5)
    SMTTrainingArguments(**{**base, "mode": "dmt"}, dmt_start="initial", seq_len_curriculum=[4, 8],
                         seq_len_curriculum_steps=5)


DEFAULTS = {"seq_len": 8, "teacher": {"hidden_size": 16, "memory_tokens": 2, "num_encoder_layers": 1,
                                      "num_decoder_layers": 1, "num_attention_heads": 2},
            "student": {"backbone": "mlp"}, "learning_rate": 1e-3, "warmup_steps": 0, "batch_size": 8,
            "max_steps": 12, "eval_steps": 4, "budget_seconds": 600, "target": 0.0, "num_train": 64, "num_eval": 16}


@pytest.mark.parametrize("lm", [False, True])
def test_calibration_runs_until_the_last_length_is_on(lm):
    """teacher_curves.py (teacher, and the causal-LM reference): a run at its target at the first evaluation (step 4)
    keeps going until the last stage (from step index 6, i.e. after 7 steps) has trained, so it stops at the evaluation of
    step 8 (was: stopped at step 4 while only positions < 4 had been supervised)."""
    import teacher_curves

    key = "training" if lm else "smt_training"
    spec = {"task": "parity", **({"reference_lm": True} if lm else {}),
            key: {"seq_len_curriculum": [4, 6, 8], "seq_len_curriculum_steps": 3}}
    assert teacher_curves.full_loss_step({**DEFAULTS, **spec}) == 7
    r = teacher_curves.run_one("parity", spec, DEFAULTS, seed=0)
    assert [c[0] for c in r["curve"]] == [4, 8] and r["reached_at"]["step"] == 8


def test_reference_lm_refuses_a_curriculum_the_trainer_would_refuse():
    import teacher_curves

    spec = {"task": "parity", "reference_lm": True, "training": {"seq_len_curriculum": [4, 8]}}
    with pytest.raises(ValueError, match="needs `seq_len_curriculum_steps` >= 1"):
        teacher_curves.run_one("parity", spec, DEFAULTS, seed=0)
    spec["training"]["seq_len_curriculum_steps"] = 12  # last length at step 12 = max_steps
    with pytest.raises(ValueError, match="not below max_steps=12"):
        teacher_curves.run_one("parity", spec, DEFAULTS, seed=0)


@pytest.mark.parametrize("mode, all_prefixes", [("smt", False), ("joint", False), ("smt", True)])
def test_horizon_split_points_lie_inside_the_stage_length(tmp_path, mode, all_prefixes):
    """`seq_len_curriculum_split='horizon'`: at each of 5 steps (curriculum [4, 7, 12], 2 steps per stage) every SMT
    split point c is < the stage length, so the decoder's first future target labels[c] lies in the supervised
    positions. With the default 'sequence' (the old behaviour) points are drawn over 0..L-1
    and most first targets of the first stage are -100."""
    draws = {}
    for where in ("horizon", "sequence"):
        student, teacher = models()
        data = make_task("parity", 64, T, seed=0)
        kw = {} if where == "sequence" else {"seq_len_curriculum_split": "horizon"}
        a = args(tmp_path, mode=mode, max_steps=5, seq_len_curriculum=[4, 7, T], seq_len_curriculum_steps=2,
                 per_device_train_batch_size=8, splits_per_sequence=1 if all_prefixes else 4,
                 smt_all_prefixes=all_prefixes, **kw)
        tr = SMTTrainer(model=student, teacher=teacher, args=a, train_dataset=data)
        seen, draw = [], tr.module.sampler
        tr.module.sampler = lambda lengths, draw=draw: seen.append(draw(lengths)) or seen[-1]
        tr.train()
        draws[where] = seen
    for step, c in enumerate(draws["horizon"]):
        assert c.shape[0] == 8 and int(c.max()) < (4, 4, 7, 7, T)[step]
    for stage, h in ((slice(0, 2), 4), (slice(2, 4), 7)):  # the whole range 0..H-1, H-1 included
        assert int(torch.cat(draws["horizon"][stage]).max()) == h - 1
    early = torch.cat(draws["sequence"][:2])
    assert int(early.max()) >= 4 and float((early >= 4).float().mean()) > 0.5
    assert int(torch.cat(draws["horizon"][4:]).max()) >= 7  # the last stage draws over the whole sequence again


def test_horizon_split_windows_have_a_supervised_first_target(tmp_path):
    """The windows SMT decodes at a stage of length 4: with split_horizon=4 every first future label is a target
    (parity has none at position 0), and the same draw without it leaves some at -100 (masked positions >= 4)."""
    student, teacher = models()
    mod = SMTTrainingModule(student, teacher, args(tmp_path, mode="smt", smt_all_prefixes=False, splits_per_sequence=4))
    data = make_task("parity", 8, T, seed=0)
    x, y = torch.tensor(data["input_ids"]), mask_labels_from(torch.tensor(data["labels"]), 4)
    torch.manual_seed(0)
    inside = mod.smt_batch(x, y, split_horizon=4)
    torch.manual_seed(0)
    whole = mod.smt_batch(x, y)
    first, c = inside["future_labels"][:, 0], inside["split_points"]
    assert ((first != -100) | (c == 0)).all() and int(c.max()) < 4  # parity has no label at position 0
    assert torch.equal(c, whole["split_points"] // (T // 4))  # the same uniform draws, over 0..3 instead of 0..T-1
    assert ((whole["future_labels"][:, 0] == -100) & (whole["split_points"] >= 4)).any()


def test_horizon_split_is_refused_without_a_curriculum_or_outside_smt(tmp_path):
    """The arguments refuse 'horizon' where it cannot act; the module refuses a split horizon it would ignore
    (pre-cut SMT windows, whose split points are already drawn; DMT and BPTT, which draw none)."""
    base = dict(output_dir=str(tmp_path), use_cpu=True, seq_len_curriculum_split="horizon")
    with pytest.raises(ValueError, match="needs mode 'smt' or 'joint' with a seq_len_curriculum"):
        SMTTrainingArguments(mode="smt", **base)
    with pytest.raises(ValueError, match="needs mode 'smt' or 'joint' with a seq_len_curriculum"):
        SMTTrainingArguments(mode="bptt", seq_len_curriculum=[4, 8], seq_len_curriculum_steps=5, **base)
    with pytest.raises(ValueError, match="must be 'sequence' or 'horizon'"):
        SMTTrainingArguments(mode="smt", seq_len_curriculum_split="stage", output_dir=str(tmp_path), use_cpu=True)
    a = SMTTrainingArguments(mode="joint", seq_len_curriculum=[4, 8], seq_len_curriculum_steps=5, **base)
    assert a.seq_len_curriculum_split == "horizon"
    student, teacher = models()
    mod = SMTTrainingModule(student, teacher, args(tmp_path, mode="smt", smt_all_prefixes=False))
    data = make_task("parity", 4, T, seed=0)
    x, y = torch.tensor(data["input_ids"]), torch.tensor(data["labels"])
    windows = mod.smt_batch(x, y)
    with pytest.raises(ValueError, match="pre-cut SMT windows"):
        mod(split_horizon=4, **windows)
    mod(**windows)
    bptt = SMTTrainingModule(student, None, args(tmp_path, mode="bptt", smt_all_prefixes=False))
    with pytest.raises(ValueError, match="mode 'smt' or 'joint'"):
        bptt(input_ids=x, labels=y, split_horizon=4)
