"""Measurements on aligned face crops with dlib (evaluation only): the 128-D identity
embedding (same person below 0.6 L2) and 68 landmarks (iBUG 300-W model: non-commercial)."""

from __future__ import annotations

import numpy as np

from facevid.face.crop import CropSpec
from facevid.face.landmarks import LEFT_EYE, RIGHT_EYE
from facevid.face.track import Landmarks68, dlib_model


class FaceMeter:
    """Identity embeddings and 68 landmarks of aligned crops (the face box is known), measured
    as the training data's and the driver's landmarks are (facevid.face.track.Landmarks68)."""

    def __init__(self, spec: CropSpec):
        self.marks = Landmarks68(spec)
        self.shape5, self.encoder = dlib_model("five"), dlib_model("identity")

    def embedding(self, crop: np.ndarray) -> np.ndarray:
        image = self.marks.measure_size(crop)
        shape = self.shape5(image, self.marks.box)
        return np.array(self.encoder.compute_face_descriptor(image, shape))

    def landmarks(self, crop: np.ndarray) -> np.ndarray:
        """(68, 2) in the crop's own pixels."""
        return self.marks.on_crop(crop)


def iod(landmarks: np.ndarray) -> float | np.ndarray:
    """Inter-ocular distance of 68-point landmarks (eye centres): a float for one set (68, 2),
    an array for a stack (..., 68, 2)."""
    landmarks = np.asarray(landmarks)
    distance = np.linalg.norm(landmarks[..., LEFT_EYE, :].mean(-2) - landmarks[..., RIGHT_EYE, :].mean(-2), axis=-1)
    return float(distance) if distance.ndim == 0 else distance


def motion_error(output: np.ndarray, driver: np.ndarray) -> float:
    """Mean landmark displacement error of output vs driver, each from its own frame 0,
    normalised by the driver's inter-ocular distance. (T, 68, 2) each."""
    d_out = output - output[:1]
    d_drv = driver - driver[:1]
    return float(np.linalg.norm(d_out - d_drv, axis=-1).mean() / iod(driver[0]))


def jitter(landmarks: np.ndarray) -> float:
    """Mean second difference of landmarks over time / IOD (shake; 0 for smooth motion)."""
    if len(landmarks) < 3:
        return 0.0
    return float(np.linalg.norm(np.diff(landmarks, 2, axis=0), axis=-1).mean() / iod(landmarks[0]))


def temporal_identity(embeddings: np.ndarray) -> tuple[float, float]:
    """(TL-ID, TG-ID) of seed 003 as raw means: cosine similarity of identity embeddings
    between adjacent frames (local) and between all pairs of frames (global)."""
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sim = e @ e.T
    local = float(np.mean(np.diag(sim, 1))) if len(e) > 1 else 1.0
    upper = sim[np.triu_indices(len(e), 1)]
    return local, float(upper.mean()) if len(upper) else 1.0
