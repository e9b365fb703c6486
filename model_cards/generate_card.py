"""Write a Hub model card (README.md) for an SMT run.

    python model_cards/generate_card.py RUN_SUMMARY.json -o README.md [--model FOLDER]

`make_card(run_info, out_path)` fills `template.md` (a copy of the packaged
`smt_hf/templates/model_card.md`, which `smt_hf.export.export_for_hub` uses) from a run summary: the dict
written by `SMTTrainer.save_summary(path, **extra)` plus the extra keys documented in `smt_hf.hub`
(config, dataset, training, hardware, samples, plots, limitations). The eval numbers become
`model-index` metadata via `huggingface_hub.ModelCardData(eval_results=[EvalResult(...)])`.
See `examples/run_info_tinystories_gru.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from smt_hf.hub import make_model_card

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "template.md"


def make_card(run_info: dict, out_path: str | Path, model=None, template_path: str | Path | None = None):
    """Render the card for `run_info` (and, optionally, the loaded model) and write it to `out_path`.
    Returns the `huggingface_hub.ModelCard`."""
    card = make_model_card(run_info, model=model, template_path=template_path or TEMPLATE)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    card.save(str(out_path))
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_info", help="run summary JSON (SMTTrainer.save_summary + extra keys)")
    parser.add_argument("-o", "--out", default="README.md", help="where to write the card")
    parser.add_argument("--model", help="saved student/teacher folder: fills the config section from it")
    args = parser.parse_args(argv)
    run_info = json.loads(Path(args.run_info).read_text(encoding="utf-8"))
    model = None
    if args.model:
        from smt_hf.export import load_model

        model = load_model(args.model)
    make_card(run_info, args.out, model=model)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
