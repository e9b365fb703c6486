"""The registry of recurrent updaters f: (m_t (B, K, d), e_{t+1} (B, d)) -> m_{t+1} (B, K, d).

Every updater returns the *unnormalised* next memory; `transition` RMS-normalises it (the student's step). Add a
backbone by writing a module with that signature and registering it here.
"""

from __future__ import annotations

import torch

from ..configuration_smt import BACKBONES
from ..modeling_layers import rms_normalize
from .gru import GRUUpdater
from .mlp import MLPUpdater
from .transformer import TransformerUpdater

UPDATERS = {
    "transformer": TransformerUpdater,
    "mlp": MLPUpdater,
    "gru": GRUUpdater,
}
assert tuple(UPDATERS) == BACKBONES, "keep configuration_smt.BACKBONES and the registry in sync"

# Linear layers a LoRA adapter should target for each backbone (PEFT has no default mapping for this model type).
LORA_TARGET_MODULES = {
    "transformer": ["qkv", "o_proj", "up_proj", "down_proj"],
    "mlp": ["in_proj", "fc1", "fc2", "out_proj"],
    "gru": ["input_proj", "hidden_proj"],
}


def build_updater(config):
    """Instantiate the updater named by `config.backbone`."""
    try:
        cls = UPDATERS[config.backbone]
    except KeyError:
        raise ValueError(f"Unknown backbone {config.backbone!r}; choose one of {sorted(UPDATERS)}.") from None
    return cls(config)


def transition(updater, memory: torch.Tensor, token_embedding: torch.Tensor, eps: float) -> torch.Tensor:
    """The student's transition m_{t+1} = rmsnorm(f(m_t, e_{t+1})) with f = `updater`: memory (B, K, d),
    token_embedding (B, d) -> (B, K, d). The one definition: the student's `_step` and the function that
    `compile_step` (fast.py) compiles both call it."""
    return rms_normalize(updater(memory, token_embedding), eps)


__all__ = ["UPDATERS", "LORA_TARGET_MODULES", "build_updater", "transition"]
