"""report_to="trackio" records the trainer's separate loss parts (local SQLite store, no hub)."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

SCRIPT = r"""
import json, os, sys, tempfile
sys.path.insert(0, sys.argv[1])
import torch; torch.set_num_threads(1)
from pathlib import Path
from test_trainer import data, models, targs
from smt_hf.trainer import SMTTrainer
from trackio.sqlite_storage import SQLiteStorage
student, teacher = models()
args = targs(Path(sys.argv[2]), mode="joint", report_to=["trackio"], project="smt-test", run_name="r1")
SMTTrainer(model=student, teacher=teacher, args=args, train_dataset=data()).train()
print(json.dumps({"runs": SQLiteStorage.get_runs("smt-test"), "logs": SQLiteStorage.get_logs("smt-test", "r1")}))
"""


def test_trackio_gets_separate_loss_curves(tmp_path):
    pytest.importorskip("trackio")
    env = dict(os.environ, TRACKIO_DIR=str(tmp_path / "trackio"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, HERE, str(tmp_path / "run")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["runs"] == ["r1"]
    keys = set().union(*(set(row) for row in result["logs"]))
    assert {"train/decoder_loss", "train/dynamics_loss", "train/uniformity_loss", "train/loss"} <= keys
