"""Transformer updater (the reference backbone): [m_t ; e_{t+1}] (K+1 tokens) through a bidirectional
Transformer; the K memory positions are the next memory."""

from __future__ import annotations

import torch
from torch import nn

from ..modeling_layers import TransformerStack


class TransformerUpdater(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.stack = TransformerStack.from_config(config, config.updater_layers, config.updater_intermediate_size)

    def forward(self, memory: torch.Tensor, token_embedding: torch.Tensor) -> torch.Tensor:
        K = memory.shape[1]
        x = torch.cat([memory, token_embedding.unsqueeze(1)], dim=1)  # (B, K+1, d)
        return self.stack(x)[:, :K]  # (B, K, d)
