"""The flow code: the measured optical flow since the reference as a few quantized numbers a
frame, which the warp starts from (the codes carry the motion, the flow code its fine shape).

A frame's Farnebäck flow at flow_input² (`measured_flow`) is projected on C principal
components fitted to the training clips' flows (`FlowCode.fit`, saved with the weights; until
then the lowest 2-D DCT frequencies, a working code for untrained models), each in units of
its standard deviation and quantized uniformly over ±FLOW_RANGE to 2**bits levels: the levels
are what an .fvl file stores after the VQ codes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

FLOW_RANGE = 3.0   # the levels span ± this many standard deviations of each component

# the names the flow code's tensors had in weights files written before it was a module
LEGACY_KEYS = {"flow_mean": "flow_code.mean", "flow_basis": "flow_code.basis", "flow_scale": "flow_code.scale",
               "flow_fitted": "flow_code.fitted"}


def renamed(state: dict, prefix: str = "") -> dict:
    """A state dict with the flow code's old names (under `prefix`, where a FaceVid sits inside
    another module) renamed, in place; returned."""
    for old, new in LEGACY_KEYS.items():
        if prefix + old in state and prefix + new not in state:
            state[prefix + new] = state.pop(prefix + old)
    return state


def measured_flow(frames: torch.Tensor, reference: torch.Tensor, size: int) -> torch.Tensor:
    """Farnebäck optical flow (facevid.face.flow.optical_flow) of frames (B, T, 3, H, W) to the
    reference (B, 3, H, W), both in [-1, 1]: (B, T, 2, size, size) backward flow in normalised
    units, no gradient. The same measurement as the warp's training target."""
    from facevid.face.flow import optical_flow

    def uint8(x):
        return ((x.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).movedim(-3, -1).cpu().numpy()

    refs, clips = uint8(reference), uint8(frames)
    flows = np.stack([optical_flow(ref, clip, size) for ref, clip in zip(refs, clips)])
    return torch.from_numpy(flows).to(frames.device)


def cosine_flow_basis(side: int, count: int) -> torch.Tensor:
    """`count` orthonormal flows (count, 2 * side**2): 2-D DCT-II patterns of x and of y flow,
    lowest frequencies first."""
    n = torch.arange(side, dtype=torch.float64)
    dct = torch.cos(math.pi * (2 * n[None] + 1) * n[:, None] / (2 * side))     # (k, n)
    dct = dct / dct.norm(dim=1, keepdim=True)
    pairs = sorted(((u, v) for u in range(side) for v in range(side)), key=lambda p: (p[0] + p[1], p))
    basis = torch.zeros(count, 2, side, side, dtype=torch.float64)
    for i in range(count):
        u, v = pairs[i // 2]
        basis[i, i % 2] = torch.outer(dct[v], dct[u])
    return basis.flatten(1).float()


class FlowCode(nn.Module):
    """C principal components of flows (2, side, side), quantized to `bits` levels each."""

    def __init__(self, side: int, count: int, bits: int):
        super().__init__()
        self.side, self.count, self.bits = side, count, bits
        self.register_buffer("mean", torch.zeros(2 * side ** 2))
        self.register_buffer("basis", cosine_flow_basis(side, count))
        self.register_buffer("scale", torch.full((count,), 0.05 * side))   # 0.05 of a pixel
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, flows: torch.Tensor) -> float:
        """Fit the components to measured flows (N, 2, f, f); returns the share of the flows'
        variance they explain."""
        x = flows.flatten(1).double()
        if x.shape[0] < self.count:
            raise ValueError(f"fitting {self.count} flow components needs as many flows, got {x.shape[0]}")
        mean = x.mean(0)
        _, singular, basis = torch.linalg.svd(x - mean, full_matrices=False)
        basis = basis[:self.count]
        # a fixed sign per component (SVD's is arbitrary): the largest entry positive
        sign = torch.sign(basis.gather(1, basis.abs().argmax(1, keepdim=True)))
        self.mean.copy_(mean)
        self.basis.copy_(basis * sign)
        self.scale.copy_((singular[:self.count] / math.sqrt(x.shape[0])).clamp(min=1e-6))
        self.fitted.fill_(True)
        return float(singular[:self.count].square().sum() / singular.square().sum())

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def quantize(self, flow: torch.Tensor) -> torch.Tensor:
        """Measured flow (..., 2, f, f) → levels (..., C) in [0, 2**bits): each component in units
        of its standard deviation, uniform over ±FLOW_RANGE."""
        levels = 2 ** self.bits - 1
        z = ((flow.flatten(-3).float() - self.mean) @ self.basis.T) / self.scale
        return ((z + FLOW_RANGE) / (2 * FLOW_RANGE) * levels).round().clamp(0, levels).long()

    def dequantize(self, levels: torch.Tensor) -> torch.Tensor:
        """Levels (..., C) → components in standard deviations (..., C), the motion tensor's tail."""
        return levels.float() / (2 ** self.bits - 1) * (2 * FLOW_RANGE) - FLOW_RANGE

    def flow(self, z: torch.Tensor) -> torch.Tensor:
        """The flow (..., 2, f, f) that components z (..., C) describe."""
        return (self.mean + (z.float() * self.scale) @ self.basis).unflatten(-1, (2, self.side, self.side))
