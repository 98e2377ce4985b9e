"""DiT denoiser of BCD (seed 001; DiT: Peebles & Xie 2023) with temporal attention blocks
between spatial blocks. Each frame's motion is added to the timestep embedding (adaLN-Zero);
the content tokens are concatenated with the noisy patch tokens; the warped reference and
its occlusion mask enter as input channels. A small full-resolution conv head after
unpatchify keeps pixel detail that 8x8 patches would lose."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facevid.config import ModelConfig
from facevid.model.layers import MLP, Attention, TimestepEmbedder, modulate, sincos_1d, sincos_2d

IN_CHANNELS = 3 + 3 + 1   # noisy frame, warped reference, occlusion mask


class DiTBlock(nn.Module):
    """Spatial block with adaLN-Zero modulation from the per-frame condition c (N, D)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn, self.mlp = Attention(dim, heads), MLP(dim)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)
        x = x + gate1.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))


class TemporalBlock(nn.Module):
    """Attention across the T frames of a clip at each patch position (adaLN-Zero)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, frames: int) -> torch.Tensor:
        n, length, d = x.shape
        b = n // frames
        shift, scale, gate = self.ada(c).chunk(3, dim=-1)                          # (N, D) each
        h = modulate(self.norm(x), shift, scale)
        h = h.view(b, frames, length, d).transpose(1, 2).reshape(b * length, frames, d)   # (B*L, T, D)
        h = h + sincos_1d(d, torch.arange(frames, device=x.device)).to(h.dtype)
        h = self.attn(h).view(b, length, frames, d).transpose(1, 2).reshape(n, length, d)
        return x + gate.unsqueeze(1) * h


class DiT(nn.Module):
    """network(x_in, c_noise, warped=, motion=, content=, frames=) for sampling.Denoiser."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, p = cfg.dit_dim, cfg.dit_patch
        self.patch, self.side, self.head_channels = p, cfg.net_size // p, cfg.head_channels
        self.embed = nn.Conv2d(IN_CHANNELS, d, p, stride=p)
        self.register_buffer("pos", sincos_2d(d, self.side), persistent=False)
        self.content_proj = nn.Linear(cfg.enc_dim, d)
        self.time = TimestepEmbedder(d)
        self.motion = nn.Sequential(nn.Linear(cfg.motion_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.null_motion = nn.Parameter(torch.zeros(cfg.motion_dim))
        self.null_content = nn.Parameter(torch.zeros(cfg.content_tokens, cfg.enc_dim))
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.dit_heads) for _ in range(cfg.dit_layers))
        self.temporal = nn.ModuleDict({str(i): TemporalBlock(d, cfg.dit_heads)
                                       for i in range(0, cfg.dit_layers, cfg.temporal_every)})
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.final = nn.Linear(d, p * p * cfg.head_channels)
        hc = cfg.head_channels
        self.head = nn.Sequential(nn.Conv2d(hc + IN_CHANNELS, hc, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(hc, 3, 3, padding=1))
        nn.init.zeros_(self.final_ada[1].weight)
        nn.init.zeros_(self.final_ada[1].bias)
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, *, warped: torch.Tensor, motion: torch.Tensor,
                content: torch.Tensor, frames: int) -> torch.Tensor:
        """x_in (N, 3, n, n); warped (N, 4, n, n); motion (N, M); content (N, K, E); N = B*frames."""
        n_frames = x_in.shape[0]
        inputs = torch.cat([x_in, warped], dim=1)                                # (N, 7, n, n)
        tokens = self.embed(inputs).flatten(2).transpose(1, 2) + self.pos      # (N, L, D)
        patches = tokens.shape[1]
        x = torch.cat([tokens, self.content_proj(content)], dim=1)             # (N, L+K, D)
        c = self.time(c_noise.reshape(-1).expand(n_frames)) + self.motion(motion)          # (N, D)
        for i, block in enumerate(self.blocks):
            x = block(x, c)
            if str(i) in self.temporal:
                x = torch.cat([self.temporal[str(i)](x[:, :patches], c, frames), x[:, patches:]], dim=1)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        out = self.final(modulate(self.final_norm(x[:, :patches]), shift, scale))   # (N, L, p*p*hc)
        feat = out.transpose(1, 2).reshape(n_frames, -1, self.side, self.side)
        feat = F.pixel_shuffle(feat, self.patch)                                # (N, hc, n, n)
        return self.head(torch.cat([feat, inputs], dim=1))
