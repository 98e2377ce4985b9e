"""Array conversions between video frames (uint8 RGB) and model tensors ([-1, 1])."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from facevid.errors import InputError


def to_tensor(frames: np.ndarray, size: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 → (T, 3, size, size) float in [-1, 1]."""
    if frames.shape[1] != size:
        frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8(image) -> np.ndarray:
    """(3, H, W) tensor/array in [-1, 1] or (H, W, 3) uint8 → (H, W, 3) uint8."""
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if array.dtype == np.uint8:
        return array
    if array.shape[0] == 3 and array.ndim == 3:
        array = array.transpose(1, 2, 0)
    return np.clip((array + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def points_to_unit(points: np.ndarray, size: int) -> np.ndarray:
    """Crop pixel coordinates (pixel i's centre at i) → the model's [-1, 1] coordinates, where
    -1 and 1 are the crop's outer edges (grid_sample's align_corners=False)."""
    return (2 * points + 1) / size - 1


def unit_to_points(unit: np.ndarray, size: int) -> np.ndarray:
    """The inverse of points_to_unit."""
    return (unit + 1) * size / 2 - 0.5


def as_rgb(image, what: str = "a frame") -> np.ndarray:
    """A caller's frame as (H, W, 3) uint8 RGB, C-contiguous; InputError (naming `what`) otherwise."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"{what} must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)
