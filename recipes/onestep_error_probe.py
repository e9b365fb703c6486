"""Where the student's one-step error lies: is it small noise, or is it the answer? (CPU, seconds.)

On associative recall the curriculum teacher answers 1.00 from its memory m_t, and the student's one step
m^_t = f(m*_{t-1}, x_{t-1}) has a small memory-regression error, yet its read-out answers at chance
(recipes/results/fig3/associative_recall_curriculum_e2e_T32.md). This probe takes a student and teacher saved by
recipes/needle_e2e.py (`<out>/final_<family>_T<T>_s<seed>/{student,teacher}`) and scores, at the evaluation
positions of held-out episodes (those of `smt_hf.evaluation`):

    teacher       the teacher's read-out of its own memory m*_t (= eval teacher_acc)
    one_step      the student's read-out of m^_t (= eval onestep_acc)
    noise         the teacher's read-out of m*_t plus isotropic Gaussian noise of the one-step error's mean
                  square: as large an error as the student's, in random directions
    mse           mean over entries of (m^_t - m*_t)^2; memories are RMS-normalised (mean square 1 per vector)
    teacher_train the teacher's read-out on the first 512 of the run's own training episodes (needle_e2e's
                  training set, same positions): far above `teacher` means the teacher over-fitted its episodes

If `noise` stays near `teacher` while `one_step` is at chance, the student's error is not small noise: it sits in
the directions that carry the answer.

    python recipes/onestep_error_probe.py --family associative_recall_curriculum --seeds 0 1 --out recipes/results/fig3
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def probe(student, teacher, input_ids, labels, context_length: int, eval_positions: int = 16, seed: int = 0) -> dict:
    """Scores (see the module docstring) on sequences `input_ids`, `labels` (N, L). Returns a dict of floats."""
    import torch

    from smt_hf.evaluation import onestep_memories

    g = torch.Generator().manual_seed(seed)
    student.eval()
    teacher.eval()
    with torch.no_grad():
        m_t, pred, tgt = onestep_memories(student, teacher, input_ids, labels, context_length, eval_positions)
        mse = float((pred - m_t).pow(2).mean())
        noisy = m_t + mse**0.5 * torch.randn(m_t.shape, generator=g)
        acc = lambda logits: float((logits.argmax(-1) == tgt).float().mean())  # noqa: E731
        return {"teacher": acc(teacher.readout(m_t)), "one_step": acc(student.readout(pred)),
                "noise": acc(teacher.readout(noisy)), "mse": mse, "positions": int(len(tgt))}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default="outputs/needle_e2e", help="the --out of the needle_e2e.py run")
    a = p.parse_args(argv)
    import torch

    sys.path.insert(0, HERE)
    from needle_e2e import episodes, family_settings
    from smt import machine

    from smt_hf import SMTRecurrentForCausalLM, SMTTeacherModel

    torch.set_num_threads(1)
    fam = family_settings(a.family)
    T, per_row = fam["seq_len"], fam["training"].get("eval_positions", 16)
    res = {}
    for s in a.seeds:
        folder = os.path.join(a.out, f"final_{a.family}_T{T}_s{s}")
        student = SMTRecurrentForCausalLM.from_pretrained(os.path.join(folder, "student"))
        teacher = SMTTeacherModel.from_pretrained(os.path.join(folder, "teacher"))
        train, ev = episodes(fam["task"], T, s, fam["task_kwargs"], fam["train_task_kwargs"])  # the run's own episodes
        res[s] = probe(student, teacher, torch.tensor(ev["input_ids"]), torch.tensor(ev["labels"]), T, per_row, seed=s)
        tr = train.select(range(512))
        res[s]["teacher_train"] = probe(student, teacher, torch.tensor(tr["input_ids"]), torch.tensor(tr["labels"]), T,
                                        per_row, seed=s)["teacher"]
    stem = os.path.join(a.out, f"onestep_error_probe_{a.family}_T{T}")
    with open(stem + ".json", "w") as f:
        json.dump({"family": a.family, "seq_len": T, "machine": machine(), "seeds": res}, f, indent=2)
    md = (f"# One-step error probe, {a.family}, T={T} (recipes/onestep_error_probe.py)\n\nMachine: {machine()}. Saved "
          "student (after one-step DMT) and teacher of recipes/needle_e2e.py, held-out episodes; read-out accuracy at "
          "the evaluation positions.\n\n| seed | teacher | one-step | teacher + noise of the one-step MSE | one-step MSE "
          "| positions | teacher on 512 training episodes |\n|---|---|---|---|---|---|---|\n" + "".join(
              f"| {s} | {r['teacher']:.3f} | {r['one_step']:.3f} | {r['noise']:.3f} | {r['mse']:.4f} | {r['positions']} "
              f"| {r['teacher_train']:.3f} |\n"
              for s, r in res.items()))
    with open(stem + ".md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
