"""What a face does, measured from its 68 landmarks (iBUG 300-W order): head pose in degrees
from a fit of the landmarks to a 3-D mean face, and the expression measures beside it."""

from __future__ import annotations

import math

import numpy as np

from facevid.face.expression import eye_openness
from facevid.face.landmarks import LEFT_EYE, LOWER_INNER_LIP, RIGHT_EYE, UPPER_INNER_LIP

# A generic 3-D face (millimetres, x to the image right, y up, z toward the camera) at six
# landmarks that expression hardly moves: nose tip, chin, the outer eye corners, the mouth
# corners (the model OpenCV's head-pose examples use; depth is approximate).
POSE_POINTS = (30, 8, 36, 45, 48, 54)
MEAN_FACE = np.array([(0.0, 0.0, 0.0), (0.0, -63.6, -12.5), (-43.3, 32.7, -26.0), (43.3, 32.7, -26.0),
                      (-28.9, -28.9, -24.1), (28.9, -28.9, -24.1)])


def head_pose(marks: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of one face's 68 landmarks (68, 2), frame pixels.

    roll: the eye line's angle (+: the face's right side lower in the image, clockwise);
    yaw and pitch from a scaled-orthographic fit of the mean face (least squares, the rows made
    orthonormal): yaw + turns the face toward the image right, pitch + tilts it down
    (facevid.synthetic's conventions). Good to a few degrees within ±40°, for ranges and comparisons."""
    marks = np.asarray(marks, np.float64)
    left, right = marks[LEFT_EYE].mean(0), marks[RIGHT_EYE].mean(0)
    roll = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
    image = marks[list(POSE_POINTS)]
    model = MEAN_FACE * np.array([1.0, -1.0, -1.0])         # camera axes: x right, y down, z away
    x, y = model - model.mean(0), image - image.mean(0)
    projection = np.linalg.lstsq(x, y, rcond=None)[0].T      # (2, 3): image ≈ projection @ model
    u, _, vt = np.linalg.svd(projection, full_matrices=False)
    rows = u @ vt                                            # the nearest two orthonormal rows
    rotation = np.vstack([rows, np.cross(rows[0], rows[1])])   # model → camera
    toward = -rotation[:, 2]                                 # where the face looks (the model's −z)
    yaw = math.degrees(math.atan2(toward[0], -toward[2]))
    pitch = math.degrees(math.atan2(toward[1], math.hypot(toward[0], toward[2])))
    return yaw, pitch, roll


def mouth_opening(marks: np.ndarray) -> float | np.ndarray:
    """The gap between the inner lips of 68 landmarks, / inter-ocular distance: a float for
    one set (68, 2), an array for a stack (..., 68, 2)."""
    from facevid.face.identity import iod

    marks = np.asarray(marks)
    gap = np.linalg.norm(marks[..., UPPER_INNER_LIP, :] - marks[..., LOWER_INNER_LIP, :], axis=-1).mean(-1)
    opening = gap / iod(marks)
    return float(opening) if np.ndim(opening) == 0 else opening


def measure(marks: np.ndarray) -> dict[str, float]:
    """The attributes of one face's 68 landmarks: yaw, pitch, roll (degrees), mouth, eyes."""
    yaw, pitch, roll = head_pose(marks)
    return {"yaw": yaw, "pitch": pitch, "roll": roll, "mouth": float(mouth_opening(marks)), "eyes": eye_openness(marks)}
