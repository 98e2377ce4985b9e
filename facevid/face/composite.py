"""Transfer's paste-back as one warp of the source frame (`Composer`).

The model says where the reference face's pixels go (its final backward grid over the crop)
and what it paints on top (the denoiser's residual, the mouth refiner). Both are rendered
straight into the frame at the frame's own pixels: each output pixel inside the moved face
crop takes its source position from the model's grid, each one outside it from the carried
head's motion (crop.head_map: rigid on the head, fading to still), and across the crop's
feathered border the two positions are blended, not the pixels, so nothing is cut: the jaw,
hair and background keep one edge. The painted part is added inside the face's ellipse.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from facevid.face.crop import (
    crop_mask,
    crop_region,
    head_motion_map,
    invert_affine,
    match_colour,
    moved_transform,
)

BLEND = "head"   # where the model's positions hold (crop.crop_mask); the carried head's beyond (docs/decisions.md)


@functools.lru_cache(maxsize=8)
def _masks(side: int, blend: str) -> tuple[np.ndarray, np.ndarray]:
    """The blend and face masks at `side` (made once: a task renders many frames), read-only."""
    masks = crop_mask(side, blend), crop_mask(side, "face")
    for mask in masks:
        mask.setflags(write=False)
    return masks


def crop_pixels(matrix: np.ndarray, x0: int, y0: int, width: int, height: int):
    """(xs, ys, u, v): the frame pixels of a region and where `matrix` (frame → crop) puts them."""
    xs, ys = np.meshgrid(np.arange(x0, x0 + width, dtype=np.float32), np.arange(y0, y0 + height, dtype=np.float32))
    u = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    v = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    return xs, ys, u.astype(np.float32), v.astype(np.float32)


def sample_over_crop(image: np.ndarray, u: np.ndarray, v: np.ndarray, size: int, *,
                     border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """`image` laid over a crop of side `size` (at any resolution, pixel centres aligned as
    rescale_transform does), bilinearly sampled at crop pixels (u, v)."""
    k = np.float32(image.shape[0] / size)
    return cv2.remap(np.ascontiguousarray(image), u * k + (k - 1) / 2, v * k + (k - 1) / 2, cv2.INTER_LINEAR,
                     borderMode=border)


def grid_positions(grid: np.ndarray, u: np.ndarray, v: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the model's backward grid (f, f, 2; normalised, align_corners=False) sends crop
    pixels (u, v), in crop pixels; its flow is upsampled bilinearly, as the model's warp does."""
    f = grid.shape[0]
    centres = (np.arange(f, dtype=np.float32) * 2 + 1) / f - 1
    flow_x = grid[..., 0] - centres[None, :]
    flow_y = grid[..., 1] - centres[:, None]
    half = np.float32(size / 2)
    return (u + sample_over_crop(flow_x, u, v, size, border=cv2.BORDER_REPLICATE) * half,
            v + sample_over_crop(flow_y, u, v, size, border=cv2.BORDER_REPLICATE) * half)


class Composer:
    """Output frames from the model's `Parts` (pipeline.Parts) on a reference frame.

    `reference`: the frame the model's reference crop was cut from, `ref_transform` its
    frame → crop transform (crop side `size`). `cap`: the largest crop side the face is
    rendered at (a reference denser than that is first reduced to it)."""

    def __init__(self, size: int, reference: np.ndarray, ref_transform: np.ndarray, *, cap: int | None = None,
                 colour_match: bool = True):
        self.size, self.colour_match, self.full = size, colour_match, reference
        native = size / np.sqrt(abs(np.linalg.det(np.asarray(ref_transform)[:, :2])))   # the crop's side in frame px
        self.shrink = min(1.0, max(cap, size) / native) if cap else 1.0
        to_ref = invert_affine(ref_transform)                       # crop pixels → reference frame pixels
        if self.shrink < 1.0:
            reference = cv2.resize(reference, None, fx=self.shrink, fy=self.shrink, interpolation=cv2.INTER_AREA)
            to_ref = to_ref * self.shrink
            to_ref[:, 2] += (self.shrink - 1) / 2
        self.reference, self.to_ref = reference, to_ref
        hi = max(size, 256)
        self.blend, self.face = _masks(hi, BLEND)
        self._checked: tuple[np.ndarray | None, bool] = (None, False)

    def _is_reference(self, image: np.ndarray) -> bool:
        """`image` is the reference frame (a photo source: one warp serves face and background)."""
        if self.shrink < 1.0:
            return False
        if image is not self._checked[0]:
            same = image is self.full or (image.shape == self.full.shape and np.array_equal(image, self.full))
            self._checked = (image, same)
        return self._checked[1]

    def __call__(self, image: np.ndarray, transform: np.ndarray, change: np.ndarray | None, parts) -> np.ndarray:
        """`image` (this output frame's background, whose face has the frame → crop `transform`)
        with its head moved by `change` (crop.head_change; None: in place) and the model's face on it."""
        size = self.size
        moved = transform if change is None else moved_transform(transform, change)
        box = crop_region(moved, size, image.shape)
        head = None if change is None else head_motion_map(image.shape, transform, change, size)
        if head is None and box is None:
            return image
        if head is None:   # nothing moves about the crop: the region is the crop's, its map the identity
            (bx, by), (x0, y0, x1, y1) = box[:2], box
            map_x, map_y = crop_pixels(moved, x0, y0, x1 - x0, y1 - y0)[:2]
        else:              # the carried head's region (it holds the crop's)
            (bx, by), map_x, map_y = head
        out = image.copy()
        if box is not None:   # the crop's part of the region
            x0, y0 = max(box[0], bx), max(box[1], by)
            x1, y1 = min(box[2], bx + map_x.shape[1]), min(box[3], by + map_x.shape[0])
            box = (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
        if box is None:
            out[by:by + map_x.shape[0], bx:bx + map_x.shape[1]] = cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC,
                                                                           borderMode=cv2.BORDER_REPLICATE)
            return out
        x0, y0, x1, y1 = box
        inner = (slice(y0 - by, y1 - by), slice(x0 - bx, x1 - bx))
        _, _, u, v = crop_pixels(moved, x0, y0, x1 - x0, y1 - y0)
        su, sv = grid_positions(parts.grid, u, v, size)
        a = self.to_ref
        fx = (a[0, 0] * su + a[0, 1] * sv + a[0, 2]).astype(np.float32)
        fy = (a[1, 0] * su + a[1, 1] * sv + a[1, 2]).astype(np.float32)
        alpha = sample_over_crop(self.blend, u, v, size)
        same = self._is_reference(image)
        if same:           # positions blended: one sampling of one picture, face and background alike
            map_x[inner] += alpha * (fx - map_x[inner])
            map_y[inner] += alpha * (fy - map_y[inner])
        region = cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        face_mask = sample_over_crop(self.face, u, v, size)
        if same:
            made = region[inner].astype(np.float32)
        else:              # a video's face from its first frame, the background from this one
            back = region[inner]
            face = cv2.remap(self.reference, fx, fy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
            if self.colour_match:
                face = match_colour(face, back, face_mask)
            made = back.astype(np.float32) + alpha[..., None] * (face.astype(np.float32) - back)
        painted = sample_over_crop(parts.generated, u, v, size) * face_mask[..., None]
        region[inner] = np.clip(made + 127.5 * painted + 0.5, 0, 255).astype(np.uint8)
        out[by:by + map_x.shape[0], bx:bx + map_x.shape[1]] = region
        return out

