"""The packaged `evaluate` modules load offline from local scripts and give hand-computed values."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import math  # noqa: E402
from pathlib import Path  # noqa: E402

import evaluate  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

import smt_hf.metrics as M  # noqa: E402


@pytest.fixture(scope="module")
def metrics():
    return {name: M.load_metric(name) for name in M.METRIC_MODULES}


@pytest.mark.parametrize("name", M.METRIC_MODULES)
def test_evaluate_load_local_path_offline(name):
    path = Path(M.metric_path(name))
    assert path.is_file() and path.parent.parent == Path(M.__file__).parent
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    for where in (str(path), str(path.parent)):  # the script, or its folder (same name as the script)
        module = evaluate.load(where)
        assert isinstance(module, evaluate.Metric) and module.name == name


def test_bits_per_byte(metrics):
    out = metrics["bits_per_byte"].compute(nll=[0.5, 1.0, 1.5])
    assert out["nats_per_token"] == pytest.approx(1.0)
    assert out["bits_per_byte"] == pytest.approx(1.0 / math.log(2)) == out["bits_per_token"]
    assert out["perplexity"] == pytest.approx(math.e) and out["num_tokens"] == 3
    two_bytes = metrics["bits_per_byte"].compute(nll=[math.log(2)] * 4, bytes_per_token=2.0)
    assert two_bytes["bits_per_token"] == pytest.approx(1.0) and two_bytes["bits_per_byte"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="bytes_per_token"):
        metrics["bits_per_byte"].compute(nll=[1.0], bytes_per_token=0)
    diverged = metrics["bits_per_byte"].compute(nll=[1000.0])  # math.exp raised OverflowError
    assert diverged["perplexity"] == math.inf and diverged["bits_per_byte"] == pytest.approx(1000.0 / math.log(2))
    from smt_hf.metrics import perplexity

    assert math.isnan(perplexity(math.nan)) and math.isfinite(perplexity(709.5))  # a NaN loss is not divergence


def test_bits_per_byte_matches_cross_entropy(metrics):
    torch.manual_seed(0)
    logits, targets = torch.randn(10, 256), torch.randint(0, 256, (10,))
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    out = metrics["bits_per_byte"].compute(nll=nll.tolist())
    assert out["bits_per_byte"] == pytest.approx(M.bits_per_token(float(nll.mean())), rel=1e-6)


def test_target_accuracy(metrics):
    acc = metrics["target_accuracy"]
    out = acc.compute(predictions=[[1, 2, 3], [4, 5]], references=[[1, -100, 3], [0, -100]])
    assert out == {"accuracy": pytest.approx(2 / 3), "correct": 2, "total": 3}
    assert acc.compute(predictions=[7, 2, 3], references=[7, -100, 0])["accuracy"] == 0.5  # flat ids
    # the same value as the pure function on logits
    logits, labels = torch.randn(2, 6, 5), torch.randint(0, 5, (2, 6))
    labels[0, :3] = -100
    correct, total = M.target_accuracy(logits, labels)
    out = acc.compute(predictions=logits.argmax(-1).tolist(), references=labels.tolist())
    assert (out["correct"], out["total"]) == (correct, total)
    with pytest.raises(ValueError, match="pad labels with -100"):
        acc.compute(predictions=[[1, 2]], references=[[1]])
    with pytest.raises(ValueError, match="no rows"):  # an IndexError inside evaluate before
        acc.compute(predictions=[], references=[])
    acc.add_batch(predictions=[[1, 2]], references=[[1, 3]])
    acc.add_batch(predictions=[], references=[])  # an empty batch after a first one adds nothing, as before
    assert acc.compute()["accuracy"] == 0.5
    # ids of a large vocabulary: compared directly (a (tokens, max id + 1) one-hot was built: 2**40 ids failed)
    big = 2**40
    assert acc.compute(predictions=[[big, 3]], references=[[big, 2]]) == {"accuracy": 0.5, "correct": 1, "total": 2}


def test_rollout_drift(metrics):
    drift = metrics["rollout_drift"]
    torch.manual_seed(0)
    target = torch.randn(4, 3, 2, 8)  # (B, T, K, d)
    flat = target.flatten(2).tolist()  # (B, T, K*d) nested lists
    perfect = drift.compute(predictions=flat, references=flat)
    assert perfect["drift"] == [0.0, 0.0, 0.0] and perfect["drift_mean"] == 0.0
    batch_mean = target.mean(0, keepdim=True).expand_as(target).flatten(2).tolist()
    out = drift.compute(predictions=batch_mean, references=flat)
    assert out["drift"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-5) and out["drift_last"] == pytest.approx(1.0, abs=1e-5)
    noisy = (target + 0.3 * torch.randn_like(target)).flatten(2)
    expected = M.rollout_drift(noisy, target.flatten(2))
    assert drift.compute(predictions=noisy.tolist(), references=flat)["drift"] == pytest.approx(expected.tolist(), rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 sequences"):
        drift.compute(predictions=flat[:1], references=flat[:1])
    same = [flat[0], flat[0]]  # references that do not vary: undefined (nan), not err / 1e-12
    shifted = (torch.tensor(same) + 1).tolist()
    assert all(math.isnan(v) for v in drift.compute(predictions=shifted, references=same)["drift"])


def test_unknown_metric_names_the_choices():
    with pytest.raises(ValueError, match="bits_per_byte"):
        M.load_metric("perplexity")


@pytest.mark.parametrize("name", sorted(M.METRIC_MODULES))
def test_docstring_examples_run_from_any_folder(name, tmp_path):
    """Each metric's documented example runs as written from another working directory (it loaded the relative
    path 'smt_hf/metrics/<name>', which exists only in a checkout's root, never in an installed wheel)."""
    import subprocess
    import sys

    import ast

    source = Path(M.metric_path(name)).read_text()  # (importing the script as smt_hf.metrics.<name>.<name> would
    text = next(ast.literal_eval(n.value) for n in ast.parse(source).body  # shadow the function of that name)
                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "_KWARGS_DESCRIPTION")
    script = ("import doctest\n"
              f"text = {text!r}\n"
              f"test = doctest.DocTestParser().get_doctest(text, {{}}, '{name}', None, 0)\n"  # no globals: as written
              "r = doctest.DocTestRunner().run(test)\n"
              "print(r.failed, r.attempted, len(test.examples))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(M.__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    failed, attempted, examples = map(int, out.stdout.split()[-3:])
    assert (failed, attempted) == (0, examples) and examples >= 3, out.stdout[-2000:] + out.stderr[-2000:]
