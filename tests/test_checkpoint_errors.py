"""Resuming from a checkpoint that cannot give the run it was saved from: a missing folder, another mode's checkpoint,
a checkpoint without the teacher this trainer has, and a save_only_model=True checkpoint (warned: no optimizer state);
the recipe config's resume_from_checkpoint key (it was accepted, then every phase trained from its start)."""

import logging
import os

import pytest
from test_trainer import data, models, targs

from smt_hf.recipe_config import ConfigError, validate_config
from smt_hf.trainer import SMTTrainer


def checkpoint(tmp_path, name, teacher=True, **kw):
    """A 2-step run's checkpoint-2 folder."""
    student, t = models()
    args = targs(tmp_path / name, max_steps=2, save_strategy="steps", save_steps=2, dmt_start="initial", **kw)
    SMTTrainer(model=student, teacher=t if teacher else None, args=args, train_dataset=data()).train()
    return os.path.join(args.output_dir, "checkpoint-2")


def resume(tmp_path, folder, teacher=True, **kw):
    student, t = models(seed=1)
    args = targs(tmp_path / "resumed", max_steps=4, dmt_start="initial", **kw)
    SMTTrainer(model=student, teacher=t if teacher else None, args=args, train_dataset=data()).train(
        resume_from_checkpoint=folder)


def test_resume_names_what_does_not_fit(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):  # was: "not an SMTTrainer checkpoint folder"
        resume(tmp_path, str(tmp_path / "nope"), mode="joint")
    joint = checkpoint(tmp_path, "joint", mode="joint")
    with pytest.raises(ValueError, match="checkpoint of mode 'joint', this trainer's is 'dmt'.*from_pretrained"):
        resume(tmp_path, joint, mode="dmt")  # was torch's "parameter group that doesn't match" after loading weights
    alone = checkpoint(tmp_path, "bptt", teacher=False, mode="bptt")
    with pytest.raises(ValueError, match="its run had none: build this trainer without one"):
        resume(tmp_path, alone, mode="bptt")
    resume(tmp_path, alone, teacher=False, mode="bptt")  # the same checkpoint, resumed as it was saved
    with_teacher = checkpoint(tmp_path, "bptt_teacher", mode="bptt")
    with pytest.raises(ValueError, match="holds a teacher/ .*build this trainer with that teacher"):
        resume(tmp_path, with_teacher, teacher=False, mode="bptt")  # was torch's optimizer-group error


def test_resume_from_a_weights_only_checkpoint_warns(tmp_path, caplog):
    folder = checkpoint(tmp_path, "only", mode="bptt", save_only_model=True)
    assert not os.path.exists(os.path.join(folder, "optimizer.pt"))
    with caplog.at_level(logging.WARNING, logger="smt_hf.trainer"):
        resume(tmp_path, folder, mode="bptt")
    assert "has no optimizer state (saved with save_only_model=True?)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="smt_hf.trainer"):  # a full checkpoint: no warning
        resume(tmp_path, checkpoint(tmp_path, "full", mode="bptt"), mode="bptt")
    assert "optimizer state" not in caplog.text


@pytest.mark.parametrize("where", ["common", "phases.0"])
def test_recipe_config_refuses_resume_from_checkpoint(where):
    config = {"data": {"task": "needle", "seq_len": 16}, "phases": [{"mode": "joint"}]}
    if where == "common":
        config["common"] = {"resume_from_checkpoint": "out/phase0_joint/checkpoint-2"}
    else:
        config["phases"][0]["resume_from_checkpoint"] = "out/phase0_joint/checkpoint-2"
    with pytest.raises(ConfigError, match=f"{where}.resume_from_checkpoint: recipes/smt.py runs every phase from its "
                                          "start and does not resume"):
        validate_config(config)


def test_smt_export_card_names_the_training_of_a_trainer_folder(tmp_path, capsys):
    """`smt-export --model <checkpoint>` without --run-info wrote a card with 'Mode: not recorded'; it now reads the
    folder's smt_training_args.json and trainer_state.json (the DMT gradient setting named), from the folder or its
    student/ sub-folder, and a given --run-info still wins."""
    from smt_hf import SMTRecurrentForCausalLM
    from smt_hf.export import main

    folder = checkpoint(tmp_path, "dmt", mode="dmt", dmt_gradient="one_step", learning_rate=2e-3)
    # the checkpoint folder itself is not a model folder: its optimizer.pt / rng_state.pth are not weights
    with pytest.raises(OSError, match=r"an SMTTrainer checkpoint or output folder: load its .*student or .*teacher"):
        SMTRecurrentForCausalLM.from_pretrained(folder)
    for model in (folder, os.path.join(folder, "student")):
        out = tmp_path / f"export_{len(os.listdir(tmp_path))}"
        assert main(["--model", model, "--out", str(out)]) == 0
        assert "training settings from" in capsys.readouterr().out
        card = (out / "README.md").read_text()
        for line in ("- **Mode:** dmt", "- **Steps:** 2", "- **learning rate:** 0.002", "- **dmt gradient:** one_step"):
            assert line in card, line
    (tmp_path / "info.json").write_text('{"training": {"mode": "smt+dmt"}}')
    assert main(["--model", folder, "--out", str(tmp_path / "given"), "--run-info", str(tmp_path / "info.json")]) == 0
    card = (tmp_path / "given" / "README.md").read_text()
    assert "- **Mode:** smt+dmt" in card and "dmt gradient" not in card
    # an older args file without some settings: they are left out (not 'None'); a broken one is a usage error
    args_file = os.path.join(folder, "smt_training_args.json")
    with open(args_file, "w") as f:
        f.write('{"mode": "joint", "learning_rate": 0.001}')
    assert main(["--model", folder, "--out", str(tmp_path / "old")]) == 0
    card = (tmp_path / "old" / "README.md").read_text()
    assert "- **Mode:** joint" in card and "None" not in card.split("## Training")[1].split("##")[0]
    for text, message in (('{"mode": ', "is not valid JSON"), ("[1]", "holds a JSON list, not an object")):
        with open(args_file, "w") as f:
            f.write(text)
        with pytest.raises(SystemExit) as e:
            main(["--model", folder, "--out", str(tmp_path / "bad")])
        assert e.value.code == 2 and message in capsys.readouterr().err and not (tmp_path / "bad").exists()
