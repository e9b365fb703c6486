"""Everything that ships a model to the Hub, in one package with one-way imports:

    card.py     model cards (`make_model_card`, template `model_card.md`), run summaries of an `SMTTrainer`
                (`trainer_run_info`, `save_summary`) and `model_kind`; imports no other hub module
    push.py     `push_folder`: upload a folder in one commit; imports `card`
    export.py   `export_for_hub`: a self-contained remote-code folder (and `push_trainer`, `load_model`, the
                `smt-export` CLI); imports `card` and `push`

`SMTTrainer.push_to_hub`, `.run_info` and `.save_summary` delegate here in one line. `smt_hf.export` is the same
module as `smt_hf.hub.export` (kept as an import path).
"""

from .card import (MODEL_KINDS, METRIC_NAMES, RUN_INFO_KEYS, TEMPLATE_PATH, _version, eval_results,  # noqa: F401
                   folder_run_info, make_model_card, model_kind, save_summary, trainer_run_info, training_summary)
from .export import ExportedFolder, export_dir, export_for_hub, load_model, model_folder, push_target, push_trainer
from .push import commit_folder, hub_api, push_folder

__all__ = [
    "make_model_card", "eval_results", "model_kind", "trainer_run_info", "save_summary", "TEMPLATE_PATH", "METRIC_NAMES",
    "MODEL_KINDS", "RUN_INFO_KEYS", "push_folder", "commit_folder", "export_for_hub", "ExportedFolder", "load_model", "model_folder",
    "push_trainer", "push_target", "export_dir", "hub_api", "folder_run_info", "training_summary",
]
