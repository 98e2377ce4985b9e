"""Procedural talking heads with known factors, rendered directly in aligned-crop space.

A synthetic counterpart of the Sprites data set used to test sequential disentanglement,
but with faces: every clip has one :class:`Identity` (shape, colours, hair: the *content*)
and every frame one :class:`Motion` (head pose and expression: the *dynamics*). Because
both are known exactly, a model's content and motion codes can be probed against them.

The head is a small 3-D model (a tapered, sheared ellipsoid with features lying on its
surface, a hair volume, ears, a neck). Points are rotated by yaw/pitch/roll, projected
with an orthographic camera into a crop laid out like an aligned face crop (eyes about
40% from the top, chin near 85-90%), filled with OpenCV polygons at 2-3x the output
resolution and area-downscaled (anti-aliasing), then shaded per pixel with a Lambertian
light on the head ellipsoid. :func:`landmarks` returns the iBUG/dlib 68-point layout,
computed from the same projected points the renderer draws.

Everything is deterministic (no global random state): randomness only enters through
the ``numpy.random.Generator`` given to :func:`random_identity`,
:func:`random_motion_sequence` and :func:`make_dataset`.

Coordinates: the head frame has x to the image right, y down, z toward the camera, in
units of the crop side, with its origin at the head centre; the head turns about a
point slightly behind and below it. Landmarks are in output pixel coordinates with
pixel centres at integers (the image spans [-0.5, size - 0.5]).

Speed (one core): roughly 800-1100 frames/s at 64x64 and 600-700 at 128x128.
"""

from __future__ import annotations

from facevid.synthetic.dataset import make_dataset
from facevid.synthetic.factors import (
    HAIR_STYLES,
    IDENTITY_FACTORS,
    IDENTITY_RANGES,
    MOTION_FACTORS,
    MOTION_RANGES,
    Identity,
    Motion,
    identity_from_vector,
    identity_vector,
    motion_from_vector,
    motion_vector,
)
from facevid.synthetic.geometry import landmarks, landmarks_clip
from facevid.synthetic.render import render, render_clip
from facevid.synthetic.sampling import random_identity, random_motion_sequence

__all__ = [
    "Identity",
    "Motion",
    "IDENTITY_FACTORS",
    "MOTION_FACTORS",
    "MOTION_RANGES",
    "IDENTITY_RANGES",
    "HAIR_STYLES",
    "random_identity",
    "random_motion_sequence",
    "render",
    "render_clip",
    "landmarks",
    "landmarks_clip",
    "identity_vector",
    "identity_from_vector",
    "motion_vector",
    "motion_from_vector",
    "make_dataset",
]
