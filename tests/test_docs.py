"""The README's Python examples run as written (only the training length is shortened), and do what their
comments say: shapes, a standalone reloadable student, parallel prefill from the carried encoder."""

import os
import re
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_python_blocks():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def shorten(code):
    """Same code, fewer steps and examples (the README trains 600 steps on 20k sequences)."""
    code = re.sub(r"max_steps=\d+", "max_steps=4", code)
    return code.replace("20_000", "256")


def test_readme_examples_run_and_mean_what_they_say(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = readme_python_blocks()
    assert len(blocks) >= 4, "README lost its quickstart / recurrent API / parallel prefill / fast generation examples"
    quick, api, prefill, fast = blocks[0], blocks[1], blocks[2], blocks[3]
    assert "max_steps=" in quick and "20_000" in quick, "shorten() no longer matches the quickstart"

    ns: dict = {}
    exec(compile(shorten(quick), "README quickstart", "exec"), ns)
    student, teacher, again = ns["student"], ns["teacher"], ns["again"]
    assert ns["out"].shape == (1, 5 + 8)
    assert ns["args"].seed == 0 and ns["args"].save_strategy == "no"  # seeded, no unasked out/checkpoint-N folders
    assert ns["args"].mode == "dmt" and ns["args"].dmt_gradient == "one_step"  # goes through DMT, without BPTT
    assert {"eval_teacher_acc", "eval_student_acc"} <= set(ns["metrics"])  # and prints both accuracies
    assert torch.get_num_threads() == 1
    assert os.path.isfile(tmp_path / "student" / "model.safetensors")
    assert type(again).__name__ == "SMTRecurrentForCausalLM"
    x = torch.randint(0, 16, (2, 12))
    with torch.no_grad():
        assert torch.equal(again(x).logits, student(x).logits)  # reloads bit-exact, no teacher needed

    B, K, d = 3, teacher.config.memory_tokens, teacher.config.hidden_size
    ns.update(batch_size=B, token_ids=torch.randint(0, 16, (B,)), context_ids=torch.randint(0, 16, (B, 10)),
              mask=torch.ones(B, 10, dtype=torch.long), future_ids=torch.randint(0, 16, (B, 6)))
    exec(compile(api, "README recurrent API", "exec"), ns)
    assert ns["m"].shape == (B, K, d) and ns["m_t"].shape == (B, K, d)
    assert ns["logits"].shape == (B, 6, 16)  # the last line: teacher.decode -> (B, Tf, V)

    exec(compile(prefill, "README parallel prefill", "exec"), ns)
    assert ns["out"].shape == (1, 2000 + 8) and student.config.prefill == "parallel"
    tail = ns["prompt"][:, -32:]  # the state is E(last 32 tokens): the same first token from the window alone
    with torch.no_grad():
        first = student.generate(tail, max_new_tokens=1, prefill="parallel", do_sample=False)[:, -1]
    assert torch.equal(ns["out"][:, 2000], first)

    exec(compile(fast, "README fast generation", "exec"), ns)  # the student now prefills in parallel (above)
    with torch.no_grad():
        ref = student.generate(ns["prompt"], max_new_tokens=16, do_sample=False)
        assert torch.equal(ns["out"], ref) and torch.equal(ns["seq"], ref)
        state_after = student(ns["seq"][:, -16:], memory=student.prefill_memory(ns["prompt"])).cache.memory
    torch.testing.assert_close(ns["state"], state_after, rtol=1e-5, atol=1e-6)


def test_readme_quotes_the_error_of_loading_without_import_smt_hf(tmp_path):
    """README explains the error transformers gives for a saved SMT folder when smt_hf was not imported."""
    from smt_hf import SMTRecurrentConfig, SMTRecurrentForCausalLM, SMTTeacherConfig

    teacher = SMTTeacherConfig(vocab_size=8, hidden_size=16, memory_tokens=1, num_encoder_layers=1, num_decoder_layers=1,
                               num_attention_heads=2, max_context_length=8)
    SMTRecurrentForCausalLM(SMTRecurrentConfig.from_teacher(teacher, backbone="gru")).save_pretrained(tmp_path / "s")
    code = "from transformers import AutoModelForCausalLM\nAutoModelForCausalLM.from_pretrained('s')"
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"))
    readme = " ".join(open(os.path.join(ROOT, "README.md"), encoding="utf-8").read().split())
    quoted = re.search(r"fails with \*\"(.*?)\"\*", readme).group(1).replace("`", "")
    assert run.returncode != 0 and quoted in run.stderr.replace("`", "")
    assert "add `import smt_hf`" in readme and 'from_pretrained("student_hub", trust_remote_code=True)' in readme
