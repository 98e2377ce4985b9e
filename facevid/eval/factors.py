"""The synthetic transfer benchmark: facevid.synthetic's known factors read back from pixels.

`fit_estimator` fits a two-stage ridge read-out (closed-form least squares only) on heads
rendered on the fly with a fixed seed (about 15 s on one core). Stage one maps coarse features of a crop (16x16
colour, gradient-orientation histograms at 48 px) to the 68 landmarks; stage two aligns
the crop to the mean face with a similarity fitted to those predicted landmarks, so a
turned head's mouth and eyes land in the same cells, and maps coarse + aligned features
to every identity and motion factor. It is scored on held-out identities (R² per factor),
so a reader can see which factors are measurable at all.

`synthetic_benchmark` then animates a still source head with a driver head's motion and
reads the factors of each output frame: identity should stay the source's, motion should
follow the driver's. "copy source" and "paste driver" bracket the model.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from facevid import synthetic
from facevid.face.landmarks import BROWS_AND_EYES, MOUTH

if TYPE_CHECKING:
    from facevid.model.facevid import FaceVid

FACTORS = synthetic.IDENTITY_FACTORS + synthetic.MOTION_FACTORS
MEASURABLE_R2 = 0.5                   # factors below this held-out R² are left out of the group errors
ALIGNED_BOX = (0.16, 0.22, 0.68)      # aligned face region: left, top, side (fractions of the crop)
LAMBDAS = (10.0, 100.0, 1000.0, 1e4, 1e5)   # ridge strengths tried; the best on validation is kept per target


def gradient_histograms(grey: np.ndarray, cell: int = 4, bins: int = 9) -> np.ndarray:
    """HOG-like features of (N, H, W) grey images: per cell of cell x cell pixels, the
    gradient magnitude binned by unsigned orientation, L2-normalised per cell."""
    n, h, w = grey.shape
    g = grey.astype(np.float32)
    gx, gy = np.zeros_like(g), np.zeros_like(g)
    gx[:, :, 1:-1] = g[:, :, 2:] - g[:, :, :-2]
    gy[:, 1:-1] = g[:, 2:] - g[:, :-2]
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi) * (bins / np.pi)
    low = np.floor(angle).astype(np.int64) % bins
    frac = angle - np.floor(angle)
    ch, cw = h // cell, w // cell
    cells = (np.arange(h)[:, None] // cell).clip(max=ch - 1) * cw + (np.arange(w)[None] // cell).clip(max=cw - 1)
    index = (np.arange(n)[:, None, None] * (ch * cw) + cells) * bins                # (N, H, W)
    # each pixel votes into its two nearest orientation bins (linear interpolation)
    hist = np.bincount((index + low).ravel(), (magnitude * (1 - frac)).ravel(), n * ch * cw * bins)
    hist += np.bincount((index + (low + 1) % bins).ravel(), (magnitude * frac).ravel(), n * ch * cw * bins)
    hist = hist.reshape(n, ch, cw, bins).astype(np.float32)
    hist /= np.sqrt((hist ** 2).sum(-1, keepdims=True) + 1e-3 * cell * cell)
    return hist.reshape(n, -1)


def _resized(images, width: int, height: int) -> np.ndarray:
    return np.stack([cv2.resize(i, (width, height), interpolation=cv2.INTER_AREA) for i in images])


def coarse_features(crops: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8 → 16x16 colour and 48 px gradient histograms of the whole crop."""
    grey = _resized([cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) for c in crops], 48, 48).astype(np.float32) / 255
    return np.concatenate([_resized(crops, 16, 16).reshape(len(crops), -1) / 255, gradient_histograms(grey)], 1)


ALIGNED_SIDE = 96   # the aligned face canvas (pixels)
PARTS = ((MOUTH, 6, (32, 16)),             # mouth: its landmarks, padding (canvas pixels), patch width x height
         (BROWS_AND_EYES, 4, (48, 16)))


def aligned_features(crops: np.ndarray, marks: np.ndarray, mean_shape: np.ndarray) -> np.ndarray:
    """Each crop after a similarity fitted from its landmarks (N, 68, 2) in pixels onto the mean
    shape (fractions of the crop): the face at 48 px (gradient histograms, 24x24 grey) and the
    mouth and the eyes at the canvas's resolution (grey pixels, gradient histograms)."""
    left, top, side = ALIGNED_BOX
    target = ((mean_shape - [left, top]) / side * ALIGNED_SIDE).astype(np.float32)
    scale = ALIGNED_SIDE / (side * crops.shape[1])
    fallback = np.array([[scale, 0, -left / side * ALIGNED_SIDE], [0, scale, -top / side * ALIGNED_SIDE]])
    faces = []
    for crop, points in zip(crops, marks):
        matrix, _ = cv2.estimateAffinePartial2D(points.astype(np.float32), target)
        faces.append(cv2.warpAffine(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), fallback if matrix is None else matrix,
                                    (ALIGNED_SIDE, ALIGNED_SIDE), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE))
    faces = np.stack(faces).astype(np.float32) / 255                       # (N, A, A)
    face = _resized(faces, 48, 48)
    features = [gradient_histograms(face), _resized(face, 24, 24).reshape(len(faces), -1)]
    for points, pad, (width, height) in PARTS:
        x0, y0 = np.maximum(target[points].min(0) - pad, 0).astype(int)
        x1, y1 = np.minimum(target[points].max(0) + pad + 1, ALIGNED_SIDE).astype(int)
        patch = _resized(faces[:, y0:y1, x0:x1], width, height)
        features += [patch.reshape(len(faces), -1), gradient_histograms(patch)]
    return np.concatenate(features, 1)


@dataclass(frozen=True)
class Ridge:
    """A linear read-out of standardised features."""

    mean: np.ndarray     # (P,) feature means of the fitting set
    std: np.ndarray      # (P,) ... and standard deviations
    weights: np.ndarray  # (P, F)
    offset: np.ndarray   # (F,) target means

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std) @ self.weights + self.offset


def fit_ridge(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> Ridge:
    """Ridge regression in its dual form (fewer samples than features), the strength chosen
    per target from LAMBDAS on the validation set."""
    mean, std = x.mean(0), x.std(0) + 1e-3
    xs = (x - mean) / std
    offset = y.mean(0)
    gram = xs @ xs.T
    best_err, best = np.full(y.shape[1], np.inf), np.zeros((x.shape[1], y.shape[1]))
    for lam in LAMBDAS:
        weights = xs.T @ np.linalg.solve(gram + lam * np.eye(len(xs)), y - offset)
        err = (((x_val - mean) / std @ weights + offset - y_val) ** 2).mean(0)
        better = err < best_err
        best_err[better], best[:, better] = err[better], weights[:, better]
    return Ridge(mean, std, best, offset)


@dataclass(frozen=True)
class FactorEstimator:
    """Identity and motion factors (in FACTORS order) of synthetic-head crops of one size."""

    size: int                   # crop side it reads
    mean_shape: np.ndarray      # (68, 2) mean landmarks, fractions of the crop
    landmarks: Ridge            # coarse features → 68 landmarks (pixels, flattened)
    factors: Ridge              # coarse + aligned features → factors
    scale: np.ndarray           # (F,) each factor's std over the training renders
    r2: dict                    # held-out R² per factor
    seconds: float              # rendering + fitting time

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) uint8 → (N, F) factors."""
        coarse = coarse_features(crops)
        marks = self.landmarks(coarse).reshape(len(crops), 68, 2)
        return self.factors(np.concatenate([coarse, aligned_features(crops, marks, self.mean_shape)], 1))


def random_motion(rng: np.random.Generator) -> synthetic.Motion:
    """Every motion factor uniform over its range, independently of the others."""
    return synthetic.Motion(**{k: float(rng.uniform(*synthetic.MOTION_RANGES[k])) for k in synthetic.MOTION_FACTORS})


def driver_track(rng: np.random.Generator, frames: int) -> list[synthetic.Motion]:
    """A talking motion track shifted to start at rest, the source's motion: relative and
    absolute transfer then agree, and pasting the driver has exactly the expected motion."""
    track = [synthetic.motion_vector(m) for m in synthetic.random_motion_sequence(rng, frames)]
    low, high = np.array([synthetic.MOTION_RANGES[k] for k in synthetic.MOTION_FACTORS]).T
    return [synthetic.motion_from_vector(np.clip(m - track[0], low, high)) for m in track]


def _renders(size: int, identities: int, per_identity: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops, their landmarks (pixels) and their factor values, `per_identity` per random head."""
    crops, marks, values = [], [], []
    for _ in range(identities):
        identity = synthetic.random_identity(rng)
        talking = driver_track(rng, 50)
        for j in range(per_identity):   # every factor spread out, and motion as the benchmark shows it
            motion = random_motion(rng) if j % 2 else talking[rng.integers(len(talking))]
            crops.append(synthetic.render(identity, motion, size))
            marks.append(synthetic.landmarks(identity, motion, size))
            values.append(np.concatenate([synthetic.identity_vector(identity), synthetic.motion_vector(motion)]))
    return np.stack(crops), np.stack(marks), np.stack(values)


@functools.lru_cache(maxsize=2)
def fit_estimator(size: int, *, identities: int = 600, per_identity: int = 5, seed: int = 0) -> FactorEstimator:
    """Fit on renders of `identities` random heads in `per_identity` motions each (alternately
    frames of talking tracks and every factor uniform over its range): 70% of the heads fit,
    15% choose the ridge strengths, 15% (unseen heads) give the R². Cached in memory."""
    started = time.perf_counter()
    crops, marks, values = _renders(size, identities, per_identity, np.random.default_rng(seed))
    fit, val, test = np.split(np.arange(len(crops)), [int(0.7 * identities) * per_identity,
                                                      int(0.85 * identities) * per_identity])
    coarse = coarse_features(crops)
    flat = marks.reshape(len(marks), -1)
    landmarks = fit_ridge(coarse[fit], flat[fit], coarse[val], flat[val])
    mean_shape = marks[fit].mean(0) / size
    predicted = landmarks(coarse).reshape(marks.shape)
    features = np.concatenate([coarse, aligned_features(crops, predicted, mean_shape)], 1)
    factors = fit_ridge(features[fit], values[fit], features[val], values[val])
    residual = ((factors(features[test]) - values[test]) ** 2).mean(0)
    r2 = 1 - residual / np.maximum(values[test].var(0), 1e-12)
    return FactorEstimator(size, mean_shape, landmarks, factors, values[fit].std(0) + 1e-9,
                           {k: float(v) for k, v in zip(FACTORS, r2)}, time.perf_counter() - started)


SYNTHETIC_COLUMNS = ["source", "driver", "target (truth)", "model"]


def synthetic_benchmark(model: FaceVid, *, pairs: int = 6, frames: int = 24, steps: int | None = None, guidance: float = 1.0,
                        seed: int = 0, estimator: FactorEstimator | None = None,
                        sheet_rows: list | None = None) -> dict:
    """Factor errors after transfer between synthetic heads, in training-set stds: identity
    against the source's true factors, motion against rest + (driver_t − driver_0) (relative
    transfer; the source is a still head at rest), for the model, "copy source" and "paste
    driver". Group errors average the factors the estimator measures (held-out R² ≥
    MEASURABLE_R2); "psnr" compares with the source rendered in the driver's motion."""
    from facevid.eval.reenactment import psnr, reenact

    size = model.cfg.out_size
    estimator = fit_estimator(size) if estimator is None else estimator
    rng = np.random.default_rng(seed)
    rest = synthetic.motion_vector(synthetic.Motion())
    errors: dict[str, list] = {}
    quality: dict[str, list] = {}
    for _ in range(pairs):
        source_id, driver_id = synthetic.random_identity(rng), synthetic.random_identity(rng)
        track = driver_track(rng, frames)
        motion = np.stack([synthetic.motion_vector(m) for m in track])
        motion = rest + (motion - motion[0])                          # what the output should show
        expected = np.concatenate([np.repeat(synthetic.identity_vector(source_id)[None], frames, 0), motion], 1)
        source = synthetic.render(source_id, synthetic.Motion(), size)
        driver = synthetic.render_clip(driver_id, track, size)
        target = synthetic.render_clip(source_id, [synthetic.motion_from_vector(m) for m in motion], size)
        marks = (synthetic.landmarks(source_id, synthetic.Motion(), size=size),   # exact, as in training
                 np.stack([synthetic.landmarks(driver_id, m, size=size) for m in track]))
        outputs = {"model": reenact(model, source, driver, steps=steps, guidance=guidance, marks=marks),
                   "copy source": np.repeat(source[None], frames, 0), "paste driver": driver}
        for name, frames_out in outputs.items():
            errors.setdefault(name, []).append(np.abs(estimator(frames_out) - expected) / estimator.scale)
            quality.setdefault(name, []).extend(psnr(a, b) for a, b in zip(target, frames_out))
        if sheet_rows is not None:
            t = int(np.argmax(np.abs((motion - rest) / estimator.scale[-len(rest):]).sum(1)))   # most moved
            sheet_rows.append([source, driver[t], target[t], outputs["model"][t]])
    return _summary(estimator, errors, quality, pairs, frames)


def _summary(estimator: FactorEstimator, errors: dict, quality: dict, pairs: int, frames: int) -> dict:
    n_identity = len(synthetic.IDENTITY_FACTORS)
    measured = [i for i, k in enumerate(FACTORS) if estimator.r2[k] >= MEASURABLE_R2]
    identity = [i for i in measured if i < n_identity]
    motion = [i for i in measured if i >= n_identity]
    methods = {}
    for name, per_pair in errors.items():
        error = np.concatenate(per_pair).mean(0)                                        # (F,)
        methods[name] = {"identity": float(error[identity].mean()) if identity else None,
                         "motion": float(error[motion].mean()) if motion else None,
                         "psnr": float(np.mean(quality[name])),
                         **{k: float(error[n_identity + j]) for j, k in enumerate(synthetic.MOTION_FACTORS)}}
    return {"methods": methods, "pairs": pairs, "frames": frames,
            "identity_factors": [FACTORS[i] for i in identity], "motion_factors": [FACTORS[i] for i in motion],
            "estimator": {"size": estimator.size, "seconds": estimator.seconds, "r2": estimator.r2,
                          "measurable_r2": MEASURABLE_R2}}
