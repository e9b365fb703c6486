"""transformers.pipeline("text-generation") drives the student with the byte tokenizer."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import BACKBONES, tiny_student_config  # noqa: E402
from transformers import pipeline  # noqa: E402

torch.set_num_threads(1)

from smt_hf import SMTByteTokenizer, SMTRecurrentForCausalLM  # noqa: E402


def _student(backbone):
    torch.manual_seed(0)  # a wide init so greedy decoding does not just repeat one byte
    return SMTRecurrentForCausalLM(tiny_student_config(backbone, vocab_size=256, initializer_range=0.3)).eval()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_pipeline_text_equals_greedy_generate(backbone):
    student, tok = _student(backbone), SMTByteTokenizer()
    generator = pipeline("text-generation", model=student, tokenizer=tok)
    prompt = "Hello"
    ids = tok(prompt, return_tensors="pt").input_ids
    expected = student.generate(ids, do_sample=False, max_new_tokens=10)
    assert expected.shape == (1, 15) and len(set(expected[0, 5:].tolist())) > 1
    out = generator(prompt, do_sample=False, max_new_tokens=10)
    assert out[0]["generated_text"] == tok.decode(expected[0])
    new_only = generator(prompt, do_sample=False, max_new_tokens=10, return_full_text=False)
    assert new_only[0]["generated_text"] == tok.decode(expected[0, ids.shape[1]:])


def test_pipeline_left_padded_batch_matches_single_prompts():
    student, tok = _student("gru"), SMTByteTokenizer()
    generator = pipeline("text-generation", model=student, tokenizer=tok)
    prompts = ["hi", "a longer prompt"]
    batched = generator(prompts, do_sample=False, max_new_tokens=6, batch_size=2)
    single = [generator(p, do_sample=False, max_new_tokens=6)[0] for p in prompts]
    assert [b[0]["generated_text"] for b in batched] == [s["generated_text"] for s in single]
