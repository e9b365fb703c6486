"""Run by test_distributed.py: a few joint-SMT steps of a tiny model, single or multi-process.

    python dist_train.py OUT_JSON GLOBAL_BATCH      (under torchrun for several processes: DDP)
Writes the per-step training losses (rank 0), and the metrics of `evaluate()` on 13 sequences in per-process batches
of 4 before training (every rank's: under two processes the last batch of rank 1 holds 1 sample + 3 repeats). On CPU Accelerate never enables FSDP (a `fsdp=True` Trainer runs plain
DDP there), so the FSDP2 check is `fsdp_train.py`, which shards the training module with `fully_shard` itself.
"""

import copy
import json
import os
import sys

import torch

torch.set_num_threads(1)
from conftest import end_launch, tiny_teacher_config  # noqa: E402

from smt_hf import SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherModel  # noqa: E402
from smt_hf.data import stream_windows  # noqa: E402
from smt_hf.trainer import SMTTrainer  # noqa: E402
from smt_hf.training_args import SMTTrainingArguments  # noqa: E402

out, global_batch = sys.argv[1], int(sys.argv[2])
world = int(os.environ.get("WORLD_SIZE", "1"))
torch.manual_seed(0)
tc = tiny_teacher_config(max_context_length=24)
teacher = SMTTeacherModel(tc)
student = SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(tc, backbone="gru"))
tokens = torch.randint(0, 16, (5000,), generator=torch.Generator().manual_seed(0)).numpy().astype("uint8")
data = stream_windows(tokens, 24, 256, seed=0)
args = SMTTrainingArguments(
    output_dir=os.path.join(os.path.dirname(out), "run"), mode="joint", context_length=16, future_length=8,
    split="last", per_device_train_batch_size=global_batch // world, per_device_eval_batch_size=4, max_steps=3,
    logging_steps=1,
    learning_rate=1e-3, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    ddp_backend="gloo" if world > 1 else None,
)
eval_data = stream_windows(tokens, 24, 13, seed=1)
# the untrained models on the eval set (copies: evaluating makes the joint student standalone, so training is kept
# apart from it)
evaluator = SMTTrainer(model=copy.deepcopy(student), teacher=copy.deepcopy(teacher), args=args, eval_dataset=eval_data)
metrics = evaluator.evaluate()
trainer = SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=data)
trainer.train()
final = os.path.join(os.path.dirname(out), os.path.basename(out) + ".final")
trainer.save_model(final)  # every rank: FSDP gathers the full state dict
if trainer.is_world_process_zero():
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    saved = SMTRecurrentForCausalLM.from_pretrained(os.path.join(final, "student")).eval()
    with torch.no_grad():  # the saved standalone student's predictions from m_0 on a fixed input
        logits = saved(torch.arange(12).remainder(16)[None]).logits[0, :, :4].flatten().tolist()
    with open(out, "w") as f:
        json.dump({"losses": losses, "world": world, "saved_logits": logits, "eval": metrics,
                   "fsdp": bool(getattr(trainer, "is_fsdp_enabled", False))}, f)
with open(f"{out}.eval{trainer.args.process_index}", "w") as f:  # every rank's metrics
    json.dump(metrics, f)
end_launch()  # every rank done, torn down, ended without finalization
