"""`SplitSampler`: the random split points of SMT / joint SMT, drawn inside the training step.

`SMTTrainingModule` owns one and calls it on the lengths of each sequence batch; the windows at those points are
built by the pure `smt_hf.data.windows.smt_windows`. Drawing inside the step (not in the dataloader) makes a resumed
run draw exactly the split points of an uninterrupted one: the HF Trainer restores the RNG state only after it has
collated the first resumed batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["SplitSampler"]


@dataclass
class SplitSampler:
    """Split points (B, S) for sequences of given lengths (B,).

    Args:
        splits_per_sequence: S, split points per sequence.
        split: ``"random"`` -> c uniform in ``0..L-1`` (episodes; covers the empty context), one ``torch.rand``
            draw of shape (B, S) on the CPU per call; ``"last"`` -> c = min(Tc, L-1) (streams: a window of Tc
            context then the future), no randomness.
        context_length: Tc (needed by ``"last"``).
        generator: optional CPU ``torch.Generator``; default torch's global RNG (seeded by the HF Trainer and
            restored on resume).

    Raises:
        ValueError: an unknown ``split``, S < 1, ``"last"`` with S != 1 or without a context length.
    """

    splits_per_sequence: int = 1
    split: str = "random"
    context_length: int | None = None
    generator: torch.Generator | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if int(self.splits_per_sequence) < 1:
            raise ValueError(f"SplitSampler: splits_per_sequence must be >= 1, got {self.splits_per_sequence}")
        if self.split not in ("random", "last"):
            raise ValueError(f"SplitSampler: split={self.split!r} must be 'random' or 'last'")
        if self.split == "last" and self.splits_per_sequence != 1:
            raise ValueError("SplitSampler: split='last' gives one split point per sequence; set splits_per_sequence=1")
        if self.split == "last" and (self.context_length is None or int(self.context_length) < 1):
            raise ValueError(f"SplitSampler: split='last' needs context_length >= 1, got {self.context_length}")

    def __call__(self, lengths: torch.Tensor) -> torch.Tensor:
        """lengths (B,) long, each >= 1 -> split points (B, S) long on the device of `lengths`, ``0 <= c < L_b``."""
        device, lengths = lengths.device, lengths.cpu()
        B, S = lengths.numel(), int(self.splits_per_sequence)
        if self.split == "last":
            c = torch.clamp(lengths - 1, max=int(self.context_length)).view(B, 1)
        else:
            u = torch.rand((B, S), generator=self.generator)  # (B, S) in [0, 1)
            c = (u * lengths.view(B, 1).double()).long().clamp(max=lengths.view(B, 1) - 1)
        return c.to(device)
