"""SeqFLOPs: the counted components are the modules' matmul FLOPs, and the chain formulas order the modes as the
sequential dependency says (BPTT grows with T, SMT does not; one-step DMT's backward covers one step)."""

import pytest
import torch
from conftest import tiny_teacher_config

from smt_hf import SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherModel
from smt_hf.seqflops import component_flops, forward_flops, seq_flops


def test_forward_flops_counts_a_matmul_exactly():
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    assert forward_flops(torch.mm, a, b) == 2 * 3 * 5 * 7


def test_components_and_chain_formulas():
    tc = tiny_teacher_config(max_context_length=32)
    teacher = SMTTeacherModel(tc)
    student = SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(tc, backbone="mlp", updater_layers=1))
    F = component_flops(student, teacher, context_length=32, future_length=8)
    assert all(v > 0 for v in F.values())
    # the encoder over 32 tokens costs more than over 8 (its FLOPs grow with the context)
    assert component_flops(student, teacher, 8, 8)["F_E"] < F["F_E"]
    smt = seq_flops("joint", F)
    assert smt == 3 * (F["F_E"] + max(F["F_f"], F["F_D"]))
    assert seq_flops("bptt", F, seq_len=64) - seq_flops("bptt", F, seq_len=32) == 3 * 32 * F["F_f"]  # linear in T
    one = seq_flops("dmt", F, rollout_length=32, dmt_gradient="one_step")
    full = seq_flops("dmt", F, rollout_length=32, dmt_gradient="full_rollout")
    assert one < full  # the backward of one step vs of the whole rollout
    with pytest.raises(ValueError, match="one_step"):
        seq_flops("dmt", F, rollout_length=32, dmt_gradient="through")


def test_needle_e2e_summary_table_over_seeds(tmp_path):
    """recipes/needle_e2e.py: the table over seeds gives mean ± half-range, per-seed values, the DMT gradient
    setting in words and the SeqFLOPs of each row's step."""
    import json
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))
    import needle_e2e as n

    for seed, acc in ((0, 1.0), (1, 0.5)):
        rows = [{"run": r, "dmt_gradient": g, "mode": m, "steps": 10, "seconds": 5.0, "teacher_acc": 1.0,
                 "onestep_acc": 1.0, "student_acc": a, "drift_mean": 0.1, "drift_last": 0.2}
                for r, g, m, a in [(n.ROWS[0], None, "joint", 0.2), (n.ROWS[1], "one_step", "dmt", acc),
                                   (n.ROWS[3], None, "bptt", 0.07)]]
        json.dump({"task": "needle", "task_kwargs": {"vocab_size": 16}, "seq_len": 16, "seed": seed, "machine": "m",
                   "threads": 1, "model": n.MODEL, "rows": rows}, open(tmp_path / f"needle_e2e_T16_s{seed}.json", "w"))
    md = n.write_summary(str(tmp_path), "needle", 16)
    line = next(x for x in md.splitlines() if x.startswith("| SMT -> DMT one_step"))
    assert "one_step (no BPTT)" in line and "0.75 ± 0.25" in line and "1.00, 0.50" in line and " M |" in line
    assert "full_rollout" not in md  # a row no seed ran is left out
    assert (tmp_path / "needle_e2e_T16.md").read_text() == md


def test_needle_e2e_compute_paths_accumulate_seqflops_and_tokens():
    """The Fig 6 points: DMT's cumulative SeqFLOPs/tokens start from the end of SMT; BPTT's from zero; mean over seeds."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))
    import needle_e2e as n

    def run(seed, dmt_acc):
        rows = [{"run": n.ROWS[0], "steps": 100, "student_acc": 0.2}, {"run": n.ROWS[1], "steps": 30, "student_acc": dmt_acc},
                {"run": n.ROWS[3], "steps": 50, "student_acc": 0.1}]
        return {"task": "needle", "task_kwargs": {"vocab_size": 16}, "seq_len": 16, "seed": seed, "model": n.MODEL,
                "rows": rows}

    import e2e_report as report

    runs = [run(0, 1.0), run(1, 0.5)]
    F = report.step_seqflops(runs[0])
    paths = report.compute_paths(runs)
    assert set(paths) == {"SMT -> DMT one_step (no BPTT)", "BPTT"}  # no seed ran full_rollout
    smt, dmt = paths["SMT -> DMT one_step (no BPTT)"]
    assert smt == (100 * F[n.ROWS[0]], 100 * 64 * 16, 0.2)
    assert dmt == (100 * F[n.ROWS[0]] + 30 * F[n.ROWS[1]], (100 * 64 + 30 * 32) * 16, 0.75)
    assert paths["BPTT"] == [(50 * F[n.ROWS[3]], 50 * 64 * 16, 0.1)]
    # tokens count each phase's batch as its JSON records it (was: the recipe's constants, whatever the run used)
    other = dict(run(0, 1.0), settings={"dmt": {"per_device_train_batch_size": 16}})
    assert report.compute_paths([other])["SMT -> DMT one_step (no BPTT)"][1][1] == (100 * 64 + 30 * 16) * 16


def test_needle_e2e_reuses_rows_only_from_the_same_smt_state(tmp_path):
    """--reuse-rows: an earlier run's full_rollout row is appended (marked) only when its joint-SMT row, task, length,
    seed, model and full-rollout settings equal this run's; BPTT rows are never reused; mismatches raise."""
    import json
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))
    import needle_e2e as n

    smt = {"run": n.ROWS[0], "steps": 10, **{k: 0.5 for k in n.METRICS}}
    old = {"task": "needle", "seq_len": 16, "seed": 1, "model": n.MODEL, "settings": {"full_rollout": n.FULL_ROLLOUT},
           "rows": [smt, {"run": n.ROWS[1], "student_acc": 0.9}, {"run": n.ROWS[2], "student_acc": 1.0},
                    {"run": n.ROWS[3], "student_acc": 0.07, "budget_seconds": 9.0}]}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    found = n.load_reusable([str(path), str(tmp_path / "missing.json")], "needle", 16, 1, n.MODEL)
    assert len(found) == 1
    rows = [dict(smt), {"run": n.ROWS[1], "student_acc": 0.99}]
    assert n.reuse_rows(found, rows, lambda: None)
    assert [r["run"] for r in rows] == [n.ROWS[0], n.ROWS[1], n.ROWS[2]]  # no BPTT row
    assert rows[2]["student_acc"] == 1.0 and rows[2]["reused_from"].endswith("old.json")
    with pytest.raises(ValueError, match="not the same SMT state"):
        n.reuse_rows(found, [dict(smt, student_acc=0.6)], lambda: None)
    nan_smt = dict(smt, drift_mean=float("nan"))  # an undefined drift (collapsed memory) in both: the same row
    path.write_text(json.dumps({**old, "rows": [nan_smt, *old["rows"][1:]]}))
    assert n.reuse_rows(n.load_reusable([str(path)], "needle", 16, 1, n.MODEL), [dict(nan_smt)], lambda: None)
    path.write_text(json.dumps(old))
    for args in (("needle", 16, 2, n.MODEL), ("needle", 32, 1, n.MODEL), ("parity", 16, 1, n.MODEL),
                 ("needle", 16, 1, {**n.MODEL, "student": {"backbone": "gru"}})):
        with pytest.raises(ValueError, match="cannot be reused"):
            n.load_reusable([str(path)], *args)
    path.write_text(json.dumps({**old, "settings": {"full_rollout": {**n.FULL_ROLLOUT, "dmt_stride": 4}}}))
    with pytest.raises(ValueError, match="full-rollout settings"):
        n.reuse_rows(n.load_reusable([str(path)], "needle", 16, 1, n.MODEL), [dict(smt)], lambda: None)


def test_needle_e2e_summary_counts_a_seeds_row_once_and_marks_reuse(tmp_path):
    import json
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes"))
    import needle_e2e as n

    row = lambda name, acc, **kw: {"run": name, "dmt_gradient": None, "mode": "x", "steps": 10, "seconds": 5.0,  # noqa: E731
                                   "teacher_acc": 1.0, "onestep_acc": 1.0, "student_acc": acc, "drift_mean": 0.1,
                                   "drift_last": 0.2, **kw}
    base = {"task": "needle", "task_kwargs": {"vocab_size": 16}, "seq_len": 16, "seed": 0, "machine": "m", "threads": 1,
            "model": n.MODEL}
    json.dump({**base, "rows": [row(n.ROWS[0], 0.2), row(n.ROWS[2], 1.0, reused_from="a.json"),
                                row(n.ROWS[3], 0.05, budget_seconds=7.0)]}, open(tmp_path / "needle_e2e_T16_s0.json", "w"))
    json.dump({**base, "rows": [row(n.ROWS[3], 0.5, budget_seconds=8.0)]}, open(tmp_path / "needle_e2e_T16_s0_bptt.json", "w"))
    md = n.write_summary(str(tmp_path), "needle", 16)
    bptt = next(x for x in md.splitlines() if x.startswith("| BPTT"))
    assert bptt.endswith("| 0.05 |")  # the s0.json row; the duplicate from s0_bptt.json is not averaged in
    assert "| 1.00† |" in md and "† from another run of the same seed" in md and "a.json" in md and "seeds [0]" in md
