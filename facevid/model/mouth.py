"""The mouth refiner: a U-Net that paints the mouth of the decoder's output at the mouth's scale.

The denoiser runs at net_size, where a mouth is ~13 px wide and its 1-step posterior mean stays
close to the warp: an opened mouth comes out as the source's lips stretched over the gap, with
no cavity or teeth (the same failure as the classical landmark warp). The refiner cuts a
window around the target mouth from the output (at out_size, resampled to mouth_size), and
beside it the same window around the reference's mouth (how this face's lips and teeth look)
and masks of the target's and the reference's lips (iBUG 68 points 48–59 outer, 60–67 inner,
the gap between the inner lips is where the cavity goes). It predicts a correction of the
window, faded out towards the window's edge and resampled back into the output.

It is trained after the rest of the model, on the model's own outputs of real clips
(facevid.train.mouth), to turn them into the real frames: the mouth is what it gets to change.
The last layer starts at zero, so an untrained refiner changes nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facevid.face.landmarks import INNER_LIPS, OUTER_LIPS
from facevid.model.layers import ResBlock

WINDOW_SCALE = 1.8    # the window's side, in widths of the mouth (its outer lips' extent)
FADE = (0.75, 0.95)   # the correction fades from full to none between these window radii


def mouth_boxes(points: torch.Tensor, scale: float = WINDOW_SCALE) -> torch.Tensor:
    """(N, 3) centre x, centre y and half side, in [-1, 1] crop units, of a square window around
    the mouth of each set of 68 landmarks (N, 68, 2) in the same units."""
    lips = points[:, OUTER_LIPS]
    low, high = lips.amin(1), lips.amax(1)
    centre = (low + high) / 2
    half = ((high - low).amax(1) * scale / 2).clamp(min=0.05)   # a degenerate mouth still gets a window
    return torch.cat([centre, half[:, None]], 1)


def cut(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Windows (N, C, size, size) of images (N, C, H, W) at boxes (N, 3), bilinear."""
    zero = torch.zeros_like(boxes[:, 0])
    theta = torch.stack([torch.stack([boxes[:, 2], zero, boxes[:, 0]], 1),
                         torch.stack([zero, boxes[:, 2], boxes[:, 1]], 1)], 1)      # (N, 2, 3)
    grid = F.affine_grid(theta, [len(images), images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def uncut(windows: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Windows (N, C, w, w) put back at boxes (N, 3) on a zero canvas (N, C, size, size)."""
    zero = torch.zeros_like(boxes[:, 0])
    scale = 1 / boxes[:, 2]
    theta = torch.stack([torch.stack([scale, zero, -boxes[:, 0] * scale], 1),
                         torch.stack([zero, scale, -boxes[:, 1] * scale], 1)], 1)
    grid = F.affine_grid(theta, [len(windows), windows.shape[1], size, size], align_corners=False)
    return F.grid_sample(windows, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def polygon_mask(polygons: torch.Tensor, boxes: torch.Tensor, size: int, supersample: int = 2) -> torch.Tensor:
    """(N, 1, size, size) share of each window pixel inside the polygon (N, P, 2) (crop units; an
    even-odd crossing test on supersample² points per pixel)."""
    n = size * supersample
    steps = (torch.arange(n, device=polygons.device, dtype=polygons.dtype) * 2 + 1) / n - 1   # window units
    # window pixel centres in crop units
    x = boxes[:, None, None, 0] + boxes[:, None, None, 2] * steps[None, None, :]            # (N, 1, n)
    y = boxes[:, None, None, 1] + boxes[:, None, None, 2] * steps[None, :, None]            # (N, n, 1)
    a, b = polygons, polygons.roll(-1, 1)                                                  # edges a → b
    inside = torch.zeros(len(polygons), n, n, dtype=torch.bool, device=polygons.device)
    for i in range(polygons.shape[1]):
        ax, ay = a[:, i, 0, None, None], a[:, i, 1, None, None]
        bx, by = b[:, i, 0, None, None], b[:, i, 1, None, None]
        spans = (ay > y) != (by > y)                                                       # (N, n, 1)
        dy = torch.where((by - ay).abs() < 1e-9, torch.full_like(by, 1e-9), by - ay)
        crossing = x < ax + (bx - ax) * (y - ay) / dy                                      # (N, n, n)
        inside ^= spans & crossing
    return F.avg_pool2d(inside[:, None].to(polygons.dtype), supersample)


def fade(size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(size, size) 1 in the window's middle, 0 at its edge (FADE radii, max-norm, smoothstep)."""
    steps = (torch.arange(size, device=device, dtype=dtype) * 2 + 1) / size - 1
    radius = torch.maximum(steps[None].abs(), steps[:, None].abs())
    t = ((FADE[1] - radius) / (FADE[1] - FADE[0])).clamp(0, 1)
    return t * t * (3 - 2 * t)


class MouthRefiner(nn.Module):
    """U-Net over the mouth window: a stem at `size`, a stride-2 stage per further width,
    two blocks at the bottom, bilinear upsampling with skip connections back up."""

    IN_CHANNELS = 3 + 3 + 2 + 2   # output window, reference window, target lips (outer, inner), reference lips

    def __init__(self, size: int, channels: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        self.size, self.channels = size, tuple(channels)
        self.stem = ResBlock(self.IN_CHANNELS, channels[0])
        self.down = nn.ModuleList(ResBlock(a, b) for a, b in zip(channels[:-1], channels[1:]))
        self.middle = ResBlock(channels[-1], channels[-1])
        self.up = nn.ModuleList(ResBlock(b + a, a) for a, b in zip(channels[:-1], channels[1:]))
        self.head = nn.Conv2d(channels[0], 3, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def inputs(self, output: torch.Tensor, reference: torch.Tensor, ref_points: torch.Tensor,
               points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The U-Net input (N, 10, w, w) and the target windows' boxes (N, 3)."""
        boxes, ref_boxes = mouth_boxes(points), mouth_boxes(ref_points)
        w = self.size
        lips = [polygon_mask(p[:, part], b, w) for p, b in ((points, boxes), (ref_points, ref_boxes))
                for part in (OUTER_LIPS, INNER_LIPS)]
        x = torch.cat([cut(output, boxes, w), cut(reference, ref_boxes, w), *lips], 1)
        return x, boxes

    def correction(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 10, w, w) → the window's correction (N, 3, w, w), faded towards the edge."""
        h = self.stem(x)
        skips = []
        for block in self.down:
            skips.append(h)
            h = block(F.avg_pool2d(h, 2))
        h = self.middle(h)
        for block, skip in zip(reversed(self.up), reversed(skips)):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], 1))
        return self.head(h) * fade(self.size, x.device, x.dtype)

    def forward(self, output: torch.Tensor, reference: torch.Tensor, ref_points: torch.Tensor,
                points: torch.Tensor) -> torch.Tensor:
        """Output frames (N, 3, S, S) with the mouth repainted; `reference` (N, 3, S, S) and its 68
        landmarks `ref_points` (N, 68, 2), the target landmarks `points` (N, 68, 2), in [-1, 1]."""
        x, boxes = self.inputs(output, reference, ref_points, points)
        return (output + uncut(self.correction(x), boxes, output.shape[-1])).clamp(-1, 1)
