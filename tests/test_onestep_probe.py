"""recipes/onestep_error_probe.py scores exactly what the evaluation calls teacher_acc and onestep_acc (same
positions, same memories), and its noise control at the one-step error's size is a read-out of the teacher's own
memory plus that much noise."""

import os
import sys

import torch
from test_prefix_teacher import T, models

from smt_hf.data import make_task
from smt_hf.evaluation import evaluate_smt, summarize

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))


def test_probe_equals_the_evaluation_and_its_mse_is_the_one_step_error():
    import onestep_error_probe as probe

    student, teacher = models(causal=False)
    ds = make_task("needle", 32, T, seed=0, vocab_size=8)
    ids, labels = torch.tensor(ds["input_ids"]), torch.tensor(ds["labels"])
    got = probe.probe(student, teacher, ids, labels, T, eval_positions=4)
    ref = summarize([evaluate_smt(student, teacher, ids, labels, T, eval_positions=4)])
    assert got["teacher"] == ref["teacher_acc"] and got["one_step"] == ref["onestep_acc"]
    assert got["positions"] == 32 and 0.0 <= got["noise"] <= 1.0  # needle: one target per episode
    # mse is against the teacher's memory: a step that returns zeros is off by the memory's mean square, which is 1
    # (RMS-normalised memories), and its read-out is no better than the read-out of the zero vector
    student.step = lambda m, tok: torch.zeros_like(m)
    zero = probe.probe(student, teacher, ids, labels, T, eval_positions=4)
    assert abs(zero["mse"] - 1.0) < 1e-3 and zero["teacher"] == got["teacher"]


def test_by_position_scores_every_target_and_its_last_positions_are_the_evaluation():
    import onestep_error_probe as probe

    student, teacher = models(causal=False)
    ds = make_task("string_copy", 16, T, seed=0, vocab_size=8)
    ids, labels = torch.tensor(ds["input_ids"]), torch.tensor(ds["labels"])
    per = probe.by_position(student, teacher, ids, labels, T)
    targets = (labels[:, 1:] != -100).sum(0)  # targets at each position t >= 1, over the rows
    assert {t: r["n"] for t, r in per.items()} == {t + 1: int(n) for t, n in enumerate(targets) if n}
    # the evaluation scores the last 4 targets of each row: the same read-outs, so its accuracy is their mean
    last = sorted(per)[-4:]
    ref = summarize([evaluate_smt(student, teacher, ids, labels, T, eval_positions=4)])
    mean = lambda k: sum(per[t][k] * per[t]["n"] for t in last) / sum(per[t]["n"] for t in last)  # noqa: E731
    assert abs(mean("teacher") - ref["teacher_acc"]) < 1e-6 and abs(mean("one_step") - ref["onestep_acc"]) < 1e-6
