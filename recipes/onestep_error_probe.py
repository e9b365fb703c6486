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

`--by-position` scores instead every target position of the held-out episodes (not only the last `eval_positions`
of each): teacher and one-step accuracy per position t, as a table and a plot (<stem>_by_position.{json,md,png}).
It tells where in the episode a teacher's memory stops carrying the answer (string copy: which characters).

    python recipes/needle_e2e.py --family associative_recall_curriculum --seeds 0 1 --no-bptt --out outputs/probe
    python recipes/onestep_error_probe.py --family associative_recall_curriculum --seeds 0 1 --out outputs/probe
    python recipes/onestep_error_probe.py --family string_copy_T64_k16_smt --seeds 0 1 2 --by-position \
        --out outputs/probe    # after needle_e2e.py of that family and those seeds into outputs/probe
"""

from __future__ import annotations

import argparse
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


def by_position(student, teacher, input_ids, labels, context_length: int) -> dict[int, dict]:
    """Teacher and one-step read-out accuracy at each target position t >= 1 of `input_ids`, `labels` (N, L): every
    target, as `probe` scores the last few. Returns {t: {"teacher": acc, "one_step": acc, "n": targets at t}}."""
    import torch

    from smt_hf.evaluation import _target_positions, onestep_memories

    student.eval()
    teacher.eval()
    L = labels.shape[1]
    with torch.no_grad():
        _, pos = _target_positions(labels, L)  # the positions onestep_memories scores, in its order
        m_t, pred, tgt = onestep_memories(student, teacher, input_ids, labels, context_length, L)
        ok_t = teacher.readout(m_t).argmax(-1) == tgt
        ok_s = student.readout(pred).argmax(-1) == tgt
    return {int(t): {"teacher": float(ok_t[pos == t].float().mean()), "one_step": float(ok_s[pos == t].float().mean()),
                     "n": int((pos == t).sum())} for t in pos.unique().tolist()}


def write_by_position(stem: str, family: str, T: int, res: dict, machine: str) -> None:
    """<stem>.json / .md / .png of `by_position` results per seed ({seed: {t: {...}}})."""
    from smt_hf.recipe import write_json
    from smt_hf.viz import plot_panels

    write_json(stem + ".json", {"family": family, "seq_len": T, "machine": machine, "seeds": res})
    seeds = list(res)
    positions = sorted({t for r in res.values() for t in r})
    md = (f"# Read-out accuracy by position, {family}, T={T} (recipes/onestep_error_probe.py --by-position)\n\n"
          f"Machine: {machine}. Saved teacher and student of recipes/needle_e2e.py (the student after its last "
          "one-step DMT phase, `--continue-dmt` included), held-out episodes, every target position t: the teacher's "
          "read-out of its memory m*_t, and the student's one step from m*_{t-1}.\n\n"
          "| t | " + " | ".join(f"teacher s{s} | one-step s{s}" for s in seeds) + " | targets |\n|---|"
          + "---|---|" * len(seeds) + "---|\n" + "".join(
              f"| {t} | " + " | ".join(f"{res[s][t]['teacher']:.2f} | {res[s][t]['one_step']:.2f}" if t in res[s]
                                       else "- | -" for s in seeds)
              + f" | {next(res[s][t]['n'] for s in seeds if t in res[s])} |\n" for t in positions))
    with open(stem + ".md", "w") as f:
        f.write(md)
    plot_panels([{"curves": {f"seed {s}": (sorted(res[s]), [res[s][t][key] for t in sorted(res[s])]) for s in seeds},
                  "title": f"{title}, {family}, T={T}", "xlabel": "target position t", "ylabel": "read-out accuracy",
                  "data_xticks": False} for key, title in (("teacher", "teacher"), ("one_step", "one step"))],
                stem + ".png")
    print(md)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", required=True, help="a family of recipes/configs/calibration/teachers.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="seeds whose saved models to probe (default %(default)s)")
    p.add_argument("--out", default="outputs/needle_e2e", help="the --out of the needle_e2e.py run")
    p.add_argument("--by-position", action="store_true", help="accuracy at every target position (module docstring)")
    a = p.parse_args(argv)
    import torch

    sys.path.insert(0, HERE)
    from needle_e2e import episodes, family_settings
    from smt import machine

    from smt_hf import SMTRecurrentForCausalLM, SMTTeacherModel
    from smt_hf.recipe import write_json

    torch.set_num_threads(1)
    fam = family_settings(a.family)
    T, per_row = fam["seq_len"], fam["training"].get("eval_positions", 16)
    res = {}
    for s in a.seeds:
        folder = os.path.join(a.out, f"final_{a.family}_T{T}_s{s}")
        if not (os.path.isdir(os.path.join(folder, "student")) and os.path.isdir(os.path.join(folder, "teacher"))):
            raise SystemExit(f"onestep_error_probe.py: no saved models in {folder}/{{student,teacher}}: they are written by "
                             f"`needle_e2e.py --family {a.family} --seeds {s} --out {a.out}` into an --out without that "
                             "seed's JSON (not committed: train them first, then probe with the same --out)")
        student = SMTRecurrentForCausalLM.from_pretrained(os.path.join(folder, "student"))
        teacher = SMTTeacherModel.from_pretrained(os.path.join(folder, "teacher"))
        train, ev = episodes(fam["task"], T, s, fam["task_kwargs"], fam["train_task_kwargs"])  # the run's own episodes
        if a.by_position:
            res[s] = by_position(student, teacher, torch.tensor(ev["input_ids"]), torch.tensor(ev["labels"]), T)
            continue
        res[s] = probe(student, teacher, torch.tensor(ev["input_ids"]), torch.tensor(ev["labels"]), T, per_row, seed=s)
        tr = train.select(range(512))
        res[s]["teacher_train"] = probe(student, teacher, torch.tensor(tr["input_ids"]), torch.tensor(tr["labels"]), T,
                                        per_row, seed=s)["teacher"]
    stem = os.path.join(a.out, f"onestep_error_probe_{a.family}_T{T}")
    if a.by_position:
        return write_by_position(stem + "_by_position", a.family, T, res, machine())
    write_json(stem + ".json", {"family": a.family, "seq_len": T, "machine": machine(), "seeds": res})
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
