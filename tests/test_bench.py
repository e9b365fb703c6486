"""recipes/bench.py at dry-run size: the prefill and prefixes sections measure both paths at every size, and
--merge re-runs one section while keeping the others (no timing is asserted: CI machines vary)."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "recipes"))

import bench  # noqa: E402


def test_prefill_section_and_merge(tmp_path):
    out = tmp_path / "bench.json"
    first = bench.main(["--preset", "cpu", "--dry-run", "--sections", "dmt", "--out", str(out), "--no-plot"])
    assert [r["variant"] for r in first["dmt"]] and "prefill" not in first
    res = bench.main(["--preset", "cpu", "--dry-run", "--sections", "prefill,prefixes", "--merge", "--out", str(out), "--no-plot"])
    assert res["merged"]["sections"] == ["dmt"] and res["dmt"] == json.loads(json.dumps(first["dmt"]))
    rows = res["prefill"]
    assert {(r["B"], r["prompt"]) for r in rows} == {(B, T) for B in bench.DRY["prefill"]["batches"]
                                                    for T in bench.DRY["prefill"]["prompts"]}
    assert all(r["recurrent_ms"] > 0 and r["parallel_ms"] > 0 and r["Tc"] == bench.DRY["smt"]["Tc"] for r in rows)
    assert any(k.startswith("prefill_B1_parallel_speedup") for k in res["summary"])
    pre = res["prefixes"]  # the all-prefix path supervises T transitions per sequence, the split path one
    for T in bench.DRY["prefixes"]["Ts"]:
        one = next(r for r in pre if r["T"] == T and r["path"] == "one split per sequence")
        allp = next(r for r in pre if r["T"] == T and r["path"] == "all prefixes")
        assert allp["transitions_per_step"] == T * one["transitions_per_step"] == T * bench.DRY["prefixes"]["B"]
    md = out.with_suffix(".md").read_text()
    assert "Time to first token" in md and "transitions per second" in md and "come from an earlier run" in md and "## DMT training step" in md
    assert json.loads(out.read_text())["merged"]["sections"] == ["dmt"]
