"""The HF contract of the teacher and the recurrent student (every backbone)."""

import pytest
import torch
from conftest import BACKBONES, tiny_student_config, tiny_teacher_config
from huggingface_hub.errors import StrictDataclassFieldValidationError
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

import smt_hf  # noqa: F401  (registers the Auto classes)
from smt_hf import (SMTByteTokenizer, SMTMemoryCache, SMTMemoryEncoderConfig, SMTRecurrentConfig, SMTRecurrentForCausalLM,
                    SMTTeacherConfig, SMTTeacherModel)


def full_recompute_greedy(model, prompt, n):
    """Greedy decoding with no cache: re-run the whole sequence from m_0 for every new token."""
    seq = prompt.clone()
    for _ in range(n):
        logits = model(seq, use_cache=False).logits[:, -1]
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    return seq


# ---------------------------------------------------------------- save / load
def test_teacher_save_load_bit_identical(teacher, tmp_path):
    teacher.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    assert AutoConfig.from_pretrained(tmp_path).model_type == "smt_teacher"
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, SMTTeacherModel)
    x = torch.randint(0, 16, (2, 9))
    fut = torch.randint(0, 16, (2, 5))
    a, b = teacher(x, torch.ones_like(x), fut), loaded(x, torch.ones_like(x), fut)
    assert torch.equal(a.memory, b.memory) and torch.equal(a.logits, b.logits)


@pytest.mark.parametrize("auto_cls", [AutoModelForCausalLM, AutoModel])
def test_student_save_load_bit_identical(student, tmp_path, auto_cls):
    student.save_pretrained(tmp_path)
    loaded = auto_cls.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, SMTRecurrentForCausalLM)
    assert loaded.config.backbone == student.config.backbone
    x = torch.randint(0, 16, (2, 12))
    assert torch.equal(student(x).logits, loaded(x).logits)
    assert torch.equal(student.initial_memory(1), loaded.initial_memory(1))


def test_tokenizer_roundtrip_and_auto(tmp_path):
    tok = SMTByteTokenizer()
    ids = tok("héllo")["input_ids"]
    assert ids == list("héllo".encode("utf-8")) and tok.vocab_size == 256
    assert tok.decode(ids) == "héllo"
    batch = tok(["hi", "hey!"], padding=True)
    assert batch["input_ids"][0] == [0, 0, 104, 105] and batch["attention_mask"][0] == [0, 0, 1, 1]
    tok.save_pretrained(tmp_path)
    SMTRecurrentForCausalLM(tiny_student_config()).config.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, SMTByteTokenizer) and loaded("abc")["input_ids"] == [97, 98, 99]


# ---------------------------------------------------------------- forward == step + readout
def test_forward_equals_steps_and_readout(student):
    x = torch.randint(0, 16, (3, 10))
    out = student(x, output_memories=True)
    m = student.initial_memory(3)
    for t in range(10):
        m = student.step(m, x[:, t])
        torch.testing.assert_close(out.memories[:, t], m, rtol=0, atol=1e-6)
        torch.testing.assert_close(out.logits[:, t], student.readout(m), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.cache.memory, m, rtol=0, atol=1e-6)


def test_chunked_forward_with_cache_continues_state(student):
    x = torch.randint(0, 16, (2, 12))
    full = student(x).logits
    first = student(x[:, :5])
    second = student(x[:, 5:], cache=first.cache)
    torch.testing.assert_close(torch.cat([first.logits, second.logits], 1), full, rtol=1e-5, atol=1e-5)
    assert second.cache.get_seq_length() == 12


def test_loss_uses_shift_and_ignore_index(student):
    x = torch.randint(0, 16, (2, 8))
    labels = x.clone()
    labels[:, :4] = -100
    out = student(x, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, 16)
    target = labels[:, 1:].reshape(-1)
    ref = torch.nn.functional.cross_entropy(logits, target, ignore_index=-100)
    torch.testing.assert_close(out.loss, ref)


def test_teacher_readout_is_first_decoder_step(teacher):
    x = torch.randint(0, 16, (2, 7))
    m = teacher.encode(x, torch.ones_like(x))
    torch.testing.assert_close(teacher.decode(m, x[:, :4])[:, 0], teacher.readout(m), rtol=1e-5, atol=1e-5)
    assert torch.allclose(m.pow(2).mean(-1), torch.ones(2, 2), atol=1e-4)  # RMS-normalised per memory token


def test_teacher_left_padding_and_empty_context(teacher):
    x = torch.randint(0, 16, (1, 6))
    padded = torch.cat([torch.full((1, 4), 7), x], 1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 6, dtype=torch.long)], 1)
    # rotary positions are relative, so padding on the left only shifts absolute positions
    torch.testing.assert_close(teacher.encode(padded, mask), teacher.encode(x, torch.ones_like(x)), rtol=1e-4, atol=1e-5)
    empty = teacher.encode(torch.full((2, 5), 3), torch.zeros(2, 5, dtype=torch.long))
    torch.testing.assert_close(empty, teacher.empty_memory(2), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- generate
def test_greedy_generate_equals_full_recompute(student):
    prompt = torch.randint(0, 16, (2, 5))
    out = student.generate(prompt, max_new_tokens=64, do_sample=False)
    assert out.shape == (2, 69)
    assert torch.equal(out, full_recompute_greedy(student, prompt, 64))


def test_left_padded_batch_generates_like_each_prompt_alone(student):
    p1, p2 = torch.randint(1, 16, (1, 3)), torch.randint(1, 16, (1, 7))
    ids = torch.cat([torch.cat([torch.zeros(1, 4, dtype=torch.long), p1], 1), p2], 0)
    mask = torch.cat([torch.cat([torch.zeros(1, 4), torch.ones(1, 3)], 1), torch.ones(1, 7)], 0).long()
    batch = student.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False)
    alone1 = student.generate(p1, max_new_tokens=20, do_sample=False)
    alone2 = student.generate(p2, max_new_tokens=20, do_sample=False)
    assert torch.equal(batch[0, 4:], alone1[0]) and torch.equal(batch[1], alone2[0])


def test_beam_search_reorders_state(student):
    """With length_penalty 0 a beam's reported score is the sum of its token log-probs; recomputing it from
    scratch only matches if the cache was reordered with the beams."""
    prompt = torch.randint(0, 16, (2, 4))
    out = student.generate(
        prompt, max_new_tokens=12, num_beams=4, num_return_sequences=4, do_sample=False, length_penalty=0.0,
        return_dict_in_generate=True, output_scores=True,
    )
    seqs = out.sequences  # (8, 16)
    logp = student(seqs, use_cache=False).logits.log_softmax(-1)  # (8, 16, V)
    tok_lp = logp[:, 3:-1].gather(-1, seqs[:, 4:, None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(tok_lp, out.sequences_scores, rtol=1e-4, atol=1e-4)
    assert len({tuple(s.tolist()) for s in seqs[:4]}) == 4  # distinct beams


def test_sampling_is_seeded_and_in_vocab(student):
    prompt = torch.randint(0, 16, (3, 4))
    torch.manual_seed(1)
    a = student.generate(prompt, max_new_tokens=10, do_sample=True, top_k=5)
    torch.manual_seed(1)
    b = student.generate(prompt, max_new_tokens=10, do_sample=True, top_k=5)
    assert torch.equal(a, b) and int(a.max()) < 16


def test_continue_from_returned_cache(student):
    prompt = torch.randint(0, 16, (1, 6))
    first = student.generate(prompt, max_new_tokens=5, do_sample=False, return_dict_in_generate=True)
    assert isinstance(first.cache, SMTMemoryCache)
    # continue with the full sequence: generate passes only the unseen tokens to the model
    cont = student.generate(first.sequences, cache=first.cache, max_new_tokens=7, do_sample=False)
    assert torch.equal(cont, full_recompute_greedy(student, prompt, 12))


def test_generate_from_a_cache_that_read_the_whole_prompt(student):
    """forward(prompt) then generate(prompt, cache=...): HF computes 0 unseen tokens; the prompt must not be read
    again (it was, via input_ids[:, -0:])."""
    prompt = torch.randint(0, 16, (2, 6))
    ref = student.generate(prompt, max_new_tokens=5, do_sample=False)
    with torch.no_grad():
        cache = student(prompt).cache
    got = student.generate(prompt, cache=cache, max_new_tokens=5, do_sample=False)
    assert torch.equal(got, ref) and cache.seen_tokens == 6 + 4


@torch.no_grad()
def test_generate_inputs_embeds_with_a_cache_and_refused_chunked_prefill(student):
    """inputs_embeds the cache has read whole: 0 new positions, the next token from the cached state (the prompt was
    read twice); fewer embeddings than read, and HF's prefill_chunk_size (which sliced the inputs past the cache
    handling: new tokens unread, a read prompt read again) raise ValueError naming the fix."""
    ids = torch.randint(0, 16, (2, 9))
    emb = student.get_input_embeddings()(ids)
    ref = student.generate(ids, max_new_tokens=4, do_sample=False)[:, 9:]
    cache = student(ids).cache
    assert torch.equal(student.generate(inputs_embeds=emb, cache=cache, max_new_tokens=4, do_sample=False)[:, -4:], ref)
    assert cache.seen_tokens == 9 + 3
    with pytest.raises(ValueError, match="read 9 positions and inputs_embeds of 3.*whole sequence"):
        student.generate(inputs_embeds=emb[:, :3], cache=student(ids).cache, max_new_tokens=2)
    with pytest.raises(ValueError, match="prefill_chunk_size=2 is not supported"):
        student.generate(ids, cache=student(ids[:, :6]).cache, max_new_tokens=2, prefill_chunk_size=2)


@pytest.mark.parametrize("n_read,n_new", [(6, 3), (3, 3), (3, 8)])
def test_generate_new_tokens_only_with_a_whole_sequence_mask(student, n_read, n_new):
    """transformers' other convention: only the new tokens, with an attention_mask over the whole sequence, continue
    a cache exactly, for fewer, as many and more new tokens than the cache has read."""
    ids = torch.randint(0, 16, (2, n_read + n_new))
    with torch.no_grad():
        cache = student(ids[:, :n_read]).cache
    got = student.generate(ids[:, n_read:], cache=cache, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                           do_sample=False)
    assert torch.equal(got[:, n_new:], full_recompute_greedy(student, ids, 4)[:, n_read + n_new:])
    assert cache.seen_tokens == n_read + n_new + 3


def test_generate_refuses_input_ids_shorter_than_the_cache(student):
    """input_ids shorter than what the cache has read, with no whole-sequence mask, were taken as new tokens, which
    is right only when there are fewer new tokens than read tokens (3 new after 3 read: none read; 8: the last 5).
    transformers reads them as the whole sequence, which cannot be shorter than the cache: a ValueError names the
    two fixes."""
    prompt, more = torch.randint(0, 16, (2, 6)), torch.randint(0, 16, (2, 3))
    with torch.no_grad():
        cache = student(prompt).cache
    with pytest.raises(ValueError, match=r"read 6 tokens and input_ids of 3 tokens.*whole sequence.*attention_mask"):
        student.generate(more, cache=cache, max_new_tokens=4, do_sample=False)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_cache_size_is_constant(backbone):
    torch.manual_seed(0)
    model = SMTRecurrentForCausalLM(tiny_student_config(backbone, updater_layers=1)).eval()
    with torch.no_grad():
        short = model(torch.randint(0, 16, (1, 16))).cache
        long = model(torch.randint(0, 16, (1, 4096))).cache
    assert short.nbytes() == long.nbytes() == 2 * 32 * 4
    assert long.get_seq_length() == 4096 and long.memory.shape == (1, 2, 32)


# ---------------------------------------------------------------- bad input
def test_out_of_vocab_ids_raise(student, teacher):
    with pytest.raises(ValueError, match="vocab_size is 16"):
        student(torch.tensor([[1, 2, 16]]))
    with pytest.raises(ValueError, match="vocab_size is 16"):
        teacher.encode(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="vocab_size"):
        student.step(student.initial_memory(1), torch.tensor([99]))
    with pytest.raises(TypeError, match=r"integer token ids, got dtype torch.float32; convert with `.long\(\)`"):
        student(torch.rand(1, 4))
    with pytest.raises(TypeError, match="integer token ids"):
        teacher.encode(torch.ones(1, 3, dtype=torch.bool))


def test_wrong_memory_shape_raises(student, teacher):
    with pytest.raises(ValueError, match="memory_tokens=2, hidden_size=32"):
        student.step(torch.zeros(1, 3, 32), torch.tensor([1]))
    with pytest.raises(ValueError, match="memory_tokens=2"):
        student.readout(torch.zeros(1, 32))
    with pytest.raises(ValueError, match="memory_tokens=2"):
        teacher.decode(torch.zeros(1, 2, 31))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(backbone="lstm"), "Unknown backbone 'lstm'"),
        (dict(hidden_size=30, num_attention_heads=4), "divisible by `num_attention_heads`"),
        (dict(memory_tokens=0), "memory_tokens"),
        (dict(dropout=1.5), "dropout"),
        # strings and bad numbers were accepted: "false" is truthy (tied the head), "0.1" failed at build time, a
        # negative eps gave nan logits, an int prefill_encoder an AttributeError
        (dict(tie_word_embeddings="false"), r"Field 'tie_word_embeddings' expected bool, got str"),
        (dict(use_cache="False"), "Field 'use_cache' expected bool"),
        (dict(dropout="0.1"), r"Field 'dropout' with value '0.1' doesn't match"),
        (dict(rms_norm_eps=-1.0), "`rms_norm_eps` must be a finite number > 0, got -1.0"),
        (dict(rope_theta="1e4"), "Field 'rope_theta'"),
        (dict(initializer_range=0.0), "`initializer_range` must be a finite number > 0"),
        (dict(prefill_encoder=5), "Field 'prefill_encoder' with value 5 doesn't match"),
    ],
    ids=["unknown-backbone", "heads-not-dividing", "K<1", "dropout", "tie-str", "use_cache-str", "dropout-str",
         "eps<0", "theta-str", "init-0", "prefill-int"],
)
def test_invalid_student_config_raises(kwargs, match):
    # a wrong type: huggingface_hub's @strict error (as transformers' own configs); a wrong value: our ValueError
    with pytest.raises((ValueError, StrictDataclassFieldValidationError), match=match):
        SMTRecurrentConfig(**kwargs)


def test_invalid_teacher_config_raises():
    with pytest.raises(ValueError, match="memory_tokens"):
        tiny_teacher_config(memory_tokens=0)
    with pytest.raises(ValueError, match="divisible"):
        tiny_teacher_config(hidden_size=30)
    with pytest.raises(StrictDataclassFieldValidationError, match="Field 'encoder_causal' expected bool, got str"):  # built causal before
        tiny_teacher_config(encoder_causal="false")
    with pytest.raises(ValueError, match="`rms_norm_eps` must be a finite number > 0"):
        tiny_teacher_config(rms_norm_eps=float("nan"))
    with pytest.raises(ValueError, match="`rope_theta` must be a finite number > 0"):
        tiny_teacher_config(rope_theta=10**400)
    with pytest.raises(StrictDataclassFieldValidationError, match="Field 'causal' expected bool"):
        SMTMemoryEncoderConfig(causal=1)
    config = tiny_teacher_config(rope_theta=500, initializer_range=1, eos_token_id=[1, 2])  # ints are numbers
    assert config.rope_theta == 500 and config.eos_token_id == [1, 2]
    # types are checked on assignment too, and so on the keyword arguments from_pretrained sets after construction
    with pytest.raises(StrictDataclassFieldValidationError, match="Field 'use_cache' expected bool"):
        config.use_cache = "false"


def test_from_pretrained_keyword_arguments_are_type_checked(tmp_path):
    from transformers import AutoConfig

    tiny_teacher_config().save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path, tie_word_embeddings=True).tie_word_embeddings is True
    with pytest.raises(StrictDataclassFieldValidationError, match="Field 'tie_word_embeddings' expected bool"):  # it was kept as 'false'
        AutoConfig.from_pretrained(tmp_path, tie_word_embeddings="false")
    teacher = SMTTeacherModel(tiny_teacher_config(max_context_length=8))
    with pytest.raises(ValueError, match="max_context_length=8"):
        teacher.encode(torch.zeros(1, 9, dtype=torch.long))


def test_gru_updater_matches_torch_grucell():
    torch.manual_seed(0)
    model = SMTRecurrentForCausalLM(tiny_student_config("gru"))
    upd = model.model.updater
    cell = torch.nn.GRUCell(32, 64)
    with torch.no_grad():
        cell.weight_ih.copy_(upd.input_proj.weight)
        cell.bias_ih.copy_(upd.input_proj.bias)
        cell.weight_hh.copy_(upd.hidden_proj.weight)
        cell.bias_hh.copy_(upd.hidden_proj.bias)
    m, e = torch.randn(3, 2, 32), torch.randn(3, 32)
    torch.testing.assert_close(upd(m, e).reshape(3, 64), cell(e, m.reshape(3, 64)), rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_init_from_teacher_is_the_one_readout_initialisation(teacher):
    """student.init_from_teacher(teacher): g(m) == the teacher's first-step prediction and m_0 == E(empty);
    `make_student_standalone` is an alias of it; a readout of another depth is refused with the fix."""
    from smt_hf.training_module import make_student_standalone

    torch.manual_seed(1)
    student = SMTRecurrentForCausalLM(tiny_student_config("gru")).eval()
    student.init_from_teacher(teacher)
    m = torch.randn(3, 2, 32)
    torch.testing.assert_close(student.readout(m), teacher.readout(m))
    assert torch.equal(student.initial_memory(1), teacher.empty_memory(1))
    twin = SMTRecurrentForCausalLM(tiny_student_config("gru")).eval()
    make_student_standalone(twin, teacher)
    for name, value in student.state_dict().items():
        if name.startswith("readout_head.") or name == "model.initial_state":
            assert torch.equal(twin.state_dict()[name], value), name
    with pytest.raises(ValueError, match="from_teacher"):
        SMTRecurrentForCausalLM(tiny_student_config("gru", readout_layers=3)).init_from_teacher(teacher)


@pytest.mark.parametrize("config_class, some_fields", [
    (SMTTeacherConfig, {"vocab_size", "memory_tokens", "pad_token_id"}),
    (SMTRecurrentConfig, {"vocab_size", "memory_tokens", "pad_token_id", "prefill_encoder"}),
    (SMTMemoryEncoderConfig, {"num_layers", "context_length", "intermediate_size", "causal"}),
])
def test_config_docstring_documents_every_field(config_class, some_fields):
    """Every field of the config dataclass has an entry under `Args:` (as transformers' model configs)."""
    import re

    args = config_class.__doc__.split("Args:", 1)[1]
    documented = set()
    for line in args.splitlines():
        match = re.match(r"^ {8}([a-z_][a-z0-9_, ]*?) \(", line)
        if match:
            documented.update(name.strip() for name in match.group(1).split(","))
    fields = set(vars(config_class)["__annotations__"])  # the fields this class declares
    assert some_fields <= fields and fields - documented == set()
