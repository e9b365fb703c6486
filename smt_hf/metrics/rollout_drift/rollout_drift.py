"""`evaluate` module: rollout drift 1 - R^2 per step between predicted and target memories
(wraps smt_hf.metrics.rollout_drift).

    metric = smt_hf.metrics.load_metric("rollout_drift")
    metric.compute(predictions=student_memories, references=teacher_memories)   # each (B, T, K*d) nested lists
"""

import datasets
import evaluate
import torch

from smt_hf.metrics import rollout_drift

_DESCRIPTION = """1 - R^2_t = sum_b ||m_hat_bt - m_bt||^2 / sum_b ||m_bt - mean_b m_bt||^2 for every rollout step t:
0 when the student's own memories track the teacher's encodings exactly, 1 when they are no better than the
batch-mean memory. The variance is taken over the batch, so pass at least two sequences."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: the student's memories, one (T, K*d) nested list per sequence (flatten each (K, d) memory).
    references: the teacher's memories E(x[:t]) at the same steps, same shape.
Returns:
    drift (list of T floats, one per step), drift_mean (float), drift_last (float).
Examples:
    >>> import evaluate
    >>> from smt_hf.metrics import metric_path
    >>> metric = evaluate.load(metric_path("rollout_drift"))  # from any folder; or smt_hf.metrics.load_metric("rollout_drift")
    >>> refs = [[[1.0, 0.0]], [[-1.0, 0.0]]]                 # B=2, T=1, Z=2
    >>> metric.compute(predictions=refs, references=refs)["drift"]
    [0.0]
"""

_CITATION = "Supervised Memory Training (SMT), arXiv:2606.06479 (Fig. 12)."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RolloutDrift(evaluate.Metric):
    def _info(self):
        memories = datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": memories, "references": memories}),
        )

    def _compute(self, predictions, references):
        if len(references) < 2:
            raise ValueError("rollout_drift needs at least 2 sequences: the variance is taken across the batch.")
        try:
            pred, ref = torch.tensor(predictions), torch.tensor(references)  # (B, T, Z)
        except (ValueError, TypeError) as err:
            raise ValueError(f"Every sequence needs the same number of steps T and memory size K*d: {err}") from None
        if pred.shape != ref.shape or pred.dim() != 3:
            raise ValueError(f"predictions {tuple(pred.shape)} and references {tuple(ref.shape)} must both be (B, T, K*d).")
        drift = rollout_drift(pred, ref)  # (T,)
        return {"drift": drift.tolist(), "drift_mean": float(drift.mean()), "drift_last": float(drift[-1])}
