"""Attributes learned from examples (seed 002): faces of two folders, a positive and a negative
one, separated by L2-regularised logistic regression on their 68 landmarks, and the normal of
the boundary used as an edit direction in the same landmark space as the measured attributes'
(facevid.face.directions).

The landmarks are those of the model's aligned crop, in its normalised [-1, 1] coordinates.
What other sliders already move is taken out before the fit: the head's place, size and roll in
the crop (a similarity about the mean face) and the yaw and pitch directions, so a direction
learned from people who happened to look left does not turn heads. Each file weighs the same
(a video's frames share one file's weight) and each folder the same. The regularisation is
chosen by the accuracy on files held out (leave one file out, or eight folds of files for more
than 24), and that accuracy is reported.

The learned slider's unit: 0 is the negative examples' mean face and 1 the positive's, measured
along the direction, so `--attr NAME=0.5` moves a face half the way from one to the other and
`--set NAME=1` brings any face to the positive examples' look.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facevid.errors import ConfigError, InputError
from facevid.face.attributes import ATTRIBUTES, Attribute

FORMAT = "facevid-attribute"
LAMBDAS = (100.0, 10.0, 1.0, 0.1, 0.01)   # tried strongest first: a tie goes to the smoother direction
MIN_FILES = 3
NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
LOW, HIGH = -0.5, 1.5


@dataclass(frozen=True)
class LearnedAttribute:
    """A direction (68, 2) of unit length in normalised crop coordinates, and where the two
    folders' mean faces lie along it."""

    name: str
    normal: np.ndarray
    negative: float      # normal · the negative examples' mean face
    positive: float      # normal · the positive examples' mean face
    accuracy: float      # on held-out files
    positives: int       # files with a face, in each folder
    negatives: int
    frames: int          # faces fitted, both folders
    crop: tuple[float, float]   # the crop's margin and face centre it was learned in (crop.CropSpec)

    @property
    def vector(self) -> np.ndarray:
        """The landmarks' move (68, 2) per unit of the slider."""
        return self.normal * (self.positive - self.negative)

    @property
    def slider(self) -> Attribute:
        return Attribute(self.name, "learned units", LOW, HIGH,
                         f"learned: 0 is the {self.negatives} negative examples' mean face, 1 the "
                         f"{self.positives} positive's (held-out accuracy {self.accuracy:.2f})")

    def measure(self, unit_points: np.ndarray) -> float:
        """Where a face (68, 2, normalised crop coordinates) lies: 0 negative, 1 positive."""
        along = float(np.sum(self.normal * np.asarray(unit_points, np.float64)))
        return (along - self.negative) / (self.positive - self.negative)

    def check_crop(self, margin: float, center_y: float) -> None:
        """Used with a model whose crop (crop.CropSpec's margin and centre) is the one it was learned in."""
        if not np.allclose(self.crop, (margin, center_y)):
            raise ConfigError(f"'{self.name}' was learned in a crop of margin {self.crop[0]:g} and centre "
                              f"{self.crop[1]:g}, this model's is {margin:g} and {center_y:g}: learn it again "
                              f"with the same --weights")

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save_file

        from facevid.io.atomic import atomic_path

        meta = {"format": FORMAT, "name": self.name, "negative": repr(self.negative),
                "positive": repr(self.positive), "accuracy": repr(self.accuracy), "positives": str(self.positives),
                "negatives": str(self.negatives), "frames": str(self.frames), "crop_margin": repr(self.crop[0]),
                "crop_center_y": repr(self.crop[1])}
        with atomic_path(Path(path)) as tmp:
            save_file({"normal": self.normal.astype(np.float32)}, str(tmp), metadata=meta)


def check_name(name: str) -> str:
    if not NAME.fullmatch(name or ""):
        raise ConfigError(f"an attribute's name is lower-case letters, digits and '-', starting with a letter, "
                          f"up to 32 characters; got '{name}'")
    if name in ATTRIBUTES:
        raise ConfigError(f"'{name}' is a measured attribute already; give the learned one another name")
    return name


def load_attribute(path: str | Path) -> LearnedAttribute:
    """A learned attribute saved by `LearnedAttribute.save` (safetensors; checked, no pickle)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            normal = f.get_tensor("normal") if "normal" in f.keys() else None
    except (OSError, SafetensorError) as error:
        raise InputError(f"cannot read a learned attribute from {path}: {error}") from error
    if meta.get("format") != FORMAT or normal is None:
        raise InputError(f"{path} is not a facevid learned attribute (facevid learn-attr writes them)")
    try:
        numbers = {k: float(meta[k]) for k in ("negative", "positive", "accuracy", "crop_margin", "crop_center_y")}
        counts = {k: int(meta[k]) for k in ("positives", "negatives", "frames")}
        name = check_name(meta["name"])
    except (KeyError, ValueError, ConfigError) as error:
        raise InputError(f"{path} has unreadable or invalid metadata ({error})") from error
    if normal.shape != (68, 2) or not np.isfinite(normal).all() or not all(map(math.isfinite, numbers.values())) \
            or abs(float(np.linalg.norm(normal)) - 1) > 1e-3 or not numbers["positive"] > numbers["negative"]:
        raise InputError(f"{path} holds an invalid direction")
    return LearnedAttribute(name, normal.astype(np.float64), numbers["negative"], numbers["positive"],
                            numbers["accuracy"], counts["positives"], counts["negatives"], counts["frames"],
                            (numbers["crop_margin"], numbers["crop_center_y"]))


def nuisance(mean_face: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """(k, 136) orthonormal rows: the moves of a similarity about `mean_face` (68, 2) — shift
    across and down, scale, rotation — and the `others` (each (68, 2))."""
    centred = mean_face - mean_face.mean(0)
    moves = [np.tile([1.0, 0.0], (68, 1)), np.tile([0.0, 1.0], (68, 1)), centred,
             np.stack([-centred[:, 1], centred[:, 0]], 1), *others]
    q, _ = np.linalg.qr(np.stack([np.asarray(m, np.float64).ravel() for m in moves], 1))
    return q.T


def _logistic(z: np.ndarray, y: np.ndarray, weight: np.ndarray, lam: float) -> np.ndarray:
    """(w, b) minimising the weighted mean logistic loss of labels y (±1) plus lam/2 |w|²."""
    from scipy.optimize import minimize

    weight = weight / weight.sum()

    def loss(theta):
        w, b = theta[:-1], theta[-1]
        margin = y * (z @ w + b)
        value = weight @ np.logaddexp(0, -margin) + 0.5 * lam * w @ w
        slope = -weight * y / (1 + np.exp(np.clip(margin, -50, 50)))
        return value, np.append(z.T @ slope + lam * w, slope.sum())

    return minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B").x


def _balanced(weight: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`weight` rescaled so each class weighs half (a fold without a file of one class keeps no
    lean towards the other: strong regularisation would otherwise decide by the bias alone)."""
    return np.where(y > 0, 0.5 / weight[y > 0].sum(), 0.5 / weight[y < 0].sum()) * weight


def _folds(groups: np.ndarray, y: np.ndarray, seed: int) -> list[np.ndarray]:
    """Each fold's held-out files: one file each up to 24 files, else eight folds, both folders in each."""
    files = np.unique(groups)
    if len(files) <= 24:
        return [np.array([f]) for f in files]
    rng, folds = np.random.default_rng(seed), [[] for _ in range(8)]
    for label in (-1, 1):
        mine = rng.permutation(np.unique(groups[y == label]))
        for k, f in enumerate(mine):
            folds[k % 8].append(f)
    return [np.array(f) for f in folds]


def fit_attribute(name: str, positive: list[np.ndarray], negative: list[np.ndarray], *,
                  others: list[np.ndarray] = (), crop: tuple[float, float] = (0.0, 0.0),
                  seed: int = 0) -> LearnedAttribute:
    """A learned attribute from each folder's files' faces (each file (n, 68, 2), normalised crop
    coordinates); `others`: more directions (68, 2) to take out, as yaw's and pitch's. See the module."""
    check_name(name)
    files = [(np.asarray(f, np.float64).reshape(-1, 136), label) for label, folder in ((1, positive), (-1, negative))
             for f in folder if len(f)]
    x = np.concatenate([f for f, _ in files])
    y = np.concatenate([np.full(len(f), label, np.float64) for f, label in files])
    groups = np.concatenate([np.full(len(f), k) for k, (f, _) in enumerate(files)])
    count = {label: sum(lab == label for _, lab in files) for label in (1, -1)}
    weight = np.concatenate([np.full(len(f), 1.0 / (len(f) * count[label])) for f, label in files])
    basis = nuisance(x.mean(0).reshape(68, 2), list(others))
    centred = x - x.mean(0)
    centred = centred - (centred @ basis.T) @ basis
    z = centred / max(float(centred.std()), 1e-12)
    folds = _folds(groups, y, seed)
    best = (-1.0, LAMBDAS[0])
    for lam in LAMBDAS:
        right = 0.0
        for held in folds:
            out = np.isin(groups, held)
            theta = _logistic(z[~out], y[~out], _balanced(weight[~out], y[~out]), lam)
            right += weight[out] @ (np.sign(z[out] @ theta[:-1] + theta[-1]) == y[out])
        best = max(best, (right / weight.sum(), lam), key=lambda b: b[0])   # ties keep the stronger
    w = _logistic(z, y, weight, best[1])[:-1]
    w = w - (w @ basis.T) @ basis
    if not np.linalg.norm(w) > 0:
        raise InputError("the two folders' faces do not differ in their landmarks (the same faces in both?)")
    normal = w / np.linalg.norm(w)
    means = {label: (weight[y == label] @ x[y == label]) / weight[y == label].sum() for label in (1, -1)}
    along = {label: float(normal @ means[label]) for label in (1, -1)}
    if not along[1] > along[-1]:
        raise InputError("the positive examples' faces do not lie beyond the negative's: no direction to learn")
    return LearnedAttribute(name, normal.reshape(68, 2), along[-1], along[1], float(best[0]), count[1], count[-1],
                            len(x), tuple(map(float, crop)))
