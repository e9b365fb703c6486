"""GRU updater: a GRU cell whose hidden state is the flattened memory (Z = K*d) and whose input is the
token embedding. Built from two nn.Linear layers (not nn.GRUCell) so PEFT/LoRA can target it.

    r = sigmoid(W_ir e + W_hr h),  z = sigmoid(W_iz e + W_hz h)
    n = tanh(W_in e + r * (W_hn h)),  h' = (1 - z) * n + z * h
(same equations and gate order as torch.nn.GRUCell, which the tests compare against)

Sources: Cho et al. 2014, https://arxiv.org/abs/1406.1078; torch.nn.GRUCell,
https://pytorch.org/docs/stable/generated/torch.nn.GRUCell.html.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer


class GRUUpdater(GradientCheckpointingLayer):  # one cell: the unit recomputed under activation checkpointing
    def __init__(self, config):
        super().__init__()
        Z, d = config.memory_tokens * config.hidden_size, config.hidden_size
        self.input_proj = nn.Linear(d, 3 * Z)  # W_i{r,z,n}
        self.hidden_proj = nn.Linear(Z, 3 * Z)  # W_h{r,z,n}

    def forward(self, memory: torch.Tensor, token_embedding: torch.Tensor) -> torch.Tensor:
        B, K, d = memory.shape
        h = memory.reshape(B, K * d)  # (B, Z)
        i_r, i_z, i_n = self.input_proj(token_embedding).chunk(3, dim=-1)  # 3x (B, Z)
        h_r, h_z, h_n = self.hidden_proj(h).chunk(3, dim=-1)  # 3x (B, Z)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return ((1 - z) * n + z * h).view(B, K, d)  # (B, K, d)
