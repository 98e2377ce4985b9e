"""Quality measures on held-out clips of a prepared cache, model and baselines side by side.

Self-reenactment (source = the clip's first frame, driver = the same clip): PSNR, SSIM, L1
and AKD (dlib landmark distance / outer-eye-corner distance) against the real frames at the
model's crop size, for the model, "copy the source" and the classical landmark warp; the
codec's encode→decode reconstruction and the motion stream's bits per frame. Everything
runs on aligned crops, in streaming windows. The synthetic-head benchmark is in factors.py.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from facevid.config import ModelConfig
from facevid.eval.baselines import landmark_warp
from facevid.face.attributes import mouth_opening  # noqa: F401  (here too: the eval's measure of it)
from facevid.face.landmarks import MOUTH
from facevid.io.arrays import unit_to_points
from facevid.io.cache import Clip
from facevid.model.facevid import FaceVid
from facevid.pipeline import Animator, CodeDecoder, CodeEncoder, crop_spec, windows


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255.0)


def akd(real: np.ndarray, fake: np.ndarray) -> float:
    """Mean distance of 68 landmarks (68, 2) / the real frame's outer-eye-corner distance (36, 45)."""
    return float(np.linalg.norm(fake - real, axis=1).mean() / max(np.linalg.norm(real[45] - real[36]), 1e-6))


class LandmarkMeter:
    """dlib's 68 landmarks of aligned crops, or None where its face detector finds no face."""

    def __init__(self, cfg: ModelConfig):
        from facevid.face.identity import FaceMeter
        from facevid.face.track import dlib_model

        self.meter = FaceMeter(crop_spec(cfg))
        self.detector = dlib_model("detector")

    def __call__(self, crop: np.ndarray) -> np.ndarray | None:
        # the shape predictor always answers; the detector can say "no face"
        if len(self.detector(self.meter.marks.measure_size(crop), 0)) == 0:
            return None
        return self.meter.landmarks(crop)


@dataclass
class Scores:
    """Running means of per-frame metrics."""

    values: dict = field(default_factory=dict)

    def add(self, name: str, real: np.ndarray, fake: np.ndarray) -> None:
        for metric, fn in (("psnr", psnr), ("ssim", ssim), ("l1", l1)):
            self.values.setdefault(name, {}).setdefault(metric, []).append(fn(real, fake))

    def add_landmarks(self, name: str, real: np.ndarray, fake: np.ndarray | None) -> None:
        """AKD of one frame whose real frame has a face; `fake` None: no face found in the output."""
        row = self.values.setdefault(name, {})
        row.setdefault("no_face", []).append(fake is None)
        if fake is not None:
            row.setdefault("akd", []).append(akd(real, fake))

    def add_mouth(self, name: str, real: np.ndarray, fake: np.ndarray, mouth: np.ndarray) -> None:
        """PSNR of the box around the real frame's mouth landmarks (20, 2), padded."""
        pad = real.shape[0] / 40
        x0, y0 = np.floor(mouth.min(0) - pad).astype(int).clip(0)
        x1, y1 = np.ceil(mouth.max(0) + pad).astype(int) + 1
        box = (slice(y0, y1), slice(x0, x1))
        self.values.setdefault(name, {}).setdefault("mouth_psnr", []).append(psnr(real[box], fake[box]))

    def table(self) -> dict:
        table = {name: {k: float(np.mean(v)) for k, v in metrics.items()} for name, metrics in self.values.items()}
        for row in table.values():   # None: no frame where both the real frame and the output show a face
            row.setdefault("akd", None)
            row.setdefault("no_face", None)
            row.setdefault("mouth_psnr", None)   # None: no frame opens the mouth
        return table


MOUTH_OPENS = 0.08   # a frame "opens the mouth" when its inner lips part this much more than frame 0's (/ IOD)


def reenact(model: FaceVid, source: np.ndarray, driver: np.ndarray, *, window: int = 16, steps: int | None = None,
            guidance: float = 1.0, seed: int = 0, motion: str | None = None,
            marks: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Animate the source crop (S, S, 3) with the driver crops (T, S, S, 3) at out_size
    (relative motion; by default driven as `facevid transfer` drives it). `marks`: the 68
    landmarks of source (68, 2) and driver (T, 68, 2) in crop pixels, for motion="landmarks"."""
    from facevid.config import DEFAULT_MOTION

    cfg = model.cfg
    source_marks, driver_marks = marks or (None, None)   # the Animator says if they are missing
    animate = Animator(model, source, steps=cfg.sample_steps if steps is None else steps, guidance=guidance,
                       seed=seed, relative=True, motion=motion or DEFAULT_MOTION, source_points=source_marks,
                       device=str(model.device))
    outputs = []
    for chunk in windows(zip(driver, driver_marks if driver_marks is not None else [None] * len(driver)), window):
        crops, points = zip(*chunk)
        outputs += animate(list(crops), None if driver_marks is None else np.stack(points))
    return np.stack(outputs)


@torch.no_grad()
def reconstruct(model: FaceVid, frames: np.ndarray, *, window: int = 16, steps: int | None = None,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """What `facevid encode` + `facevid decode` make of crops (T, S, S, 3) at out_size, and the
    codes (T, G) in between, computed as codec.py does: content and reference motion from the
    first frame encoded alone, codes per window, decoded on the first frame with the motion
    implied by the codes: the same CodeEncoder and CodeDecoder.

    Self-reenactment with motion="codes" (reenact) differs only in the reference's motion: the
    Animator takes frame 0's inside the first window, the codec encodes frame 0 alone."""
    encode = CodeEncoder(model, frames[0])
    decode = CodeDecoder(model, frames[0], encode.content, encode.ref_motion, steps=steps, seed=seed)
    outputs, codes = [], []
    for chunk in windows(list(frames), window):
        codes.append(encode(chunk))
        outputs += decode(codes[-1])
    return np.stack(outputs), np.concatenate(codes)


def bits_per_frame(cfg: ModelConfig, codes: np.ndarray) -> dict:
    """The motion stream's rate: nominal G·log2 V (+ C flow levels' bits), what an .fvl file
    stores (whole bits per group), and the entropy of the stored values (T, G [+ C]) over these
    frames, value by value (what an entropy coder could reach; biased low over few frames, at
    most log2 T per value)."""
    entropy = 0.0
    for group in codes.T:   # G motion codes, then C flow levels
        p = np.bincount(group) / len(group)
        entropy -= (p * np.log2(np.where(p > 0, p, 1))).sum()
    return {"nominal": cfg.vq_groups * math.log2(cfg.vq_codebook) + cfg.flow_code * cfg.flow_code_bits,
            "stored": cfg.bits_per_frame, "entropy": float(entropy), "frames": int(len(codes))}


def clip_at(clip: Clip, size: int, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """A clip's first frames resized to size x size, and their 68 landmarks in those pixels."""
    frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA)
                       for f in np.asarray(clip.frames[:max_frames])])
    return frames, unit_to_points(clip.landmarks[:max_frames], size)


RECONSTRUCTION = "reconstruction (encode→decode)"
SHEET_COLUMNS = ["source", "driver (real)", "model", "encode-decode", "1 step", "no mouth refiner", "warp only",
                 "landmark warp"]
NO_REFINER = "model, without the mouth refiner"


@contextmanager
def without_mouth(model: FaceVid):
    """The model with its mouth refiner (if any) switched off inside the block."""
    mouth, model.mouth = model.mouth, None
    try:
        yield model
    finally:
        model.mouth = mouth


def _score_clip(scores: Scores, meter: LandmarkMeter, real: np.ndarray, marks: np.ndarray, methods: dict
                ) -> tuple[int, int]:
    """Scores of frames 1.. of every method against the real frames (`marks`: their 68
    landmarks); returns how many real frames had no face (AKD skips those frames) and how many
    open the mouth (scored on its own: what warping the reference cannot show)."""
    real_no_face = mouth_frames = 0
    for t in range(1, len(real)):
        real_marks = meter(real[t])
        real_no_face += real_marks is None
        opens = mouth_opening(marks[t]) - mouth_opening(marks[0]) >= MOUTH_OPENS
        mouth_frames += opens
        for name, frames in methods.items():
            scores.add(name, real[t], frames[t])
            if real_marks is not None:
                scores.add_landmarks(name, real_marks, meter(frames[t]))
            if opens:
                scores.add_mouth(name, real[t], frames[t], marks[t][MOUTH])
    return real_no_face, mouth_frames


def self_reenactment(model: FaceVid, clips: list[Clip], *, max_frames: int = 100, steps: int | None = None,
                     guidance: float = 1.0, sheet_rows: list | None = None) -> dict:
    """Model, encode→decode, copy-source and landmark-warp scores on each clip driven by
    itself; `_model_fps` and `_reconstruction_fps` time the model alone, `_bits_per_frame`
    is the motion stream's rate. `sheet_rows`, if given, receives two rows per clip."""
    size = model.cfg.out_size
    meter = LandmarkMeter(model.cfg)
    scores = Scores()
    seconds = {"model": 0.0, RECONSTRUCTION: 0.0}
    codes, frames_done, real_no_face, mouth_frames = [], 0, 0, 0
    for clip in clips:
        real, marks = clip_at(clip, size, max_frames)
        started = time.perf_counter()
        both = (marks[0], marks)
        fake = reenact(model, real[0], real, steps=steps, guidance=guidance, marks=both)
        seconds["model"] += time.perf_counter() - started
        started = time.perf_counter()
        recon, clip_codes = reconstruct(model, real, steps=steps)
        seconds[RECONSTRUCTION] += time.perf_counter() - started
        codes.append(clip_codes)
        plain = {}   # what the mouth refiner adds
        if model.mouth is not None:
            with without_mouth(model):
                plain[NO_REFINER] = reenact(model, real[0], real, steps=steps, guidance=guidance, marks=both)
        methods = {"model": fake, RECONSTRUCTION: recon, **plain,
                   "model, 1 step (mean)": reenact(model, real[0], real, steps=1, marks=both),
                   "model, warp only": reenact(model, real[0], real, steps=0, marks=both),
                   "model, warp only, motion from the keypoints": reenact(model, real[0], real, steps=0,
                                                                         motion="keypoints"),
                   "model, warp only, motion from the codes": reenact(model, real[0], real, steps=0, motion="codes"),
                   "copy source": np.repeat(real[:1], len(real), 0),
                   "landmark warp": np.stack([landmark_warp(real[0], marks[0], m, marks[0]) for m in marks])}
        no_face, opens = _score_clip(scores, meter, real, marks, methods)
        real_no_face += no_face
        mouth_frames += opens
        if sheet_rows is not None:
            for t in sorted({len(real) // 2, len(real) - 1} - {0}):
                sheet_rows.append([real[0], real[t]] + [methods[name][t] for name in (
                    "model", RECONSTRUCTION, "model, 1 step (mean)", NO_REFINER if NO_REFINER in methods else "model",
                    "model, warp only", "landmark warp")])
        frames_done += len(real)
    table = scores.table()
    table["_frames"] = frames_done
    table["_real_no_face"] = real_no_face / max(frames_done - len(clips), 1)
    table["_mouth_frames"] = mouth_frames
    table["_model_fps"] = frames_done / max(seconds["model"], 1e-9)
    table["_reconstruction_fps"] = frames_done / max(seconds[RECONSTRUCTION], 1e-9)
    table["_bits_per_frame"] = bits_per_frame(model.cfg, np.concatenate(codes)) if codes else None
    return table


def cross_reenactment(model: FaceVid, clips: list[Clip], *, max_frames: int = 40, steps: int | None = None,
                      guidance: float = 1.0, sheet_rows: list | None = None) -> dict:
    """Each clip's first frame driven by the next clip (another person): identity kept
    (dlib distance to the source; same person below 0.6), motion followed (landmark
    displacement error vs the driver, / IOD), jitter and TL-ID/TG-ID (relative to the
    driver's own), for the model and the baselines."""
    from facevid.face.crop import CropSpec
    from facevid.face.identity import FaceMeter, jitter, motion_error, temporal_identity

    cfg = model.cfg
    size = cfg.out_size
    meter = FaceMeter(CropSpec(size=size, margin=cfg.crop_margin, center_y=cfg.crop_center_y))
    stats: dict = {}
    for i, clip in enumerate(clips):
        other = clips[(i + 1) % len(clips)]
        if other.identity == clip.identity or len(clips) < 2:
            continue
        (source,), (src_marks,) = clip_at(clip, size, 1)
        driver, drv_marks = clip_at(other, size, max_frames)
        methods = {"model": reenact(model, source, driver, steps=steps, guidance=guidance,
                                    marks=(src_marks, drv_marks)),
                   "copy source": np.repeat(source[None], len(driver), 0),
                   "paste driver": driver,
                   "landmark warp": np.stack([landmark_warp(source, src_marks, m, drv_marks[0])
                                              for m in drv_marks])}
        source_id = meter.embedding(source)
        driver_lm = np.stack([meter.landmarks(f) for f in driver])
        driver_tl, driver_tg = temporal_identity(np.stack([meter.embedding(f) for f in driver]))
        for name, frames in methods.items():
            emb = np.stack([meter.embedding(f) for f in frames])
            marks = np.stack([meter.landmarks(f) for f in frames])
            dist = np.linalg.norm(emb - source_id, axis=1)
            tl, tg = temporal_identity(emb)
            row = stats.setdefault(name, {k: [] for k in ("identity", "same_person", "motion", "jitter",
                                                           "tl_id", "tg_id")})
            row["identity"] += list(dist)
            row["same_person"] += list(dist < 0.6)
            row["motion"].append(motion_error(marks, driver_lm))
            row["jitter"].append(jitter(marks))
            row["tl_id"].append(tl / driver_tl)
            row["tg_id"].append(tg / driver_tg)
        if sheet_rows is not None:
            t = len(driver) - 1
            sheet_rows.append([source, driver[t], methods["model"][t], methods["landmark warp"][t]])
    return {name: {k: float(np.mean(v)) for k, v in row.items()} for name, row in stats.items()}


CROSS_COLUMNS = ["source", "driver", "model", "landmark warp"]
