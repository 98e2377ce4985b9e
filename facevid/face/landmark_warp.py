"""The classical landmark warp: a piecewise-affine warp of an image over Delaunay triangles of
its landmarks plus fixed border points (the peer every transfer is judged beside)."""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay


def border_points(width: int, height: int, per_side: int = 4) -> np.ndarray:
    """Points along the image border (corners included) that the warp keeps in place."""
    t = np.linspace(0, 1, per_side + 1)
    w, h = width - 1, height - 1
    top = np.stack([t * w, np.zeros_like(t)], 1)
    bottom = np.stack([t * w, np.full_like(t, h)], 1)
    left = np.stack([np.zeros_like(t[1:-1]), t[1:-1] * h], 1)
    right = np.stack([np.full_like(t[1:-1], w), t[1:-1] * h], 1)
    return np.concatenate([top, bottom, left, right])


def piecewise_affine_warp(image: np.ndarray, source_points: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    """Move `image` content at source_points (K, 2) to target_points (K, 2), pixel units."""
    h, w = image.shape[:2]
    anchors = border_points(w, h)
    src = np.concatenate([source_points, anchors]).astype(np.float64)
    dst = np.concatenate([target_points, anchors]).astype(np.float64)
    dst[:, 0] = dst[:, 0].clip(0, w - 1)
    dst[:, 1] = dst[:, 1].clip(0, h - 1)
    triangles = Delaunay(dst)
    ys, xs = np.mgrid[0:h, 0:w]
    pixels = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    simplex = triangles.find_simplex(pixels)
    inside = simplex >= 0
    simplex = np.where(inside, simplex, 0)
    affine = triangles.transform[simplex]                          # (P, 3, 2)
    bary2 = np.einsum("pij,pj->pi", affine[:, :2], pixels - affine[:, 2])
    bary = np.concatenate([bary2, 1 - bary2.sum(1, keepdims=True)], 1)   # (P, 3)
    corners = src[triangles.simplices[simplex]]                    # (P, 3, 2)
    mapped = np.einsum("pi,pij->pj", bary, corners)
    mapped[~inside] = pixels[~inside]
    map_x = mapped[:, 0].reshape(h, w).astype(np.float32)
    map_y = mapped[:, 1].reshape(h, w).astype(np.float32)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
