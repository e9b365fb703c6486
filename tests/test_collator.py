"""The data path of a training step, checked against hand-written tensors: `SMTDataCollator` pads, `SplitSampler`
draws split points, `smt_windows` / `prefix_contexts` build windows."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from conftest import smt_split_batch

from smt_hf.data import SMTDataCollator, SplitSampler, prefix_contexts, smt_windows

P = 0  # pad id
I = -100  # ignore index
X = [11, 12, 13, 14, 15, 16]  # L = 6
Y = [I, I, 13, I, 15, 16]


def T(rows):
    return torch.tensor(rows, dtype=torch.long)


def smt(features, **kw):
    return smt_split_batch(features, context_length=3, future_length=4, **kw)


def test_smt_batch_by_hand():
    """c = 0 (empty context), 2 (short prefix, left pad), 4 (Tc < c: truncated), 5 (future padding)."""
    out = smt([{"input_ids": X, "labels": Y}], split_points=[[0, 2, 4, 5]])
    expected = {
        "context_ids": T([[P, P, P], [P, 11, 12], [12, 13, 14], [13, 14, 15]]),
        "context_mask": T([[0, 0, 0], [0, 1, 1], [1, 1, 1], [1, 1, 1]]),
        "next_context_ids": T([[P, P, 11], [11, 12, 13], [13, 14, 15], [14, 15, 16]]),
        "next_context_mask": T([[0, 0, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]]),
        "next_token": T([11, 13, 15, 16]),
        "future_ids": T([[11, 12, 13, 14], [13, 14, 15, 16], [15, 16, P, P], [16, P, P, P]]),
        "future_labels": T([[I, I, 13, I], [13, I, 15, 16], [15, 16, I, I], [16, I, I, I]]),
        "split_points": T([0, 2, 4, 5]),
    }
    assert set(out) == set(expected)
    for k, v in expected.items():
        assert out[k].dtype == torch.long, k
        assert torch.equal(out[k], v), (k, out[k], v)


def test_smt_variable_lengths_default_labels_and_row_order():
    """Labels default to input_ids; pad id is honoured; rows of one sequence are adjacent."""
    feats = [{"input_ids": torch.tensor(X), "labels": np.array(Y)}, {"input_ids": [21, 22]}]
    out = smt(feats, split_points=T([[5, 1], [1, 0]]), pad_token_id=9)
    assert torch.equal(out["split_points"], T([5, 1, 1, 0]))
    assert torch.equal(out["context_ids"], T([[13, 14, 15], [9, 9, 11], [9, 9, 21], [9, 9, 9]]))
    assert torch.equal(out["next_context_ids"], T([[14, 15, 16], [9, 11, 12], [9, 21, 22], [9, 9, 21]]))
    assert torch.equal(out["next_token"], T([16, 12, 22, 21]))
    assert torch.equal(out["future_ids"], T([[16, 9, 9, 9], [12, 13, 14, 15], [22, 9, 9, 9], [21, 22, 9, 9]]))
    assert torch.equal(out["future_labels"], T([[16, I, I, I], [I, 13, I, 15], [22, I, I, I], [21, 22, I, I]]))


def test_split_last_is_the_stream_layout():
    """Streams: window of Tc + Tf tokens; c = Tc; spec: m_t = E(x[0:Tc]), x_{t+1} = x[Tc], ..."""
    Tc, Tf = 4, 3
    x = list(range(100, 100 + Tc + Tf))
    out = smt_split_batch([{"input_ids": x}] * 2, Tc, Tf, split="last")
    assert out["split_points"].tolist() == [Tc, Tc]
    assert out["context_ids"][0].tolist() == x[:Tc] and out["context_mask"].all()
    assert out["next_context_ids"][0].tolist() == x[1 : Tc + 1]
    assert out["next_token"].tolist() == [x[Tc]] * 2
    assert out["future_ids"][0].tolist() == out["future_labels"][0].tolist() == x[Tc : Tc + Tf]
    # short sequence: c = L - 1
    short = smt_split_batch([{"input_ids": [1, 2, 3]}], 8, 2, split="last")
    assert short["split_points"].tolist() == [2] and short["future_ids"].tolist() == [[3, P]]


def test_random_splits_cover_range_and_are_deterministic():
    feats = [{"input_ids": X}] * 50
    gen = torch.Generator().manual_seed(0)
    a = smt(feats, splits_per_sequence=4, generator=gen)
    gen.manual_seed(0)
    b = smt(feats, splits_per_sequence=4, generator=gen)
    assert a["context_ids"].shape == (200, 3) and a["future_ids"].shape == (200, 4)
    assert torch.equal(a["split_points"], b["split_points"])
    assert set(a["split_points"].tolist()) == set(range(len(X)))  # 0..L-1, including the empty context
    # the global RNG (seeded by the HF Trainer) drives it when no generator is given
    torch.manual_seed(123)
    c = smt(feats, splits_per_sequence=4)
    torch.manual_seed(123)
    d = smt(feats, splits_per_sequence=4)
    assert torch.equal(c["split_points"], d["split_points"])
    # every row is consistent with its split point
    for r in range(200):
        cp = int(a["split_points"][r])
        assert a["next_token"][r] == X[cp]
        assert a["context_ids"][r, 3 - min(cp, 3) :].tolist() == X[max(0, cp - 3) : cp]


def test_split_sampler_draws_are_the_old_collators():
    """Pinned draws of the former `SMTDataCollator.sample_splits` (one torch.rand (B, S) on the CPU): seeded runs keep
    their split points, and the draw consumes the global RNG exactly as before."""
    lengths = T([5, 1, 9, 12])
    torch.manual_seed(0)
    assert SplitSampler(splits_per_sequence=3)(lengths).tolist() == [[2, 3, 0], [0, 0, 0], [4, 8, 4], [7, 4, 4]]
    assert torch.rand(1).item() == 0.022325754165649414  # the next number of the global stream
    gen = torch.Generator().manual_seed(3)
    assert SplitSampler(splits_per_sequence=2, generator=gen)(lengths).tolist() == [[0, 0], [0, 0], [4, 0], [9, 8]]
    assert SplitSampler(split="last", context_length=4)(lengths).tolist() == [[4], [0], [4], [4]]


@pytest.mark.parametrize("mode", ["dmt", "bptt", "eval"])
def test_sequence_modes_right_pad(mode):
    col = SMTDataCollator(mode, pad_token_id=7)
    out = col([{"input_ids": [1, 2, 3], "labels": [I, 2, 3]}, {"input_ids": [4, 5, 6, 8, 9]}])
    assert set(out) == {"input_ids", "labels", "attention_mask"}
    assert torch.equal(out["input_ids"], T([[1, 2, 3, 7, 7], [4, 5, 6, 8, 9]]))
    assert torch.equal(out["labels"], T([[I, 2, 3, I, I], [4, 5, 6, 8, 9]]))
    assert torch.equal(out["attention_mask"], T([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))


def test_prefix_contexts_by_hand():
    x = T([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    ids, mask = prefix_contexts(x, [0, 2, 5], context_length=3, pad_token_id=P)
    assert ids.shape == mask.shape == (2, 3, 3)
    assert torch.equal(ids, T([[[P, P, P], [P, 1, 2], [3, 4, 5]], [[P, P, P], [P, 6, 7], [8, 9, 10]]]))
    assert torch.equal(mask, T([[[0, 0, 0], [0, 1, 1], [1, 1, 1]]] * 2))
    # right-padded batch: tokens the attention mask marks as padding are padding here too
    am = T([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    ids2, mask2 = prefix_contexts(x, torch.tensor([4, 5]), 3, pad_token_id=-1, attention_mask=am)
    assert torch.equal(ids2[1], T([[7, 8, -1], [8, -1, -1]])) and torch.equal(mask2[1], T([[1, 1, 0], [1, 0, 0]]))
    assert torch.equal(ids2[0], T([[2, 3, 4], [3, 4, 5]]))
    with pytest.raises(ValueError, match="ends must lie in 0..L=5"):
        prefix_contexts(x, [6], 3)


def test_prefix_contexts_matches_smt_windows():
    x = torch.randint(1, 50, (3, 9))
    ends = list(range(10))
    ids, mask = prefix_contexts(x, ends, 4)
    for b in range(3):
        out = smt_windows(x[b : b + 1], x[b : b + 1], T([9]), T([ends[:-1]]), context_length=4, future_length=2)
        assert torch.equal(out["context_ids"], ids[b, :-1]) and torch.equal(out["context_mask"], mask[b, :-1])
        assert torch.equal(out["next_context_ids"], ids[b, 1:])


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(splits_per_sequence=0), "splits_per_sequence must be >= 1"),
        (dict(split="first"), "must be 'random' or 'last'"),
        (dict(split="last", context_length=4, splits_per_sequence=2), "set splits_per_sequence=1"),
        (dict(split="last"), "needs context_length >= 1"),
    ],
    ids=["splits0", "split-name", "last-multi", "last-no-Tc"],
)
def test_invalid_sampler_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        SplitSampler(**kw)


@pytest.mark.parametrize("mode,match", [("nope", "mode='nope' is not one of"), ("smt", "only pads sequences"),
                                        ("joint", "smt_windows")])
def test_invalid_collator_modes_name_the_fix(mode, match):
    with pytest.raises(ValueError, match=match):
        SMTDataCollator(mode)


def test_invalid_features():
    col = SMTDataCollator()
    with pytest.raises(ValueError, match="empty list of features"):
        col([])
    with pytest.raises(ValueError, match="labels must be aligned"):
        col([{"input_ids": [1, 2, 3], "labels": [1, 2]}])
    with pytest.raises(ValueError, match="no 'input_ids'"):
        col([{"labels": [1]}])
    with pytest.raises(ValueError, match=r"input_ids of shape \(2, 2\); each feature holds one sequence"):
        col([{"input_ids": [[1, 2], [3, 4]]}])  # was flattened into one row of 4 tokens
    with pytest.raises(ValueError, match="must be integer token ids"):
        col([{"input_ids": [1.5, 2.0]}])  # was truncated to [1, 2]
    with pytest.raises(ValueError, match="empty input_ids"):
        col([{"input_ids": []}])
    with pytest.raises(ValueError, match="split_points must lie in 0..L-1"):
        smt([{"input_ids": [1, 2, 3]}], split_points=T([[3]]))


def test_prefix_contexts_equals_left_windows_per_row():
    """One window rule: the context of row b ending at e is `left_windows` of that row at e (padding and mask too)."""
    from smt_hf.data.windows import left_windows

    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 9, (3, 7), generator=g)
    am = torch.ones(3, 7, dtype=torch.long)
    am[1, 5:] = 0
    ends = [0, 1, 3, 7]
    ids, mask = prefix_contexts(x, ends, 4, pad_token_id=-1, attention_mask=am)  # (3, 4, 4)
    for b in range(3):
        rows = x[b:b + 1].expand(len(ends), -1)  # (n, L): row b once per end
        row_ids, row_mask = left_windows(rows, torch.tensor(ends), 4, -1, am[b:b + 1].expand(len(ends), -1))
        assert torch.equal(ids[b], row_ids) and torch.equal(mask[b], row_mask)


def test_pre_padded_features_keep_only_their_tokens():
    """A tokenizer's padding (left or right) with its attention_mask: the pads were read as context and trained on as
    targets (labels [0, 0, ..., 267, ...]); now such a feature is its tokens, as if it had not been padded."""
    collate = SMTDataCollator(pad_token_id=0)
    plain = [{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}, {"input_ids": [3, 4], "labels": [-100, 4]}]
    padded = [{"input_ids": [0, 0, 5, 6, 7], "attention_mask": [0, 0, 1, 1, 1]},  # left
              {"input_ids": [8, 9, 0, 0, 0], "attention_mask": [True, True, False, False, False]},  # right, bool
              {"input_ids": [3, 4], "labels": [-100, 4], "attention_mask": [1, 1]}]  # none
    want, got = collate(plain), collate(padded)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert got["labels"].tolist() == [[5, 6, 7], [8, 9, -100], [-100, 4, -100]]
    float_mask = collate([{"input_ids": [0, 5, 6], "attention_mask": [0.0, 1.0, 1.0]}])
    assert float_mask["input_ids"].tolist() == [[5, 6]]
    for mask, match in (([1, 0, 1], "not one block of 1s"), ([0, 0, 0], "all-zero attention_mask"),
                        ([1, 1], "an attention_mask of 2"), ([1, 2, 1], "of 0/1 values"), ([0.5, 1, 1], "of 0/1")):
        with pytest.raises(ValueError, match=match):
            collate([{"input_ids": [1, 2, 3], "attention_mask": mask}])
