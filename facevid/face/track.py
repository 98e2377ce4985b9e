"""Face detection, landmarks and causal track smoothing (the crops themselves: face/crop.py).

The crop geometry follows dlib's 5-point face chip (the mean-face template of
`get_face_chip_details`), the smoothing is a One-Euro filter (Casiez et al., CHI 2012)
run causally on the similarity transform, and paste-back is LivePortrait-style:
inverse warp, feathered mask, optional colour matching.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from facevid.errors import BackendUnavailableError, ConfigError
from facevid.face.crop import (
    CropSpec,
    align_transform,
    box_from_landmarks,
    cut_crop,
    face_box_in_crop,
    iou,
    params_to_transform,
    transform_to_params,
)
from facevid.face.landmarks import FIVE_FROM_68

T = TypeVar("T")

ALIGNERS = ("auto", "dlib", "face-alignment")


@dataclass
class Detection:
    """One face in one frame: detector box (x0, y0, x1, y1), score, 5 landmarks."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray            # (5, 2) float, template order
    landmarks68: np.ndarray | None = None


# --------------------------------------------------------------------------- backends

WEAK_DETECTION = 0.3   # dlib HOG score under which a detection loses to any clearer one
RECOVER_THRESHOLD = -0.5   # ... down to which the followed face is looked for near its last box


def _shape_points(dlib, predictor, image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A dlib shape predictor's points (N, 2) in frame pixels, float64, inside box (x0, y0, x1, y1)."""
    shape = predictor(image, dlib.rectangle(*[int(round(v)) for v in box]))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


DLIB_MODELS = ("detector", "five", "sixty-eight", "identity")


@functools.cache
def dlib_model(name: str):
    """dlib's HOG face detector, its 5- or 68-point shape predictor or its identity encoder,
    loaded once per process and shared (read-only: dlib's calls do not change them): every
    `facevid.transfer` call loaded the 68-point model's 100 MB file again."""
    import dlib
    import face_recognition_models as models

    if name == "detector":
        return dlib.get_frontal_face_detector()
    if name == "identity":
        return dlib.face_recognition_model_v1(models.face_recognition_model_location())
    files = {"five": models.pose_predictor_five_point_model_location,
             "sixty-eight": models.pose_predictor_model_location}
    if name not in files:
        raise ValueError(f"unknown dlib model {name!r} (one of {', '.join(DLIB_MODELS)})")
    return dlib.shape_predictor(files[name]())


class DlibBackend:
    """Offline default: dlib HOG detector + 5-point shape predictor (CC0 models)."""

    name = "dlib"

    def __init__(self, detect_max_side: int = 640):
        import dlib

        self._detector, self._predictor = dlib_model("detector"), dlib_model("five")
        self._dlib = dlib
        self.detect_max_side = detect_max_side

    def detect(self, image: np.ndarray, threshold: float = 0.0) -> list[tuple[np.ndarray, float]]:
        """Boxes (x0, y0, x1, y1) in frame pixels with detector scores, largest first.

        `threshold` < 0 also returns less certain detections, all of them (the tracker uses it
        to find the face it follows where the detector scores it under 0)."""
        h, w = image.shape[:2]
        scale = min(1.0, self.detect_max_side / max(h, w))
        small = image if scale == 1.0 else cv2.resize(image, (round(w * scale), round(h * scale)),
                                                      interpolation=cv2.INTER_AREA)
        rects, scores, _ = self._detector.run(small, 0, threshold)
        if not rects and (max(small.shape[:2]) <= 400 or scale < 1):
            # small frames, or large ones shrunk for speed: look for small faces too (a face of
            # 250 px in a 4000 px photo is 40 px at 640, under HOG's 80 px window)
            rects, scores, _ = self._detector.run(small, 1, threshold)
        found = [(np.array([r.left(), r.top(), r.right(), r.bottom()], float) / scale, float(s))
                 for r, s in zip(rects, scores)]
        if threshold >= 0:
            # weak detections only count when nothing clearer is there (the astronaut photo's
            # mission patch scores 0.06 beside her face's 1.30, and is the larger box)
            floor = min(WEAK_DETECTION, max((s for _, s in found), default=0.0))
            found = [d for d in found if d[1] >= floor]
        return sorted(found, key=lambda d: -(d[0][2] - d[0][0]) * (d[0][3] - d[0][1]))

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, None]:
        return _shape_points(self._dlib, self._predictor, image, box), None


def face_alignment_weights() -> list[Path]:
    """Where face-alignment keeps its weights (it downloads them on first use)."""
    torch_home = Path(os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "torch"))
    folder = torch_home.expanduser() / "hub" / "checkpoints"
    return [folder / "2DFAN4-11f355bf06.pth.tar", folder / "s3fd-619a316812.pth"]


def face_alignment_available() -> str | None:
    """None when the face-alignment backend can run offline, else the reason it cannot."""
    try:
        import face_alignment  # noqa: F401
    except ImportError:
        return "the face-alignment package is not installed (pip install face-alignment)"
    missing = [str(p) for p in face_alignment_weights() if not p.exists()]
    if missing:
        return f"face-alignment weights are missing ({', '.join(missing)})"
    return None


class FaceAlignmentBackend(DlibBackend):
    """68-point 2D-FAN landmarks (face-alignment) on boxes from dlib's HOG detector."""

    name = "face-alignment"

    def __init__(self, detect_max_side: int = 640, device: str = "cpu"):
        reason = face_alignment_available()
        if reason:
            raise BackendUnavailableError(f"aligner 'face-alignment' is unavailable: {reason}")
        super().__init__(detect_max_side)
        import face_alignment

        self._fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device=device,
                                                flip_input=False)

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = self._fa.get_landmarks_from_image(image, detected_faces=[list(box)])
        if not found:
            return super().landmarks(image, box)
        pts68 = np.asarray(found[0], dtype=np.float64)[:, :2]
        five = pts68[list(FIVE_FROM_68)]
        five[4] = pts68[33]
        return five, pts68


MEASURE_SIZE = 256   # crops are measured at this size (dlib wants faces of 80 px and more)


class Landmarks68:
    """A face's 68 iBUG landmarks in crop pixels, as `facevid prepare` stores them for training,
    `transfer` drives the model with and `eval` measures its outputs with: dlib's 68-point
    predictor (CC0 model) run on the aligned crop, cut at 256 px, on the face box where the
    crop template puts it. The crop is already stabilised by the One-Euro track, so the box
    does not carry the per-frame jitter of the 5-point detections. Cache version 1's landmarks
    (on the frame, on a box fitted to each frame's own 5 points) jittered 9% more on 21
    training clips (0.0353 against 0.0322, mean second difference / IOD); on the same crops
    the per-frame box alone gives 0.0331 (scripts/landmark_jitter.py)."""

    def __init__(self, spec: CropSpec):
        import dlib

        self.spec = spec
        self._dlib = dlib
        self._predictor = dlib_model("sixty-eight")
        self.box = dlib.rectangle(*[int(round(v)) for v in face_box_in_crop(spec, MEASURE_SIZE)])

    @staticmethod
    def measure_size(crop: np.ndarray) -> np.ndarray:
        """The crop resized to the measuring size (as it is if it already has it)."""
        if crop.shape[0] == MEASURE_SIZE:
            return np.ascontiguousarray(crop)
        shrink = crop.shape[0] > MEASURE_SIZE
        return cv2.resize(crop, (MEASURE_SIZE, MEASURE_SIZE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)

    def on_crop(self, crop: np.ndarray) -> np.ndarray:
        """(68, 2) in the pixels of an aligned crop (S, S, 3) cut with this spec's margin and centre."""
        shape = self._predictor(self.measure_size(crop), self.box)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64) * crop.shape[0] / MEASURE_SIZE

    def __call__(self, image: np.ndarray, face: "TrackedFace", crop: np.ndarray | None = None) -> np.ndarray:
        """(68, 2) crop pixels (at spec.size) of a found face, measured on its crop cut from the
        frame at the measuring size (`crop`: the face's crop at spec.size if already cut, used
        as it is when that is the measuring size)."""
        if crop is not None and self.spec.size == MEASURE_SIZE:
            return self.on_crop(crop)
        scale = MEASURE_SIZE / self.spec.size
        return self.on_crop(cut_crop(image, face.transform * scale, MEASURE_SIZE)) / scale

    def shape(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) of the predictor run on another box (x0, y0, x1, y1) of an image."""
        return _shape_points(self._dlib, self._predictor, image, box)


def make_backend(aligner: str = "auto", device: str = "cpu"):
    """The face backend for `--aligner auto|dlib|face-alignment`."""
    if aligner not in ALIGNERS:
        raise ConfigError(f"unknown aligner '{aligner}' (choose from {', '.join(ALIGNERS)})")
    if aligner == "dlib" or (aligner == "auto" and face_alignment_available()):
        return DlibBackend()
    return FaceAlignmentBackend(device=device)


# --------------------------------------------------------------------------- smoothing

class OneEuroFilter:
    """Causal One-Euro filter over a vector: low lag when moving, no jitter when still."""

    def __init__(self, min_cutoff: np.ndarray, beta: np.ndarray, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = np.asarray(min_cutoff), np.asarray(beta), d_cutoff
        self.value: np.ndarray | None = None
        self.deriv: np.ndarray | None = None
        self.time: float | None = None

    @staticmethod
    def _alpha(cutoff, dt):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        self.value = self.deriv = self.time = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        if self.value is None:
            self.value, self.deriv, self.time = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = max(t - self.time, 1e-3)
        deriv = (x - self.value) / dt
        self.deriv = self.deriv + self._alpha(self.d_cutoff, dt) * (deriv - self.deriv)
        cutoff = self.min_cutoff + self.beta * np.abs(self.deriv)
        self.value = self.value + self._alpha(cutoff, dt) * (x - self.value)
        self.time = t
        return self.value.copy()


def continuous_angle(angle: float, previous: float) -> float:
    """`angle` shifted by whole turns to lie within π of `previous` (continuous across ±π)."""
    return previous + (angle - previous + math.pi) % (2 * math.pi) - math.pi


@dataclass
class TransformSmoother:
    """One-Euro smoothing of a frame→crop similarity in (centre, log side, angle) space.

    Centre is measured in units of the face size so one setting fits any resolution."""

    size: int
    min_cutoff: float = 0.6   # Hz: lower = steadier when still
    beta: float = 4.0         # higher = less lag when moving fast
    _filter: OneEuroFilter | None = field(default=None, repr=False)
    _unit: float = 1.0

    def reset(self) -> None:
        self._filter = None

    def __call__(self, matrix: np.ndarray, t: float) -> np.ndarray:
        params = transform_to_params(matrix, self.size)
        if self._filter is None:
            self._unit = math.exp(params[2])
            self._filter = OneEuroFilter(np.full(4, self.min_cutoff), np.full(4, self.beta))
        else:
            params[3] = continuous_angle(params[3], self._filter.value[3])
        scaled = params / np.array([self._unit, self._unit, 1.0, 1.0])
        smooth = self._filter(scaled, t) * np.array([self._unit, self._unit, 1.0, 1.0])
        return params_to_transform(smooth, self.size)


def centred_smoothing(stream: Iterable[tuple[T, "TrackedFace"]], size: int, radius: int = 3
                      ) -> Iterator[tuple[T, "TrackedFace"]]:
    """Zero-lag smoothing of a stream of (item, face) from an unsmoothed tracker, `radius` frames
    of look-ahead: each found face's frame→crop similarity becomes a quadratic's value at its
    frame, fitted (least squares) to the (centre, log side, angle) of the faces within `radius`
    frames on either side, in the same run of found faces. A face moving steadily (or
    accelerating) keeps its place where a causal filter lags a frame behind; frame-to-frame
    jitter is cut about in half. Frames come out `radius` frames late."""
    buffer: list[tuple[T, TrackedFace]] = []
    params: list[np.ndarray | None] = []

    def smoothed(i: int) -> tuple[T, TrackedFace]:
        item, face = buffer[i]
        if params[i] is None:
            return item, face
        lo, hi = i, i
        while lo > 0 and i - lo < radius and params[lo - 1] is not None:
            lo -= 1
        while hi < len(params) - 1 and hi - i < radius and params[hi + 1] is not None:
            hi += 1
        x = np.arange(lo, hi + 1) - i
        y = np.stack(params[lo:hi + 1])
        if len(x) >= 3:
            fit = np.polynomial.polynomial.polyfit(x, y, 2)   # (3, 4): its value at 0 is the first row
            value = fit[0]
        else:
            value = y.mean(0)
        return item, dataclasses.replace(face, transform=params_to_transform(value, size))

    # the next frame to emit is buffer[out]
    out = 0
    for item, face in stream:
        p = None
        if face.found:
            p = transform_to_params(face.transform, size)
            previous = next((q for q in reversed(params) if q is not None), None)
            if previous is not None:
                p[3] = continuous_angle(p[3], previous[3])
        buffer.append((item, face))
        params.append(p)
        if len(buffer) - 1 - out >= radius:   # the frame `radius` back has all its look-ahead
            yield smoothed(out)
            out += 1
            if out > radius:                  # keep `radius` frames of the past
                buffer.pop(0)
                params.pop(0)
                out -= 1
    while out < len(buffer):
        yield smoothed(out)
        out += 1


# --------------------------------------------------------------------------- tracking

@dataclass
class TrackedFace:
    """The followed face in one frame (`found` False: no face, frame passes through)."""

    index: int
    time: float
    found: bool
    detected: bool = False            # the detector ran on this frame (else landmark tracking)
    faces_seen: int | None = None     # faces the detector found (None where it did not run)
    box: np.ndarray | None = None
    score: float | None = None
    landmarks: np.ndarray | None = None    # raw (5, 2)
    landmarks68: np.ndarray | None = None
    transform: np.ndarray | None = None    # smoothed frame→crop (2, 3)

    def to_json(self) -> dict:
        def arr(a):
            return None if a is None else np.round(np.asarray(a, float), 3).tolist()
        return {"index": self.index, "time": round(self.time, 6), "found": self.found,
                "detected": self.detected, "faces_seen": self.faces_seen, "box": arr(self.box),
                "score": None if self.score is None else round(self.score, 4),
                "landmarks": arr(self.landmarks), "landmarks68": arr(self.landmarks68),
                "transform": None if self.transform is None else np.round(self.transform, 6).tolist()}


class FaceTracker:
    """Follows one face through a video: detect every `detect_every` frames, track the
    landmarks in between, keep to the same person by box overlap, smooth causally."""

    def __init__(self, backend, spec: CropSpec, *, face: int = 1, detect_every: int = 1,
                 smooth: bool = True, max_gap: float = 0.5, min_overlap: float = 0.3):
        if face < 1:
            raise ConfigError(f"--face must be 1 or more (1 is the largest face), got {face}")
        if detect_every < 1:
            raise ConfigError(f"--detect-every must be 1 or more, got {detect_every}")
        self.backend, self.spec = backend, spec
        self.face, self.detect_every, self.max_gap, self.min_overlap = face, detect_every, max_gap, min_overlap
        self.smoother = TransformSmoother(spec.size) if smooth else None
        self._landmarks: np.ndarray | None = None   # last landmarks (for tracking)
        self._box: np.ndarray | None = None         # last box of the followed face
        self._seen_at: float | None = None
        self._since_detect = 0
        self.most_faces = 0   # the most faces the detector saw in one frame

    def not_found(self, what: str) -> str:
        """Why no face was followed in `what`, for an error message."""
        if 0 < self.most_faces < self.face:
            many = "1 face" if self.most_faces == 1 else f"{self.most_faces} faces"
            return f"--face {self.face} asks for the face of size rank {self.face}, but {what} shows at most {many}"
        return f"no face found in {what}"

    def _choose(self, found: list[tuple[np.ndarray, float]], time: float):
        """The detection that continues the track, or a new one by size rank."""
        recent = self._box is not None and time - self._seen_at <= self.max_gap
        if self._box is not None and found:
            overlaps = [iou(box, self._box) for box, _ in found]
            best = int(np.argmax(overlaps))
            if overlaps[best] >= self.min_overlap:
                return found[best]
        if recent:  # the followed face is gone for now: do not jump to somebody else
            return None
        return found[self.face - 1] if len(found) >= self.face else None

    def _recover(self, image: np.ndarray, time: float):
        """The followed face where the detector scores it under 0 (a turned or blurred face) but
        it was seen within max_gap: the detection at RECOVER_THRESHOLD that overlaps its last box
        most. examples/talking.mp4 lost 8 frames of 100 without it (a false detection in the
        suit outscored the face, which the tracker rightly did not jump to)."""
        if self._box is None or time - self._seen_at > self.max_gap:
            return None
        candidates = [(iou(box, self._box), box, score) for box, score in
                      self.backend.detect(image, threshold=RECOVER_THRESHOLD)]
        overlap, box, score = max(candidates, key=lambda c: c[0], default=(0.0, None, None))
        return (box, score) if overlap >= self.min_overlap else None

    def _track_landmarks(self, image: np.ndarray):
        box = box_from_landmarks(self._landmarks)
        landmarks, landmarks68 = self.backend.landmarks(image, box)
        if iou(box_from_landmarks(landmarks), box) < 0.5:
            return None
        return box, landmarks, landmarks68

    def update(self, image: np.ndarray, index: int, time: float) -> TrackedFace:
        tracked = None
        if self._landmarks is not None and self._since_detect < self.detect_every:
            tracked = self._track_landmarks(image)
        out = TrackedFace(index=index, time=time, found=False)
        if tracked is None:
            found = self.backend.detect(image)
            out.detected, out.faces_seen = True, len(found)
            self.most_faces = max(self.most_faces, len(found))
            self._since_detect = 0
            chosen = self._choose(found, time)
            if chosen is None:
                chosen = self._recover(image, time)
            if chosen is None:
                self._landmarks = None
                return out
            box, out.score = chosen
            landmarks, landmarks68 = self.backend.landmarks(image, box)
        else:
            box, landmarks, landmarks68 = tracked
        self._since_detect += 1
        if self.smoother is not None and (self._seen_at is None or time - self._seen_at > self.max_gap):
            self.smoother.reset()
        transform = align_transform(landmarks, self.spec)
        if self.smoother is not None:
            transform = self.smoother(transform, time)
        self._landmarks, self._box, self._seen_at = landmarks, box, time
        out.found, out.box, out.landmarks, out.landmarks68, out.transform = True, box, landmarks, landmarks68, transform
        return out
