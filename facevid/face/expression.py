"""Expression transfer between two faces' 68 landmarks (iBUG 300-W order): the driver's mouth,
eyes and brows on the source's face shape (seed 004's image-to-image expression transfer)."""

from __future__ import annotations

import numpy as np

from facevid.face.landmarks import CHIN, LEFT_BROW, LEFT_EYE, LOWER_LIP_BOTTOM, MOUTH, RIGHT_BROW, RIGHT_EYE, STABLE

# the regions whose shape is the expression; the rest (jaw line, nose) is the source's face
EXPRESSIVE = (MOUTH, LEFT_EYE, RIGHT_EYE, LEFT_BROW, RIGHT_BROW)
JAW_BELOW_MOUTH = np.arange(CHIN - 4, CHIN + 5)          # moves with the lower lip; the chin the most


def eye_openness(marks: np.ndarray) -> float:
    """Mean eye aspect ratio of both eyes (lid gap over eye width) of 68 landmarks (68, 2)."""
    marks = np.asarray(marks, np.float64)
    ratios = []
    for eye in (LEFT_EYE, RIGHT_EYE):
        p = marks[eye]
        gap = (np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / 2
        ratios.append(gap / max(np.linalg.norm(p[0] - p[3]), 1e-9))
    return float(np.mean(ratios))


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The (2, 3) similarity transform that best maps points src (N, 2) onto dst (N, 2) (Umeyama)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sigma, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ d @ vt
    scale = (sigma * np.diag(d)).sum() / max((a ** 2).sum() / len(src), 1e-12)
    return np.hstack([scale * rotation, (mu_d - scale * rotation @ mu_s)[:, None]])


def expression_target(source: np.ndarray, driver: np.ndarray) -> np.ndarray:
    """Landmarks (68, 2) of the source face wearing the driver's expression.

    The driver is brought onto the source's pose and size by a similarity fit of its stable
    points; then each expressive region (mouth, each eye, each brow) takes the driver's shape
    about the source's own region centre, and the jaw below the mouth follows the lower lip.
    The jaw line, nose and the regions' positions stay the source's."""
    source, driver = np.asarray(source, np.float64), np.asarray(driver, np.float64)
    fit = similarity_fit(driver[STABLE], source[STABLE])
    aligned = driver @ fit[:, :2].T + fit[:, 2]
    target = source.copy()
    for region in EXPRESSIVE:
        target[region] = source[region].mean(0) + aligned[region] - aligned[region].mean(0)
    drop = (target[LOWER_LIP_BOTTOM] - source[LOWER_LIP_BOTTOM])[None]   # the lower lip's move, to the chin
    weight = 1 - np.abs(JAW_BELOW_MOUTH - CHIN) / 5.0
    target[JAW_BELOW_MOUTH] = source[JAW_BELOW_MOUTH] + weight[:, None] * drop
    return target.astype(np.float32)
