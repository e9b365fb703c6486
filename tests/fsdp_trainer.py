"""Run by test_distributed.py: smt/joint through `SMTTrainer` under the Trainer's own FSDP2 (accelerate's plugin,
`fsdp="full_shard"`, fsdp_config version 2), CPU + gloo; or in one process with the same global batch.

    python fsdp_trainer.py OUT_JSON MODE                (one process, no FSDP)
    torchrun --nproc_per_node 2 fsdp_trainer.py OUT_JSON MODE fsdp (the Trainer's FSDP2)
3 training steps, then `evaluate()`, then `save_model()`. Writes (rank 0) the losses, the eval metrics, whether the
parameters were DTensor shards, whether the saved student's readout and m_0 are the saved teacher's bit for bit, and
the logits of the saved student reloaded standalone.

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
from conftest import tiny_teacher_config  # noqa: E402

from smt_hf import SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherModel  # noqa: E402
from smt_hf.data import stream_windows  # noqa: E402
from smt_hf.trainer import SMTTrainer  # noqa: E402
from smt_hf.training_args import SMTTrainingArguments  # noqa: E402

out, mode = sys.argv[1], sys.argv[2]
fsdp = len(sys.argv) > 3 and sys.argv[3] == "fsdp"
world = int(os.environ.get("WORLD_SIZE", "1"))
rank = int(os.environ.get("RANK", "0"))

_init = AcceleratorState.__init__


def _init_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, fsdp_plugin
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as accelerate does (a later state reads it)


AcceleratorState.__init__ = _init_fsdp_on_cpu

torch.manual_seed(0)
tc = tiny_teacher_config(max_context_length=24)
teacher = SMTTeacherModel(tc)
student = SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(tc, backbone="transformer", updater_layers=1))
tokens = torch.randint(0, 16, (5000,), generator=torch.Generator().manual_seed(0)).numpy().astype("uint8")
# lambda_unif = 0: the uniformity loss pools pairs within a batch, so its per-rank mean is not the global one
args = SMTTrainingArguments(
    output_dir=os.path.join(os.path.dirname(out), "run"), mode=mode, context_length=16, future_length=8,
    split="last", lambda_unif=0.0, per_device_train_batch_size=8 // world, per_device_eval_batch_size=4, max_steps=3,
    logging_steps=1, learning_rate=1e-3, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True,
    seed=0, ddp_backend="gloo" if world > 1 else None,
    fsdp=fsdp, fsdp_config={"version": 2} if fsdp else None,
)
trainer = SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=stream_windows(tokens, 24, 256, seed=0),
                     eval_dataset=stream_windows(tokens, 24, 12, seed=1))
trainer.train()
from torch.distributed.tensor import DTensor  # noqa: E402

sharded = all(isinstance(p, DTensor) for p in trainer.model.parameters())
metrics = trainer.evaluate()
final = os.path.join(os.path.dirname(out), os.path.basename(out) + ".final")
trainer.save_model(final)  # every rank: FSDP gathers the full state dict
if trainer.is_world_process_zero():
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    saved = SMTRecurrentForCausalLM.from_pretrained(os.path.join(final, "student")).eval()
    saved_teacher = SMTTeacherModel.from_pretrained(os.path.join(final, "teacher")).eval()
    src = {**{f"decoder.{k}": v for k, v in saved_teacher.decoder.state_dict().items()},
           **{f"lm_head.{k}": v for k, v in saved_teacher.lm_head.state_dict().items()}}
    dst = saved.readout_head.state_dict()
    with torch.no_grad():
        readout_is_teachers = dst.keys() == src.keys() and all(torch.equal(dst[k], src[k]) for k in src)
        m0_is_teachers = torch.equal(saved.model.initial_state, saved_teacher.empty_memory(1)[0])
        logits = saved(torch.arange(12).remainder(16)[None]).logits[0, :, :4].flatten().tolist()
    json.dump({"losses": losses, "world": world, "eval": metrics, "sharded": sharded,
               "fsdp": bool(trainer.is_fsdp_enabled), "readout_is_teachers": readout_is_teachers,
               "m0_is_teachers": m0_is_teachers, "saved_logits": logits}, open(out, "w"))
