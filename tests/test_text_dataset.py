"""Any `datasets` corpus + any HF tokenizer (smt_hf/data/text_dataset.py), through recipes/smt.py: a local
text file and a BPE trained here with `tokenizers` (no network), packed windows (streaming == map-style,
cached), and the exported student generating with that tokenizer via AutoModelForCausalLM / pipeline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, pipeline  # noqa: E402

from smt_hf import SMTByteTokenizer, SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherConfig  # noqa: E402
from smt_hf.data import load_text_dataset, load_tokenizer, tokenizer_model_fields  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
import smt as recipe  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "shakespeare_excerpt.txt"
EOS = "<|endoftext|>"


@pytest.fixture(scope="module")
def corpus_and_tokenizer(tmp_path_factory):
    """(corpus.txt, tokenizer folder): the fixture text and a 300-id byte-level BPE trained on it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("bpe")
    corpus = folder / "corpus.txt"
    corpus.write_text(FIXTURE.read_text(encoding="utf-8"), encoding="utf-8")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train([str(corpus)], trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS],
                                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, bos_token=EOS)
    tok.save_pretrained(folder / "tokenizer")
    return corpus, folder / "tokenizer"


def _data(corpus, tok_dir, tmp_path, **kw):
    block = {"path": "text", "data_files": str(corpus), "tokenizer": str(tok_dir), "seq_len": 24, "num_eval": 4,
             "cache_dir": str(tmp_path / "hf_cache")}
    block.update(kw)
    return block


def test_a_pre_tokenized_column_is_packed_as_it_is(corpus_and_tokenizer, tmp_path):
    """A column of token-id lists (e.g. `input_ids` from an earlier tokenisation) is packed without tokenising
    again: it failed inside the tokenizer ("text input must be of type `str`"). Same windows as from the text."""
    import json

    corpus, tok_dir = corpus_and_tokenizer
    tok = AutoTokenizer.from_pretrained(tok_dir)
    lines = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line]
    pretok = tmp_path / "pretok.jsonl"
    pretok.write_text("".join(json.dumps({"input_ids": tok(line, add_special_tokens=False).input_ids}) + "\n"
                              for line in lines))
    from_ids = load_text_dataset(**_data(pretok, tok_dir, tmp_path, path="json", text_column="input_ids"))
    from_text = load_text_dataset(**_data(corpus, tok_dir, tmp_path))
    assert from_ids.train["input_ids"] == from_text.train["input_ids"] and len(from_ids.train) > 4
    assert from_ids.eval["input_ids"] == from_text.eval["input_ids"]
    floats = tmp_path / "floats.jsonl"
    floats.write_text('{"x": 1.5}\n' * 50)
    with pytest.raises(ValueError, match=r"column 'x' holds \['float'\]: expected text \(str\) or pre-tokenized"):
        load_text_dataset(**_data(floats, tok_dir, tmp_path, path="json", text_column="x"))


def test_windows_are_the_tokenised_documents_joined_by_eos(corpus_and_tokenizer, tmp_path):
    corpus, tok_dir = corpus_and_tokenizer
    got = load_text_dataset(**_data(corpus, tok_dir, tmp_path))
    tok = got.tokenizer
    lines = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line]
    stream = [i for line in lines for i in tok(line, add_special_tokens=False).input_ids + [tok.eos_token_id]]
    n = len(stream) // 24  # the fixture is one map batch (< 1000 lines): only the last partial window is dropped
    windows = [stream[k * 24:(k + 1) * 24] for k in range(n)]
    assert got.eval["input_ids"] == windows[:4]  # first num_eval windows held out
    assert got.train["input_ids"] == windows[4:]
    assert got.model_fields() == {"vocab_size": 300, "pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 0}


def test_streaming_gives_the_same_windows(corpus_and_tokenizer, tmp_path):
    corpus, tok_dir = corpus_and_tokenizer
    mapped = load_text_dataset(**_data(corpus, tok_dir, tmp_path, num_train=10))
    streamed = load_text_dataset(**_data(corpus, tok_dir, tmp_path, num_train=10, streaming=True))
    assert type(streamed.train).__name__ == "IterableDataset"
    assert streamed.eval["input_ids"] == mapped.eval["input_ids"]
    assert [x["input_ids"] for x in streamed.train] == mapped.train["input_ids"]
    assert len(mapped.train) == 10


def test_map_is_cached_on_disk(corpus_and_tokenizer, tmp_path):
    corpus, tok_dir = corpus_and_tokenizer
    first = load_text_dataset(**_data(corpus, tok_dir, tmp_path))
    files = [f["filename"] for f in first.train.cache_files]
    assert files and all(Path(f).is_file() and str(tmp_path) in f for f in files)
    again = load_text_dataset(**_data(corpus, tok_dir, tmp_path))  # a fresh tokenizer object, same settings
    assert [f["filename"] for f in again.train.cache_files] == files


def test_errors_name_the_fix(corpus_and_tokenizer, tmp_path):
    corpus, tok_dir = corpus_and_tokenizer
    with pytest.raises(ValueError, match="no column 'story'.*data.text_column"):
        load_text_dataset(**_data(corpus, tok_dir, tmp_path, text_column="story"))
    with pytest.raises(ValueError, match="lower data.seq_len or data.num_eval"):
        load_text_dataset(**_data(corpus, tok_dir, tmp_path, seq_len=2000))
    with pytest.raises(ValueError, match="data.tokenizer is required"):
        load_text_dataset(**_data(corpus, tok_dir, tmp_path, tokenizer=None))


def test_tokenizer_without_pad_gets_eos_and_left_padding(corpus_and_tokenizer, tmp_path):
    _, tok_dir = corpus_and_tokenizer
    tok = load_tokenizer(str(tok_dir))
    assert (tok.pad_token, tok.padding_side) == (EOS, "left")
    tok.save_pretrained(tmp_path / "t")
    again = AutoTokenizer.from_pretrained(tmp_path / "t")
    assert (again.pad_token, again.padding_side) == (EOS, "left")
    assert tokenizer_model_fields(load_tokenizer("bytes"))["vocab_size"] == 256


def test_byte_windows_keep_a_separator_between_documents(tmp_path):
    """SMTByteTokenizer has no EOS: documents (the "text" builder's lines, their line breaks stripped) are joined by
    `separator`, a line break by default, so the windows read as the corpus (they ran together: "day?Thou");
    separator=None joins them with nothing."""
    corpus = tmp_path / "c.txt"
    lines = ["Shall I compare thee to a summer's day?", "Thou art more lovely and more temperate."] * 4
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    kw = dict(data_files=str(corpus), tokenizer="bytes", seq_len=16, num_eval=1, cache_dir=str(tmp_path / "hf"))
    got = load_text_dataset("text", **kw)
    text = got.tokenizer.decode([i for w in list(got.eval) + list(got.train) for i in w["input_ids"]])
    joined = "".join(line + "\n" for line in lines)
    assert text == joined[: len(text)] and len(text) == len(joined) // 16 * 16
    bare = load_text_dataset("text", separator=None, **kw)
    assert bytes(bare.eval[0]["input_ids"] + bare.train[0]["input_ids"]) == "".join(lines)[:32].encode()


def test_byte_tokenizer_added_tokens_are_counted_resized_and_decoded():
    """An EOS added to SMTByteTokenizer (id 256) is counted by len() and get_vocab(), so tokenizer_model_fields and
    resize_token_embeddings(len(tokenizer)) make room for it, and decode writes it out (it was: len 256, the
    resize a no-op, the token dropped by decode)."""
    tok = load_tokenizer("bytes")
    assert tok.add_special_tokens({"eos_token": "<|eos|>"}) == 1
    ids = tok("hi<|eos|>é")["input_ids"]
    assert ids == [104, 105, 256, 195, 169] and len(tok) == 257 and tok.get_vocab()["<|eos|>"] == 256
    assert tok.decode(ids) == "hi<|eos|>é" and tok.decode(ids, skip_special_tokens=True) == "hié"
    assert tokenizer_model_fields(tok) == {"vocab_size": 257, "pad_token_id": 0, "bos_token_id": None,
                                           "eos_token_id": 256}
    teacher = SMTTeacherConfig(vocab_size=256, hidden_size=16, memory_tokens=2, num_attention_heads=2)
    student = SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(teacher, backbone="gru"))
    student.resize_token_embeddings(len(tok))
    assert student.config.vocab_size == 257
    assert student(torch.tensor([ids])).logits.shape == (1, 5, 257)
    assert tok.add_tokens(["\n"]) == 0 and tok("a\n")["input_ids"] == [97, 10]  # an ASCII character is its byte
    with pytest.raises(ValueError, match=r"one-character token 'é'.*\[195, 169\]"):
        tok.add_tokens(["é"])  # it would take byte 233's id; text holds é as two bytes
    assert tok("é")["input_ids"] == [195, 169] and len(tok) == 257
    custom = load_tokenizer(SMTByteTokenizer(pad_token="<pad>"))  # a pad that names byte 0 takes no id of its own
    assert len(custom) == 256 and custom.add_tokens(["<x>"]) == 1 and custom.convert_tokens_to_ids("<x>") == 256


def test_student_from_teacher_carries_special_ids():
    teacher = SMTTeacherConfig(vocab_size=300, hidden_size=32, memory_tokens=2, num_attention_heads=2,
                               pad_token_id=1, bos_token_id=2, eos_token_id=3)
    student = SMTRecurrentConfig.from_teacher(teacher, backbone="gru")
    assert (student.pad_token_id, student.bos_token_id, student.eos_token_id) == (1, 2, 3)


def test_recipe_trains_on_local_corpus_and_saved_student_generates_with_its_tokenizer(corpus_and_tokenizer, tmp_path):
    corpus, tok_dir = corpus_and_tokenizer
    config = {
        "output_dir": str(tmp_path / "run"), "seed": 0,
        "data": {"task": "dataset", **_data(corpus, tok_dir, tmp_path)},
        "teacher": {"hidden_size": 32, "memory_tokens": 2, "num_encoder_layers": 1, "num_decoder_layers": 1,
                    "num_attention_heads": 2},
        "student": {"backbone": "gru"},
        "common": {"per_device_train_batch_size": 4, "per_device_eval_batch_size": 4, "context_length": 16,
                   "future_length": 8, "split": "last", "rollout_length": 8, "dmt_stride": 4, "use_cpu": True},
        "phases": [{"mode": "joint", "max_steps": 3, "learning_rate": 3e-3}, {"mode": "dmt", "max_steps": 2}],
    }
    summary = recipe.main(config)
    assert [p["steps"] for p in summary["phases"]] == [3, 2]
    final = tmp_path / "run" / "final" / "student"
    model = AutoModelForCausalLM.from_pretrained(final).eval()
    tok = AutoTokenizer.from_pretrained(final)
    assert isinstance(model, SMTRecurrentForCausalLM)
    assert (model.config.vocab_size, model.config.eos_token_id, model.config.pad_token_id) == (300, 0, 0) == (
        len(tok), tok.eos_token_id, tok.pad_token_id)
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert tok("Shall I compare thee").input_ids == AutoTokenizer.from_pretrained(tok_dir)("Shall I compare thee").input_ids
    # the recipe's own sample, regenerated from the reloaded folder
    prompt = torch.tensor([summary["sample"]["prompt"]])
    again = model.generate(prompt, max_new_tokens=len(summary["sample"]["continuation"]), do_sample=False)
    assert again[0, prompt.shape[1]:].tolist() == summary["sample"]["continuation"]
    assert summary["sample"]["prompt_text"] == tok.decode(prompt[0])  # prompt and generation printed apart
    assert summary["sample"]["continuation_text"] == tok.decode(again[0, prompt.shape[1]:])
    # text in, text out
    ids = tok("Shall I compare thee", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=6, do_sample=False, eos_token_id=None)
    assert out.shape == (1, ids.input_ids.shape[1] + 6)
    text = tok.decode(out[0])
    assert text.startswith("Shall I compare thee") and len(text) > len("Shall I compare thee")
    generator = pipeline("text-generation", model=str(final))
    got = generator("Shall I compare thee", do_sample=False, max_new_tokens=6, eos_token_id=None)
    assert got[0]["generated_text"] == text
    # batched prompts are left-padded, so each continues exactly as alone
    prompts = ["Shall I", "compare thee to a summer"]
    batched = generator(prompts, do_sample=False, max_new_tokens=5, batch_size=2, eos_token_id=None)
    single = [generator(p, do_sample=False, max_new_tokens=5, eos_token_id=None)[0] for p in prompts]
    assert [b[0]["generated_text"] for b in batched] == [s["generated_text"] for s in single]


def test_a_separator_the_tokenizer_drops_is_refused(tmp_path):
    """A tokenizer without EOS whose pre-tokenizer drops whitespace turned the default separator "\\n" into no token:
    documents ran together ("tree and ." then "a to a on") without a word. Now refused, naming the ways out."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from smt_hf.data.text_dataset import document_separator

    words = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "tree": 2, "|": 3}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]")
    with pytest.raises(ValueError, match=r"separator '\\n' encodes to no token.*separator=None"):
        document_separator(tok)
    assert document_separator(tok, separator="|") == [3] and document_separator(tok, separator=None) == []
    assert document_separator(tok, add_eos=False) == []


def test_pre_tokenized_ids_outside_the_tokenizer_are_refused(corpus_and_tokenizer, tmp_path):
    """Ids the tokenizer does not have (or bools) packed silently and failed later inside the embedding."""
    corpus, tok_dir = corpus_and_tokenizer
    for rows, message in (([[1, 2, 9999]] * 40, r"holds token id 9999, outside the tokenizer's 0\.\.\d+"),
                          ([[1, -5, 3]] * 40, r"holds token id -5"),
                          ([[True, False]] * 40, r"holds \['list', 'list of bool'\]")):
        path = tmp_path / "ids.jsonl"
        path.write_text("".join(__import__("json").dumps({"ids": r}) + "\n" for r in rows))
        with pytest.raises(ValueError, match=message):
            load_text_dataset(**_data(path, tok_dir, tmp_path / "c", path="json", text_column="ids"))


def test_a_small_eval_split_is_evaluated_whole_and_said_so(corpus_and_tokenizer, tmp_path, caplog):
    """num_eval above what eval_split holds gave fewer windows without a word, and the description named only the
    train split."""
    corpus, tok_dir = corpus_and_tokenizer
    files = {"train": str(corpus), "validation": str(corpus)}
    with caplog.at_level("WARNING", logger="smt_hf.data"):
        got = load_text_dataset(**_data(corpus, tok_dir, tmp_path, data_files=files, eval_split="validation",
                                        num_eval=100000))
    assert 0 < len(got.eval) < 100000 and len(got.eval) == len(got.train)  # the same file: every window
    assert "fewer than num_eval=100000: evaluating all of them" in caplog.text
    assert "[train / eval: validation]" in got.description and f"{len(got.eval)} eval windows" in got.description


def test_pre_tokenized_numpy_rows_and_a_home_folder(corpus_and_tokenizer, tmp_path, monkeypatch):
    """Rows as numpy arrays (a `with_format("numpy")` column) pack as their lists; a '~/' tokenizer folder is expanded
    (it reached from_pretrained as '~/...', a malformed hub id)."""
    import shutil

    import numpy as np

    from smt_hf.data.text_dataset import pack_function

    corpus, tok_dir = corpus_and_tokenizer
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(tok_dir, tmp_path / "tok")
    tok = load_tokenizer("~/tok")
    assert len(tok) == len(AutoTokenizer.from_pretrained(tok_dir))
    pack = pack_function(tok, "ids", 4, add_eos=True)
    rows = [[5, 6, 7], [8, 9]]
    # 5 6 7 eos 8 9 eos: one whole window of 4, the rest dropped
    assert pack({"ids": [np.array(r) for r in rows]}) == pack({"ids": rows}) == {"input_ids": [[5, 6, 7, tok.eos_token_id]]}
