"""recipes/reproduce.py (the evidence recipe): every item plans picklable work units, the GPU preset is capped in
seconds to fit its budget, a parallel run gives the same numbers as a serial one, and the report renders from the
JSONs alone."""

import json
import os
import pickle
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "recipes"))

import reproduce  # noqa: E402
import reproduce_items as R  # noqa: E402


@pytest.mark.parametrize("preset", ["cpu", "gpu"])
def test_every_item_plans_picklable_units(preset):
    assert reproduce.PRESET_NAMES == ("cpu", "gpu")  # recipes/configs/reproduce/*.yaml
    P = reproduce.load_preset(preset)
    for item in reproduce.ITEMS + reproduce.EXTRA_ITEMS:
        units, assemble = getattr(R, f"plan_{item}")(P)
        assert units and callable(assemble) and callable(getattr(R, f"render_{item}"))
        for fn, args in units:
            assert fn.__module__ == "reproduce_items"  # workers import it by name
            assert pickle.loads(pickle.dumps((fn, args)))[0] is fn
    assert sorted(reproduce.SCHEDULE) == sorted(reproduce.ITEMS + reproduce.EXTRA_ITEMS)


def test_synthetic_plan_covers_the_issue_grid():
    """Item 1: 5 tasks x 2 lengths x 2+ seeds, in both presets; item 8 adds a non-transformer backbone."""
    for P in map(reproduce.load_preset, reproduce.PRESET_NAMES):
        S = P["synthetic"]
        assert len(S["tasks"]) == 5 and all(len(S["lengths"][t]) == 2 for t in S["tasks"]) and len(S["seeds"]) >= 2
        units, _ = R.plan_synthetic(P)
        assert len(units) == 5 * 2 * len(S["seeds"])
        assert set(P["backbones"]["backbones"]) & {"gru", "mlp"}


def test_gpu_preset_is_capped_to_its_six_minutes():
    """Every GPU training phase stops on a seconds cap, and the caps over 8 workers leave room for evaluation and
    start-up inside ~6 minutes."""
    budget = reproduce.training_budget_s(reproduce.load_preset("gpu"))
    assert all(v is not None for v in budget.values()), budget
    assert sum(budget.values()) / 8 <= 300, budget
    assert max(budget["text"] / 2, budget["pixels"] / 4) <= 150  # the longest single unit fits too


def test_quick_preset_shrinks_every_budget():
    q = reproduce.quick(reproduce.load_preset("gpu"))
    for name, S in q.items():
        if name.startswith("model"):
            continue
        for k, v in S.items():
            if k.endswith("_steps") or k == "steps":
                assert v <= 3
            if k in ("bs", "dmt_bs"):
                assert v <= 8


def test_preset_overrides_change_one_value_and_name_unknown_keys():
    P = reproduce.load_preset("cpu", ["synthetic.smt_steps=200", "dmt.variants=[one_step]"])
    assert P["synthetic"]["smt_steps"] == 200 and P["dmt"]["variants"] == ["one_step"]
    assert P["backbones"]["smt_steps"] == 800 and "_syn" not in P  # the YAML anchor is shared, not aliased
    with pytest.raises(ValueError, match=r"synthetic has no key 'smt_step'; valid: \[.*'smt_steps'"):
        reproduce.load_preset("cpu", ["synthetic.smt_step=200"])
    with pytest.raises(ValueError, match="unknown preset 'tpu'"):
        reproduce.load_preset("tpu")


def _numbers(out_dir, item):
    res = json.load(open(os.path.join(out_dir, f"repro_{item}.json")))
    res.pop("meta")
    return res


def test_parallel_run_equals_serial_run(tmp_path):
    """The gradient item at initialisation is deterministic: 2 worker processes give exactly the serial numbers."""
    a, b = tmp_path / "serial", tmp_path / "parallel"
    s1 = reproduce.run(["gradients"], "cpu", True, str(a), jobs=1)
    s2 = reproduce.run(["gradients"], "cpu", True, str(b), jobs=2)
    assert s1["failed"] == s2["failed"] == []
    ga, gb = _numbers(a, "gradients"), _numbers(b, "gradients")
    assert ga == gb
    T = reproduce.quick(reproduce.load_preset("cpu"))["gradients"]["T"]
    for grads in list(ga["bptt"].values()) + list(ga["smt"].values()):
        assert len(grads) == T - 1 and all(g > 0 and g == g for g in grads)  # one finite norm per memory m_0..m_{T-2}
    assert (a / "repro_gradients.png").is_file() and (a / "repro_gradients.md").read_text().startswith("| method")


def test_quick_dmt_item_and_report(tmp_path):
    """Item 4 end to end at smoke size: the step counts are the preset's, each DMT variant has its drift curve,
    and the report renders its table from the JSON (items not run are named, not invented)."""
    reproduce.run(["dmt"], "cpu", True, str(tmp_path), jobs=1)
    res = json.load(open(tmp_path / "repro_dmt.json"))
    q = reproduce.quick(reproduce.load_preset("cpu"))["dmt"]
    r = res["run"]
    assert r["smt"]["steps"] == q["smt_steps"]
    variants = [k for k in r if k.startswith("dmt_")]
    assert variants == ["dmt_full_rollout", "dmt_one_step", "dmt_full_rollout_lr3e-05"]
    for k in variants:
        assert r[k]["steps"] == q["dmt_steps"]
        assert len(r[k]["eval"]["drift_curve"]) == len(r[k]["eval"]["drift_steps"]) > 0
    assert res["meta"]["quick"] and res["meta"]["compute_s"] > 0
    text = reproduce.report(str(tmp_path), str(tmp_path / "RESULTS.md"))
    assert "quick smoke run, not a result" in text and "after joint SMT" in text
    # tables only: no prose written from thresholds, one static pointer to README's findings per item run
    assert text.count(reproduce.FINDINGS) == 1 and "Findings." not in text
    assert text.count("Not run yet") == len(reproduce.ITEMS) - 1
    assert "(CPU preset:" in text and f"`{os.path.relpath(tmp_path, reproduce.ROOT_DIR)}/repro_*.json`" in text
    res["meta"]["preset"] = "gpu"  # the same JSON as if run with --preset gpu: the report says so
    json.dump(res, open(tmp_path / "repro_dmt.json", "w"))
    text = reproduce.report(str(tmp_path), str(tmp_path / "RESULTS_GPU.md"))
    assert "(GPU preset:" in text and "CPU preset's results are in recipes/RESULTS.md" in text


def _noisy_unit(x):
    print(f"training log line {x}")
    print("a warning", file=sys.stderr)
    return 2 * x


def test_unit_logs_go_to_their_file_under_the_progress_bar(tmp_path, capsys):
    res, sec = R.timed(_noisy_unit, (21,), str(tmp_path / "logs" / "joint_000.log"))
    assert res == 42 and sec >= 0
    assert capsys.readouterr() == ("", "")  # nothing reached the terminal
    assert (tmp_path / "logs" / "joint_000.log").read_text() == "training log line 21\na warning\n"
    assert R.timed(_noisy_unit, (1,))[0] == 2 and "training log line 1" in capsys.readouterr().out  # no file: printed
