"""`evaluate` module: accuracy at target positions, labels of -100 ignored (wraps smt_hf.metrics.target_accuracy).

    metric = smt_hf.metrics.load_metric("target_accuracy")
    metric.compute(predictions=[[3, 1, 2]], references=[[-100, 1, 5]])   # {"accuracy": 0.5, ...}
"""

import datasets
import evaluate
import torch

from smt_hf.metrics import target_accuracy_ids

_DESCRIPTION = """Fraction of target positions where the predicted token id equals the label; positions whose
label is -100 (no target, as in SMT episodes and transformers' loss convention) are ignored."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted token ids (e.g. `logits.argmax(-1)`), one list per sequence or one id per row.
    references: label ids aligned with `predictions` (same shape), -100 where there is no target.
Returns:
    accuracy (float), correct (int), total (int, the number of non -100 labels).
Examples:
    >>> import evaluate
    >>> from smt_hf.metrics import metric_path
    >>> metric = evaluate.load(metric_path("target_accuracy"))  # from any folder; or smt_hf.metrics.load_metric("target_accuracy")
    >>> metric.compute(predictions=[[1, 2, 3], [4, 5]], references=[[1, -100, 3], [0, -100]])["accuracy"]
    0.6666666666666666
"""

_CITATION = "Supervised Memory Training (SMT), arXiv:2606.06479."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TargetAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Sequence(datasets.Value("int64"))}
                ),
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            ],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of (predictions, references); an empty first batch raises ValueError."""
        # evaluate infers the input format from the first row: an empty first batch failed inside it (IndexError)
        empty = predictions is not None and references is not None and len(predictions) == len(references) == 0
        if empty and self.selected_feature_format is None:
            raise ValueError("target_accuracy got no rows: pass at least one (predictions, references) pair "
                             "(the accuracy of no targets is undefined).")
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def _compute(self, predictions, references):
        pred, ref = [], []
        for i, (p, r) in enumerate(zip(predictions, references)):
            p, r = (p, r) if isinstance(p, list) else ([p], [r])
            if len(p) != len(r):
                raise ValueError(f"Row {i}: {len(p)} predictions but {len(r)} references; align them (pad labels with -100).")
            pred += p
            ref += r
        pred, ref = torch.tensor(pred, dtype=torch.long), torch.tensor(ref, dtype=torch.long)
        if bool((pred < 0).any()):
            raise ValueError("predictions must be token ids >= 0 (argmax of the logits), not -100.")
        correct, total = target_accuracy_ids(pred, ref)  # (ids compared directly: no (N, vocab) one-hot)
        return {"accuracy": correct / total if total else float("nan"), "correct": correct, "total": total}
