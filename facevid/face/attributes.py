"""What a face does, measured from its 68 landmarks (iBUG 300-W order): head pose in degrees
from a fit of the landmarks to a 3-D mean face, and the expression measures beside it.

`ATTRIBUTES` names every measure with its unit and the range a slider spans; `measure` computes
them all for one face. The expression measures are taken in the face's own frame (the eye line
level) and in eye distances, so they do not change with the head's roll, place or size."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facevid.face.expression import eye_openness
from facevid.face.landmarks import LEFT_BROW, LEFT_EYE, LOWER_INNER_LIP, RIGHT_BROW, RIGHT_EYE, UPPER_INNER_LIP

MOUTH_CORNERS = (48, 54)
LIP_CENTRES = (51, 57, 62, 66)   # the lips' middle, outer and inner, top and bottom


@dataclass(frozen=True)
class Attribute:
    name: str
    unit: str
    low: float       # the range a slider spans: 98% of the training frames' faces lie inside it
    high: float
    about: str


ATTRIBUTES = {a.name: a for a in (
    Attribute("smile", "eye distances", 0.5, 1.3, "mouth corners' spread plus their lift above the lips' middle"),
    Attribute("mouth", "eye distances", 0.0, 0.6, "gap between the inner lips"),
    Attribute("eyes", "ratio", 0.0, 0.5, "eye aspect ratio, both eyes (lid gap ÷ eye width)"),
    Attribute("left-eye", "ratio", 0.0, 0.5, "aspect ratio of the eye on the image's left"),
    Attribute("right-eye", "ratio", 0.0, 0.5, "aspect ratio of the eye on the image's right"),
    Attribute("brows", "eye distances", 0.15, 0.55, "brows' height above the eyes"),
    Attribute("yaw", "degrees", -45.0, 45.0, "head turned toward the image's right"),
    Attribute("pitch", "degrees", -30.0, 30.0, "head tilted down"),
    Attribute("roll", "degrees", -30.0, 30.0, "head leaning clockwise in the image"),
)}

# A generic 3-D face (millimetres, x to the image right, y up, z toward the camera) at nine
# landmarks no expression moves: the nose tip, the top of the nose bridge, the base of the nose
# and the nostrils, and the eye corners (OpenCV's head-pose examples' mean face for the nose tip
# and the outer eye corners; the others' depths approximate). The mouth and chin are left out: a
# smile or an opened mouth moved the pitch of a fit that used them by 15° on the synthetic heads.
PITCH_ZERO = -16.3   # the fit's pitch of the training frames' median face (most look at the camera), taken off
POSE_POINTS = (30, 27, 33, 31, 35, 36, 39, 42, 45)
MEAN_FACE = np.array([(0.0, 0.0, 0.0), (0.0, 33.0, -17.0), (0.0, -6.5, -11.0), (-10.0, -4.0, -15.0),
                      (10.0, -4.0, -15.0), (-43.3, 32.7, -26.0), (-15.5, 32.7, -21.0), (15.5, 32.7, -21.0),
                      (43.3, 32.7, -26.0)])


def head_pose(marks: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of one face's 68 landmarks (68, 2), frame pixels.

    roll: the eye line's angle (+: the face's right side lower in the image, clockwise);
    yaw and pitch from a scaled-orthographic fit of the mean face (least squares, the rows made
    orthonormal) to the landmarks with the roll taken off: yaw + turns the face toward the image
    right, pitch + tilts it down (facevid.synthetic's conventions). Changes of pose are good to a
    few degrees within ±40° (on the synthetic heads: gain 1.03 in yaw, 1.02 in pitch); the
    absolute pitch depends on the face's own shape: PITCH_ZERO makes the training frames' median
    face read 0 (the synthetic head looking ahead reads 24°)."""
    marks = np.asarray(marks, np.float64)
    left, right = marks[LEFT_EYE].mean(0), marks[RIGHT_EYE].mean(0)
    roll = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
    image = level(marks)[list(POSE_POINTS)]   # roll taken off first: yaw and pitch are the face's own
    model = MEAN_FACE * np.array([1.0, -1.0, -1.0])         # camera axes: x right, y down, z away
    x, y = model - model.mean(0), image - image.mean(0)
    projection = np.linalg.lstsq(x, y, rcond=None)[0].T      # (2, 3): image ≈ projection @ model
    u, _, vt = np.linalg.svd(projection, full_matrices=False)
    rows = u @ vt                                            # the nearest two orthonormal rows
    rotation = np.vstack([rows, np.cross(rows[0], rows[1])])   # model → camera
    toward = -rotation[:, 2]                                 # where the face looks (the model's −z)
    yaw = math.degrees(math.atan2(toward[0], -toward[2]))
    pitch = math.degrees(math.atan2(toward[1], math.hypot(toward[0], toward[2]))) - PITCH_ZERO
    return yaw, pitch, roll


def mouth_opening(marks: np.ndarray) -> float | np.ndarray:
    """The gap between the inner lips of 68 landmarks, / inter-ocular distance: a float for
    one set (68, 2), an array for a stack (..., 68, 2)."""
    from facevid.face.identity import iod

    marks = np.asarray(marks)
    gap = np.linalg.norm(marks[..., UPPER_INNER_LIP, :] - marks[..., LOWER_INNER_LIP, :], axis=-1).mean(-1)
    opening = gap / iod(marks)
    return float(opening) if np.ndim(opening) == 0 else opening


def level(marks: np.ndarray) -> np.ndarray:
    """68 landmarks in the face's own frame: the eye centres level, their midpoint at 0, their
    distance 1 (x to the image's right, y down)."""
    marks = np.asarray(marks, np.float64)
    left, right = marks[LEFT_EYE].mean(0), marks[RIGHT_EYE].mean(0)
    d = right - left
    scale = 1.0 / max(float(np.hypot(*d)), 1e-9)
    c, s = d / max(float(np.hypot(*d)), 1e-9)
    rotate = np.array([[c, s], [-s, c]]) * scale
    return (marks - (left + right) / 2) @ rotate.T


def _aspect(eye: np.ndarray) -> float:
    gap = (np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])) / 2
    return float(gap / max(np.linalg.norm(eye[0] - eye[3]), 1e-9))


def measure(marks: np.ndarray) -> dict[str, float]:
    """Every attribute of ATTRIBUTES for one face's 68 landmarks (68, 2), frame pixels."""
    yaw, pitch, roll = head_pose(marks)
    face = level(marks)
    corners, centre = face[list(MOUTH_CORNERS)], face[list(LIP_CENTRES)].mean(0)
    spread = float(np.linalg.norm(corners[1] - corners[0]))
    lift = float(centre[1] - corners[:, 1].mean())            # y is down: corners above the middle lift
    brows = float((face[LEFT_EYE][:, 1].mean() - face[LEFT_BROW][:, 1].mean()
                   + face[RIGHT_EYE][:, 1].mean() - face[RIGHT_BROW][:, 1].mean()) / 2)
    return {"smile": spread + lift, "mouth": float(mouth_opening(marks)), "eyes": eye_openness(marks),
            "left-eye": _aspect(face[LEFT_EYE]), "right-eye": _aspect(face[RIGHT_EYE]), "brows": brows,
            "yaw": yaw, "pitch": pitch, "roll": roll}
