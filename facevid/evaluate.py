"""Quality measures on held-out clips of a prepared cache, model and baselines side by side.

Self-reenactment (source = the clip's first frame, driver = the same clip): PSNR, SSIM
and L1 against the real frames at the model's crop size, for the model, "copy the source"
and the classical landmark warp. Everything runs on aligned crops, in streaming windows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from facevid.baselines import landmark_warp
from facevid.data import Clip
from facevid.model.facevid import FaceVid


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255.0)


@dataclass
class Scores:
    """Running means of per-frame metrics."""

    values: dict = field(default_factory=dict)

    def add(self, name: str, real: np.ndarray, fake: np.ndarray) -> None:
        for metric, fn in (("psnr", psnr), ("ssim", ssim), ("l1", l1)):
            self.values.setdefault(name, {}).setdefault(metric, []).append(fn(real, fake))

    def table(self) -> dict:
        return {name: {k: float(np.mean(v)) for k, v in metrics.items()} for name, metrics in self.values.items()}


def reenact(model: FaceVid, source: np.ndarray, driver: np.ndarray, *, window: int = 16, steps: int | None = None,
            guidance: float = 1.0, seed: int = 0, motion: str = "codes") -> np.ndarray:
    """Animate the source crop (H, W, 3) with the driver crops (T, H, W, 3) (relative motion)."""
    from facevid.transfer import Animator

    cfg = model.cfg
    source = cv2.resize(source, (cfg.out_size, cfg.out_size), interpolation=cv2.INTER_AREA)
    animate = Animator(model, source, steps=cfg.sample_steps if steps is None else steps, guidance=guidance,
                       seed=seed, relative=True, motion=motion)
    outputs = []
    for start in range(0, len(driver), window):
        outputs += animate(list(driver[start:start + window]))
    return np.stack(outputs)


def clip_at(clip: Clip, size: int, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """A clip's first frames resized to size x size, and their 68 landmarks in those pixels."""
    frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA)
                       for f in np.asarray(clip.frames[:max_frames])])
    return frames, (clip.landmarks[:max_frames] + 1) * size / 2 - 0.5


SHEET_COLUMNS = ["source", "driver (real)", "model", "1 step", "warp only", "landmark warp"]


def self_reenactment(model: FaceVid, clips: list[Clip], *, max_frames: int = 100, steps: int | None = None,
                     guidance: float = 1.0, sheet_rows: list | None = None) -> dict:
    """Model, copy-source and landmark-warp scores on each clip driven by itself.

    `sheet_rows`, if given, receives two rows of images per clip for a PNG sheet."""
    size = model.cfg.out_size
    scores = Scores()
    started, frames_done = time.perf_counter(), 0
    for clip in clips:
        real, marks = clip_at(clip, size, max_frames)
        fake = reenact(model, real[0], real, steps=steps, guidance=guidance)
        warped = reenact(model, real[0], real, steps=0)
        keypoint_warp = reenact(model, real[0], real, steps=0, motion="keypoints")
        mean = reenact(model, real[0], real, steps=1)
        for t in range(1, len(real)):
            classical = landmark_warp(real[0], marks[0], marks[t], marks[0])
            scores.add("model", real[t], fake[t])
            scores.add("model, 1 step (mean)", real[t], mean[t])
            scores.add("model, warp only", real[t], warped[t])
            scores.add("model, warp only, keypoint motion", real[t], keypoint_warp[t])
            scores.add("copy source", real[t], real[0])
            scores.add("landmark warp", real[t], classical)
            if sheet_rows is not None and t in (len(real) // 2, len(real) - 1):
                sheet_rows.append([real[0], real[t], fake[t], mean[t], warped[t], classical])
        frames_done += len(real)
    table = scores.table()
    table["_frames"] = frames_done
    table["_model_fps"] = frames_done / max(time.perf_counter() - started, 1e-9)
    return table


def cross_reenactment(model: FaceVid, clips: list[Clip], *, max_frames: int = 40, steps: int | None = None,
                      guidance: float = 1.0, sheet_rows: list | None = None) -> dict:
    """Each clip's first frame driven by the next clip (another person): identity kept
    (dlib distance to the source; same person below 0.6), motion followed (landmark
    displacement error vs the driver, / IOD), jitter and TL-ID/TG-ID (relative to the
    driver's own), for the model and the baselines."""
    from facevid.crop import CropSpec
    from facevid.identity import FaceMeter, jitter, motion_error, temporal_identity

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
        methods = {"model": reenact(model, source, driver, steps=steps, guidance=guidance),
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
