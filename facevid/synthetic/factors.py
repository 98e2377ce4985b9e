"""The factors of a synthetic head: Identity (content) and Motion (dynamics), as flat vectors."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

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
