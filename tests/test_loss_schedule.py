"""`lambda_dec_start_step` / `lambda_dec_ramp_steps`: a curriculum on the teacher's decoder (future) loss. The weight
is 0 before the start step, ramps linearly, then stays at `lambda_dec`; the trainer applies the weight of the step it
is on (the decoder gets no gradient before the start), and the schedule is refused where there is no decoder loss."""

import pytest
import torch
from test_prefix_teacher import T, args, models

from smt_hf.data import make_task
from smt_hf.trainer import SMTTrainer
from smt_hf.training_args import SMTTrainingArguments
from smt_hf.training_module import SMTTrainingModule


def test_decoder_weight_is_zero_then_ramps_then_lambda_dec(tmp_path):
    student, teacher = models()
    mod = SMTTrainingModule(student, teacher, args(tmp_path, lambda_dec=2.0, lambda_dec_start_step=3,
                                                   lambda_dec_ramp_steps=4))
    got = [mod.weights(step)["decoder"] for step in range(9)]
    assert got == [0.0, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert mod.weights()["decoder"] == 2.0  # no step: the final weight
    step_change = SMTTrainingModule(student, teacher, args(tmp_path, lambda_dec=2.0, lambda_dec_start_step=3))
    assert [step_change.weights(s)["decoder"] for s in (0, 2, 3, 50)] == [0.0, 0.0, 2.0, 2.0]
    default = SMTTrainingModule(student, teacher, args(tmp_path))
    assert [default.weights(s)["decoder"] for s in (0, 7)] == [1.0, 1.0]  # the reference: on from the first step


@pytest.mark.parametrize("start,changed", [(3, False), (2, True), (0, True)])
def test_trainer_gives_the_decoder_no_gradient_before_the_start_step(tmp_path, start, changed):
    student, teacher = models()
    data = make_task("needle", 64, T, seed=0)
    before = {k: v.clone() for k, v in teacher.decoder.state_dict().items()}
    a = args(tmp_path, mode="smt", smt_all_prefixes=False, max_steps=3, lambda_dec_start_step=start)
    SMTTrainer(model=student, teacher=teacher, args=a, train_dataset=data).train()
    same = all(torch.equal(before[k], v) for k, v in teacher.decoder.state_dict().items())
    assert same != changed  # 3 steps with the decoder loss off from step 0..2: untouched; on at step 2: trained


def test_schedule_is_refused_without_a_decoder_loss_and_when_negative(tmp_path):
    with pytest.raises(ValueError, match="only mode 'smt' or 'joint'"):
        SMTTrainingArguments(output_dir=str(tmp_path), mode="dmt", lambda_dec_start_step=5, use_cpu=True)
    with pytest.raises(ValueError, match="must be >= 0"):
        SMTTrainingArguments(output_dir=str(tmp_path), mode="smt", lambda_dec_ramp_steps=-1, use_cpu=True)
