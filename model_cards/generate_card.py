"""Write a Hub model card (README.md) for an SMT run.

    python model_cards/generate_card.py RUN_SUMMARY.json -o README.md [--model FOLDER]

`make_card(run_info, out_path)` fills the packaged template `smt_hf/hub/model_card.md` (the one
`smt_hf.export.export_for_hub` uses; `smt_hf.hub.TEMPLATE_PATH`) from a run summary: the dict
written by `SMTTrainer.save_summary(path, **extra)` plus the extra keys documented in `smt_hf.hub.card`
(config, dataset, training, hardware, samples, plots, limitations). The eval numbers become
`model-index` metadata via `huggingface_hub.ModelCardData(eval_results=[EvalResult(...)])`.
See `examples/run_info_tinystories_gru.json`.

After a `recipes/smt.py` run, `--summary outputs/<run>/summary.json` merges that run's measurements (last
phase's eval, phases as stages, machine, greedy sample) into a card's static fields (e.g.
`tinystories_gru.json`, the card of `recipes/configs/tinystories_gru_gpu.yaml`), and `--run-info-out` writes the
merged dict for `smt-export --run-info` (which renders the same card into the pushed folder):

    python model_cards/generate_card.py model_cards/tinystories_gru.json --summary outputs/tinystories_gru/summary.json \
        --run-info-out outputs/tinystories_gru/run_info.json -o outputs/tinystories_gru/README.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from smt_hf.hub import TEMPLATE_PATH, make_model_card

TEMPLATE = TEMPLATE_PATH  # the one template (no copy here)


def make_card(run_info: dict, out_path: str | Path, model=None, template_path: str | Path | None = None):
    """Render the card for `run_info` (and, optionally, the loaded model) and write it to `out_path`.
    Returns the `huggingface_hub.ModelCard`."""
    card = make_model_card(run_info, model=model, template_path=template_path or TEMPLATE)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    card.save(str(out_path))
    return card


def run_info_from_summary(base: dict, summary: dict) -> dict:
    """`base` (a card's static fields) + the measurements of a `recipes/smt.py` summary.json: `eval` = the last
    phase's numeric metrics, `training.stages` / `mode` / `steps` / `wall_time` from the phases, `hardware` =
    the summary's machine (unless `base` names one) and the greedy sample (when it was decoded to text).
    Raises ValueError for a summary without phases (not a recipes/smt.py summary)."""
    phases = summary.get("phases") or []
    if not phases:
        raise ValueError("The summary has no phases: pass the summary.json written by recipes/smt.py.")
    info = json.loads(json.dumps(base))
    info["eval"] = {k: v for k, v in phases[-1]["eval"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    training = info.setdefault("training", {})
    training["mode"] = "+".join(p["mode"] for p in phases)
    training["steps"] = sum(int(p["steps"]) for p in phases)
    training["stages"] = [{"mode": p["mode"], "steps": p["steps"]} for p in phases]
    training["wall_time"] = f"{sum(float(p['seconds']) for p in phases) / 60:.1f} min"
    if not info.get("hardware") and summary.get("machine"):
        info["hardware"] = summary["machine"]
    sample = summary.get("sample") or {}
    if "text" in sample:
        n = len(sample["prompt"])
        info["samples"] = [{"prompt": f"the first {n} tokens of a held-out window (the output starts with them)",
                            "output": sample["text"],
                            "settings": f"greedy, {len(sample['continuation'])} new tokens"}]
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_info", help="run summary JSON (SMTTrainer.save_summary + extra keys)")
    parser.add_argument("-o", "--out", default="README.md", help="where to write the card")
    parser.add_argument("--model", help="saved student/teacher folder: fills the config section from it")
    parser.add_argument("--summary", help="a recipes/smt.py summary.json whose measurements go into the card")
    parser.add_argument("--run-info-out", help="also write the merged run summary here (for smt-export --run-info)")
    args = parser.parse_args(argv)
    run_info = json.loads(Path(args.run_info).read_text(encoding="utf-8"))
    if args.summary:
        run_info = run_info_from_summary(run_info, json.loads(Path(args.summary).read_text(encoding="utf-8")))
    if args.run_info_out:
        Path(args.run_info_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.run_info_out).write_text(json.dumps(run_info, indent=2) + "\n", encoding="utf-8")
    model = None
    if args.model:
        from smt_hf.export import load_model

        model = load_model(args.model)
    make_card(run_info, args.out, model=model)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
