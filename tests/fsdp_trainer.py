"""Run by test_distributed.py: smt/joint through `SMTTrainer` under the Trainer's own FSDP2 (accelerate's plugin,
`fsdp="full_shard"`, fsdp_config version 2), CPU + gloo; or in one process with the same global batch.

    python fsdp_trainer.py OUT_JSON MODE                (one process, no FSDP)
    torchrun --nproc_per_node 2 fsdp_trainer.py OUT_JSON MODE fsdp (the Trainer's FSDP2)
    torchrun --nproc_per_node 2 fsdp_trainer.py OUT_JSON MODE fsdp resume (or one process: MODE resume)
3 training steps, then `evaluate()`, then `save_model()`. Writes (rank 0) the losses, the eval metrics, whether the
parameters were DTensor shards, whether the saved student's readout and m_0 are the saved teacher's bit for bit, and
the logits of the saved student reloaded standalone.

`resume`: 4 steps saving checkpoints every 2 (uninterrupted), then new models (another seed: everything must come
from the checkpoint) and a new trainer resumed from checkpoint-2 to step 4 (`train(resume_from_checkpoint=...)`, the
Trainer's checkpoint load after wrapping). Writes the losses and the saved final student and teacher state dicts of
both runs (`resume_losses`, `resume_max_diff`: the largest absolute parameter difference, per saved tensor).

Accelerate enables FSDP only on accelerators (`AcceleratorState` leaves a CPU run plain MULTI_CPU, a `fsdp=True`
Trainer then runs DDP), so this script turns it on for the CPU: after `AcceleratorState` is built, a MULTI_CPU state
given an FSDP plugin gets `distributed_type = FSDP` (also in the shared `PartialState`) and the plugin, as accelerate does on GPUs. Everything after
that (fully_shard of the training module by `fsdp2_prepare_model`, FSDP's clipping and full-state-dict save) is
accelerate's and the Trainer's own code.
"""

import json
import os
import sys

import torch

torch.set_num_threads(1)
from accelerate.state import AcceleratorState, PartialState  # noqa: E402
from accelerate.utils import DistributedType  # noqa: E402
from conftest import end_launch, tiny_teacher_config  # noqa: E402

from smt_hf import SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherModel  # noqa: E402
from smt_hf.data import stream_windows  # noqa: E402
from smt_hf.trainer import SMTTrainer  # noqa: E402
from smt_hf.training_args import SMTTrainingArguments  # noqa: E402

out, mode = sys.argv[1], sys.argv[2]
fsdp = len(sys.argv) > 3 and sys.argv[3] == "fsdp"
resume = "resume" in sys.argv[3:]
world = int(os.environ.get("WORLD_SIZE", "1"))


def write(obj: dict) -> None:
    """The report (rank 0), written and closed (`end_launch` ends the process without finalizing open files)."""
    with open(out, "w") as f:
        json.dump(obj, f)


rank = int(os.environ.get("RANK", "0"))

_init = AcceleratorState.__init__


def _init_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, fsdp_plugin
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as accelerate does (a later state reads it)


AcceleratorState.__init__ = _init_fsdp_on_cpu

tc = tiny_teacher_config(max_context_length=24)
tokens = torch.randint(0, 16, (5000,), generator=torch.Generator().manual_seed(0)).numpy().astype("uint8")


def build(output_dir, seed=0, **kw):
    torch.manual_seed(seed)
    teacher = SMTTeacherModel(tc)
    student = SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(tc, backbone="transformer", updater_layers=1))
    # lambda_unif = 0: the uniformity loss pools pairs within a batch, so its per-rank mean is not the global one
    base = dict(
        output_dir=output_dir, mode=mode, context_length=16, future_length=8,
        split="last", lambda_unif=0.0, per_device_train_batch_size=8 // world, per_device_eval_batch_size=4,
        max_steps=3, logging_steps=1, learning_rate=1e-3, report_to="none", save_strategy="no", use_cpu=True,
        disable_tqdm=True, seed=0, ddp_backend="gloo" if world > 1 else None,
        fsdp=fsdp, fsdp_config={"version": 2} if fsdp else None,
    )
    base.update(kw)
    return SMTTrainer(model=student, teacher=teacher, args=SMTTrainingArguments(**base),
                      train_dataset=stream_windows(tokens, 24, 256, seed=0),
                      eval_dataset=stream_windows(tokens, 24, 12, seed=1))


def saved_state(trainer, folder):
    """The full student and teacher state dicts as `save_model` writes them (every rank: FSDP gathers)."""
    trainer.save_model(folder)
    if not trainer.is_world_process_zero():
        return None
    student = SMTRecurrentForCausalLM.from_pretrained(os.path.join(folder, "student"))
    teacher = SMTTeacherModel.from_pretrained(os.path.join(folder, "teacher"))
    return {**{f"student.{k}": v for k, v in student.state_dict().items()},
            **{f"teacher.{k}": v for k, v in teacher.state_dict().items()}}


def logged_losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


here = os.path.dirname(out)
if resume:
    ckpt = dict(max_steps=4, save_strategy="steps", save_steps=2)
    full = build(os.path.join(here, "full"), **ckpt)
    full.train()
    ref = saved_state(full, os.path.join(here, "full.final"))
    resumed = build(os.path.join(here, "resumed"), seed=123, **ckpt)
    resumed.train(resume_from_checkpoint=os.path.join(here, "full", "checkpoint-2"))
    got = saved_state(resumed, os.path.join(here, "resumed.final"))
    if resumed.is_world_process_zero():
        diff = {k: float((got[k] - v).abs().max()) for k, v in ref.items()} if got.keys() == ref.keys() else None
        write({"world": world, "fsdp": bool(resumed.is_fsdp_enabled), "losses": logged_losses(full),
               "resume_losses": logged_losses(resumed), "resume_max_diff": diff,
               "resumed_step": resumed.state.global_step})
    end_launch()

trainer = build(os.path.join(here, "run"))
trainer.train()
from torch.distributed.tensor import DTensor  # noqa: E402

sharded = all(isinstance(p, DTensor) for p in trainer.model.parameters())
metrics = trainer.evaluate()
final = os.path.join(here, os.path.basename(out) + ".final")
trainer.save_model(final)  # every rank: FSDP gathers the full state dict
if trainer.is_world_process_zero():
    losses = logged_losses(trainer)
    saved = SMTRecurrentForCausalLM.from_pretrained(os.path.join(final, "student")).eval()
    saved_teacher = SMTTeacherModel.from_pretrained(os.path.join(final, "teacher")).eval()
    src = {**{f"decoder.{k}": v for k, v in saved_teacher.decoder.state_dict().items()},
           **{f"lm_head.{k}": v for k, v in saved_teacher.lm_head.state_dict().items()}}
    dst = saved.readout_head.state_dict()
    with torch.no_grad():
        readout_is_teachers = dst.keys() == src.keys() and all(torch.equal(dst[k], src[k]) for k in src)
        m0_is_teachers = torch.equal(saved.model.initial_state, saved_teacher.empty_memory(1)[0])
        logits = saved(torch.arange(12).remainder(16)[None]).logits[0, :, :4].flatten().tolist()
    write({"losses": losses, "world": world, "eval": metrics, "sharded": sharded,
           "fsdp": bool(trainer.is_fsdp_enabled), "readout_is_teachers": readout_is_teachers,
           "m0_is_teachers": m0_is_teachers, "saved_logits": logits})
end_launch()
