"""Any `datasets` text corpus, any Hugging Face tokenizer, packed into fixed windows for SMT / DMT / BPTT.

    data = load_text_dataset("roneneldan/TinyStories", tokenizer="EleutherAI/gpt-neo-125M", seq_len=320)
    data = load_text_dataset("text", data_files="corpus.txt", tokenizer="my_tokenizer/", seq_len=128)
    teacher_config = SMTTeacherConfig(**data.model_fields(), hidden_size=256, ...)

The corpus is read with `datasets.load_dataset(path, name, data_files=..., split=...)` (a hub id, a local
folder, or a builder such as "text" / "json" / "parquet" with `data_files`). Every example's `text_column` is
tokenised without special tokens, a document separator is appended (the tokenizer's EOS; for a tokenizer
without one, such as `SMTByteTokenizer`, the tokens of `separator`, a line break by default), and the ids are
concatenated and cut into windows of `seq_len` tokens. This runs as ONE batched `.map`
(`batch_size` documents per call; the tail of each call that does not fill a window is dropped), which
`datasets` caches next to the corpus (fingerprinted by the function, the tokenizer and the arguments), so a
second run with the same settings reads the windows from disk. `streaming=True` applies the same `.map`
lazily to an `IterableDataset` (corpora larger than memory or disk): it yields the same windows in the same
order as `streaming=False`.

Examples hold `input_ids` only (int32, `seq_len` each); `SMTDataCollator` uses them as labels. Byte-level
text stays `load_text` (+ `stream_windows`); `tokenizer="bytes"` here uses `SMTByteTokenizer` on any corpus.
"""

from __future__ import annotations

import logging
import numbers
import os
from dataclasses import dataclass
from typing import Any

from datasets import Dataset, Features, IterableDataset, List, Value

logger = logging.getLogger("smt_hf.data")

BYTE_TOKENIZER_NAMES = ("bytes", "byte", "smt_bytes")
WINDOW_FEATURES = Features({"input_ids": List(Value("int32"))})

__all__ = ["TokenizedText", "load_text_dataset", "load_tokenizer", "tokenizer_model_fields", "pack_function",
           "document_separator"]


def _names_a_folder(name: str) -> bool:
    """Whether `name` can only be a path, not a hub id (`user/name` or `name`)."""
    return name.startswith((".", "/", "~")) or name.endswith("/") or name.count("/") > 1


def load_tokenizer(name_or_path, **kwargs):
    """A tokenizer from a hub id or a local folder (`AutoTokenizer.from_pretrained`), or `SMTByteTokenizer`
    for "bytes"; an already built tokenizer is returned as is.

    Generation-ready: a tokenizer without a pad token gets its EOS as pad token, and padding goes on the left
    (batched prompts then end where generation starts, as with `SMTByteTokenizer`).
    Raises ValueError when the name is empty, FileNotFoundError for a missing folder (a name that reads as a path:
    './x', '/x', '~/x', 'x/', or more than one '/'; transformers read it as a malformed hub id).
    """
    if name_or_path is None or name_or_path == "":
        raise ValueError("data.tokenizer is required for task: dataset: a hub id, a folder, or 'bytes'.")
    if not isinstance(name_or_path, str):
        tokenizer = name_or_path
    elif name_or_path in BYTE_TOKENIZER_NAMES:
        from ..tokenization_smt import SMTByteTokenizer

        tokenizer = SMTByteTokenizer()
    elif _names_a_folder(name_or_path) and not os.path.isdir(os.path.expanduser(name_or_path)):
        raise FileNotFoundError(f"tokenizer folder {name_or_path!r} not found (from {os.getcwd()}): pass an existing "
                                "folder written by save_pretrained, a hub id (user/name), or 'bytes'.")
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(os.path.expanduser(name_or_path), **kwargs)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    tokenizer.init_kwargs["padding_side"] = "left"  # saved with the tokenizer (and so with the student)
    return tokenizer


def tokenizer_model_fields(tokenizer) -> dict[str, int | None]:
    """The config fields a tokenizer fixes: `vocab_size = len(tokenizer)` (added tokens included) and the
    pad / bos / eos ids. Pass them to `SMTTeacherConfig` and `SMTRecurrentConfig`."""
    return {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def document_separator(tokenizer, add_eos: bool = True, separator: str | None = "\n") -> list[int]:
    """The ids put after every document: [eos_token_id] when the tokenizer has an EOS; otherwise the tokens of
    `separator` (default "\n": the line break the "text" builder strips from each line; empty documents, such as
    its blank lines, are skipped, so a blank line between paragraphs is not kept); [] when `add_eos` is False or
    `separator` is None / "". Raises ValueError when `separator` encodes to no token (a tokenizer whose
    pre-tokenizer drops whitespace): documents would run together without a word."""
    if not add_eos:
        return []
    if tokenizer.eos_token_id is not None:
        return [tokenizer.eos_token_id]
    ids = list(tokenizer(separator, add_special_tokens=False)["input_ids"]) if separator else []
    if separator and not ids:
        raise ValueError(f"The document separator {separator!r} encodes to no token with this tokenizer (it has no "
                         "EOS either), so documents would run together: give a separator it keeps (e.g. a word "
                         "of its vocabulary), give the tokenizer an eos_token, or pass separator=None to join "
                         "documents with nothing.")
    return ids


def _is_id(x) -> bool:
    """An integer token id (Python or numpy int; not a bool)."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def pack_function(tokenizer, text_column: str, seq_len: int, add_eos: bool = True, separator: str | None = "\n"):
    """The batched `.map` function: {text_column: [B docs]} -> {"input_ids": [n windows of seq_len]}.

    Each document is tokenised without special tokens (a pre-tokenized column, lists or 1-D arrays of token ids, is
    taken as it is), followed by `document_separator(tokenizer, add_eos, separator)` (the EOS id, else the tokens of
    `separator`); empty documents are skipped; the concatenation is cut into whole windows and the remainder
    (< seq_len tokens) dropped. ValueError for a column of anything else (the values' type named).
    """
    eos = document_separator(tokenizer, add_eos, separator)

    def pack(batch: dict[str, list]) -> dict[str, list]:
        docs = [t.tolist() if hasattr(t, "tolist") else t for t in batch[text_column]]  # numpy / torch rows: lists
        docs = [t for t in docs if t is not None and not (isinstance(t, (str, list, tuple)) and not t)]
        if all(isinstance(t, str) for t in docs):
            ids = tokenizer(docs, add_special_tokens=False)["input_ids"] if docs else []
        elif all(isinstance(t, (list, tuple)) and all(_is_id(i) for i in t) for t in docs):
            ids = [[int(i) for i in t] for t in docs]  # pre-tokenized (e.g. input_ids): the tokenizer's ids as they are
            vocab = len(tokenizer)
            bad = next((i for t in ids for i in t if not 0 <= i < vocab), None)
            if bad is not None:
                raise ValueError(f"column {text_column!r} holds token id {bad}, outside the tokenizer's 0..{len(tokenizer) - 1}"
                                 ": pre-tokenized columns must come from this tokenizer.")
        else:
            kinds = sorted({type(t).__name__ for t in docs} | {f"{type(t).__name__} of {type(i).__name__}" for t in docs
                                                               if isinstance(t, (list, tuple)) for i in t if not _is_id(i)})
            raise ValueError(f"column {text_column!r} holds {kinds}: expected text (str) or pre-tokenized lists of "
                             "integer token ids; set data.text_column to such a column.")
        flat = [i for doc in ids for i in (doc + eos)]
        n = len(flat) // seq_len
        return {"input_ids": [flat[k * seq_len:(k + 1) * seq_len] for k in range(n)]}

    return pack


@dataclass
class TokenizedText:
    """What `load_text_dataset` returns: `train` (a `Dataset`, or an `IterableDataset` when streaming) and
    `eval` (a `Dataset`) of `seq_len`-token windows, the `tokenizer` that made them and a `description`."""

    train: Dataset | IterableDataset
    eval: Dataset
    tokenizer: Any
    description: str

    def model_fields(self) -> dict[str, int | None]:
        """`vocab_size` and pad / bos / eos ids for the teacher and student configs."""
        return tokenizer_model_fields(self.tokenizer)


def _windows(ds, tokenizer, text_column, seq_len, add_eos, separator, batch_size, num_proc, streaming, where):
    columns = ds.column_names
    if columns is not None and text_column not in columns:
        raise ValueError(f"{where} has no column {text_column!r} (columns: {columns}); set data.text_column.")
    ds = ds.select_columns([text_column])
    fn = pack_function(tokenizer, text_column, seq_len, add_eos, separator)
    if streaming:
        return ds.map(fn, batched=True, batch_size=batch_size, remove_columns=[text_column], features=WINDOW_FEATURES)
    return ds.map(fn, batched=True, batch_size=batch_size, remove_columns=[text_column], features=WINDOW_FEATURES,
                  num_proc=num_proc, desc=f"tokenise + pack {where} into windows of {seq_len}")


def _head(ds, n: int) -> Dataset:
    """The first n windows of a Dataset or IterableDataset, as a Dataset."""
    if isinstance(ds, Dataset):
        return ds.select(range(min(n, len(ds))))
    return Dataset.from_list(list(ds.take(n)), features=WINDOW_FEATURES)


def load_text_dataset(
    path: str,
    tokenizer,
    seq_len: int,
    name: str | None = None,
    data_files=None,
    split: str = "train",
    eval_split: str | None = None,
    text_column: str = "text",
    streaming: bool = False,
    num_train: int | None = None,
    num_eval: int = 256,
    seed: int = 0,
    add_eos: bool = True,
    separator: str | None = "\n",
    batch_size: int = 1000,
    num_proc: int | None = None,
    shuffle_buffer: int | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    load_kwargs: dict | None = None,
) -> TokenizedText:
    """Tokenise and pack a `datasets` text corpus into windows of `seq_len` tokens.

    Args:
        path, name, data_files, split, revision, cache_dir: passed to `datasets.load_dataset` (a hub id, a
            local folder, or a builder such as "text" / "json" / "csv" / "parquet" with `data_files`);
            `load_kwargs` adds any other of its arguments (e.g. `{sample_by: paragraph}` for "text").
        tokenizer: a hub id or folder for `AutoTokenizer`, "bytes" (`SMTByteTokenizer`), or a tokenizer.
        seq_len: tokens per window (Tc + Tf for SMT with split "last"; the rollout length for DMT / BPTT).
        eval_split: the split to evaluate on; None holds out the FIRST `num_eval` windows of `split`
            (the train windows are the ones after them), identically with and without streaming.
        text_column: the column holding the text.
        streaming: `load_dataset(..., streaming=True)`: `train` is an `IterableDataset` (set `max_steps`).
        num_train: keep this many train windows (None: all); num_eval: eval windows (materialised).
        seed, shuffle_buffer: streaming only: shuffle train windows in a buffer of this size (None: in order;
            map-style train sets are shuffled by the Trainer's sampler).
        add_eos, separator: put a separator after every document: the tokenizer's EOS, or for a tokenizer
            without one (e.g. "bytes") the tokens of `separator` (default "\n"; None or "": nothing, so documents
            run together); `add_eos=False`: no separator at all.
        batch_size, num_proc: of the batched `.map` (documents per call; processes, not for streaming).
    Returns:
        `TokenizedText` (train, eval, tokenizer, description); examples are {"input_ids": seq_len int32}.
    Raises:
        ValueError: missing text column, bad lengths, or too few windows of `split` for `num_eval` (+ 1 to train on)
            when no `eval_split` is given (an `eval_split` with fewer is evaluated whole, with a warning).
    """
    from datasets import load_dataset

    if int(seq_len) < 2:
        raise ValueError(f"data.seq_len must be >= 2 tokens per window, got {seq_len}")
    if int(num_eval) < 1:
        raise ValueError(f"data.num_eval must be >= 1, got {num_eval}")
    tokenizer = load_tokenizer(tokenizer)
    kw = dict(load_kwargs or {})
    kw.update(name=name, data_files=data_files, revision=revision, cache_dir=cache_dir, streaming=bool(streaming))

    def windows(which: str):
        ds = load_dataset(path, split=which, **kw)
        return _windows(ds, tokenizer, text_column, int(seq_len), add_eos, separator, int(batch_size), num_proc,
                        bool(streaming), f"{path} [{which}]")

    packed = windows(split)
    if eval_split is not None:
        ev, train = _head(windows(eval_split), int(num_eval)), packed
        if 0 < len(ev) < int(num_eval):  # (a small validation split: all of it is evaluated, and said so)
            logger.warning("smt_hf.data: %s [%s] gives %d windows of %d tokens, fewer than num_eval=%d: evaluating all "
                           "of them", path, eval_split, len(ev), int(seq_len), int(num_eval))
    else:
        ev = _head(packed, int(num_eval))
        if len(ev) < int(num_eval):
            raise ValueError(
                f"{path} [{split}] gives {len(ev)} windows of {seq_len} tokens, not more than num_eval={num_eval}; "
                "lower data.seq_len or data.num_eval, or set data.eval_split."
            )
        train = packed.skip(int(num_eval)) if streaming else packed.select(range(int(num_eval), len(packed)))
    if len(ev) == 0:
        raise ValueError(f"{path} [{eval_split}] gives no window of {seq_len} tokens; lower data.seq_len.")
    if streaming:
        if shuffle_buffer:
            train = train.shuffle(seed=int(seed), buffer_size=int(shuffle_buffer))
        if num_train is not None:
            train = train.take(int(num_train))
    else:
        if len(train) == 0:
            raise ValueError(f"{path} [{split}] has no train window left after the {num_eval} eval windows.")
        if num_train is not None:
            train = train.select(range(min(int(num_train), len(train))))
    size = "streamed" if streaming else f"{len(train):,}"
    desc = (f"{path}{f' ({name})' if name else ''} [{split}{f' / eval: {eval_split}' if eval_split else ''}] column "
            f"{text_column!r}, tokenizer "
            f"{getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__} (vocab {len(tokenizer)}), "
            f"{size} train / {len(ev)} eval windows of {seq_len} tokens")
    logger.info("smt_hf.data: %s", desc)
    return TokenizedText(train=train, eval=ev, tokenizer=tokenizer, description=desc)
