"""`lambda_dec_start_step` / `lambda_dec_ramp_steps`: a curriculum on the teacher's decoder (future) loss. The weight
is 0 before the start step, ramps linearly, then stays at `lambda_dec`; the trainer applies the weight of the step it
is on (the decoder gets no gradient before the start), and the schedule is refused where there is no decoder loss."""

import pytest
import torch
from transformers import TrainerCallback
from test_prefix_teacher import T, args, models

from smt_hf.data import make_task
from smt_hf.trainer import SMTTrainer
from smt_hf.training_args import SMTTrainingArguments
from smt_hf.training_module import SMTTrainingModule


def test_decoder_weight_is_zero_then_ramps_then_lambda_dec(tmp_path):
    student, teacher = models()
    mod = SMTTrainingModule(student, teacher, args(tmp_path, lambda_dec=2.0, lambda_dec_start_step=3,
                                                   lambda_dec_ramp_steps=4, max_steps=10))
    got = [mod.weights(step)["decoder"] for step in range(9)]
    assert got == [0.0, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert mod.weights()["decoder"] == 2.0  # no step: the final weight
    step_change = SMTTrainingModule(student, teacher, args(tmp_path, lambda_dec=2.0, lambda_dec_start_step=3, max_steps=10))
    assert [step_change.weights(s)["decoder"] for s in (0, 2, 3, 50)] == [0.0, 0.0, 2.0, 2.0]
    default = SMTTrainingModule(student, teacher, args(tmp_path))
    assert [default.weights(s)["decoder"] for s in (0, 7)] == [1.0, 1.0]  # the reference: on from the first step


@pytest.mark.parametrize("ramp", [0, 2])
def test_trainer_gives_the_decoder_no_gradient_before_the_start_step(tmp_path, ramp):
    """The decoder after each of 5 optimizer steps with the loss off for the first 3: equal to its init after steps
    1-3, changed after step 4 (the first with a non-zero weight), and `decoder_weight` is logged."""
    student, teacher = models()
    data = make_task("needle", 64, T, seed=0)
    init = {k: v.clone() for k, v in teacher.decoder.state_dict().items()}
    untouched = {}

    class Watch(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            untouched[state.global_step] = all(torch.equal(init[k], v) for k, v in teacher.decoder.state_dict().items())

    a = args(tmp_path, mode="smt", smt_all_prefixes=False, max_steps=5, lambda_dec_start_step=3,
             lambda_dec_ramp_steps=ramp)
    tr = SMTTrainer(model=student, teacher=teacher, args=a, train_dataset=data, callbacks=[Watch()])
    tr.train()
    assert untouched == {1: True, 2: True, 3: True, 4: False, 5: False}
    logged = [h["decoder_weight"] for h in tr.state.log_history if "decoder_weight" in h]
    assert logged == [0.0, 0.0, 0.0, 0.5 if ramp else 1.0, 1.0]


def test_schedule_is_refused_where_it_cannot_turn_the_decoder_loss_on(tmp_path):
    base = dict(output_dir=str(tmp_path), use_cpu=True)
    with pytest.raises(ValueError, match="only mode 'smt' or 'joint'"):
        SMTTrainingArguments(mode="dmt", lambda_dec_start_step=5, **base)
    with pytest.raises(ValueError, match="`lambda_dec_start_step` and `lambda_dec_ramp_steps` must be >= 0"):
        SMTTrainingArguments(mode="smt", lambda_dec_ramp_steps=-1, **base)
    with pytest.raises(ValueError, match="lambda_dec=0, which is off at every step"):
        SMTTrainingArguments(mode="smt", lambda_dec=0.0, lambda_dec_start_step=5, **base)
    with pytest.raises(ValueError, match="would never be on"):
        SMTTrainingArguments(mode="smt", lambda_dec_start_step=5, max_steps=5, **base)
    SMTTrainingArguments(mode="smt", lambda_dec_start_step=5, max_steps=6, **base)  # on for the last step: allowed
