"""Content/motion encoder of BCD (seed 001): per-frame conv tokens, K learnable content
queries prepended, a transformer over time with T5 relative position bias. The first K
outputs are the clip's content; the frame tokens give one motion feature per frame.

Each frame is seen beside its difference from a reference frame (the clip's first frame
unless given): the motion of a frame is what changed since the reference, which the decoder
applies to the reference (or, in transfer, to another face). Measured on training batches of
the frame-only encoder after ~2,000 steps: neither its motion features nor a ridge fitted on
them predicted the optical flow from the reference any better than zero flow (0.73 vs 0.73 px).
The reference also runs through the transformer as an extra first frame, and its motion
feature is subtracted from every frame's (see `Encoder.forward`): with the difference input
alone, a frame's features still varied 25-90x more between clips than within one (400 steps)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facevid.config import ModelConfig
from facevid.model.layers import MLP, Attention, RelativePositionBias, ResBlock


class FrameStem(nn.Module):
    """(N, C, S, S) → (N, P, D): a 4x4 patchify conv, then (conv block, stride-2 conv)
    stages, pooled to √P x √P tokens. Cheap enough to run on every frame of a clip."""

    def __init__(self, channels: tuple[int, ...], dim: int, tokens: int, in_channels: int = 3):
        super().__init__()
        stages = [nn.Conv2d(in_channels, channels[0], 4, stride=4)]
        for cin, cout in zip(channels, channels[1:]):
            stages += [ResBlock(cin, cin), nn.Conv2d(cin, cout, 3, stride=2, padding=1)]
        stages += [ResBlock(channels[-1], channels[-1])]
        self.stages = nn.Sequential(*stages)
        self.side = int(tokens ** 0.5)
        self.proj = nn.Linear(channels[-1], dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = F.adaptive_avg_pool2d(self.stages(x), self.side)   # (N, C, s, s)
        return self.proj(feats.flatten(2).transpose(1, 2))         # (N, P, D)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn, self.mlp = Attention(dim, heads), MLP(dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), bias)
        return x + self.mlp(self.norm2(x))


class Encoder(nn.Module):
    """frames (B, T, 3, S, S) in [-1, 1] and a reference (B, 3, S, S) → content (B, K, D),
    motion features (B, T, D)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.enc_dim
        self.stem = FrameStem(cfg.enc_channels, d, cfg.frame_tokens, in_channels=6)   # frame, frame − reference
        self.frame_tokens = cfg.frame_tokens
        self.token_pos = nn.Parameter(torch.zeros(cfg.frame_tokens, d))
        self.content_queries = nn.Parameter(torch.randn(cfg.content_tokens, d) * 0.02)
        self.bias = RelativePositionBias(cfg.enc_heads, cfg.rel_buckets, cfg.rel_max_distance)
        self.blocks = nn.ModuleList(Block(d, cfg.enc_heads) for _ in range(cfg.enc_layers))
        self.norm = nn.LayerNorm(d)
        self.motion_out = nn.Linear(d, d)
        self.rest = nn.Parameter(torch.randn(d))                          # the motion feature of "no change"
        nn.init.normal_(self.token_pos, std=0.02)

    def forward(self, frames: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = frames.shape[0]
        frames = torch.cat([reference[:, None], frames], dim=1)           # the reference first
        t = frames.shape[1]
        k, p = self.content_queries.shape[0], self.frame_tokens
        pairs = torch.cat([frames, frames - reference[:, None]], dim=2)   # (B, T, 6, S, S)
        tokens = self.stem(pairs.flatten(0, 1)) + self.token_pos         # (B*T, P, D)
        tokens = tokens.view(b, t * p, -1)                                # (B, T*P, D)
        x = torch.cat([self.content_queries.expand(b, -1, -1), tokens], dim=1)
        device = frames.device
        frame_index = torch.cat([torch.zeros(k, dtype=torch.long, device=device),
                                 torch.arange(t, device=device).repeat_interleave(p)])
        is_global = torch.arange(k + t * p, device=device) < k
        bias = self.bias(frame_index, is_global).to(x.dtype)             # (H, L, L)
        for block in self.blocks:
            x = block(x, bias)
        x = self.norm(x)
        content = x[:, :k]
        motion = self.motion_out(x[:, k:].view(b, t, p, -1).mean(2))      # (B, T, D)
        # each frame's feature minus the reference's: what the clip shares (its person, its
        # scene) cancels, so the codes can only describe change; no change gives `rest`
        return content, motion[:, 1:] - motion[:, :1] + self.rest


class KeypointNet(nn.Module):
    """Image (N, 3, S, S) → 68 landmarks (N, K, 2) in [-1, 1] by soft-argmax of heatmaps
    at S/4; trained on dlib's landmarks, it replaces them at inference."""

    def __init__(self, keypoints: int, channels: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers, cin = [], 3
        for i, cout in enumerate(channels):
            layers += [nn.Conv2d(cin, cout, 3, stride=2 if i < 2 else 1, padding=1), ResBlock(cout, cout)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.heatmaps = nn.Conv2d(cin, keypoints, 3, padding=1)
        self.temperature = nn.Parameter(torch.tensor(0.0))  # log scale of the heatmap logits

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.heatmaps(self.features(image)) * self.temperature.exp()   # (N, K, h, w)
        n, k, h, w = logits.shape
        prob = logits.flatten(2).softmax(-1).view(n, k, h, w)
        ys = (torch.arange(h, device=image.device, dtype=prob.dtype) * 2 + 1) / h - 1
        xs = (torch.arange(w, device=image.device, dtype=prob.dtype) * 2 + 1) / w - 1
        x = (prob.sum(2) * xs).sum(-1)
        y = (prob.sum(3) * ys).sum(-1)
        return torch.stack([x, y], dim=-1)
