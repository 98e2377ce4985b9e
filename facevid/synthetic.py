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

import colorsys
import functools
import math
from dataclasses import dataclass, fields

import cv2
import numpy as np

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

RGB = tuple[float, float, float]

HAIR_STYLES = ("bald", "short", "long", "fringe")


@dataclass(frozen=True)
class Identity:
    """What stays constant over a clip. Lengths are fractions of the crop side."""

    face_width: float = 0.63  # full head width
    face_height: float = 0.46  # eye line to chin
    jaw: float = 0.5  # 0 pointed (V) .. 1 square
    skin: RGB = (0.90, 0.72, 0.58)
    hair: RGB = (0.25, 0.15, 0.08)
    eyes: RGB = (0.35, 0.22, 0.12)  # iris
    lips: RGB = (0.75, 0.38, 0.38)
    background: RGB = (0.55, 0.65, 0.75)
    clothes: RGB = (0.25, 0.35, 0.55)
    hair_style: int = 1  # index into HAIR_STYLES
    hair_volume: float = 0.035  # thickness of the hair shell
    hairline: float = 0.5  # 0 low forehead .. 1 high forehead
    hair_part: float = 0.0  # -1 .. 1: where the hairline peaks (side parting)
    eye_spacing: float = 0.25  # centre to centre
    eye_size: float = 0.09  # eye width
    eye_openness: float = 0.45  # eye height / width
    iris_size: float = 0.55  # iris radius / eye half-width
    eye_tilt: float = 0.0  # outer corners up (+) or down (-), crop units
    brow_thickness: float = 0.02
    brow_arch: float = 0.012
    nose_length: float = 0.165  # eye line to nose base
    nose_width: float = 0.045  # half-width of the nostrils
    nose_protrusion: float = 0.065
    mouth_width: float = 0.085  # half-width
    mouth_offset: float = 0.085  # nose base to mouth line
    upper_lip: float = 0.014
    lower_lip: float = 0.02
    ear_size: float = 0.075


@dataclass(frozen=True)
class Motion:
    """What changes from frame to frame. Angles in radians."""

    yaw: float = 0.0  # +: face turns toward the image right  (range about +-0.5)
    pitch: float = 0.0  # +: face tilts down                    (about +-0.3)
    roll: float = 0.0  # +: eye line rotates clockwise (angle of the eye line, y down) (about +-0.3)
    mouth_open: float = 0.0  # 0 closed .. 1 wide open
    smile: float = 0.0  # -1 frown .. 1 smile
    blink: float = 0.0  # 0 open .. 1 closed (both eyes)
    brows: float = 0.0  # -1 lowered .. 1 raised


MOTION_FACTORS: tuple[str, ...] = ("yaw", "pitch", "roll", "mouth_open", "smile", "blink", "brows")
MOTION_RANGES: dict[str, tuple[float, float]] = {
    "yaw": (-0.5, 0.5),
    "pitch": (-0.3, 0.3),
    "roll": (-0.3, 0.3),
    "mouth_open": (0.0, 1.0),
    "smile": (-1.0, 1.0),
    "blink": (0.0, 1.0),
    "brows": (-1.0, 1.0),
}

_COLOUR_FIELDS = ("skin", "hair", "eyes", "lips", "background", "clothes")


def _identity_factor_names() -> tuple[str, ...]:
    names: list[str] = []
    for f in fields(Identity):
        if f.name in _COLOUR_FIELDS:
            names += [f"{f.name}_r", f"{f.name}_g", f"{f.name}_b"]
        else:
            names.append(f.name)
    return tuple(names)


IDENTITY_FACTORS: tuple[str, ...] = _identity_factor_names()

# Ranges random_identity draws scalar factors from (also documents sensible values).
IDENTITY_RANGES: dict[str, tuple[float, float]] = {
    "face_width": (0.56, 0.70),
    "face_height": (0.43, 0.47),
    "jaw": (0.0, 1.0),
    "hair_volume": (0.02, 0.06),
    "hairline": (0.0, 1.0),
    "hair_part": (-1.0, 1.0),
    "eye_spacing": (0.22, 0.28),
    "eye_size": (0.075, 0.10),
    "eye_openness": (0.35, 0.55),
    "iris_size": (0.45, 0.65),
    "eye_tilt": (-0.008, 0.012),
    "brow_thickness": (0.012, 0.028),
    "brow_arch": (0.0, 0.02),
    "nose_length": (0.14, 0.185),
    "nose_width": (0.035, 0.055),
    "nose_protrusion": (0.045, 0.085),
    "mouth_width": (0.07, 0.10),
    "mouth_offset": (0.07, 0.095),
    "upper_lip": (0.010, 0.018),
    "lower_lip": (0.014, 0.024),
    "ear_size": (0.065, 0.095),
}


# ----------------------------------------------------------------------------- vectors


def identity_vector(identity: Identity) -> np.ndarray:
    """Flat float64 array in the order of IDENTITY_FACTORS (colours as r, g, b)."""
    out: list[float] = []
    for f in fields(Identity):
        v = getattr(identity, f.name)
        if f.name in _COLOUR_FIELDS:
            out += [float(c) for c in v]
        else:
            out.append(float(v))
    return np.asarray(out, dtype=np.float64)


def identity_from_vector(vector) -> Identity:
    """Inverse of identity_vector (hair_style is rounded to the nearest style)."""
    v = np.asarray(vector, dtype=np.float64).ravel()
    if v.size != len(IDENTITY_FACTORS):
        raise ValueError(f"expected {len(IDENTITY_FACTORS)} values, got {v.size}")
    kw: dict = {}
    i = 0
    for f in fields(Identity):
        if f.name in _COLOUR_FIELDS:
            kw[f.name] = (float(v[i]), float(v[i + 1]), float(v[i + 2]))
            i += 3
        elif f.name == "hair_style":
            kw[f.name] = int(np.clip(round(v[i]), 0, len(HAIR_STYLES) - 1))
            i += 1
        else:
            kw[f.name] = float(v[i])
            i += 1
    return Identity(**kw)


def motion_vector(motion: Motion) -> np.ndarray:
    """Flat float64 array in the order of MOTION_FACTORS."""
    return np.asarray([float(getattr(motion, n)) for n in MOTION_FACTORS], dtype=np.float64)


def motion_from_vector(vector) -> Motion:
    v = np.asarray(vector, dtype=np.float64).ravel()
    if v.size != len(MOTION_FACTORS):
        raise ValueError(f"expected {len(MOTION_FACTORS)} values, got {v.size}")
    return Motion(**{n: float(x) for n, x in zip(MOTION_FACTORS, v)})


# ----------------------------------------------------------------------------- sampling

_SKIN_TONES = np.array(
    [
        (0.99, 0.87, 0.78),
        (0.96, 0.80, 0.68),
        (0.90, 0.71, 0.56),
        (0.80, 0.60, 0.44),
        (0.66, 0.46, 0.32),
        (0.50, 0.34, 0.23),
        (0.36, 0.24, 0.16),
    ]
)
_HAIR_COLOURS = np.array(
    [
        (0.08, 0.07, 0.06),  # black
        (0.22, 0.13, 0.07),  # dark brown
        (0.42, 0.26, 0.13),  # brown
        (0.86, 0.72, 0.42),  # blonde
        (0.66, 0.27, 0.10),  # red
        (0.62, 0.62, 0.62),  # grey
        (0.90, 0.89, 0.86),  # white
        (0.20, 0.30, 0.70),  # dyed blue
        (0.85, 0.40, 0.62),  # dyed pink
    ]
)
_HAIR_P = np.array([0.22, 0.21, 0.16, 0.13, 0.08, 0.08, 0.04, 0.04, 0.04])
_EYE_COLOURS = np.array(
    [
        (0.36, 0.21, 0.10),  # brown
        (0.16, 0.10, 0.07),  # dark brown
        (0.30, 0.52, 0.82),  # blue
        (0.30, 0.56, 0.30),  # green
        (0.50, 0.56, 0.62),  # grey
        (0.52, 0.42, 0.18),  # hazel
    ]
)


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (float(r), float(g), float(b))


def _clip_rgb(c) -> RGB:
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return (float(c[0]), float(c[1]), float(c[2]))


def random_identity(rng: np.random.Generator) -> Identity:
    """Draw a random identity; all randomness comes from ``rng``."""
    kw: dict = {}
    for name, (lo, hi) in IDENTITY_RANGES.items():
        kw[name] = float(rng.uniform(lo, hi))
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] + rng.uniform(-0.03, 0.03, 3)
    kw["skin"] = _clip_rgb(skin)
    kw["hair"] = _clip_rgb(_HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_P)] + rng.uniform(-0.04, 0.04, 3))
    kw["eyes"] = _clip_rgb(_EYE_COLOURS[rng.integers(len(_EYE_COLOURS))] + rng.uniform(-0.04, 0.04, 3))
    natural = np.asarray(kw["skin"]) * np.array([0.82, 0.52, 0.52])
    painted = np.asarray(_hsv(rng.uniform(-0.06, 0.03), rng.uniform(0.5, 0.8), rng.uniform(0.5, 0.85)))
    kw["lips"] = _clip_rgb(natural + rng.uniform(0.0, 0.7) ** 2 * (painted - natural))
    kw["background"] = _hsv(rng.uniform(), rng.uniform(0.15, 0.55), rng.uniform(0.45, 0.92))
    kw["clothes"] = _hsv(rng.uniform(), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.85))
    kw["hair_style"] = int(rng.choice(len(HAIR_STYLES), p=[0.15, 0.35, 0.3, 0.2]))
    return Identity(**kw)


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, f_lo: float, f_hi: float, k: int = 4) -> np.ndarray:
    """Sum of ``k`` random sinusoids with frequencies in [f_lo, f_hi] Hz; unit standard deviation."""
    f = rng.uniform(f_lo, f_hi, k)
    ph = rng.uniform(0, 2 * np.pi, k)
    amp = rng.uniform(0.5, 1.0, k)
    x = (amp[:, None] * np.sin(2 * np.pi * f[:, None] * t[None, :] + ph[:, None])).sum(0)
    return x / math.sqrt(0.5 * float((amp**2).sum()))


def _events(rng: np.random.Generator, duration: float, gap_lo: float, gap_hi: float, first_hi: float) -> list[float]:
    out = []
    t = rng.uniform(0.0, first_hi)
    while t < duration:
        out.append(t)
        t += rng.uniform(gap_lo, gap_hi)
    return out


def random_motion_sequence(rng: np.random.Generator, n_frames: int, fps: float = 25.0) -> list[Motion]:
    """A smooth, talking-like motion track of ``n_frames`` frames sampled at ``fps``.

    Speech comes in utterances of 1-4 s separated by 0.3-1.2 s pauses; within an
    utterance the mouth opens once per syllable (about 3.5-6 syllables/s, random
    depth). Blinks (0.2-0.35 s) happen every 1.5-6 s. The head sways slowly
    (0.05-0.5 Hz) with small nods, smile drifts over seconds and brows rise on
    stressed syllables. Every factor stays inside MOTION_RANGES.
    """
    n = int(n_frames)
    if n <= 0:
        return []
    t = np.arange(n) / float(fps)
    dur = n / float(fps)

    def window(t0: float, length: float) -> tuple[slice, np.ndarray]:
        """Frames covering [t0, t0 + length] and their phase in [0, 1]."""
        sl = slice(max(0, int(math.floor(t0 * fps))), min(n, int(math.ceil((t0 + length) * fps)) + 1))
        return sl, np.clip((t[sl] - t0) / length, 0.0, 1.0)

    # Speech: syllable-by-syllable mouth opening inside utterances.
    mouth = np.zeros(n)
    stress = np.zeros(n)
    tt = rng.uniform(0.0, 0.8)
    while tt < dur:
        utt_end = tt + rng.uniform(1.0, 4.0)
        while tt < utt_end and tt < dur:
            syl = rng.uniform(0.16, 0.29)
            depth = rng.uniform(0.25, 1.0) ** 0.8
            sl, ph = window(tt, syl)
            mouth[sl] = np.maximum(mouth[sl], depth * np.sin(np.pi * ph) ** 2)
            if rng.uniform() < 0.2:  # stressed syllable: brows go up a little
                sl, ph = window(tt, 2.5 * syl)
                stress[sl] = np.maximum(stress[sl], depth * np.sin(np.pi * ph) ** 2)
            tt += syl * rng.uniform(0.9, 1.1)
        tt = utt_end + rng.uniform(0.3, 1.2)
    mouth = np.clip(mouth, 0.0, 1.0)

    # Blinks: fast close (first 40%), slower open.
    blink = np.zeros(n)
    for b0 in _events(rng, dur, 1.5, 6.0, 3.0):
        sl, ph = window(b0, rng.uniform(0.2, 0.35))
        shape = np.where(ph < 0.4, np.sin(0.5 * np.pi * ph / 0.4) ** 2, np.cos(0.5 * np.pi * (ph - 0.4) / 0.6) ** 2)
        shape[(ph <= 0.0) | (ph >= 1.0)] = 0.0
        blink[sl] = np.maximum(blink[sl], shape)

    kw = max(1, int(round(fps)))  # one-second moving average: "is talking"
    talking = np.convolve(mouth, np.ones(kw) / kw, mode="full")[kw // 2 : kw // 2 + n]

    def soft(x: np.ndarray, lim: float) -> np.ndarray:
        return lim * np.tanh(x / lim)

    yaw = soft(0.32 * _smooth_noise(rng, t, 0.05, 0.35), 0.5)
    pitch = soft(0.14 * _smooth_noise(rng, t, 0.05, 0.45) + 0.05 * talking * _smooth_noise(rng, t, 0.8, 1.6, 2), 0.3)
    roll = soft(0.17 * _smooth_noise(rng, t, 0.05, 0.35), 0.3)
    smile = soft(0.25 + 0.6 * _smooth_noise(rng, t, 0.05, 0.25), 1.0)
    brows = soft(0.35 * _smooth_noise(rng, t, 0.05, 0.4) + 0.8 * stress, 1.0)

    return [
        Motion(
            yaw=float(yaw[i]),
            pitch=float(pitch[i]),
            roll=float(roll[i]),
            mouth_open=float(mouth[i]),
            smile=float(smile[i]),
            blink=float(blink[i]),
            brows=float(brows[i]),
        )
        for i in range(n)
    ]


# ----------------------------------------------------------------------------- geometry

_EYE_Y = 0.40  # eye line, fraction of the crop from the top (frontal pose)
_SS_PIXELS = 192  # supersample so the drawing canvas has at least this many pixels a side (min. 2x)
_SHIFT = 4  # fractional bits for cv2 polygon vertices
_PIVOT = np.array([0.0, 0.04, -0.08])  # rotation centre in the head frame (behind the head centre)
_NECK_FOLLOW = (0.35, 0.25, 0.5)  # fraction of yaw/pitch/roll the neck follows
_LIGHT = np.array([-0.45, -0.55, 1.0]) / np.linalg.norm([-0.45, -0.55, 1.0])
_MAX_GAP = 0.085  # lip gap at mouth_open = 1 (crop units)

_S13 = np.linspace(-1.0, 1.0, 13)  # contains -1, -1/3, 1/3, 1 (eye landmarks) and every 3rd (brows)
_SM = np.array([-1, -0.8, -0.62, -0.45, -0.28, -0.14, 0, 0.14, 0.28, 0.45, 0.62, 0.8, 1.0])  # mouth samples
_ANG = np.linspace(0, 2 * np.pi, 16, endpoint=False)
_CIRCLE = np.stack([np.cos(_ANG), np.sin(_ANG)], 1)

# Landmark positions inside the per-frame polygons (see _features).
_EYE_LM = np.array([0, 4, 8, 12, 13 + 4, 13 + 8])  # in a 26-point eye outline: upper 0..12, lower reversed
_MOUTH_OUT_LM = np.array([0, 2, 4, 6, 8, 10, 12, 15, 17, 19, 21, 23])
_MOUTH_IN_LM = np.array([0, 3, 6, 9, 12, 16, 19, 22])


class _Head:
    """Per-identity head model: everything that does not depend on motion.

    ``static`` stacks all motion-independent 3-D points (head frame); ``parts`` maps a
    part name to its slice; ``drop_w`` weights how much each point follows the jaw.
    """

    def __init__(self, idn: Identity):
        self.idn = idn
        a = idn.face_width / 2
        forehead = 0.30 + 0.06 * (idn.face_width - 0.56) / 0.14  # eye line to top of skull
        b = (forehead + idn.face_height) / 2
        self.a, self.b, self.c = a, b, 0.95 * a
        self.pivot_y = _EYE_Y - forehead + b  # image y of the head-frame origin
        self.ey = _EYE_Y - self.pivot_y  # eye line in the head frame
        self.n_low = 2.0 + 2.5 * idn.jaw
        self.taper = 0.32 * (1.0 - idn.jaw)
        self.y_nose = self.ey + idn.nose_length
        self.y_mouth = self.y_nose + idn.mouth_offset
        if not 0 <= int(idn.hair_style) < len(HAIR_STYLES):
            raise ValueError(f"hair_style must be in 0..{len(HAIR_STYLES) - 1}, got {idn.hair_style}")
        self.style = HAIR_STYLES[int(idn.hair_style)]

        parts: dict[str, np.ndarray] = {}
        # Head surface samples (their convex hull is the silhouette).
        ys = -b * np.cos(np.linspace(0.0, np.pi, 19))
        phis = np.linspace(-np.pi, np.pi, 32, endpoint=False)
        Y, P = np.meshgrid(ys, phis, indexing="ij")
        X, Z = self._ring(Y, P)
        pts = np.stack([X, Y, Z], -1).reshape(-1, 3)
        phi = P.reshape(-1)
        vol = idn.hair_volume
        if self.style == "bald":
            parts["skin"] = pts
        else:
            skin = pts[:, 1] >= self._hairline(phi)
            hl_phi = np.linspace(-np.pi, np.pi, 48, endpoint=False)
            hl_y = self._hairline(hl_phi)
            hx, hz = self._ring(hl_y, hl_phi)
            hl_pts = np.stack([hx, hl_y, hz], 1)  # the hairline belongs to both
            parts["skin"] = np.concatenate([pts[skin], hl_pts])
            parts["hair"] = self._inflate(np.concatenate([pts[~skin], hl_pts]), vol)
        if self.style == "long":
            yb = 1.1 - self.pivot_y  # below the crop
            ph = np.linspace(0.5 * np.pi - 0.35, 1.5 * np.pi + 0.35, 13)
            curtain = [
                np.stack([wk * (a + vol) * np.sin(ph), np.full_like(ph, y), wk * (self.c + vol) * np.cos(ph)], 1)
                for (y, wk) in ((0.0, 1.0), (self.ey + 0.2, 1.06), (yb, 1.14))
            ]
            parts["long"] = np.concatenate([parts["hair"]] + curtain)
        if self.style == "fringe":
            sf = np.linspace(-1.0, 1.0, 43)
            y_tip = self.ey - 0.098 + 0.035 * sf**2
            y_bot = y_tip - 0.024 * np.abs(np.sin(2.5 * np.pi * sf))
            y_top = np.full_like(sf, self.ey - 0.26)
            xb = 0.93 * self._half_width(y_bot) * sf
            xt = 0.93 * self._half_width(y_top) * sf
            bottom = self.lift(xb, y_bot, 0.6 * vol)
            top = self.lift(xt, y_top, 0.6 * vol)
            parts["fringe"] = np.concatenate([bottom, top[::-1]])

        # Ears: flat ellipses flaring backwards from the side of the head.
        es = idn.ear_size
        ey0 = self.ey + 0.045
        for side, tag in ((-1.0, "l"), (1.0, "r")):
            root_x = side * float(self._half_width(ey0))
            u = np.array([side * 0.62, 0.0, -0.78])
            ey_ = np.array([0.0, 1.0, 0.0])
            centre = np.array([root_x, ey0, -0.03]) + 0.275 * es * u
            parts["ear_" + tag] = centre + 0.275 * es * _CIRCLE[:, :1] * u + 0.5 * es * _CIRCLE[:, 1:] * ey_
            inner = centre + 0.1 * es * u
            parts["earin_" + tag] = inner + 0.22 * es * _CIRCLE[:, :1] * u + 0.3 * es * _CIRCLE[:, 1:] * ey_

        # Jaw landmarks 0-16: the frontal silhouette of the lower face at equal arc length.
        yy = np.linspace(self.ey + 0.01, b, 200)
        xx = self._half_width(yy)
        cx = np.concatenate([-xx, xx[::-1][1:]])
        cy = np.concatenate([yy, yy[::-1][1:]])
        arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(cx), np.diff(cy)))])
        q = np.linspace(0.0, arc[-1], 17)
        jy = np.interp(q, arc, cy)
        parts["jaw"] = np.stack([np.interp(q, arc, cx), jy, self._shear(jy)], 1)

        # Nose: bridge 27-30 (tip protrudes), base 31-35, wings and tip for the silhouette.
        pr, nw, yb_ = idn.nose_protrusion, idn.nose_width, self.y_nose
        ytip = yb_ - 0.018
        tb = np.array([0.0, 1 / 3, 2 / 3, 1.0])
        parts["bridge"] = self.lift(np.zeros(4), self.ey + tb * (ytip - self.ey), pr * tb**1.6)
        parts["base"] = self.lift(
            np.array([-1.0, -0.5, 0.0, 0.5, 1.0]) * nw,
            yb_ - np.array([0.012, 0.003, 0.0, 0.003, 0.012]),
            pr * np.array([0.15, 0.4, 0.55, 0.4, 0.15]),
        )
        parts["wings"] = self.lift(
            np.array([-1.08, -0.9, 0.9, 1.08]) * nw,
            yb_ - np.array([0.035, 0.055, 0.055, 0.035]),
            pr * np.array([0.1, 0.35, 0.35, 0.1]),
        )
        parts["tip"] = self.lift(0.55 * nw * _CIRCLE[:, 0], ytip - 0.005 + 0.45 * nw * _CIRCLE[:, 1], pr * 0.95)
        for sx, tag in ((-1.0, "l"), (1.0, "r")):
            parts["nostril_" + tag] = self.lift(
                sx * 0.5 * nw + 0.28 * nw * _CIRCLE[:, 0], yb_ - 0.008 + 0.13 * nw * _CIRCLE[:, 1], pr * 0.3
            )

        self.parts: dict[str, slice] = {}
        arrays, weights, k = [], [], 0
        for name, arr in parts.items():
            self.parts[name] = slice(k, k + len(arr))
            k += len(arr)
            arrays.append(arr)
            follows_jaw = name in ("skin", "jaw")
            y0 = self.ey + 0.04
            w = np.clip((arr[:, 1] - y0) / (self.y_mouth - y0), 0.0, 1.0) if follows_jaw else np.zeros(len(arr))
            weights.append(w)
        self.static = np.concatenate(arrays)
        self.drop_w = np.concatenate(weights)
        idx = np.arange(k)
        pp = self.parts
        self.nose_idx = np.concatenate([idx[pp["bridge"]][1:], idx[pp["base"]], idx[pp["wings"]], idx[pp["tip"]]])

        # Neck: follows the head only partly, so it is projected on its own.
        nr = 0.52 * a * (1.0 + 0.2 * idn.jaw)
        ring = np.stack([nr * _CIRCLE[:, 0], np.zeros(16), 0.8 * nr * _CIRCLE[:, 1]], 1)
        self.neck = np.concatenate([ring + [0.0, 0.2 * b, 0.0], ring + [0.0, 1.2 - self.pivot_y, 0.0]])

        # Per-frame constants of the eyes.
        w = idn.eye_size / 2
        self.eye_w = w
        self.eye_h_up = idn.eye_openness * w * 1.15
        self.eye_h_lo = idn.eye_openness * w * 0.75
        self.shade_axes = 1.0 / np.array([a * 1.06, b * 1.04, self.c * 1.08]) ** 2
        self.static_t = np.ascontiguousarray((self.static - _PIVOT).T)
        self.features = _Features(self)
        layout = dict(self.parts)
        k = len(self.static)
        for name, cnt, _ in _DYN_LAYOUT:
            layout[name] = slice(k, k + cnt)
            k += cnt
        self.layout = (layout, _landmark_index(layout))

    # surface helpers --------------------------------------------------------
    def _profile(self, y):
        y = np.asarray(y, dtype=np.float64)
        r = np.minimum(np.abs(y) / self.b, 1.0)
        n = np.where(y > 0, self.n_low, 2.0)
        return (1.0 - r**n) ** (1.0 / n)

    def _half_width(self, y):
        t = np.clip(np.asarray(y, dtype=np.float64) / self.b, 0.0, 1.0)
        return self.a * self._profile(y) * (1.0 - self.taper * t**1.5)

    def _shear(self, y):
        t = np.clip(np.asarray(y, dtype=np.float64) / self.b, 0.0, 1.0)
        return 0.5 * self.c * t**1.6

    def _ring(self, y, phi):
        return self._half_width(y) * np.sin(phi), self._shear(y) + self.c * self._profile(y) * np.cos(phi)

    def surf_z(self, x, y):
        """Depth of the front surface at head-frame (x, y)."""
        y = np.asarray(y, dtype=np.float64)
        t = np.clip(y / self.b, 0.0, 1.0)
        prof = self._profile(y)
        hw = np.maximum(self.a * prof * (1.0 - self.taper * t**1.5), 1e-6)
        r = np.minimum(np.abs(x) / hw, 1.0)
        return 0.5 * self.c * t**1.6 + self.c * prof * np.sqrt(1.0 - r * r)

    def lift(self, x, y, dz=0.0):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        return np.stack([x, y, self.surf_z(x, y) + dz], -1)

    def _hairline(self, phi):
        idn = self.idn
        ey = self.ey
        front = ey - 0.16 - 0.08 * idn.hairline
        side = ey + 0.02
        nape = ey + 0.12
        ap = np.abs(phi - 0.35 * idn.hair_part * np.cos(phi))
        t = np.clip(ap / (np.pi / 2), 0.0, 1.0)
        y = front + (side - front) * t**1.4
        back = np.clip((ap - np.pi / 2) / (np.pi / 2), 0.0, 1.0)
        return np.where(ap <= np.pi / 2, y, side + (nape - side) * back)

    def _inflate(self, p, vol):
        out = p.copy()
        out[:, 0] *= (self.a + vol) / self.a
        up = out[:, 1] < 0
        out[up, 1] *= (self.b + 1.5 * vol) / self.b
        sh = self._shear(p[:, 1])
        out[:, 2] = sh + (p[:, 2] - sh) * (self.c + vol) / self.c
        return out


@functools.lru_cache(maxsize=256)
def _head_cached(identity: Identity) -> _Head:
    return _Head(identity)


def _head(identity: Identity) -> _Head:
    try:
        return _head_cached(identity)
    except TypeError:  # unhashable field values (e.g. a list for a colour)
        return _Head(identity)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
    rz = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return rz @ rx @ ry


def _project(p: np.ndarray, R: np.ndarray, pivot_y: float) -> np.ndarray:
    """Head frame -> crop-normalised (u, v) plus camera depth."""
    q = (p - _PIVOT) @ R.T
    q += _PIVOT + np.array([0.5, pivot_y, 0.0])
    return q


def _clampf(v: float, lo: float, hi: float) -> float:
    return lo if v < lo else hi if v > hi else float(v)


# Per-frame feature points, in this order (sizes fixed): name -> (count, depth offset).
_DYN_LAYOUT = (
    ("eye_l", 26, 0.002),
    ("eye_r", 26, 0.002),
    ("iris_l", 48, 0.002),  # iris 16, pupil 16, glint 16
    ("iris_r", 48, 0.002),
    ("brow_l", 26, 0.004),
    ("brow_r", 26, 0.004),
    ("browlm_l", 5, 0.004),
    ("browlm_r", 5, 0.004),
    ("lips", 26, 0.008),
    ("inner", 26, 0.009),
    ("teeth", 26, 0.010),
    ("seam", 13, 0.011),
)
_M0 = sum(n for name, n, _ in _DYN_LAYOUT[:8])  # first mouth point
_N_DYN = sum(n for _, n, _ in _DYN_LAYOUT)

# Mouth shape functions of _SM.
_SM2 = _SM**2
_SM_IN2 = (0.9 * _SM) ** 2
_SM_07 = np.maximum(1.0 - _SM2, 0.0) ** 0.7
_SM_04BOW = np.maximum(1.0 - _SM2, 0.0) ** 0.4 * (1.0 - 0.35 * np.exp(-((_SM / 0.18) ** 2)))
_SM_045 = np.maximum(1.0 - _SM2, 0.0) ** 0.45
_TEETH_H = 0.3 * _MAX_GAP * np.maximum(1.0 - _SM2, 0.0) ** 0.5


class _Features:
    """Per-identity constants of the motion-dependent features (eyes, brows, mouth)."""

    def __init__(self, h: _Head):
        idn = h.idn
        w = h.eye_w
        side = np.array([[-1.0], [1.0]])
        ex = side * idn.eye_spacing / 2
        r = idn.iris_size * w
        circ = np.concatenate([r * _CIRCLE, 0.45 * r * _CIRCLE, 0.2 * r * _CIRCLE + np.array([-0.35 * r, -0.35 * r])])
        px = np.clip(ex + circ[None, :, 0], ex - w, ex + w)  # (2, 48)
        s = np.concatenate([np.broadcast_to(_S13, (2, 13)), (px - ex) / w], 1)  # (2, 61)
        base = np.maximum(1.0 - s * s, 0.0)
        tilt = -idn.eye_tilt * side * s  # outer corner (side*s = 1) up for tilt > 0
        self.eye_lo0 = h.ey + tilt
        self.eye_lo1 = h.eye_h_lo * base**0.7
        self.eye_up = h.ey + tilt - h.eye_h_up * base**0.6
        self.iris_y = h.ey + 0.1 * r + circ[None, :, 1]
        inner_w = np.clip(-side * _S13, 0.0, 1.0)  # 1 at the inner end of a brow
        self.brow_y0 = h.ey - 0.055 - 0.2 * idn.eye_openness * w - idn.brow_arch * (1 - _S13**2) + 0 * side
        self.brow_y1 = -0.022 - 0.009 * inner_w
        self.brow_th = 0.5 * idn.brow_thickness * (0.55 + 0.45 * (0.5 + 0.5 * inner_w))
        xb = ex + side * 0.1 * w + 1.3 * w * _S13
        there_and_back = [*range(13), *range(12, -1, -1)]
        outline_x = (ex + w * _S13)[:, there_and_back]
        x = np.concatenate([outline_x.ravel(), px.ravel(), xb[:, there_and_back].ravel(), xb[:, ::3].ravel()])
        self.x_fixed = x  # x of every point before the mouth
        self.dz = np.concatenate([np.full(n, dz) for _, n, dz in _DYN_LAYOUT])
        self.y_mouth = h.y_mouth
        self.mouth_width = idn.mouth_width
        self.upper_lip = idn.upper_lip
        self.lower_lip = idn.lower_lip


def _features(h: _Head, m: Motion) -> tuple[np.ndarray, np.ndarray, float]:
    """Head-frame x, y of all motion-dependent feature points (layout _DYN_LAYOUT), and the lip gap."""
    f = h.features
    blink = _clampf(m.blink, 0.0, 1.0)
    smile = _clampf(m.smile, -1.0, 1.0)
    o = _clampf(m.mouth_open, 0.0, 1.0)
    brows = _clampf(m.brows, -1.0, 1.0)
    squint = 0.3 * max(smile, 0.0)
    X = np.empty(_N_DYN)
    Y = np.empty(_N_DYN)
    X[:_M0] = f.x_fixed

    lower = f.eye_lo0 + (1.0 - squint) * f.eye_lo1  # (2, 61): 13 lid samples, 48 iris points
    upper = f.eye_up + blink * (lower - f.eye_up)
    Y[0:52] = np.concatenate([upper[:, :13], lower[:, 12::-1]], 1).ravel()
    Y[52:148] = np.clip(f.iris_y, upper[:, 13:], lower[:, 13:]).ravel()
    by = f.brow_y0 + brows * f.brow_y1  # (2, 13)
    Y[148:200] = np.concatenate([by - f.brow_th, (by + f.brow_th)[:, ::-1]], 1).ravel()
    Y[200:210] = by[:, ::3].ravel()

    gap = _MAX_GAP * o
    mw = f.mouth_width * (1.0 + 0.14 * max(smile, 0.0) - 0.04 * max(-smile, 0.0) - 0.08 * o)
    corner = -0.022 * smile + 0.25 * gap  # corner height relative to the mouth line (y down)
    open_up = 0.3 * gap * _SM_07
    open_lo = 0.7 * gap * _SM_07
    line_in = f.y_mouth + corner * _SM_IN2
    line_out = f.y_mouth + corner * _SM2
    up_in = line_in - open_up
    lo_in = line_in + open_lo
    up_out = line_out - open_up - f.upper_lip * _SM_04BOW
    lo_out = line_out + open_lo + f.lower_lip * _SM_045
    teeth_lo = up_in + np.minimum(_TEETH_H, lo_in - up_in)
    x_out = mw * _SM
    x_in = 0.9 * x_out
    k = _M0
    for xs, ya, yb in ((x_out, up_out, lo_out), (x_in, up_in, lo_in), (x_in, up_in, teeth_lo)):
        X[k : k + 13] = xs
        X[k + 13 : k + 26] = xs[::-1]
        Y[k : k + 13] = ya
        Y[k + 13 : k + 26] = yb[::-1]
        k += 26
    X[k : k + 13] = x_in
    Y[k : k + 13] = 0.5 * (up_in + lo_in)
    return X, Y, gap


class _Frame:
    """Projected geometry of one frame: ``q`` is (N, 2) crop-normalised points."""

    __slots__ = ("head", "R", "q", "parts", "gap", "lm_idx")


def _frame(identity: Identity, motion: Motion) -> _Frame:
    h = _head(identity)
    X, Y, gap = _features(h, motion)
    f = h.features
    dyn = np.stack([X, Y, h.surf_z(X, Y) + f.dz])
    stat = h.static_t  # (3, N), pivot already subtracted
    if gap > 0.0:
        stat = stat.copy()
        stat[1] += (0.45 * gap) * h.drop_w
    R = _rotation(motion.yaw, motion.pitch, motion.roll)
    dyn -= _PIVOT[:, None]
    Q = R[:2] @ np.concatenate([stat, dyn], 1)
    Q += np.array([[0.5 + _PIVOT[0]], [h.pivot_y + _PIVOT[1]]])
    fr = _Frame()
    fr.head, fr.R, fr.gap = h, R, gap
    fr.q = Q.T
    fr.parts, fr.lm_idx = h.layout
    return fr


def _landmark_index(parts: dict[str, slice]) -> np.ndarray:
    def at(name, idx=None):
        r = np.arange(parts[name].start, parts[name].stop)
        return r if idx is None else r[idx]

    return np.concatenate(
        [
            at("jaw"),
            at("browlm_l"),
            at("browlm_r"),
            at("bridge"),
            at("base"),
            at("eye_l", _EYE_LM),
            at("eye_r", _EYE_LM),
            at("lips", _MOUTH_OUT_LM),
            at("inner", _MOUTH_IN_LM),
        ]
    )


def landmarks(identity: Identity, motion: Motion, size: int = 64) -> np.ndarray:
    """(68, 2) float64 landmark pixel coordinates in the iBUG/dlib 68-point order.

    They are projections of the very points the renderer draws (jaw = frontal outline of
    the lower face, brows = brow centre lines, eyes = lid curves, mouth = lip outlines).
    """
    fr = _frame(identity, motion)
    return fr.q[fr.lm_idx] * size - 0.5


def landmarks_clip(identity: Identity, motions, size: int = 64) -> np.ndarray:
    """(T, 68, 2) landmarks for a sequence of motions."""
    if len(motions) == 0:
        return np.zeros((0, 68, 2))
    return np.stack([landmarks(identity, m, size) for m in motions])


# ----------------------------------------------------------------------------- drawing


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


def render(identity: Identity, motion: Motion, size: int = 64) -> np.ndarray:
    """Render one frame: (size, size, 3) uint8 RGB. Deterministic."""
    size = int(size)
    if size < 8:
        raise ValueError(f"size must be at least 8, got {size}")
    n = size * max(2, -(-_SS_PIXELS // size))  # 64 -> 3x, 128 -> 2x
    idn = identity
    fr = _frame(identity, motion)
    h, P = fr.head, fr.parts
    one = 1 << _SHIFT
    pts = np.rint(fr.q * (n * one) - 0.5 * one).astype(np.int32)
    try:
        img = _backdrop(identity, n).copy()
    except TypeError:  # unhashable field values
        img = _backdrop.__wrapped__(identity, n).copy()
    mask = np.zeros((n, n), np.uint8)
    AA = cv2.LINE_8  # anti-aliasing comes from the supersampling

    def poly(name):
        return pts[P[name]]

    def fill(p, colour, to_mask=False, hull=False):
        if hull:
            p = cv2.convexHull(p)
        cv2.fillPoly(img, [p], colour, AA, _SHIFT)
        if to_mask:
            cv2.fillPoly(mask, [p], 255, cv2.LINE_8, _SHIFT)

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

    lid = _col(skin, 0.25)
    lid_w = max(1, round(0.015 * n))
    for tag in ("l", "r"):
        fill(poly("eye_" + tag), _SCLERA)
        iris = poly("iris_" + tag)
        fill(iris[:16], _col(idn.eyes))
        fill(iris[16:32], _PUPIL)
        fill(iris[32:], (255, 255, 255))
        cv2.polylines(img, [poly("eye_" + tag)[:13]], False, lid, lid_w, AA, _SHIFT)
    brow_col = _col(idn.hair if h.style != "bald" else tuple(0.5 * np.asarray(skin)), 0.8)
    fill(poly("brow_l"), brow_col)
    fill(poly("brow_r"), brow_col)

    fill(poly("lips"), _col(idn.lips))
    # the seam between the lips; once the mouth opens, the interior covers it gradually
    cv2.polylines(img, [poly("seam")], False, _col(idn.lips, 0.45), max(1, round(0.008 * n)), AA, _SHIFT)
    if fr.gap > 0.002:
        fill(poly("inner"), _MOUTH_IN)
    if fr.gap > 0.004:
        fill(poly("teeth"), _TEETH)

    fill(pts[h.nose_idx], _col(skin, 0.9), False, True)
    fill(poly("nostril_l"), _col(skin, 0.45))
    fill(poly("nostril_r"), _col(skin, 0.45))

    small = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    msk = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
    shade = _shade(h, fr.R, (size + 1) // 2)
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


# ----------------------------------------------------------------------------- data set


def make_dataset(n_identities: int, frames_per_clip: int, size: int = 64, seed: int = 0, fps: float = 25.0) -> dict:
    """One clip per random identity with a random talking motion track.

    Returns ``clips`` (N, T, S, S, 3) uint8, ``motion`` (N, T, len(MOTION_FACTORS))
    float32, ``identity`` (N, len(IDENTITY_FACTORS)) float32 and ``landmarks``
    (N, T, 68, 2) float32, all reproducible from ``seed``.
    """
    rng = np.random.default_rng(seed)
    N, T, S = int(n_identities), int(frames_per_clip), int(size)
    clips = np.zeros((N, T, S, S, 3), np.uint8)
    mot = np.zeros((N, T, len(MOTION_FACTORS)), np.float32)
    ids = np.zeros((N, len(IDENTITY_FACTORS)), np.float32)
    lms = np.zeros((N, T, 68, 2), np.float32)
    for i in range(N):
        idn = random_identity(rng)
        motions = random_motion_sequence(rng, T, fps)
        ids[i] = identity_vector(idn)
        for j, m in enumerate(motions):
            clips[i, j] = render(idn, m, S)
            mot[i, j] = motion_vector(m)
            lms[i, j] = landmarks(idn, m, S)
    return {"clips": clips, "motion": mot, "identity": ids, "landmarks": lms}
