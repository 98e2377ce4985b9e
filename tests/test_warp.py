"""Thin-plate-spline warp, grid/flow conventions, heatmaps and FlowNet (facevid.model.warp)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from facevid.model.warp import (
    FlowNet,
    border_anchors,
    flow_to_grid,
    grid_to_flow,
    identity_grid,
    keypoint_heatmaps,
    region_heatmaps,
    tps_coefficients,
    tps_grid,
    warp_image,
)


def random_points(batch: int = 2, count: int = 68, *, seed: int = 0, spread: float = 0.6) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, count, 2, generator=generator) * 2 - 1) * spread


def to_pixel(point: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised coordinate → pixel index (align_corners=False)."""
    return (point + 1) * size / 2 - 0.5


def test_identity_grid_is_pixel_centres_and_copies_the_image():
    grid = identity_grid(2, 4, 8)
    assert grid.shape == (2, 4, 8, 2)
    assert torch.allclose(grid[0, 0, 0], torch.tensor([-1 + 1 / 8, -1 + 1 / 4]))
    assert torch.allclose(grid[0, -1, -1], torch.tensor([1 - 1 / 8, 1 - 1 / 4]))
    image = torch.randn(2, 3, 4, 8)
    assert torch.allclose(warp_image(image, grid), image, atol=1e-6)


def test_border_anchors_lie_on_the_border():
    anchors = border_anchors(4)
    assert anchors.shape == (20, 2)
    assert torch.all((anchors.abs() - 1).abs().amin(-1) < 1e-6)  # |x| = 1 or |y| = 1
    assert len({tuple(p) for p in anchors.tolist()}) == 20
    assert border_anchors(0).shape == (4, 2)


@pytest.mark.parametrize("anchors", [None, border_anchors()])
def test_tps_with_equal_points_is_the_identity(anchors):
    points = random_points()
    grid = tps_grid(points, points.clone(), 64, 64, anchors=anchors)
    assert torch.allclose(grid, identity_grid(2, 64, 64), atol=1e-4)
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    warped = warp_image(image, grid)
    assert torch.allclose(warped[..., 1:-1, 1:-1], image[..., 1:-1, 1:-1], atol=1e-5)


def test_tps_moves_a_blob_from_the_source_point_to_the_target_point():
    size = 64
    angles = torch.arange(8) * torch.pi / 4
    fixed = 0.75 * torch.stack([angles.cos(), angles.sin()], -1)  # (8, 2) points that stay put
    source = torch.cat([torch.tensor([[-0.3, 0.2]]), fixed])[None]
    target = torch.cat([torch.tensor([[0.15, -0.1]]), fixed])[None]
    blob = keypoint_heatmaps(source[:, :1], size, size, sigma=0.05)  # (1, 1, H, W), peak at source
    warped = warp_image(blob, tps_grid(source, target, size, size, anchors=border_anchors()))
    row, col = divmod(int(warped.flatten().argmax()), size)
    expected = to_pixel(target[0, 0], size)
    assert abs(col - float(expected[0])) <= 1 and abs(row - float(expected[1])) <= 1
    left = to_pixel(source[0, 0], size).round().long()
    assert warped[0, 0, left[1], left[0]] < 0.01 * warped.max()  # nothing left where it was


def test_translation_gives_a_constant_backward_flow():
    source = random_points()
    shift = torch.tensor([0.12, -0.07])
    flow = grid_to_flow(tps_grid(source, source + shift, 32, 32))  # (B, 2, H, W)
    expected = (-shift).view(1, 2, 1, 1).expand_as(flow)  # backward: sample at p - shift
    assert torch.allclose(flow, expected, atol=1e-4)


def test_affine_motion_is_carried_by_the_affine_part_alone():
    source = random_points().double()
    matrix = torch.tensor([[1.1, 0.2], [-0.15, 0.9]], dtype=torch.float64)
    offset = torch.tensor([0.05, -0.1], dtype=torch.float64)
    target = source @ matrix.T + offset
    _, weights, affine = tps_coefficients(source, target)
    inverse = torch.linalg.inv(matrix)
    assert weights.abs().max() < 1e-9
    assert torch.allclose(affine[:, 1:], inverse.T.expand(2, 2, 2), atol=1e-9)
    assert torch.allclose(affine[:, 0], (-inverse @ offset).expand(2, 2), atol=1e-9)
    grid = tps_grid(source.float(), target.float(), 16, 16)
    expected = (identity_grid(2, 16, 16).double() - offset) @ inverse.T
    assert torch.allclose(grid.double(), expected, atol=1e-4)


def test_anchors_keep_the_border_still():
    source = random_points()
    target = source + torch.tensor([0.15, -0.1])
    deviation = (tps_grid(source, target, 64, 64, anchors=border_anchors()) - identity_grid(2, 64, 64)).abs()
    border = torch.cat([deviation[:, 0], deviation[:, -1], deviation[:, :, 0], deviation[:, :, -1]], 1)
    assert border.max() < 0.025  # vs 0.15 without anchors (about 0.6 px at 64 x 64)
    assert torch.allclose(deviation[:, 32, 32], torch.tensor([0.15, 0.1]).expand(2, 2), atol=1e-3)


def test_tps_is_differentiable_in_both_point_sets():
    source = random_points().requires_grad_()
    target = (random_points(seed=1) * 0.5 + source.detach() * 0.5).requires_grad_()
    image = torch.rand(2, 3, 32, 32)
    warped = warp_image(image, tps_grid(source, target, 32, 32, anchors=border_anchors()))
    warped.square().mean().backward()
    for points in (source, target):
        assert torch.isfinite(points.grad).all() and points.grad.abs().sum() > 0


def test_flow_grid_round_trip():
    grid = identity_grid(2, 8, 12) + 0.1 * torch.randn(2, 8, 12, 2)
    flow = grid_to_flow(grid)
    assert flow.shape == (2, 2, 8, 12)
    assert torch.allclose(flow_to_grid(flow), grid, atol=1e-6)


def test_warp_image_upsamples_a_low_resolution_grid():
    image = torch.rand(2, 3, 128, 128) * 2 - 1
    assert torch.allclose(warp_image(image, identity_grid(2, 32, 32)), image, atol=1e-5)
    shift = torch.tensor([0.1, -0.05])  # a constant flow upsamples to the same constant flow
    low, full = identity_grid(2, 32, 32) + shift, identity_grid(2, 128, 128) + shift
    assert torch.allclose(warp_image(image, low), warp_image(image, full), atol=1e-5)


def test_heatmaps_peak_at_the_points():
    points = torch.tensor([[[-0.5, 0.25], [0.3, -0.7], [0.0, 0.0]]])
    maps = keypoint_heatmaps(points, 32, 48)
    assert maps.shape == (1, 3, 32, 48)
    for k in range(3):
        row, col = divmod(int(maps[0, k].argmax()), 48)
        x, y = to_pixel(points[0, k, 0], 48), to_pixel(points[0, k, 1], 32)
        assert abs(col - float(x)) <= 0.5 and abs(row - float(y)) <= 0.5
    assert maps.max() <= 1 and maps.min() >= 0
    summed = region_heatmaps(points, ((0, 2), (2, 3)), 32, 48)
    assert torch.allclose(summed, torch.stack([maps[:, :2].sum(1), maps[:, 2]], 1), atol=1e-6)


def flow_inputs(batch: int = 2, size: int = 32, cond_dim: int = 8):
    source = random_points(batch)
    target = source + 0.05 * torch.randn(batch, 68, 2, generator=torch.Generator().manual_seed(3))
    grid = tps_grid(source, target, size, size, anchors=border_anchors())
    reference = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(4)) * 2 - 1
    return reference, grid, source, target, torch.randn(batch, cond_dim)


def test_flownet_starts_as_the_tps_warp():
    torch.manual_seed(0)
    net = FlowNet(in_channels=3, cond_dim=8)  # the default (32, 64, 128) at 64 x 64
    reference, grid, source, target, cond = flow_inputs(size=64)
    out_grid, occlusion = net(reference, grid, source, target, cond)
    assert out_grid.shape == (2, 64, 64, 2) and occlusion.shape == (2, 1, 64, 64)
    assert torch.equal(out_grid, grid)
    assert occlusion.min() > 0.9 and occlusion.max() < 1


def test_flownet_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    net = FlowNet(in_channels=3, cond_dim=8, channels=(8, 16, 32))
    torch.nn.init.normal_(net.head.weight, std=0.01)  # the zero-initialised head blocks gradients
    reference, grid, source, target, cond = flow_inputs()
    out_grid, occlusion = net(reference, grid, source, target, cond)
    warped = warp_image(reference, out_grid) * occlusion
    F.mse_loss(warped, torch.randn_like(warped)).backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_flownet_rejects_mismatched_inputs():
    net = FlowNet(in_channels=3, cond_dim=8, channels=(8, 16))
    reference, grid, source, target, cond = flow_inputs()
    with pytest.raises(ValueError, match="tps_grid"):
        net(reference, grid[:, :16, :16], source, target, cond)
    with pytest.raises(ValueError, match="68 points"):
        net(reference, grid, source[:, :10], target[:, :10], cond)
