"""MLP updater: flatten m_t (Z = K*d), concatenate e_{t+1} (d), residual MLP, back to (K, d).

    h = in_proj([m ; e]);  h = h + fc2(gelu(fc1(norm(h))))  (x updater_layers);  m' = m + out_proj(norm(h))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from ..modeling_layers import RMSNorm


class ResidualMLPBlock(GradientCheckpointingLayer):  # recomputed in backward under activation checkpointing
    def __init__(self, width: int, eps: float, dropout: float):
        super().__init__()
        self.norm = RMSNorm(width, eps)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h):
        return h + self.dropout(self.fc2(F.gelu(self.fc1(self.norm(h)))))


class MLPUpdater(nn.Module):
    def __init__(self, config):
        super().__init__()
        Z, d, W = config.memory_tokens * config.hidden_size, config.hidden_size, config.updater_intermediate_size
        self.in_proj = nn.Linear(Z + d, W)
        self.blocks = nn.ModuleList(
            [ResidualMLPBlock(W, config.rms_norm_eps, config.dropout) for _ in range(config.updater_layers)]
        )
        self.norm = RMSNorm(W, config.rms_norm_eps)
        self.out_proj = nn.Linear(W, Z)

    def forward(self, memory: torch.Tensor, token_embedding: torch.Tensor) -> torch.Tensor:
        B, K, d = memory.shape
        m = memory.reshape(B, K * d)  # (B, Z)
        h = self.in_proj(torch.cat([m, token_embedding], dim=-1))  # (B, W)
        for block in self.blocks:
            h = block(h)
        return (m + self.out_proj(self.norm(h))).view(B, K, d)  # (B, K, d)
