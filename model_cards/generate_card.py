"""Write a Hub model card (README.md) for an SMT run.

    python model_cards/generate_card.py RUN_SUMMARY.json -o README.md [--model FOLDER]
    python model_cards/generate_card.py recipes/results/fig3/needle_e2e_T64_s0.json --e2e -o CARD.md --model FOLDER/student

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
import os
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


def run_info_from_e2e(run: dict, png: str | None = None) -> dict:
    """The card fields of the SMT -> one-step DMT student of a `recipes/needle_e2e.py` run (its JSON as a dict):
    description, dataset, the two training stages with their wall-clock, machine, the DMT row's metrics and, if
    given, the drift plot `png` (a path relative to the card). Raises StopIteration for a run without both rows."""
    T, task = run["seq_len"], run["task"]
    dmt = next(r for r in run["rows"] if r["run"] == "SMT -> DMT one_step")
    smt = next(r for r in run["rows"] if r["run"] == "joint SMT")
    bptt = next((r for r in run["rows"] if r["run"] == "BPTT (same wall-clock)"), None)
    dmt_settings = {k: v for k, v in run.get("settings", {}).get("dmt", {}).items() if k != "mode"}
    smt_mode = run.get("settings", {}).get("smt", {}).get("mode", "joint")  # the recipe's default phase: joint
    smt_name = "joint SMT" if smt_mode == "joint" else f"SMT (mode '{smt_mode}': stop-gradient teacher memories)"
    student, teacher = run.get("model", {}).get("student", {}), run.get("model", {}).get("teacher", {})
    backbone = student.get("backbone", "transformer")
    config = {**student, "backbone": backbone, **{k: teacher[k] for k in ("memory_tokens", "hidden_size") if k in teacher}}
    return {
        "model_name": f"smt-{task.replace('_', '-')}-T{T}-{backbone}",
        "kind": "student",
        "config": config,
        "description": f"A tiny {backbone}-backbone RNN trained on {task} (T={T}, task options {run['task_kwargs']}) "
                       f"with {smt_name} then one-step DMT (dmt_gradient='one_step': no backpropagation through time; "
                       f"DMT settings {dmt_settings}) by `recipes/needle_e2e.py`. Its standalone accuracy at the "
                       f"targets is {dmt['student_acc']:.3f}"
                       + (f"; the same student trained with BPTT for the same wall-clock reached {bptt['student_acc']:.3f}."
                          if bptt else "."),
        "dataset": {"name": f"{task} (synthetic)", "source": f"smt_hf.data.make_task('{task}', ...)",
                    "split": f"512 held-out episodes (seed {10**6 + run['seed']})"},
        "training": {"mode": "smt+dmt", "steps": smt["steps"] + dmt["steps"],
                     "stages": [{"mode": smt_mode, "steps": smt["steps"]},
                                {"mode": "dmt", "dmt_gradient": "one_step", "steps": dmt["steps"]}],
                     "wall_time": f"{smt['seconds'] + dmt['seconds']:.0f} s", "context_length": T, "future_length": T},
        "hardware": run["machine"],
        "eval": {k: dmt[k] for k in ("teacher_acc", "onestep_acc", "student_acc", "drift_mean") if dmt.get(k) is not None},
        "plots": [{"path": png, "caption": f"rollout drift 1-R^2 per step, after {smt_name}, one-step DMT and "
                                           "full-rollout DMT"}] if png else [],
        "limitations": ["A toy model: it solves one synthetic task at one length; it is evidence for the method, "
                        "not a model to use."],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_info", help="run summary JSON (SMTTrainer.save_summary + extra keys)")
    parser.add_argument("-o", "--out", default="README.md", help="where to write the card")
    parser.add_argument("--model", help="saved student/teacher folder: fills the config section from it")
    parser.add_argument("--summary", help="a recipes/smt.py summary.json whose measurements go into the card")
    parser.add_argument("--e2e", action="store_true",
                        help="run_info is a recipes/needle_e2e.py run JSON: card of its SMT -> one-step DMT student "
                             "(with its drift plot <JSON stem>_drift.png, when it exists)")
    parser.add_argument("--run-info-out", help="also write the merged run summary here (for smt-export --run-info)")
    args = parser.parse_args(argv)
    run_info = json.loads(Path(args.run_info).read_text(encoding="utf-8"))
    if args.e2e:
        png = Path(args.run_info).with_name(Path(args.run_info).stem + "_drift.png")
        rel = os.path.relpath(png, Path(args.out).resolve().parent) if png.exists() else None
        run_info = run_info_from_e2e(run_info, rel)
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
