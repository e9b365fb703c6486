"""The saved teacher of a recipes/needle_e2e.py run: checked before a DMT-from-init control uses it, saved after a
re-run reproduced it."""

from __future__ import annotations

import os

from e2e_report import ROWS

# --dmt-from-init: how far the saved teacher's eval accuracy may sit from the joint-SMT row's, at least one target
# (the same machine gives it bit for bit; another may flip a few targets; another run's teacher of the same seed
# differed by 0.002 to 0.05 in the T=64 ICL runs)
TEACHER_ACC_TOLERANCE = 1e-3


def check_saved_teacher(teacher, student, args, ev, run: dict, stem: str, folder: str) -> None:
    """--dmt-from-init: the teacher saved in `folder` must be the run's (not another SMT run's of the same seed). Its
    accuracy on the seed's held-out episodes `ev` (`SMTTrainer.evaluate` with `args`; `student`, any, is only needed
    by the trainer) must be the teacher_acc of the run's joint-SMT row (`run`, the JSON at `stem`), within
    TEACHER_ACC_TOLERANCE or one target, whichever is larger (the same machine gives it bit for bit). ValueError
    otherwise, naming both values and the machine the JSON was written on."""
    from smt_hf.trainer import SMTTrainer

    first = next((r for r in run["rows"] if r["run"] == ROWS[0]), {})
    if first.get("teacher_acc") is None:
        raise ValueError(f"{stem}.json has no {ROWS[0]!r} row with a teacher_acc to check the saved teacher against")
    got = SMTTrainer(model=student, teacher=teacher, args=args, eval_dataset=ev).evaluate()["eval_teacher_acc"]
    targets = sum(min(args.eval_positions, sum(y != -100 for y in labels[1:])) for labels in ev["labels"])
    allowed = max(TEACHER_ACC_TOLERANCE, 1 / targets) + 1e-12  # one target: a small eval set (needle: 512)
    print(f"[dmt-from-init] the saved teacher's teacher_acc: {got} ({stem}.json's {ROWS[0]!r} row: "
          f"{first['teacher_acc']}; {targets} targets)", flush=True)
    if abs(got - first["teacher_acc"]) > allowed:
        raise ValueError(f"the teacher saved in {folder} scores teacher_acc {got:.4f} on this seed's eval episodes, "
                         f"{stem}.json's {ROWS[0]!r} row {first['teacher_acc']:.4f} (written on {run.get('machine')}): "
                         "it is not this run's teacher (another run's folder?); no DMT-from-init row is added")


def save_teacher(teacher, path: str, prefix: str) -> None:
    """A re-trained teacher saved at `path` (a from_pretrained folder) only where none is: written beside it, then
    renamed into place (a run loading it meanwhile never reads half a file). A teacher already there is left as it
    is: the same weights, nothing to do; others (another run's), said so and kept (the re-run still uses its own)."""
    import torch

    from smt_hf import SMTTeacherModel

    if os.path.exists(path):
        theirs, ours = SMTTeacherModel.from_pretrained(path).state_dict(), teacher.state_dict()
        same = theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)
        print(f"[{prefix}] {path} " + ("holds this teacher already" if same else "holds another teacher (another "
              "run's?): kept, the re-trained one not saved"), flush=True)
        return
    tmp = path + f".tmp{os.getpid()}"
    teacher.save_pretrained(tmp)
    os.rename(tmp, path)
    print(f"[{prefix}] its teacher saved in {path}", flush=True)
