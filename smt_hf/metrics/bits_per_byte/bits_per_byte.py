"""`evaluate` module: mean next-token loss in nats -> bits per byte and perplexity (wraps smt_hf.metrics).

    metric = smt_hf.metrics.load_metric("bits_per_byte")   # or evaluate.load(<this folder>)
    metric.compute(nll=[0.69, 1.2, ...])                    # per-token negative log-likelihoods (nats)
"""

import datasets
import evaluate

from smt_hf.metrics import bits_per_token, perplexity

_DESCRIPTION = """Mean per-token negative log-likelihood (nats), its value in bits, bits per byte and perplexity.
For byte-level models (SMTByteTokenizer) a token is a byte, so bits_per_byte == bits_per_token; for other
tokenizers pass `bytes_per_token` (total bytes / total tokens of the evaluated text)."""

_KWARGS_DESCRIPTION = """
Args:
    nll (`list[float]`): negative log-likelihood of each evaluated token, in nats (e.g. from
        `F.cross_entropy(..., reduction="none")`; drop ignored positions).
    bytes_per_token (`float`, defaults to 1.0): average UTF-8 bytes per token.
Returns:
    nats_per_token, bits_per_token, bits_per_byte, perplexity (floats), num_tokens (int).
Examples:
    >>> import evaluate
    >>> from smt_hf.metrics import metric_path
    >>> metric = evaluate.load(metric_path("bits_per_byte"))  # from any folder; or smt_hf.metrics.load_metric("bits_per_byte")
    >>> metric.compute(nll=[0.5, 1.0, 1.5])["bits_per_byte"]   # 1.0 / ln 2
    1.4426950408889634
"""

_CITATION = "Supervised Memory Training (SMT), arXiv:2606.06479."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BitsPerByte(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"nll": datasets.Value("float64")}),
        )

    def _compute(self, nll, bytes_per_token: float = 1.0):
        if len(nll) == 0:
            raise ValueError("bits_per_byte needs at least one per-token nll value.")
        if not bytes_per_token > 0:
            raise ValueError(f"`bytes_per_token` must be > 0, got {bytes_per_token}.")
        nats = float(sum(nll)) / len(nll)
        bits = bits_per_token(nats)
        return {
            "nats_per_token": nats,
            "bits_per_token": bits,
            "bits_per_byte": bits / bytes_per_token,
            "perplexity": perplexity(nats),
            "num_tokens": len(nll),
        }
