"""Transformer building blocks shared by the memory encoder, the teacher decoder, the transformer updater and the
readout.

Pre-RMSNorm blocks, rotary embeddings, GELU MLP, attention through
`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient kernels where available).
Notation: B batch, L positions in a block's input, d width, H heads, hs = d / H head size.

Sources:
    pre-norm residual blocks   Xiong et al. 2020, https://arxiv.org/abs/2002.04745
    RMSNorm                    Zhang & Sennrich 2019, https://arxiv.org/abs/1910.07467
    rotary embeddings (RoPE)   Su et al. 2021 (RoFormer), https://arxiv.org/abs/2104.09864
    GELU                       Hendrycks & Gimpel 2016, https://arxiv.org/abs/1606.08415
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer


def rms_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMS-normalise the last dim without a learned gain (how every memory token is normalised)."""
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps).to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_normalize(x, self.eps) * self.weight


class RotaryEmbedding(nn.Module):
    """Rotary position embedding. cos/sin are computed for the positions asked for (no length limit) and
    held in no buffer: transformers 5 builds models on the meta device, where non-persistent buffers
    would be left uninitialised after `from_pretrained`."""

    def __init__(self, head_size: int, theta: float = 10000.0):
        super().__init__()
        self.head_size, self.theta = head_size, theta

    def forward(self, num_positions: int, device, dtype, positions: torch.Tensor | None = None):
        """cos, sin (L, hs) for positions 0..L-1, or for the given `positions` (L,); (B, 1, L, hs) for per-row
        `positions` (B, L), which must lie in 0..L-1 (rows of the (L, hs) table, no float32 (B, L, hs) temporaries)."""
        if positions is not None and positions.dim() == 2:
            cos, sin = self(num_positions, device, dtype)  # (L, hs)
            return cos[positions][:, None], sin[positions][:, None]  # (B, 1, L, hs)
        exponent = torch.arange(0, self.head_size, 2, device=device, dtype=torch.float32) / self.head_size
        inv_freq = 1.0 / (self.theta**exponent)  # (hs/2,)
        pos = torch.arange(num_positions, device=device, dtype=torch.float32) if positions is None else positions.float()
        freqs = torch.outer(pos, inv_freq)  # (L, hs/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (L, hs)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, L, hs); cos/sin: (L, hs) or (B, 1, L, hs)."""
    return x * cos + _rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.dropout = dropout

    def forward(self, x, cos, sin, attn_mask=None, is_causal=False):
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)  # 3x (B, H, L, hs)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, L, hs)
        return self.o_proj(y.transpose(1, 2).reshape(B, L, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.down_proj(F.gelu(self.up_proj(x))))


class Block(GradientCheckpointingLayer):
    """Pre-norm Transformer block: x + attn(norm(x)); x + mlp(norm(x)). With activation checkpointing on
    (`model.activation_checkpointing_enable()`) its activations are recomputed in the backward pass."""

    def __init__(self, dim: int, num_heads: int, hidden: int, dropout: float = 0.0, eps: float = 1e-6):
        super().__init__()
        self.attn_norm = RMSNorm(dim, eps)
        self.attn = Attention(dim, num_heads, dropout)
        self.mlp_norm = RMSNorm(dim, eps)
        self.mlp = MLP(dim, hidden, dropout)

    def forward(self, x, cos, sin, attn_mask=None, is_causal=False):
        x = x + self.attn(self.attn_norm(x), cos, sin, attn_mask=attn_mask, is_causal=is_causal)
        return x + self.mlp(self.mlp_norm(x))


class TransformerStack(nn.Module):
    """`depth` pre-norm blocks sharing one rotary table, then a final RMSNorm.

    forward(x (B, L, d), key_mask (B, L) bool or None, causal, attn_mask, positions) -> (B, L, d).
    ``key_mask`` marks the positions that may be attended to (False = padding); ``attn_mask`` (B or 1, 1, L, L)
    bool is a full query-key mask instead (True = may attend); ``positions`` (L,) or (B, L) are the rotary
    positions (default 0..L-1).
    """

    def __init__(self, dim, depth, num_heads, hidden, dropout=0.0, eps=1e-6, rope_theta=10000.0):
        super().__init__()
        self.layers = nn.ModuleList([Block(dim, num_heads, hidden, dropout, eps) for _ in range(depth)])
        self.norm = RMSNorm(dim, eps)
        self.rotary = RotaryEmbedding(dim // num_heads, rope_theta)

    @classmethod
    def from_config(cls, config, depth: int, hidden: int) -> "TransformerStack":
        """A stack with the width, heads, dropout, eps and rotary base of an SMT config."""
        return cls(
            dim=config.hidden_size,
            depth=depth,
            num_heads=config.num_attention_heads,
            hidden=hidden,
            dropout=config.dropout,
            eps=config.rms_norm_eps,
            rope_theta=config.rope_theta,
        )

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, causal: bool = False,
                attn_mask: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
        B, L, _ = x.shape
        cos, sin = self.rotary(L, x.device, x.dtype, positions)
        if attn_mask is not None:
            if key_mask is not None or causal:
                raise ValueError("Pass either attn_mask or key_mask/causal, not both.")
        elif key_mask is not None:
            attn_mask = key_mask[:, None, None, :].to(torch.bool)  # (B, 1, 1, L)
            if causal:
                tri = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
                attn_mask = attn_mask & tri  # (B, 1, L, L)
                causal = False
        for layer in self.layers:
            x = layer(x, cos, sin, attn_mask=attn_mask, is_causal=causal)
        return self.norm(x)
