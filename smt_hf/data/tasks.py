"""Synthetic sequence tasks for SMT / DMT / BPTT (spec.md, "Synthetic tasks").

Every task returns a ``datasets.Dataset`` with two columns:

* ``input_ids``: list[int] of length ``seq_len``;
* ``labels``:    list[int] of length ``seq_len``, ``-100`` where there is no target.

Label convention (the trainer relies on it): ``labels[t]`` is the target of the prediction made
after reading ``input_ids[:t]``; this is the Hugging Face causal-LM convention where labels are
aligned with the inputs and the model shifts. A label need NOT equal the input at its position:
in the state-tracking tasks (``parity``, ``stack``) the answers are labels only, never fed back
as inputs. In the retrieval/copy tasks the target is also the next input (teacher forcing).

Each task is deterministic for a seed (``numpy.random.Generator(PCG64(seed))``) and vectorised
over examples, so large datasets build quickly.

Token layouts (``E`` = num_elements, ``V`` = vocab_size, ``Vk``/``Vv`` = key/value vocabularies):

========================  ==================================================  ==================
task                      layout                                              vocab size
========================  ==================================================  ==================
needle                    noise (1..V-1), ``0 n`` at p < T/2, ..., ``0 n``     V
                          (query 0 at T-2, labelled needle n at T-1)
string_copy / copy        ``s_1..s_L 0 r_1..r_L [0 ...]`` r = reversed(s) or s V
                          (labelled r; trailing pad 0s unlabelled; with
                          ``min_string_len`` each row's own L, uniform)
stack                     ops only: 0=pop, k=push k (1..E); the label after   2E+1
                          each pop is E+popped (a label, never an input)
stack_interleaved         as stack, but each answer E+k is fed back as the     2E+1
                          next input (not state tracking)
parity                    bits b_1..b_T only; labels[t] = 2 + xor(b_1..b_t)    4
                          (labels, never inputs)
parity_interleaved        ``b_1 a_1 b_2 a_2 ...``, answers fed back as inputs  4
                          (not state tracking)
associative_recall        (N-1) x ``key value``, then queries ``key value``    Vk+Vv+1
                          (labelled value) filling the rest; leftover < 1
                          query slot padded at the end with Vk+Vv
icl_modular               ``x_1 y_1 x_2 y_2 ...``; y = (w x + b) mod V,        V
                          labelled y
========================  ==================================================  ==================
"""

from __future__ import annotations

import inspect
import math
from functools import partial
from typing import Callable

import numpy as np
import pyarrow as pa
from datasets import Dataset, Features, List, Value

IGNORE_INDEX = -100

__all__ = [
    "IGNORE_INDEX",
    "needle",
    "string_copy",
    "stack",
    "stack_interleaved",
    "parity",
    "parity_interleaved",
    "associative_recall",
    "icl_modular",
    "make_task",
    "list_tasks",
    "task_vocab_size",
]


# ----------------------------------------------------------------------------- helpers


def _rng(seed: int) -> np.random.Generator:
    if not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return np.random.Generator(np.random.PCG64(int(seed)))


def _check_common(name: str, num_examples: int, seq_len: int, min_len: int) -> None:
    for what, v in (("num_examples", num_examples), ("seq_len", seq_len)):  # int() would cut 32.5 to 32 silently
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name}: {what} must be an int, got {v!r}")
    if int(num_examples) < 1:
        raise ValueError(f"{name}: num_examples must be >= 1, got {num_examples}")
    if int(seq_len) < min_len:
        raise ValueError(f"{name}: seq_len must be >= {min_len}, got {seq_len}; increase seq_len")


def _list_column(a: np.ndarray) -> pa.ListArray:
    """(N, T) int array -> Arrow list<int64> column without a Python-level loop."""
    N, T = a.shape
    offsets = pa.array(np.arange(0, N * T + 1, T, dtype=np.int64), type=pa.int64())
    return pa.LargeListArray.from_arrays(offsets, pa.array(a.reshape(-1).astype(np.int64)))


def _to_dataset(input_ids: np.ndarray, labels: np.ndarray) -> Dataset:
    """(N, T) int arrays -> Dataset with int64 list columns ``input_ids`` and ``labels``."""
    assert input_ids.shape == labels.shape and input_ids.ndim == 2
    feats = Features({"input_ids": List(Value("int64")), "labels": List(Value("int64"))})
    return Dataset.from_dict(
        {"input_ids": _list_column(input_ids), "labels": _list_column(labels)}, features=feats
    )


# ----------------------------------------------------------------------------- tasks


def needle(num_examples: int, seq_len: int, seed: int, vocab_size: int = 16) -> Dataset:
    """Needle retrieval: remember one value across a long stretch of noise.

    Layout (T = seq_len): noise tokens uniform in ``1..V-1``; at a random position ``p`` in the first
    half (``p < T//2`` and ``p + 1 < T - 2``) the marker ``0`` followed by the needle ``n`` in
    ``1..V-1``; position ``T-2`` is the query ``0``; position ``T-1`` is ``n`` again and is the only
    label. No other ``0`` appears. Requires ``seq_len >= 4`` and ``vocab_size >= 2``.
    """
    _check_common("needle", num_examples, seq_len, 4)
    if vocab_size < 2:
        raise ValueError(f"needle: vocab_size must be >= 2 (marker 0 + values), got {vocab_size}")
    rng = _rng(seed)
    N, T = int(num_examples), int(seq_len)
    ids = rng.integers(1, vocab_size, size=(N, T))  # (N, T) noise
    p_hi = min(T // 2, T - 3)  # marker positions 0..p_hi-1 keep needle clear of the query
    p = rng.integers(0, p_hi, size=N)  # (N,)
    n = rng.integers(1, vocab_size, size=N)  # (N,)
    rows = np.arange(N)
    ids[rows, p] = 0
    ids[rows, p + 1] = n
    ids[:, T - 2] = 0
    ids[:, T - 1] = n
    labels = np.full((N, T), IGNORE_INDEX)
    labels[:, T - 1] = n
    return _to_dataset(ids, labels)


def string_copy(
    num_examples: int,
    seq_len: int,
    seed: int,
    vocab_size: int = 16,
    reverse: bool = True,
    string_len: int | None = None,
    min_string_len: int | None = None,
) -> Dataset:
    """String copy: read a string, a delimiter, then write it back (reversed by default).

    Layout: ``s_1..s_L`` (uniform in ``1..V-1``), delimiter ``0``, then the copy ``r_1..r_L``
    (``reversed(s)`` if ``reverse`` else ``s``), every copy token labelled. ``L`` defaults to
    ``(seq_len - 1) // 2``; if ``2L + 1 < seq_len`` the sequence is padded at the END with ``0``
    tokens labelled ``-100`` (they come after every target, so they never leak information).

    ``min_string_len``: draw each example's length uniformly in ``min_string_len..L`` instead (the
    layout above with that example's length, padded at the end). Mixed lengths put short, easy copies
    in every batch, an implicit length curriculum for training (the recipes hold out full-length
    strings: a family's ``train_task_kwargs``). ``None`` (default): every example has length ``L``
    (the same episodes as before the option existed). Raises ``ValueError`` unless
    ``min_string_len`` is an int with ``1 <= min_string_len <= L``.
    """
    _check_common("string_copy", num_examples, seq_len, 3)
    if vocab_size < 2:
        raise ValueError(f"string_copy: vocab_size must be >= 2 (delimiter 0 + symbols), got {vocab_size}")
    T = int(seq_len)
    L = (T - 1) // 2 if string_len is None else int(string_len)
    if L < 1:
        raise ValueError(f"string_copy: string_len must be >= 1, got {L}")
    if 2 * L + 1 > T:
        raise ValueError(
            f"string_copy: string_len={L} needs seq_len >= 2*string_len+1 = {2 * L + 1}, got seq_len={T}; "
            f"lower string_len to <= {(T - 1) // 2} or raise seq_len"
        )
    if min_string_len is not None and (isinstance(min_string_len, bool)
                                       or not isinstance(min_string_len, (int, np.integer))
                                       or not 1 <= min_string_len <= L):
        raise ValueError(f"string_copy: min_string_len must be an int in 1..string_len={L}, got {min_string_len!r}")
    rng = _rng(seed)
    N = int(num_examples)
    s = rng.integers(1, vocab_size, size=(N, L))  # (N, L)
    if min_string_len is None:  # every example of length L (the original draw order: seeds keep their episodes)
        lens = np.full((N, 1), L)
    else:
        lens = rng.integers(min_string_len, L + 1, size=(N, 1))  # (N, 1) each example's length
    j = np.arange(L)[None, :]  # (1, L) position inside the string
    s = np.where(j < lens, s, 0)  # (N, L) the string, 0 past its length
    rows = np.arange(N)[:, None]
    # copy token k of example n is s[n, lens-1-k] (reversed) or s[n, k], for k < lens
    src = np.clip(lens - 1 - j, 0, L - 1) if reverse else j
    r = np.where(j < lens, s[rows, np.broadcast_to(src, (N, L))], 0)  # (N, L)
    ids = np.zeros((N, T), dtype=np.int64)
    labels = np.full((N, T), IGNORE_INDEX)
    ids[:, :L] = s  # the delimiter 0 at position lens (already 0)
    cols = lens + 1 + j  # (N, L) where copy token k goes
    ok = j < lens
    ids[rows.repeat(L, 1)[ok], cols[ok]] = r[ok]
    labels[rows.repeat(L, 1)[ok], cols[ok]] = r[ok]
    return _to_dataset(ids, labels)


def _stack_arrays(num_examples, seq_len, seed, num_elements, max_depth):
    """Checked sizes and the empty arrays of a stack task: rng, N, T, E, ids (N, T), labels (N, T), stack (N, D),
    depth (N,)."""
    _check_common("stack", num_examples, seq_len, 2)
    if num_elements < 1 or max_depth < 1:
        raise ValueError(f"stack: num_elements and max_depth must be >= 1, got {num_elements}, {max_depth}")
    N, T = int(num_examples), int(seq_len)
    return (_rng(seed), N, T, int(num_elements), np.zeros((N, T), dtype=np.int64), np.full((N, T), IGNORE_INDEX),
            np.zeros((N, max_depth), dtype=np.int64), np.zeros(N, dtype=np.int64))


def stack(num_examples: int, seq_len: int, seed: int, num_elements: int = 4, max_depth: int = 10) -> Dataset:
    """Stack state tracking (reference layout): the inputs are only the ops; after each pop, name the element.

    Inputs: ``0`` = pop, ``k`` in ``1..E`` = push k. After a pop at position ``t`` the target
    ``labels[t+1] = E + popped`` (the answer tokens ``E+1..2E`` are labels, never inputs; the input at
    ``t+1`` is the next op). All other positions are ``-100``. So the answer needs the whole stack, not a
    local rule. Ops are valid: never pop an empty stack, never exceed ``max_depth``. When both are legal,
    pop with probability 1/2, otherwise push a uniform element; the last op is a push when it can be (a
    pop there would have no position for its answer), else an unanswered pop. Vocabulary ``2E+1``.
    """
    rng, N, T, E, ids, labels, st, depth = _stack_arrays(num_examples, seq_len, seed, num_elements, max_depth)
    rows = np.arange(N)
    for t in range(T):
        coin = rng.random(N) < 0.5  # drawn for every row each step: deterministic
        val = rng.integers(1, E + 1, size=N)
        last = t == T - 1
        can_push, can_pop = depth < max_depth, depth > 0
        do_pop = np.where(can_push & can_pop, coin & (not last), can_pop)
        do_push = ~do_pop
        st[rows[do_push], depth[do_push]] = val[do_push]
        ids[do_push, t] = val[do_push]
        depth[do_push] += 1
        depth[do_pop] -= 1  # pops: token 0 already in ids
        if t + 1 < T:
            labels[do_pop, t + 1] = E + st[rows[do_pop], depth[do_pop]]
    return _to_dataset(ids, labels)


def stack_interleaved(
    num_examples: int, seq_len: int, seed: int, num_elements: int = 4, max_depth: int = 10
) -> Dataset:
    """The fed-back stack layout (not state tracking): every pop is followed by its answer token ``E + k``
    as the next INPUT (labelled), so an answer follows from the pushes seen since. Kept under its own name for
    comparison with earlier results; use :func:`stack` for state tracking. Vocabulary ``2E+1``."""
    rng, N, T, E, ids, labels, st, depth = _stack_arrays(num_examples, seq_len, seed, num_elements, max_depth)
    pending = np.zeros(N, dtype=np.int64)  # (N,) popped value awaiting its answer slot, 0 = none
    rows = np.arange(N)
    for t in range(T):
        coin = rng.random(N) < 0.5  # drawn for every row each step: deterministic
        val = rng.integers(1, E + 1, size=N)
        ans = pending > 0
        last = t == T - 1
        can_push, can_pop = depth < max_depth, depth > 0
        want_pop = np.where(can_push & can_pop, coin & (not last), can_pop)
        do_pop = ~ans & want_pop
        do_push = ~ans & ~want_pop
        # answer slots
        ids[ans, t] = E + pending[ans]
        labels[ans, t] = E + pending[ans]
        pending[ans] = 0
        # pushes
        st[rows[do_push], depth[do_push]] = val[do_push]
        ids[do_push, t] = val[do_push]
        depth[do_push] += 1
        # pops (token 0 already in ids)
        depth[do_pop] -= 1
        pending[do_pop] = st[rows[do_pop], depth[do_pop]]
    return _to_dataset(ids, labels)


def parity(num_examples: int, seq_len: int, seed: int) -> Dataset:
    """Running parity, state tracking (reference layout): the inputs are only bits, the targets the parities.

    Inputs ``b_1 .. b_T`` in ``{0, 1}``; ``labels[t] = 2 + (b_1 xor ... xor b_t)`` for ``t >= 1`` (the parity of
    the ``t`` bits read so far; answer tokens 2/3 are labels, never inputs), ``labels[0] = -100``. Every answer
    depends on all earlier bits. Vocabulary size 4.
    """
    _check_common("parity", num_examples, seq_len, 2)
    rng = _rng(seed)
    N, T = int(num_examples), int(seq_len)
    bits = rng.integers(0, 2, size=(N, T))  # (N, T)
    labels = np.full((N, T), IGNORE_INDEX)
    labels[:, 1:] = 2 + np.cumsum(bits, axis=1)[:, :-1] % 2
    return _to_dataset(bits, labels)


def parity_interleaved(num_examples: int, seq_len: int, seed: int) -> Dataset:
    """The fed-back parity layout (not state tracking): ``b_1 a_1 b_2 a_2 ...`` with each answer
    ``a_i = 2 + (b_1 xor ... xor b_i)`` also the next INPUT (labelled), so ``a_i`` follows from ``a_{i-1}`` and
    ``b_i`` alone. Kept under its own name for comparison with earlier results; use :func:`parity`."""
    _check_common("parity", num_examples, seq_len, 2)
    rng = _rng(seed)
    N, T = int(num_examples), int(seq_len)
    nb = (T + 1) // 2
    bits = rng.integers(0, 2, size=(N, nb))  # (N, nb)
    ans = 2 + np.cumsum(bits, axis=1) % 2  # (N, nb)
    ids = np.empty((N, 2 * nb), dtype=np.int64)
    ids[:, 0::2], ids[:, 1::2] = bits, ans
    labels = np.full((N, 2 * nb), IGNORE_INDEX)
    labels[:, 1::2] = ans
    return _to_dataset(ids[:, :T], labels[:, :T])


def _assoc_layout(seq_len: int, key_len: int, n_keys: int, num_queries: int | None) -> tuple[int, int]:
    """Validate associative-recall sizes; return (num_queries, trailing pad length)."""
    if key_len < 1 or n_keys < 2:
        raise ValueError(f"associative_recall: need key_len >= 1 and n_keys >= 2, got {key_len}, {n_keys}")
    slot = key_len + 1
    pairs = (n_keys - 1) * slot
    need = pairs + slot
    if seq_len < need:
        raise ValueError(
            f"associative_recall: n_keys={n_keys}, key_len={key_len} need seq_len >= "
            f"(n_keys-1)*(key_len+1) + key_len+1 = {need}, got {seq_len}; at most "
            f"{max(seq_len // slot, 1)} keys fit, lower n_keys or raise seq_len"
        )
    fit = (seq_len - pairs) // slot
    q = fit if num_queries is None else int(num_queries)
    if not 1 <= q <= fit:
        raise ValueError(
            f"associative_recall: num_queries={num_queries} must be in 1..{fit} for seq_len={seq_len}; "
            f"lower num_queries or raise seq_len"
        )
    return q, seq_len - pairs - q * slot


def associative_recall(
    num_examples: int,
    seq_len: int,
    seed: int,
    key_len: int = 1,
    n_keys: int = 8,
    key_vocab: int = 16,
    value_vocab: int = 16,
    num_queries: int | None = None,
) -> Dataset:
    """Associative recall: store ``n_keys - 1`` key/value pairs, then answer queries.

    Layout: ``n_keys - 1`` pairs ``k_1..k_{key_len} v`` with distinct keys (tokens in ``[0, Vk)``)
    and values in ``Vk + [0, Vv)``; then ``num_queries`` queries, each a stored key (uniform, with
    replacement) followed by its value, the value labelled. The minimal length is
    ``(n_keys-1)*(key_len+1) + key_len + 1`` (one query, the reference layout). ``num_queries=None``
    fills a longer sequence with as many queries as fit; the leftover (fewer than ``key_len + 1``
    positions) is padded at the END with the pad token ``Vk + Vv`` (unlabelled). Vocabulary size
    ``Vk + Vv + 1`` (the pad token is always counted).
    """
    _check_common("associative_recall", num_examples, seq_len, 2)
    if key_vocab < 1 or value_vocab < 1:
        raise ValueError(f"associative_recall: key_vocab and value_vocab must be >= 1, got {key_vocab}, {value_vocab}")
    T, N, K = int(seq_len), int(num_examples), int(n_keys) - 1
    q, pad = _assoc_layout(T, int(key_len), int(n_keys), num_queries)
    space = key_vocab**key_len  # number of distinct keys
    if K > space:
        raise ValueError(
            f"associative_recall: n_keys-1={K} distinct keys requested but only key_vocab**key_len = "
            f"{space} exist; lower n_keys to <= {space + 1} or raise key_vocab / key_len"
        )
    rng = _rng(seed)
    # 1. distinct key codes per example: (N, K) integers in [0, space)
    if space <= 4096:
        codes = np.argsort(rng.random((N, space)), axis=1)[:, :K]
    else:
        codes = np.empty((N, K), dtype=np.int64)
        for i in range(N):  # rejection sampling, cheap since K << space
            seen: dict[int, None] = {}
            while len(seen) < K:
                seen.setdefault(int(rng.integers(0, space)), None)
            codes[i] = list(seen)
    digits = key_vocab ** np.arange(key_len - 1, -1, -1)  # (key_len,) most significant first
    keys = (codes[..., None] // digits) % key_vocab  # (N, K, key_len)
    values = key_vocab + rng.integers(0, value_vocab, size=(N, K))  # (N, K)
    which = rng.integers(0, K, size=(N, q))  # (N, q) index of the queried pair
    rows = np.arange(N)[:, None]
    # 2. assemble: pairs then queries, each slot = key tokens + value
    pairs = np.concatenate([keys, values[..., None]], axis=2).reshape(N, -1)  # (N, K*(key_len+1))
    qkeys, qvals = keys[rows, which], values[rows, which]  # (N, q, key_len), (N, q)
    queries = np.concatenate([qkeys, qvals[..., None]], axis=2).reshape(N, -1)  # (N, q*(key_len+1))
    ids = np.concatenate([pairs, queries, np.full((N, pad), key_vocab + value_vocab)], axis=1)
    labels = np.full((N, T), IGNORE_INDEX)
    qpos = K * (key_len + 1) + np.arange(q) * (key_len + 1) + key_len  # (q,) value positions
    labels[:, qpos] = qvals
    return _to_dataset(ids, labels)


def icl_modular(num_examples: int, seq_len: int, seed: int, vocab_size: int = 17) -> Dataset:
    """In-context learning of an affine map mod V.

    Per sequence, ``w, b`` uniform in ``[0, ceil(0.2 V))``; pairs ``x_i y_i`` with ``x_i`` uniform in
    ``[0, V)`` and ``y_i = (w x_i + b) mod V``. Every ``y`` is labelled (the first few are guesses
    until the map is identifiable). ``seq_len`` must be even. Vocabulary size ``V``.
    """
    _check_common("icl_modular", num_examples, seq_len, 2)
    if seq_len % 2:
        raise ValueError(f"icl_modular: seq_len must be even (x, y pairs), got {seq_len}; use {seq_len + 1}")
    if vocab_size < 2:
        raise ValueError(f"icl_modular: vocab_size must be >= 2, got {vocab_size}")
    rng = _rng(seed)
    N, P, V = int(num_examples), int(seq_len) // 2, int(vocab_size)
    hi = math.ceil(0.2 * V)
    w = rng.integers(0, hi, size=(N, 1))
    b = rng.integers(0, hi, size=(N, 1))
    x = rng.integers(0, V, size=(N, P))  # (N, P)
    y = (w * x + b) % V  # (N, P)
    ids = np.empty((N, 2 * P), dtype=np.int64)
    ids[:, 0::2], ids[:, 1::2] = x, y
    labels = np.full((N, 2 * P), IGNORE_INDEX)
    labels[:, 1::2] = y
    return _to_dataset(ids, labels)


# ----------------------------------------------------------------------------- registry


def _vocab_needle(vocab_size: int = 16, **_: object) -> int:
    return int(vocab_size)


def _vocab_stack(num_elements: int = 4, **_: object) -> int:
    return 2 * int(num_elements) + 1


def _vocab_assoc(key_vocab: int = 16, value_vocab: int = 16, **_: object) -> int:
    return int(key_vocab) + int(value_vocab) + 1


def _vocab_icl(vocab_size: int = 17, **_: object) -> int:
    return int(vocab_size)


# name -> (builder, vocab-size function of the builder's keyword arguments)
_TASKS: dict[str, tuple[Callable[..., Dataset], Callable[..., int]]] = {
    "needle": (needle, _vocab_needle),
    "string_copy": (string_copy, _vocab_needle),
    "copy": (partial(string_copy, reverse=False), _vocab_needle),  # plain (not reversed) copy
    "stack": (stack, _vocab_stack),
    "stack_interleaved": (stack_interleaved, _vocab_stack),
    "parity": (parity, lambda **_: 4),
    "parity_interleaved": (parity_interleaved, lambda **_: 4),
    "associative_recall": (associative_recall, _vocab_assoc),
    "icl_modular": (icl_modular, _vocab_icl),
}
_POSITIONAL = ("num_examples", "seq_len", "seed")


def list_tasks() -> list[str]:
    """Names accepted by :func:`make_task` (``"copy"`` = ``string_copy`` with ``reverse=False``)."""
    return sorted(_TASKS)


def _lookup(name: str, kw: dict) -> tuple[Callable[..., Dataset], Callable[..., int]]:
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(list_tasks())}")
    fn, vocab = _TASKS[name]
    bound = fn.keywords if isinstance(fn, partial) else {}  # "copy" fixes reverse=False: not an argument of its own
    params = [p for p in inspect.signature(fn).parameters if p not in _POSITIONAL and p not in bound]
    bad = sorted(k for k in set(kw) - set(params) if not (k in bound and kw[k] == bound[k]))
    if bad:
        fixed = [f"{k}={bound[k]!r}" for k in bad if k in bound]
        raise ValueError(f"task {name!r} got unknown argument(s) {bad}; valid: {params}"
                         + (f" ({name!r} fixes {', '.join(fixed)}: use 'string_copy' to set it)" if fixed else ""))
    return fn, vocab


def make_task(name: str, num_examples: int, seq_len: int, seed: int, **kw: object) -> Dataset:
    """Build task ``name`` (see :func:`list_tasks`) as a ``datasets.Dataset``.

    Extra keyword arguments go to the task (e.g. ``vocab_size``, ``reverse``, ``num_elements``);
    unknown names or arguments raise ``ValueError`` listing the valid ones.
    """
    fn, _ = _lookup(name, kw)
    return fn(num_examples, seq_len, seed, **kw)


def task_vocab_size(name: str, **kw: object) -> int:
    """Vocabulary size of task ``name`` for these keyword arguments.

    Accepts the same keywords as :func:`make_task` (``num_examples``/``seq_len``/``seed`` are ignored),
    so a recipe can pass one dict to both.
    """
    kw = {k: v for k, v in kw.items() if k not in _POSITIONAL}
    _, vocab = _lookup(name, kw)
    return vocab(**kw)
