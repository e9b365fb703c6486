"""Two CPU processes with gloo give the same losses as one process with the same global batch.

- DDP through `SMTTrainer` (`dist_train.py`): same first losses, the same standalone student saved, and the same
  `evaluate()` metrics on every rank (sharded eval loader, gathered results, last-batch repeats left out).
- FSDP2 (`fsdp_train.py`): the training module really sharded with `torch.distributed.fsdp.fully_shard` (every
  parameter a DTensor shard), with activation checkpointing on.
- FSDP2 through `SMTTrainer` (`fsdp_trainer.py`, smt and joint): the Trainer's own FSDP2 path (accelerate's
  `fsdp2_prepare_model`, clipping, full-state-dict save). Accelerate enables FSDP only on accelerators, so the script
  turns it on for the CPU (see there). Checked: the same losses, the same evaluate() metrics, the saved student's
  readout and m_0 the saved teacher's bit for bit, and the saved student standalone. Resume: a run resumed from
  its FSDP2 checkpoint (models and optimizer loaded into DTensor shards) ends where the uninterrupted one does.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

HERE = os.path.dirname(__file__)


def free_port() -> int:
    """A port nobody listens on now (each launch gets its own: a fixed one can still be held by the last run)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(tmp_path, script, name, nproc, extra=()):
    out = str(tmp_path / f"{name}.json")
    # this checkout first (not whichever smt_hf is installed), and the tests folder for conftest
    path = os.pathsep.join([HERE, os.path.dirname(HERE)])
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=path)
    if nproc == 1:
        cmd = [sys.executable, os.path.join(HERE, script), out, *extra]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
               str(free_port()), os.path.join(HERE, script), out, *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and nproc > 1:
        # one relaunch on a fresh port: a 2-process gloo launch on a loaded 2-core machine has (rarely) died at start-up
        # or teardown (a port taken between free_port() and torchrun's bind, a rank aborting at exit); a real failure
        # fails twice, and both tails are shown
        first = proc.stderr[-1500:]
        cmd[cmd.index("--master_port") + 1] = str(free_port())
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"first launch:\n{first}\n\nrelaunch:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.load(open(out))
    if "eval" in result:
        result["eval"] = quality(result["eval"])
    return {**result, "stderr": proc.stderr}


def quality(metrics: dict) -> dict:
    """evaluate()'s metrics without HF's speed metrics (timings differ between runs; their keys are checked here)."""
    speed = [k for k in metrics if k.endswith(("_runtime", "_samples_per_second", "_steps_per_second"))]
    assert len(speed) == 3, sorted(metrics)
    return {k: v for k, v in metrics.items() if k not in speed}


def test_ddp_two_processes_match_one(tmp_path):
    single = run(tmp_path, "dist_train.py", "single", 1, ("16",))
    multi = run(tmp_path, "dist_train.py", "ddp", 2, ("16",))
    assert multi["world"] == 2 and len(single["losses"]) == len(multi["losses"]) == 3
    assert not multi["fsdp"]  # DDP, as this test says
    assert multi["losses"] == pytest.approx(single["losses"], rel=1e-4)
    # the saved student is the same standalone model (readout from the teacher decoder, m_0 = E(empty))
    assert multi["saved_logits"] == pytest.approx(single["saved_logits"], rel=1e-2, abs=1e-3)  # 3 steps of drift
    # evaluate(): each process evaluates its shard of the HF eval loader, the repeats that pad the last batch are
    # left out, and every rank returns the metrics of the whole eval set, those of one process
    rank1 = quality(json.load(open(tmp_path / "ddp.json.eval1")))
    assert multi["eval"].keys() == single["eval"].keys() == rank1.keys() and "eval_drift_mean" in rank1
    assert multi["eval"] == pytest.approx(single["eval"], rel=1e-5) and rank1 == multi["eval"]


def test_fsdp2_sharded_module_matches_one_process(tmp_path):
    single = run(tmp_path, "fsdp_train.py", "single", 1)
    sharded = run(tmp_path, "fsdp_train.py", "fsdp", 2, ("ckpt",))
    assert sharded["world"] == 2 and sharded["sharded"] and not single["sharded"]
    assert sharded["checkpointing"]
    assert len(single["losses"]) == len(sharded["losses"]) == 3
    assert sharded["losses"] == pytest.approx(single["losses"], rel=1e-5)


@pytest.mark.parametrize("mode", ["joint", "smt"])
def test_fsdp2_trainer_smt_matches_one_process(tmp_path, mode):
    """smt/joint under the Trainer's FSDP2: the readout and m_0 copies from the teacher (ReadoutFromTeacher) work on
    DTensor shards, evaluate() runs the sharded models, the saved student is the standalone model of the saved teacher."""
    single = run(tmp_path, "fsdp_trainer.py", "single", 1, (mode,))
    sharded = run(tmp_path, "fsdp_trainer.py", "fsdp", 2, (mode, "fsdp"))
    assert sharded["world"] == 2 and sharded["fsdp"] and sharded["sharded"] and not single["sharded"]
    assert len(single["losses"]) == len(sharded["losses"]) == 3
    assert sharded["losses"] == pytest.approx(single["losses"], rel=1e-5)
    assert sharded["eval"].keys() == single["eval"].keys() and "eval_drift_mean" in single["eval"]
    assert sharded["eval"] == pytest.approx(single["eval"], rel=1e-3)  # after 3 steps of float drift
    assert sharded["readout_is_teachers"] and sharded["m0_is_teachers"]  # bit for bit, in the saved folders
    assert single["readout_is_teachers"] and single["m0_is_teachers"]
    assert sharded["saved_logits"] == pytest.approx(single["saved_logits"], rel=1e-2, abs=1e-3)


def test_fsdp2_trainer_resume_matches_uninterrupted(tmp_path):
    """The Trainer loads a checkpoint after wrapping: student/teacher weights go into DTensor shards
    (`set_model_state_dict`), the optimizer state without the never-trained readout/m_0 (not strict). 4 steps with
    checkpoints every 2; new models (another seed) resumed from checkpoint-2 end at the uninterrupted run's losses and
    parameters."""
    got = run(tmp_path, "fsdp_trainer.py", "fsdp", 2, ("joint", "fsdp", "resume"))
    assert got["world"] == 2 and got["fsdp"] and got["resumed_step"] == 4
    assert "has no optimizer state" not in got["stderr"]  # FSDP saves optimizer.bin, not optimizer.pt: no warning
    # the resumed run's log: steps 1-2 from the checkpoint's trainer_state, steps 3-4 trained after the resume
    assert len(got["losses"]) == len(got["resume_losses"]) == 4
    assert got["resume_losses"][2:] == pytest.approx(got["losses"][2:], rel=1e-6)
    diff = got["resume_max_diff"]  # None: the saved state dicts have different keys
    assert diff is not None and any(k.startswith("student.") for k in diff) and any(k.startswith("teacher.") for k in diff)
    assert max(diff.values()) <= 1e-6, {k: v for k, v in diff.items() if v > 1e-6}
