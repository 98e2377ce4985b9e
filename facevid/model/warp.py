"""Landmark-driven warping: thin-plate splines (Bookstein 1989) and a flow-refining U-Net.

The decoder reuses the reference frame's pixels by warping it towards the target pose. The
warp starts from the classical thin-plate-spline (TPS) warp between the reference and target
landmarks (Bookstein 1989, "Principal Warps: Thin-Plate Splines and the Decomposition of
Deformations"; used as a motion model by TPSMM, Zhao & Zhang, CVPR 2022). ``FlowNet`` then
refines it with a residual flow and predicts an occlusion mask, as in FOMM (Siarohin et al.
2019, "First Order Motion Model for Image Animation"), at low resolution; ``warp_image``
applies the result at full crop resolution.

Conventions (all functions):

- Coordinates are normalised to [-1, 1], x right, y down, with ``grid_sample``'s
  ``align_corners=False`` meaning: -1 and 1 are the outer *edges* of the crop and pixel
  ``i`` of ``n`` has its centre at ``(2 * i + 1) / n - 1``.
- A *grid* is ``(B, H, W, 2)`` (x, y) and is a BACKWARD map: ``grid[b, i, j]`` is where
  output pixel ``(i, j)`` samples the source image, so ``grid_sample(source, grid)`` is the
  warped image. ``tps_grid(source_points, target_points)`` moves content found at
  ``source_points`` (in the source image) to ``target_points`` (in the output).
- A *flow* is ``grid - identity_grid`` laid out ``(B, 2, H, W)`` for convolutions, in the
  same normalised units (one pixel is ``2 / W`` in x). Being backward, moving all points by
  ``+d`` gives the flow ``-d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facevid.face.landmarks import PARTS

# iBUG 68-point regions: jaw, brows, nose, eyes, mouth (index ranges, end exclusive).
LANDMARK_REGIONS = PARTS   # the flow net's heatmaps: one channel per part


def identity_grid(batch: int, height: int, width: int, *, device=None, dtype=None) -> Tensor:
    """The grid that samples every pixel at its own centre: (B, H, W, 2), align_corners=False."""
    dtype = dtype or torch.get_default_dtype()
    xs = (torch.arange(width, device=device, dtype=dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=device, dtype=dtype) * 2 + 1) / height - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2)
    return grid.unsqueeze(0).repeat(batch, 1, 1, 1)


def border_anchors(n_per_side: int = 4, *, device=None, dtype=None) -> Tensor:
    """Fixed points on the crop border that a TPS warp keeps in place: (4 * (n_per_side + 1), 2).

    The four corners (±1, ±1) plus ``n_per_side`` evenly spaced points strictly inside each
    side, all on the outer edge of the crop (|x| = 1 or |y| = 1).
    """
    if n_per_side < 0:
        raise ValueError(f"n_per_side must be >= 0, got {n_per_side}")
    t = torch.linspace(-1.0, 1.0, n_per_side + 2, device=device, dtype=dtype)
    inner = t[1:-1]
    one = torch.ones_like(inner)
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=device, dtype=t.dtype)
    sides = [torch.stack(pair, dim=-1) for pair in
             ((inner, -one), (one, inner), (inner, one), (-one, inner))]  # top, right, bottom, left
    return torch.cat([corners, *sides], dim=0)


def _tps_kernel(squared_distance: Tensor) -> Tensor:
    """Bookstein's radial basis U(r) = r^2 log r^2, from r^2 (clamped at 1e-12: U(0) ≈ 0 with a
    finite gradient)."""
    squared_distance = squared_distance.clamp_min(1e-12)
    return squared_distance * squared_distance.log()


def tps_coefficients(source_points: Tensor, target_points: Tensor, *, regularization: float = 1e-3,
                     anchors: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Fit the TPS f with f(target_k) = source_k (the backward map); returns (centres, weights, affine).

    ``f(p) = [1, p] @ affine + sum_k weights_k * U(|p - centres_k|^2)``; centres (B, N, 2) are
    the target points followed by the anchors (mapped to themselves), weights (B, N, 2),
    affine (B, 3, 2). Solves Bookstein's linear system [[K + λI, P], [P^T, 0]] in float64;
    λ = ``regularization`` smooths the spline (λ → 0 interpolates exactly). Differentiable in
    both point sets. Needs at least three non-collinear centres.
    """
    if source_points.shape != target_points.shape or source_points.dim() != 3 or source_points.shape[-1] != 2:
        raise ValueError(f"points must both be (B, K, 2), got {tuple(source_points.shape)} "
                         f"and {tuple(target_points.shape)}")
    batch, dtype = source_points.shape[0], source_points.dtype
    centres, values = target_points.double(), source_points.double()
    if anchors is not None:
        anchors = anchors.to(device=centres.device, dtype=torch.float64)
        anchors = anchors.expand(batch, -1, -1) if anchors.dim() == 2 else anchors
        centres, values = torch.cat([centres, anchors], 1), torch.cat([values, anchors], 1)
    n = centres.shape[1]
    kernel = _tps_kernel((centres[:, :, None] - centres[:, None]).square().sum(-1))  # (B, N, N)
    kernel = kernel + regularization * torch.eye(n, dtype=torch.float64, device=centres.device)
    poly = torch.cat([torch.ones_like(centres[..., :1]), centres], dim=-1)  # (B, N, 3)
    system = torch.cat([torch.cat([kernel, poly], 2),
                        torch.cat([poly.transpose(1, 2), poly.new_zeros(batch, 3, 3)], 2)], 1)
    rhs = torch.cat([values, values.new_zeros(batch, 3, 2)], 1)  # (B, N + 3, 2)
    solution = torch.linalg.solve(system, rhs)
    return centres.to(dtype), solution[:, :n].to(dtype), solution[:, n:].to(dtype)


def tps_grid(source_points: Tensor, target_points: Tensor, height: int, width: int, *,
             regularization: float = 1e-3, anchors: Tensor | None = None) -> Tensor:
    """Backward TPS sampling grid (B, H, W, 2): ``grid_sample(source, grid)`` moves
    ``source_points`` to ``target_points`` (Bookstein 1989; TPSMM's motion model).

    ``anchors`` (A, 2) or (B, A, 2), e.g. ``border_anchors()``, are extra points that map to
    themselves, keeping the crop border still. See ``tps_coefficients`` for the fit.
    """
    centres, weights, affine = tps_coefficients(source_points, target_points,
                                                regularization=regularization, anchors=anchors)
    pixels = identity_grid(1, height, width, device=centres.device, dtype=centres.dtype).view(1, -1, 2)
    if centres.device.type != "cpu":
        return _tps_evaluate(pixels, centres, weights, affine).view(-1, height, width, 2)
    # On CPU, (4096, N) blocks per sample stay in cache: about 3x faster than one batched pass.
    grids = [_tps_evaluate(chunk, centres[b:b + 1], weights[b:b + 1], affine[b:b + 1])
             for b in range(centres.shape[0]) for chunk in pixels.split(4096, dim=1)]
    return torch.cat(grids, dim=1).view(-1, height, width, 2)


def _tps_evaluate(pixels: Tensor, centres: Tensor, weights: Tensor, affine: Tensor) -> Tensor:
    """f(p) for pixels (1, P, 2) given one fit per sample (B, ...): (B, P, 2)."""
    batch = centres.shape[0]
    pixels = pixels.expand(batch, -1, -1)
    norms = pixels.square().sum(-1, keepdim=True) + centres.square().sum(-1).unsqueeze(1)  # (B, P, N)
    squared = torch.baddbmm(norms, pixels, centres.transpose(1, 2), alpha=-2)
    return torch.baddbmm(affine[:, :1], pixels, affine[:, 1:]) + _tps_kernel(squared) @ weights


def grid_to_flow(grid: Tensor) -> Tensor:
    """Backward grid (B, H, W, 2) → flow (B, 2, H, W) = grid − identity, normalised units."""
    b, h, w, _ = grid.shape
    return (grid - identity_grid(b, h, w, device=grid.device, dtype=grid.dtype)).permute(0, 3, 1, 2)


def flow_to_grid(flow: Tensor) -> Tensor:
    """Flow (B, 2, H, W) → backward grid (B, H, W, 2) = identity + flow."""
    b, _, h, w = flow.shape
    return identity_grid(b, h, w, device=flow.device, dtype=flow.dtype) + flow.permute(0, 2, 3, 1)


def sample_grid(grid: Tensor, points: Tensor) -> Tensor:
    """Where a backward grid (B, H, W, 2) takes each of the points (B, K, 2) from: (B, K, 2),
    bilinear between grid nodes, the border's value outside."""
    return F.grid_sample(grid.permute(0, 3, 1, 2), points[:, :, None], mode="bilinear", padding_mode="border",
                         align_corners=False)[..., 0].transpose(1, 2)


def warp_image(image: Tensor, grid: Tensor, *, padding_mode: str = "border") -> Tensor:
    """Sample ``image`` (B, C, H, W) at the backward ``grid`` (bilinear, align_corners=False).

    A grid of another resolution (e.g. the low-resolution output of ``FlowNet``) is first
    resized to (H, W) as a flow, bilinearly, so a coarse identity grid still copies the image.
    """
    height, width = image.shape[-2:]
    grid = grid.to(image.dtype)
    if grid.shape[1:3] != (height, width):
        flow = F.interpolate(grid_to_flow(grid), size=(height, width), mode="bilinear", align_corners=False)
        grid = flow_to_grid(flow)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def _gaussian_factors(points: Tensor, height: int, width: int, sigma: float) -> tuple[Tensor, Tensor]:
    """Separable factors of the heatmaps: (B, K, H) along y and (B, K, W) along x."""
    xs = (torch.arange(width, device=points.device, dtype=points.dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=points.device, dtype=points.dtype) * 2 + 1) / height - 1
    # exp(-40) ≈ 4e-18 (squared still a normal float32): far tails are floored rather than
    # left to underflow into denormals, which are ~25x slower on x86 CPUs.
    gy = torch.exp(-((ys - points[..., 1:]).square() / (2 * sigma**2)).clamp(max=40.0))
    gx = torch.exp(-((xs - points[..., :1]).square() / (2 * sigma**2)).clamp(max=40.0))
    return gy, gx


def keypoint_heatmaps(points: Tensor, height: int, width: int, *, sigma: float = 0.06) -> Tensor:
    """Unnormalised Gaussians exp(−|p − k|² / 2σ²) at normalised ``points`` (B, K, 2): (B, K, H, W)."""
    gy, gx = _gaussian_factors(points, height, width, sigma)
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)


def region_heatmaps(points: Tensor, regions: tuple[tuple[int, int], ...], height: int, width: int, *,
                    sigma: float = 0.06) -> Tensor:
    """``keypoint_heatmaps`` summed over each index range in ``regions``: (B, R, H, W).

    Computed as one (H, K_r) @ (K_r, W) product per region, never forming (B, K, H, W).
    """
    gy, gx = _gaussian_factors(points, height, width, sigma)
    return torch.stack([gy[:, start:end].transpose(1, 2) @ gx[:, start:end] for start, end in regions], 1)


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class ConvNormAct(nn.Sequential):
    """3x3 conv (optionally stride 2) → GroupNorm → SiLU."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
                         nn.GroupNorm(_groups(out_channels), out_channels), nn.SiLU())


class FlowNet(nn.Module):
    """U-Net that refines the landmark warp: predicts a residual flow and an occlusion mask.

    Inputs, at the network resolution (h, w): the reference, the reference warped by the TPS
    grid, the TPS flow, and per-region landmark heatmaps (target − source, and target; regions
    jaw/brows/nose/eyes/mouth for 68 points, one region otherwise), as in FOMM's dense-motion
    network (Siarohin et al. 2019). Encoder: a stem at (h, w), then one stride-2 conv block per
    further entry of ``channels``; the motion embedding ``cond`` modulates the bottleneck (FiLM
    scale/shift per channel, zero-initialised). Decoder, per level: 1x1 conv, bilinear upsampling,
    add the skip, conv block; at full resolution the block is left out and the head's 3x3 conv
    mixes the upsampled features with the stem's (it would cost ~35% of the forward on CPU).
    One head predicts the residual flow and the occlusion logit; it is
    zero-initialised, so at init the output grid is exactly the TPS grid and the occlusion is
    sigmoid(3) ≈ 0.95 (visible) everywhere. Runs channels-last (about 2x faster on CPU).
    """

    def __init__(self, *, in_channels: int, cond_dim: int, channels: tuple[int, ...] = (32, 64, 128),
                 heatmap_points: int = 68, heatmap_sigma: float = 0.06):
        super().__init__()
        self.regions = LANDMARK_REGIONS if heatmap_points == 68 else ((0, heatmap_points),)
        self.heatmap_points, self.heatmap_sigma = heatmap_points, heatmap_sigma
        self.stem = ConvNormAct(2 * in_channels + 2 + 2 * len(self.regions), channels[0])
        self.down = nn.ModuleList(ConvNormAct(a, b, stride=2) for a, b in zip(channels[:-1], channels[1:]))
        self.bottleneck = nn.Conv2d(channels[-1], channels[-1], 3, padding=1)
        self.bottleneck_norm = nn.GroupNorm(_groups(channels[-1]), channels[-1])
        self.film = nn.Linear(cond_dim, 2 * channels[-1])
        self.reduce = nn.ModuleList(nn.Conv2d(b, a, 1) for a, b in zip(channels[:-1], channels[1:]))
        self.up = nn.ModuleList(ConvNormAct(c, c) for c in channels[1:-1])  # none at full resolution
        self.head = nn.Conv2d(channels[0], 3, 3, padding=1)  # residual flow (x, y), occlusion logit
        for layer in (self.film, self.head):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.head.bias[2] = 3.0

    def features(self, reference: Tensor, tps_grid: Tensor, source_points: Tensor,
                 target_points: Tensor) -> Tensor:
        """The U-Net input (B, 2C + 2 + 2R, h, w)."""
        h, w = reference.shape[-2:]
        warped = warp_image(reference, tps_grid)
        source = region_heatmaps(source_points, self.regions, h, w, sigma=self.heatmap_sigma)
        target = region_heatmaps(target_points, self.regions, h, w, sigma=self.heatmap_sigma)
        return torch.cat([reference, warped, grid_to_flow(tps_grid), target - source, target], dim=1)

    def forward(self, reference: Tensor, tps_grid: Tensor, source_points: Tensor, target_points: Tensor,
                cond: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (grid (B, h, w, 2) = tps_grid + residual, occlusion (B, 1, h, w) in (0, 1))."""
        if tps_grid.shape[1:3] != reference.shape[-2:]:
            raise ValueError(f"tps_grid {tuple(tps_grid.shape)} must match the reference's size "
                             f"{tuple(reference.shape[-2:])}")
        if source_points.shape[1] != self.heatmap_points or target_points.shape[1] != self.heatmap_points:
            raise ValueError(f"expected {self.heatmap_points} points, got {source_points.shape[1]} "
                             f"and {target_points.shape[1]}")
        tps_grid = tps_grid.to(reference.dtype)
        inputs = self.features(reference, tps_grid, source_points.to(reference.dtype),
                               target_points.to(reference.dtype))
        x = self.stem(inputs.contiguous(memory_format=torch.channels_last))
        skips = []
        for down in self.down:
            skips.append(x)
            x = down(x)
        scale, shift = self.film(cond).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)  # (B, C, 1, 1) each
        x = x + F.silu(self.bottleneck_norm(self.bottleneck(x)) * (1 + scale) + shift)
        for level in reversed(range(len(skips))):
            x = F.interpolate(self.reduce[level](x), size=skips[level].shape[-2:], mode="bilinear",
                              align_corners=False) + skips[level]
            x = self.up[level - 1](x) if level > 0 else x
        out = self.head(x)  # (B, 3, h, w)
        return tps_grid + out[:, :2].permute(0, 2, 3, 1), torch.sigmoid(out[:, 2:].contiguous())
