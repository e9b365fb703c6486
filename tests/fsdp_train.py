"""Run by test_distributed.py: a few joint-SMT steps of the training module really sharded with FSDP2
(`torch.distributed.fsdp.fully_shard`, CPU + gloo), or in one process with the same global batch.

    python fsdp_train.py OUT_JSON                             (one process, no sharding)
    torchrun --nproc_per_node 2 fsdp_train.py OUT_JSON [ckpt] (FSDP2: every Block, then the whole module;
                                                               `ckpt` also turns activation checkpointing on)
Writes the per-step losses (rank 0) and whether the parameters were DTensor shards.
Accelerate never enables FSDP on CPU, so this drives `fully_shard` directly instead of through the Trainer.
"""

import json
import os
import sys

import torch
import torch.distributed as dist

torch.set_num_threads(1)
from conftest import end_launch, tiny_teacher_config  # noqa: E402

from smt_hf import SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherModel  # noqa: E402
from smt_hf.modeling_layers import Block  # noqa: E402
from smt_hf.training_args import SMTTrainingArguments  # noqa: E402
from smt_hf.training_module import SMTTrainingModule  # noqa: E402

out = sys.argv[1]
checkpointing = len(sys.argv) > 2 and sys.argv[2] == "ckpt"
world = int(os.environ.get("WORLD_SIZE", "1"))
rank = int(os.environ.get("RANK", "0"))
if world > 1:
    dist.init_process_group("gloo")
torch.manual_seed(0)
tc = tiny_teacher_config(max_context_length=24)
teacher = SMTTeacherModel(tc)
student = SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(tc, backbone="transformer", updater_layers=1))
# lambda_unif = 0: the uniformity loss pools pairs within a batch, so its per-rank mean is not the global one
args = SMTTrainingArguments(output_dir=os.path.join(os.path.dirname(out), "run"), mode="joint", context_length=16,
                            future_length=8, split="last", lambda_unif=0.0, report_to="none", use_cpu=True)
module = SMTTrainingModule(student, teacher, args)
if checkpointing:
    module.gradient_checkpointing_enable()
sharded = False
if world > 1:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    for sub in module.modules():
        if isinstance(sub, Block):
            fully_shard(sub)
    fully_shard(module)
    sharded = all(isinstance(p, DTensor) for p in module.parameters())
opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
data = torch.randint(0, 16, (3, 8, 24), generator=torch.Generator().manual_seed(0))  # 3 steps of global batch 8
weights = module.weights()
losses = []
for step in range(3):
    batch = data[step].chunk(world)[rank]  # this rank's rows of the global batch
    parts = module(input_ids=batch, labels=batch)
    loss = sum(weights[k] * v for k, v in parts.items())
    loss.backward()
    opt.step()
    opt.zero_grad()
    value = loss.detach().clone()
    if world > 1:
        dist.all_reduce(value)
        value /= world
    losses.append(float(value))
if rank == 0:
    with open(out, "w") as f:
        json.dump({"losses": losses, "world": world, "sharded": sharded,
                   "checkpointing": student.is_activation_checkpointing and teacher.is_activation_checkpointing}, f)
end_launch()  # every rank done, torn down, ended without finalization
