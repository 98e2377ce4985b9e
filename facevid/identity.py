"""Measurements on aligned face crops with dlib (evaluation only): the 128-D identity
embedding (same person below 0.6 L2) and 68 landmarks (iBUG 300-W model: non-commercial)."""

from __future__ import annotations

import numpy as np

from facevid.crop import HOG_BOX_IN_TEMPLATE, CropSpec

WORK_SIZE = 256   # crops are measured at this size (dlib wants faces of 80 px and more)


def crop_face_box(spec: CropSpec, size: int) -> np.ndarray:
    """Where the detector's face box lies in a crop of `size` cut with `spec`."""
    side = 1.0 + 2.0 * spec.margin
    origin = np.array([0.5 - side / 2, spec.center_y - side / 2] * 2)
    return (HOG_BOX_IN_TEMPLATE - origin) * size / side


class FaceMeter:
    """Identity embeddings and 68 landmarks of aligned crops (the face box is known)."""

    def __init__(self, spec: CropSpec):
        import dlib
        import face_recognition_models as models

        self.dlib = dlib
        self.box = dlib.rectangle(*[int(round(v)) for v in crop_face_box(spec, WORK_SIZE)])
        self.shape5 = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self.shape68 = dlib.shape_predictor(models.pose_predictor_model_location())
        self.encoder = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    def _work(self, crop: np.ndarray) -> tuple[np.ndarray, float]:
        import cv2

        scale = WORK_SIZE / crop.shape[0]
        if crop.shape[0] != WORK_SIZE:
            crop = cv2.resize(crop, (WORK_SIZE, WORK_SIZE), interpolation=cv2.INTER_CUBIC)
        return np.ascontiguousarray(crop), scale

    def embedding(self, crop: np.ndarray) -> np.ndarray:
        image, _ = self._work(crop)
        shape = self.shape5(image, self.box)
        return np.array(self.encoder.compute_face_descriptor(image, shape))

    def landmarks(self, crop: np.ndarray) -> np.ndarray:
        """(68, 2) in the crop's own pixels."""
        image, scale = self._work(crop)
        shape = self.shape68(image, self.box)
        return np.array([(p.x, p.y) for p in shape.parts()], float) / scale


def iod(landmarks: np.ndarray) -> float:
    """Inter-ocular distance of 68-point landmarks (eye centres)."""
    return float(np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0)))


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
