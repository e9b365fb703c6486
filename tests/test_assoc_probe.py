"""recipes/assoc_recall_probe.py: each variant's targets, its refusal of unknown variants, its table."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import assoc_recall_probe as probe  # noqa: E402


def test_copy_targets_are_the_last_token_of_each_prefix_and_lookup_keeps_the_task_labels():
    ids = torch.tensor([[3, 20, 5, 21, 3, 20]])
    labels = torch.tensor([[-100, -100, -100, -100, -100, 20]])
    assert probe.targets("copy", ids, labels).tolist() == [[-100, 3, 20, 5, 21, 3]]  # label t = x_{t-1}
    for v in ("lm", "lookup", "lookup_deep"):
        assert probe.targets(v, ids, labels) is labels


def test_unknown_variant_is_refused_and_a_short_run_writes_its_row(tmp_path):
    with pytest.raises(ValueError, match="variant must be one of"):
        probe.run("decoder", 2, seconds=1)
    r = probe.run("lookup_deep", 2, K=2, seconds=1, eval_every=1, T=16, d=16, num_train=256)
    assert [c[0] for c in r["curve"]] == list(range(1, len(r["curve"]) + 1)) and r["K"] == 2
    md = probe.write(str(tmp_path), [r])
    row = next(x for x in md.splitlines() if x.startswith("| lookup_deep "))
    assert row.startswith(f"| lookup_deep | 2 | 2 | not reached | {r['curve'][-1][2]:.3f} |")
    early = dict(r, variant="lookup", curve=[])  # a budget spent before the first evaluation (an IndexError)
    md = probe.write(str(tmp_path), [early, r])
    assert "| lookup | 2 | 2 | not reached | - (no evaluation within the budget) |" in md
    with pytest.raises(SystemExit):  # "lookup" without ":blocks" was an unpack ValueError
        probe.main(["--variants", "lookup", "--out", str(tmp_path)])
