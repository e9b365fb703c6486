"""Train a recurrent student with SMT (joint or detached), then DMT — or the BPTT baseline — from a YAML config.

    python recipes/smt.py --config recipes/configs/needle_cpu.yaml
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/smt.py --config recipes/configs/tinystories_gpu.yaml
    python recipes/smt.py --config recipes/configs/needle_cpu.yaml --set phases.0.max_steps=50 --set output_dir=/tmp/x

A config has `output_dir`, `data` (a synthetic task, `text`, `mnist` or `sketches`), `teacher` and `student`
config fields, `common` SMTTrainingArguments shared by all phases, and `phases`: a list of
SMTTrainingArguments overrides run in order (e.g. joint SMT, then DMT). After each phase the student and
teacher are evaluated; at the end the standalone student is reloaded from disk with no teacher and
generates. The loader and runner are in the package (`smt_hf.recipe_config.load_config`,
`smt_hf.recipe.run_config`); this script is their command line.
"""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "configs", "needle_cpu.yaml"),
                        help="a recipe YAML (recipes/configs/*.yaml; default: the needle CPU job)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config entry, e.g. phases.0.max_steps=100, common.learning_rate=3e-4, "
                             "output_dir=/tmp/x (every key is checked before training starts)")
    return parser


if __name__ == "__main__":
    build_parser().parse_args()  # --help and usage errors answer here, before torch and transformers load

# the other recipes and the tests import these names from here (`from smt import build_models, machine`)
from smt_hf.recipe import (announce_source, build_data, build_models, format_sample, machine,  # noqa: E402,F401
                           phase_arguments, print_table)
from smt_hf.recipe import run_config as main  # noqa: E402
from smt_hf.recipe_config import ConfigError, load_config  # noqa: E402


def cli(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        main(load_config(args.config, args.set))
    except ConfigError as e:
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
