"""Drawing a synthetic head: polygons at 2-3x, area-downscaled, Lambertian shading."""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from facevid.synthetic.factors import Identity, Motion
from facevid.synthetic.geometry import (
    _LIGHT,
    _NECK_FOLLOW,
    _PIVOT,
    _SHIFT,
    _SS_PIXELS,
    _frame,
    _Head,
    _project,
    _rotation,
)


def _col(c, k=1.0) -> tuple[float, float, float]:
    return (min(255.0, c[0] * 255.0 * k), min(255.0, c[1] * 255.0 * k), min(255.0, c[2] * 255.0 * k))


@functools.lru_cache(maxsize=8)
def _gradient(n: int) -> np.ndarray:
    """(n, n, 1) float32 brightness of the backdrop: lighter at the top, a soft glow behind the head."""
    y = (np.arange(n) + 0.5) / n
    x = (np.arange(n) + 0.5) / n
    g = 1.12 - 0.3 * y[:, None] - 0.08 * (x[None, :] - 0.5) ** 2
    glow = 0.12 * np.exp(-(((x[None, :] - 0.42) ** 2 + (y[:, None] - 0.35) ** 2) / 0.08))
    return (255.0 * (g + glow))[..., None].astype(np.float32)


_ARC = np.linspace(np.pi, 2 * np.pi, 24)
_SHOULDERS = np.concatenate([np.stack([0.5 + 0.52 * np.cos(_ARC), 1.13 + 0.2 * np.sin(_ARC)], 1), [[1.05, 1.2], [-0.05, 1.2]]])


@functools.lru_cache(maxsize=64)
def _backdrop(identity: Identity, n: int) -> np.ndarray:
    """Background gradient with the (static) shoulders, at the supersampled size."""
    img = np.minimum(_gradient(n) * np.asarray(identity.background, np.float32), 255.0).astype(np.uint8)
    p = np.round(_SHOULDERS * n * (1 << _SHIFT) - 0.5 * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(img, [p], _col(identity.clothes), cv2.LINE_8, _SHIFT)
    img.setflags(write=False)
    return img


@functools.lru_cache(maxsize=8)
def _grid(size: int):
    c = (np.arange(size, dtype=np.float32) + np.float32(0.5)) / np.float32(size)
    u = np.broadcast_to(c[None, :] - 0.5, (size, size)).copy()
    v = np.broadcast_to(c[:, None], (size, size)).copy()
    return u, v


def _shade(h: _Head, R: np.ndarray, size: int) -> np.ndarray:
    """Per-pixel Lambert shading of the (slightly inflated) head ellipsoid; (size, size) float32.

    Pixels whose ray misses the ellipsoid take the normal of the nearest ray point, so
    shading continues smoothly over hair and the neck.
    """
    u, vv = _grid(size)
    v = vv - np.float32(h.pivot_y)
    D = h.shade_axes.astype(np.float32)
    R = R.astype(np.float32)
    k = (_PIVOT - R.T @ _PIVOT).astype(np.float32)  # head-frame point p = R^T (u, v, t) + k
    o0 = R[0, 0] * u + R[1, 0] * v + k[0]
    o1 = R[0, 1] * u + R[1, 1] * v + k[1]
    o2 = R[0, 2] * u + R[1, 2] * v + k[2]
    d = R[2]
    A = float((d * d * D).sum())
    B = 2.0 * (o0 * (d[0] * D[0]) + o1 * (d[1] * D[1]) + o2 * (d[2] * D[2]))
    C = o0 * o0 * D[0] + o1 * o1 * D[1] + o2 * o2 * D[2] - 1.0
    t = (np.sqrt(np.maximum(B * B - 4.0 * A * C, 0.0)) - B) * (0.5 / A)
    n0 = (o0 + t * d[0]) * D[0]
    n1 = (o1 + t * d[1]) * D[1]
    n2 = (o2 + t * d[2]) * D[2]
    Lh = (R.T @ _LIGHT).astype(np.float32)
    nl = (n0 * Lh[0] + n1 * Lh[1] + n2 * Lh[2]) / np.sqrt(n0 * n0 + n1 * n1 + n2 * n2 + np.float32(1e-12))
    return np.float32(0.62) + np.float32(0.5) * np.maximum(nl, np.float32(0.0))


_SCLERA = (240, 238, 232)
_PUPIL = (12, 10, 10)
_MOUTH_IN = (70, 18, 22)
_TEETH = (245, 243, 236)


class _Canvas:
    """The supersampled frame being drawn (n x n): the parts' points in fixed-point pixels, the
    image, and the mask of what is shaded (skin, ears, hair)."""

    def __init__(self, identity: Identity, fr, n: int):
        one = 1 << _SHIFT
        self.n, self.one, self.parts = n, one, fr.parts
        self.pts = np.rint(fr.q * (n * one) - 0.5 * one).astype(np.int32)
        try:
            self.img = _backdrop(identity, n).copy()
        except TypeError:  # unhashable field values
            self.img = _backdrop.__wrapped__(identity, n).copy()
        self.mask = np.zeros((n, n), np.uint8)

    def poly(self, name: str) -> np.ndarray:
        return self.pts[self.parts[name]]

    def fill(self, p, colour, to_mask=False, hull=False) -> None:
        if hull:
            p = cv2.convexHull(p)
        cv2.fillPoly(self.img, [p], colour, _AA, _SHIFT)
        if to_mask:
            cv2.fillPoly(self.mask, [p], 255, cv2.LINE_8, _SHIFT)

    def line(self, p, colour, width: int) -> None:
        cv2.polylines(self.img, [p], False, colour, width, _AA, _SHIFT)


_AA = cv2.LINE_8  # anti-aliasing comes from the supersampling


def _draw_head(canvas: _Canvas, idn: Identity, motion: Motion, h) -> None:
    """Back to front: long hair, neck, hair, the far ear, the face, the near ear, the fringe."""
    fill, poly, P, n, one = canvas.fill, canvas.poly, canvas.parts, canvas.n, canvas.one
    skin = idn.skin
    hair = _col(idn.hair)
    if "long" in P:
        fill(poly("long"), hair, True, True)
    Rn = _rotation(motion.yaw * _NECK_FOLLOW[0], motion.pitch * _NECK_FOLLOW[1], motion.roll * _NECK_FOLLOW[2])
    neck = _project(h.neck, Rn, h.pivot_y)
    fill(np.round(neck[:, :2] * (n * one) - 0.5 * one).astype(np.int32), _col(skin, 0.52), False, True)
    if "hair" in P:
        fill(poly("hair"), hair, True, True)

    def ears(near: bool):
        if h.style == "long":
            return
        for side, tag in ((-1.0, "l"), (1.0, "r")):
            if (side * math.sin(motion.yaw) <= 0.0) != near:
                continue
            fill(poly("ear_" + tag), _col(skin, 0.93), True, True)
            fill(poly("earin_" + tag), _col(skin, 0.72), False, True)

    ears(False)
    fill(poly("skin"), _col(skin), True, True)
    ears(True)
    if "fringe" in P:
        fill(poly("fringe"), hair, True)


def _draw_eyes(canvas: _Canvas, idn: Identity, h) -> None:
    """Eyes (sclera, iris, pupil, highlight, upper lid line) and brows."""
    fill, poly, n = canvas.fill, canvas.poly, canvas.n
    lid = _col(idn.skin, 0.25)
    lid_w = max(1, round(0.015 * n))
    for tag in ("l", "r"):
        fill(poly("eye_" + tag), _SCLERA)
        iris = poly("iris_" + tag)
        fill(iris[:16], _col(idn.eyes))
        fill(iris[16:32], _PUPIL)
        fill(iris[32:], (255, 255, 255))
        canvas.line(poly("eye_" + tag)[:13], lid, lid_w)
    brow_col = _col(idn.hair if h.style != "bald" else tuple(0.5 * np.asarray(idn.skin)), 0.8)
    fill(poly("brow_l"), brow_col)
    fill(poly("brow_r"), brow_col)


def _draw_mouth_and_nose(canvas: _Canvas, idn: Identity, fr) -> None:
    fill, poly = canvas.fill, canvas.poly
    fill(poly("lips"), _col(idn.lips))
    # the seam between the lips; once the mouth opens, the interior covers it gradually
    canvas.line(poly("seam"), _col(idn.lips, 0.45), max(1, round(0.008 * canvas.n)))
    if fr.gap > 0.002:
        fill(poly("inner"), _MOUTH_IN)
    if fr.gap > 0.004:
        fill(poly("teeth"), _TEETH)
    fill(canvas.pts[fr.head.nose_idx], _col(idn.skin, 0.9), False, True)
    fill(poly("nostril_l"), _col(idn.skin, 0.45))
    fill(poly("nostril_r"), _col(idn.skin, 0.45))


def render(identity: Identity, motion: Motion, size: int = 64) -> np.ndarray:
    """Render one frame: (size, size, 3) uint8 RGB. Deterministic."""
    size = int(size)
    if size < 8:
        raise ValueError(f"size must be at least 8, got {size}")
    n = size * max(2, -(-_SS_PIXELS // size))  # 64 -> 3x, 128 -> 2x
    fr = _frame(identity, motion)
    canvas = _Canvas(identity, fr, n)
    _draw_head(canvas, identity, motion, fr.head)
    _draw_eyes(canvas, identity, fr.head)
    _draw_mouth_and_nose(canvas, identity, fr)
    small = cv2.resize(canvas.img, (size, size), interpolation=cv2.INTER_AREA)
    msk = cv2.resize(canvas.mask, (size, size), interpolation=cv2.INTER_AREA)
    shade = _shade(fr.head, fr.R, (size + 1) // 2)
    shade = cv2.resize(shade, (size, size), interpolation=cv2.INTER_LINEAR)
    factor = 1.0 + msk.astype(np.float32) * np.float32(1.0 / 255.0) * (shade - np.float32(1.0))
    out = small.astype(np.float32) * factor[..., None]
    out += 0.5
    return np.clip(out, 0, 255).astype(np.uint8)


def render_clip(identity: Identity, motions, size: int = 64) -> np.ndarray:
    """(T, size, size, 3) uint8 frames."""
    if len(motions) == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([render(identity, m, size) for m in motions])
