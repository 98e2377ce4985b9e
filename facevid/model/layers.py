"""Shared transformer pieces: attention with an additive bias, MLP, timestep embedding,
adaLN modulation (DiT, Peebles & Xie 2023) and T5 relative position buckets (Raffel et al. 2020)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + scale) + shift, with (N, D) modulation broadcast over tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Attention(nn.Module):
    """Multi-head self-attention; `bias` (heads, L, L) or (B, heads, L, L) is added to the logits."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, H, N, Dh)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of the EDM noise level c_noise, then an MLP (DiT)."""

    def __init__(self, dim: int, frequencies: int = 128):
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        half = self.frequencies // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=c_noise.device, dtype=torch.float32) / half)
        args = c_noise.float().reshape(-1, 1) * 1000.0 / 4.0 * freqs  # c_noise = ln(σ)/4 spans about ±2
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


def relative_bucket(distance: torch.Tensor, buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bidirectional log-spaced bucket of a signed relative distance."""
    half = buckets // 2
    sign_offset = (distance > 0).long() * half
    n = distance.abs()
    exact = half // 2
    is_small = n < exact
    large = exact + (torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                     * (half - exact)).long()
    large = large.clamp(max=half - 1)
    return sign_offset + torch.where(is_small, n, large)


class RelativePositionBias(nn.Module):
    """Per-head learned bias over bucketed frame distances (T5); tokens marked as global
    (content queries) use one extra learned bucket against everything."""

    def __init__(self, heads: int, buckets: int, max_distance: int):
        super().__init__()
        self.buckets, self.max_distance = buckets, max_distance
        self.table = nn.Embedding(buckets + 1, heads)

    def forward(self, frame_index: torch.Tensor, is_global: torch.Tensor) -> torch.Tensor:
        """frame_index, is_global: (L,) → bias (heads, L, L)."""
        distance = frame_index[None, :] - frame_index[:, None]
        bucket = relative_bucket(distance, self.buckets, self.max_distance)
        glob = is_global[None, :] | is_global[:, None]
        bucket = torch.where(glob, torch.full_like(bucket, self.buckets), bucket)
        return self.table(bucket).permute(2, 0, 1)


def sincos_2d(dim: int, side: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding (side*side, dim) as in ViT/DiT."""
    coords = torch.arange(side, dtype=torch.float32)
    grid_y, grid_x = torch.meshgrid(coords, coords, indexing="ij")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    parts = []
    for grid in (grid_x, grid_y):
        args = grid.reshape(-1, 1) * omega
        parts += [torch.sin(args), torch.cos(args)]
    emb = torch.cat(parts, dim=1)
    return F.pad(emb, (0, dim - emb.shape[1]))


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Sine-cosine embedding of (L,) positions → (L, dim)."""
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float32, device=positions.device) / half)
    args = positions.float().reshape(-1, 1) * omega
    return F.pad(torch.cat([torch.sin(args), torch.cos(args)], dim=1), (0, dim - 2 * half))


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv 3x3, twice, with a residual connection."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.net = nn.Sequential(nn.GroupNorm(math.gcd(8, cin), cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
                                 nn.GroupNorm(math.gcd(8, cout), cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.net(x)
