"""Synthetic tasks: every label checked against an independent solver written here."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import math

import numpy as np
import pytest

from smt_hf.data import list_tasks, make_task, task_vocab_size

SEEDS = range(20)
N = 4  # examples per seed
IGN = -100
FED_BACK = {"needle", "string_copy", "copy", "stack_interleaved", "parity_interleaved", "associative_recall",
            "icl_modular"}


def rows(name, seq_len, **kw):
    for seed in SEEDS:
        for r in make_task(name, N, seq_len, seed, **kw):
            assert len(r["input_ids"]) == len(r["labels"]) == seq_len
            vocab = task_vocab_size(name, **kw)
            assert all(0 <= t < vocab for t in r["input_ids"]), (name, r["input_ids"])
            if name in FED_BACK:  # retrieval/copy layouts: a target is also the input token at its position
                assert all(y == IGN or y == x for x, y in zip(r["input_ids"], r["labels"]))
            else:  # state tracking: the answers are labels only, never inputs
                assert not set(r["labels"]) & set(r["input_ids"]) - {IGN}
            yield r["input_ids"], r["labels"]


# ----------------------------------------------------------------------------- solvers


def solve_needle(x):
    """Target at the last step = the value after the first marker 0; no other target."""
    T = len(x)
    zeros = [i for i, t in enumerate(x) if t == 0]
    assert len(zeros) == 2 and zeros[1] == T - 2 and zeros[0] < T // 2, x
    y = [IGN] * T
    y[-1] = x[zeros[0] + 1]
    return y


def solve_copy(x, reverse, L):
    assert x[L] == 0 and all(t != 0 for t in x[:L])
    s = x[:L]
    r = s[::-1] if reverse else s
    assert x[L + 1 : 2 * L + 1] == r, "the fed-back copy must be the (reversed) string"
    assert all(t == 0 for t in x[2 * L + 1 :]), "padding is 0"
    return [IGN] * (L + 1) + r + [IGN] * (len(x) - 2 * L - 1)


def solve_stack(x, E, max_depth):
    """Inputs are ops only; the label right after each pop is E + popped; an unlabelled final pop only when the
    stack was full (else the last op is a push)."""
    st, y = [], [IGN] * len(x)
    for i, t in enumerate(x):
        assert 0 <= t <= E, f"an answer token {t} appears as an input at {i}"
        if t == 0:
            assert st, "pop on an empty stack"
            v = st.pop()
            if i + 1 < len(x):
                y[i + 1] = E + v
            else:
                assert len(st) + 1 == max_depth, "a final pop only when the stack was full"
        else:
            st.append(t)
            assert len(st) <= max_depth
    return y


def solve_parity(x):
    """Inputs are bits only; label t = 2 + parity of the first t bits."""
    assert set(x) <= {0, 1}
    y, acc = [IGN], 0
    for b in x[:-1]:
        acc ^= b
        y.append(2 + acc)
    return y


def solve_stack_interleaved(x, E, max_depth):
    """Simulate the stack; the token after each pop must be E + popped (labelled)."""
    st, y, i = [], [IGN] * len(x), 0
    while i < len(x):
        t = x[i]
        if t == 0:
            assert st, "pop on an empty stack"
            v = st.pop()
            if i + 1 < len(x):
                assert x[i + 1] == E + v
                y[i + 1] = E + v
            else:
                assert len(st) + 1 == max_depth, "an unanswered final pop only when the stack was full"
            i += 2
        else:
            assert 1 <= t <= E, f"expected an op at {i}, got {t}"
            st.append(t)
            assert len(st) <= max_depth
            i += 1
    return y


def solve_parity_interleaved(x):
    y, acc = [IGN] * len(x), 0
    for i in range(0, len(x), 2):
        assert x[i] in (0, 1)
        acc ^= x[i]
        if i + 1 < len(x):
            y[i + 1] = 2 + acc
    return y


def solve_assoc(x, key_len, n_keys, Vk, Vv):
    slot = key_len + 1
    table = {}
    for k in range(n_keys - 1):
        key = tuple(x[k * slot : k * slot + key_len])
        assert all(0 <= t < Vk for t in key) and Vk <= x[k * slot + key_len] < Vk + Vv
        assert key not in table, "keys must be distinct"
        table[key] = x[k * slot + key_len]
    y = [IGN] * len(x)
    i = (n_keys - 1) * slot
    while i + slot <= len(x):
        y[i + key_len] = table[tuple(x[i : i + key_len])]
        i += slot
    assert all(t == Vk + Vv for t in x[i:]), "leftover is padding"
    return y


def solve_icl(x, V):
    hi = math.ceil(0.2 * V)
    xs, ys = x[0::2], x[1::2]
    fits = [(w, b) for w in range(hi) for b in range(hi) if all((w * a + b) % V == c for a, c in zip(xs, ys))]
    assert fits, f"no (w, b) in [0,{hi})^2 explains {x}"
    y = [IGN] * len(x)
    y[1::2] = ys
    return y


# ----------------------------------------------------------------------------- label checks


@pytest.mark.parametrize("seq_len", [4, 9, 32], ids=lambda t: f"T{t}")
def test_needle_labels(seq_len):
    for x, y in rows("needle", seq_len, vocab_size=8):
        assert y == solve_needle(x)


@pytest.mark.parametrize("reverse", [True, False], ids=["reverse", "plain"])
@pytest.mark.parametrize("seq_len,string_len", [(21, None), (22, None), (30, 6)], ids=["T21", "T22-pad", "T30-L6"])
def test_string_copy_labels(reverse, seq_len, string_len):
    L = string_len or (seq_len - 1) // 2
    for x, y in rows("string_copy", seq_len, reverse=reverse, string_len=string_len):
        assert y == solve_copy(x, reverse, L)


@pytest.mark.parametrize("reverse", [True, False], ids=["reverse", "plain"])
def test_string_copy_mixed_lengths(reverse):
    """min_string_len: each example has its own length L_i in min..L (its delimiter is the first 0), the layout of
    that length, padded at the end; every length of the range occurs."""
    T, lo, L = 21, 3, 10
    lens = set()
    for x, y in rows("string_copy", T, reverse=reverse, min_string_len=lo):
        Li = x.index(0)
        assert lo <= Li <= L
        assert y == solve_copy(x, reverse, Li)
        lens.add(Li)
    assert lens == set(range(lo, L + 1))
    full = make_task("string_copy", 8, T, 1, reverse=reverse, min_string_len=np.int64(L))  # min = L: the default
    assert full["input_ids"] == make_task("string_copy", 8, T, 1, reverse=reverse)["input_ids"]


def test_string_copy_default_episodes_are_pinned():
    """Without min_string_len a seed gives the episodes it always gave: the string is the first draw of the seed's
    PCG64 generator (runs and results made before the option existed stay reproducible)."""
    s = np.random.Generator(np.random.PCG64(3)).integers(1, 16, size=(5, 10))
    d = make_task("string_copy", 5, 21, 3)
    assert d["input_ids"] == [list(r) + [0] + list(r[::-1]) for r in s.tolist()]
    assert d["labels"] == [[IGN] * 11 + list(r[::-1]) for r in s.tolist()]


def test_copy_alias_is_plain_copy():
    a = make_task("copy", 3, 21, 5)
    b = make_task("string_copy", 3, 21, 5, reverse=False)
    assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]


@pytest.mark.parametrize("E,depth,seq_len", [(4, 10, 64), (2, 1, 17), (3, 2, 40)], ids=["E4d10", "E2d1", "E3d2"])
def test_stack_labels(E, depth, seq_len):
    n_pops = 0
    for x, y in rows("stack", seq_len, num_elements=E, max_depth=depth):
        assert y == solve_stack(x, E, depth)
        n_pops += sum(t != IGN for t in y)
    assert n_pops > 0
    assert task_vocab_size("stack", num_elements=E) == 2 * E + 1


@pytest.mark.parametrize("seq_len", [2, 31, 64], ids=lambda t: f"T{t}")
def test_parity_labels(seq_len):
    for x, y in rows("parity", seq_len):
        assert y == solve_parity(x)


@pytest.mark.parametrize("seq_len", [2, 31, 64], ids=lambda t: f"T{t}")
def test_parity_interleaved_labels(seq_len):
    for x, y in rows("parity_interleaved", seq_len):
        assert y == solve_parity_interleaved(x)


@pytest.mark.parametrize("E,depth,seq_len", [(4, 10, 64), (2, 1, 17)], ids=["E4d10", "E2d1"])
def test_stack_interleaved_labels(E, depth, seq_len):
    for x, y in rows("stack_interleaved", seq_len, num_elements=E, max_depth=depth):
        assert y == solve_stack_interleaved(x, E, depth)


def _local_rule_holds(name, width=2):
    """Whether every label is a function of the last `width` inputs before it."""
    seen = {}
    for x, y in rows(name, 32):
        for t in range(width, 32):
            if y[t] != IGN:
                seen.setdefault(tuple(x[t - width : t]), set()).add(y[t])
    return all(len(v) == 1 for v in seen.values())


@pytest.mark.parametrize("name", ["parity", "stack"])
def test_state_tracking_answers_are_not_a_local_rule(name):
    """State tracking: the answer is not a function of the last two inputs (the fed-back layouts' flaw, where the
    previous answer is an input: there it is)."""
    assert not _local_rule_holds(name)
    if name == "parity":
        assert _local_rule_holds("parity_interleaved")


@pytest.mark.parametrize(
    "kw,seq_len",
    [
        (dict(key_len=1, n_keys=8), 16),  # minimal: one query
        (dict(key_len=2, n_keys=5, key_vocab=3, value_vocab=4), 24),  # several queries
        (dict(key_len=2, n_keys=4, key_vocab=4, value_vocab=4), 20),  # 1 leftover pad token
        (dict(key_len=3, n_keys=6, key_vocab=40, value_vocab=8), 40),  # large key space path
    ],
    ids=["min", "multi-query", "leftover-pad", "big-key-space"],
)
def test_associative_recall_labels(kw, seq_len):
    full = dict(key_len=1, n_keys=8, key_vocab=16, value_vocab=16) | kw
    for x, y in rows("associative_recall", seq_len, **kw):
        assert y == solve_assoc(x, full["key_len"], full["n_keys"], full["key_vocab"], full["value_vocab"])


def test_associative_recall_num_queries():
    for r in make_task("associative_recall", 5, 30, 0, n_keys=4, num_queries=2):
        assert sum(t != IGN for t in r["labels"]) == 2
        assert r["input_ids"][10:] == [32] * 20  # pad token = key_vocab + value_vocab


@pytest.mark.parametrize("V,seq_len", [(17, 32), (5, 10), (97, 64)], ids=["V17", "V5", "V97"])
def test_icl_modular_labels(V, seq_len):
    for x, y in rows("icl_modular", seq_len, vocab_size=V):
        assert y == solve_icl(x, V)


# ----------------------------------------------------------------------------- determinism, registry, errors

DEFAULT_LEN = {"associative_recall": 16}


@pytest.mark.parametrize("name", list_tasks())
def test_same_seed_same_data_different_seed_different(name):
    T = DEFAULT_LEN.get(name, 32)
    a, b, c = (make_task(name, 8, T, s) for s in (3, 3, 4))
    assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]
    assert a["input_ids"] != c["input_ids"]


def test_copy_accepts_its_own_reverse_value():
    assert make_task("copy", 3, 21, 0, reverse=False)[:] == make_task("copy", 3, 21, 0)[:]


def test_list_tasks_and_vocab_sizes():
    assert set(list_tasks()) == {"needle", "string_copy", "copy", "stack", "parity", "associative_recall", "icl_modular",
                                "stack_interleaved", "parity_interleaved"}
    assert task_vocab_size("needle") == 16
    assert task_vocab_size("parity") == 4
    assert task_vocab_size("stack") == 9
    assert task_vocab_size("associative_recall", key_vocab=10, value_vocab=6) == 17
    assert task_vocab_size("icl_modular", vocab_size=23, seq_len=64, seed=1) == 23  # make_task kwargs accepted


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: make_task("nope", 2, 8, 0), "valid names: associative_recall, copy"),
        (lambda: task_vocab_size("nope"), "valid names"),
        (lambda: make_task("needle", 2, 8, 0, n_keys=3), "unknown argument"),
        (lambda: make_task("string_copy", 2, 10, 0, string_len=5), "seq_len >= 2\\*string_len\\+1 = 11"),
        (lambda: make_task("string_copy", 2, 21, 0, min_string_len=11), "min_string_len must be an int in 1..string_len=10"),
        (lambda: make_task("string_copy", 2, 21, 0, min_string_len=0), "min_string_len must be an int in 1..string_len=10"),
        (lambda: make_task("string_copy", 2, 21, 0, min_string_len=1.5), "min_string_len must be an int in 1..string_len=10"),
        (lambda: make_task("associative_recall", 2, 10, 0, n_keys=8), "need seq_len >= .* = 16"),
        (lambda: make_task("associative_recall", 2, 64, 0, n_keys=20, key_vocab=4), "only key_vocab\\*\\*key_len = 4"),
        (lambda: make_task("associative_recall", 2, 16, 0, num_queries=3), "num_queries=3 must be in 1..1"),
        (lambda: make_task("icl_modular", 2, 9, 0), "must be even"),
        (lambda: make_task("needle", 2, 3, 0), "seq_len must be >= 4"),
        (lambda: make_task("parity", 0, 8, 0), "num_examples must be >= 1"),
        # int() used to cut these silently; "copy" took reverse=True and became reversed copy
        (lambda: make_task("needle", 2, 32.5, 0), "seq_len must be an int, got 32.5"),
        (lambda: make_task("stack", 2.0, 32, 0), "num_examples must be an int, got 2.0"),
        (lambda: make_task("parity", True, 8, 0), "num_examples must be an int, got True"),
        (lambda: make_task("copy", 2, 21, 0, reverse=True), "'copy' fixes reverse=False: use 'string_copy'"),  # the
        # same value is harmless: test_copy_accepts_its_own_reverse_value
    ],
    ids=["unknown", "unknown-vocab", "bad-kwarg", "string-too-long", "min-len-above", "min-len-zero",
         "min-len-float", "keys-dont-fit", "too-many-keys",
         "too-many-queries", "odd-icl", "short-needle", "no-examples", "float-seq-len", "float-examples",
         "bool-examples", "copy-reverse"],
)
def test_impossible_settings_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
