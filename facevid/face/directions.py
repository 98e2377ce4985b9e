"""Attribute directions in landmark space (seed 002's expression directions, learned by regression):
for each measured attribute (facevid.face.attributes), the displacement of the 68 landmarks that
one unit of it makes, with the others held.

Fitted over training clips' landmarks in their stabilised crops (normalised [-1, 1] coordinates):
each frame's landmarks minus its clip's mean are regressed jointly on its attributes minus their
clip means, so a direction is the attribute's own effect with the others' taken out (a smile's
squint is the eyes' direction, not the smile's). `eyes` is `left-eye` plus `right-eye` (the
regression cannot tell it from them), and each direction is scaled so one unit of it moves its
attribute by one unit on the fitting frames (the measures are not linear in the landmarks).
`crosstalk` reports how far each direction moves every attribute.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from facevid.errors import InputError
from facevid.face.attributes import ATTRIBUTES, measure

NAMES = tuple(ATTRIBUTES)
FITTED = tuple(n for n in NAMES if n != "eyes")   # eyes = left-eye + right-eye
FORMAT = "facevid-directions"


@dataclass(frozen=True)
class Directions:
    """(len(NAMES), 68, 2) displacements per unit of each attribute, normalised crop units."""

    names: tuple[str, ...]
    vectors: np.ndarray
    frames: int = 0     # how many frames they were fitted on

    def vector(self, name: str) -> np.ndarray:
        if name not in self.names:
            raise InputError(f"unknown attribute {name!r}; known: {', '.join(self.names)}")
        return self.vectors[self.names.index(name)]

    def apply(self, marks: np.ndarray, strengths: dict[str, float], scale: float = 1.0) -> np.ndarray:
        """Landmarks (..., 68, 2) moved by `strengths` (attribute → units); `scale` converts the
        directions' normalised crop units to the landmarks' (a crop of side S in pixels: S / 2)."""
        out = np.asarray(marks, np.float64).copy()
        for name, amount in strengths.items():
            out = out + amount * scale * self.vector(name)
        return out

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save_file

        from facevid.io.atomic import atomic_path

        meta = {"format": FORMAT, "names": json.dumps(list(self.names)), "frames": str(self.frames)}
        with atomic_path(Path(path)) as tmp:
            save_file({"vectors": self.vectors.astype(np.float32)}, str(tmp), metadata=meta)


def load_directions(path: str | Path) -> Directions:
    """Directions saved by `Directions.save` (safetensors; checked, no pickle)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            vectors = f.get_tensor("vectors") if "vectors" in f.keys() else None
    except (OSError, SafetensorError) as error:
        raise InputError(f"cannot read directions from {path}: {error}") from error
    if meta.get("format") != FORMAT or vectors is None:
        raise InputError(f"{path} is not a facevid directions file")
    try:
        names = tuple(json.loads(meta["names"]))
        frames = int(meta.get("frames", "0"))
    except (KeyError, ValueError, TypeError) as error:
        raise InputError(f"{path} has unreadable attribute names") from error
    if not all(isinstance(n, str) for n in names) or vectors.shape != (len(names), 68, 2) \
            or not np.isfinite(vectors).all():
        raise InputError(f"{path} holds directions of the wrong shape {tuple(vectors.shape)}")
    return Directions(names, vectors.astype(np.float64), frames)


def attribute_table(marks: np.ndarray) -> np.ndarray:
    """(T, len(NAMES)) attributes of landmarks (T, 68, 2)."""
    return np.array([[row[n] for n in NAMES] for row in map(measure, np.asarray(marks, np.float64))])


def _step(name: str) -> float:
    """A quarter of the attribute's slider range: the step its gain is measured over."""
    return 0.25 * (ATTRIBUTES[name].high - ATTRIBUTES[name].low)


def crosstalk(directions: Directions, frames: Iterable[np.ndarray]) -> np.ndarray:
    """(len(names), len(NAMES)): row i, how much each attribute moves per unit of direction i,
    averaged over `frames` (each (68, 2)) over a step up of a quarter of its range (up: a mouth
    or an eye measured from closed cannot close further, its measure would fold back)."""
    frames = [np.asarray(f, np.float64) for f in frames]
    before = attribute_table(frames)
    out = np.zeros((len(directions.names), len(NAMES)))
    for i, name in enumerate(directions.names):
        step = _step(name)
        out[i] = ((attribute_table([f + step * directions.vectors[i] for f in frames]) - before) / step).mean(0)
    return out


def fit_directions(clips: Iterable[np.ndarray], *, calibration_frames: int = 400, seed: int = 0) -> Directions:
    """Directions from clips' landmarks (each (T, 68, 2), normalised crop coordinates); see the module."""
    moves, changes, pool = [], [], []
    for marks in clips:
        marks = np.asarray(marks, np.float64)
        if len(marks) < 2:
            continue
        values = attribute_table(marks)
        moves.append((marks - marks.mean(0)).reshape(len(marks), -1))
        changes.append(values - values.mean(0))
        pool.append(marks)
    if not moves:
        raise InputError("fitting directions needs clips of at least two frames")
    moves, changes = np.concatenate(moves), np.concatenate(changes)
    fitted = [NAMES.index(n) for n in FITTED]
    if len(moves) < 4 * len(fitted):
        raise InputError(f"fitting directions needs at least {4 * len(fitted)} frames, got {len(moves)}")
    solution = np.linalg.lstsq(changes[:, fitted], moves, rcond=None)[0].reshape(len(fitted), 68, 2)
    vectors = np.zeros((len(NAMES), 68, 2))
    vectors[fitted] = solution
    vectors[NAMES.index("eyes")] = vectors[NAMES.index("left-eye")] + vectors[NAMES.index("right-eye")]
    rng = np.random.default_rng(seed)
    everything = np.concatenate(pool)
    sample = everything[rng.choice(len(everything), min(calibration_frames, len(everything)), replace=False)]
    directions = Directions(NAMES, vectors, len(moves))
    gain = np.diag(crosstalk(directions, sample))
    if np.any(np.abs(gain) < 1e-6):
        raise InputError("the clips do not vary enough to fit every direction")
    return Directions(NAMES, vectors / gain[:, None, None], len(moves))
