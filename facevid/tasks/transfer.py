"""`facevid transfer`: animate a source face (photo or video) with a driver's motion.

Streaming end to end: driver frames → track → crop → window of W frames → encode motion →
relative (default) or absolute keypoints on the source → decode → paste back into the
source frame → write with the driver's timestamps and audio. Memory is bounded by W.
"""

from __future__ import annotations

import time as clock
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from facevid.config import DEFAULT_MOTION
from facevid.errors import ConfigError, NoFaceError
from facevid.face.crop import CropSpec, crop_mask, cut_crop, paste_back
from facevid.pipeline import MOTION_SOURCES, Animator
from facevid.tasks.summary import TaskSummary

if TYPE_CHECKING:
    from facevid.model.facevid import FaceVid


@dataclass(kw_only=True)
class TransferSummary(TaskSummary):
    source: str
    driver: str
    driver_frames_without_face: int = 0
    steps: int = 0
    relative: bool = True


def _source_frames(source, tracker, allow_truncated: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(frame, frame→crop transform) of the source, for every output frame: a photo repeats,
    a video plays and then holds its last frame; a frame without a face keeps the last transform."""
    from facevid.io.video import iter_frames

    last = None
    for frame in iter_frames(source, allow_truncated=allow_truncated):
        face = tracker.update(frame.image, frame.index, frame.time)
        last = (frame.image, face.transform if face.found else (last[1] if last else None))
        yield last
    while last is not None:
        yield last


def _reference(source, tracker, allow_truncated: bool = False):
    """The first source frame with a face, and the tracked face (its frame→crop transform)."""
    from facevid.io.video import iter_frames

    for frame in iter_frames(source, allow_truncated=allow_truncated):
        face = tracker.update(frame.image, frame.index, frame.time)
        if face.found:
            return frame.image, face
    raise NoFaceError(tracker.not_found(f"the source {source}"))


def transfer(source: str | Path, driver: str | Path, output: str | Path, *, model: FaceVid | str | None = None,
             steps: int | None = None, guidance: float = 1.0, seed: int = 0, absolute: bool = False,
             paste: bool = True, colour_match: bool = True, window: int = 16, aligner: str = "auto",
             motion: str = DEFAULT_MOTION, face: int = 1, driver_face: int = 1, allow_truncated: bool = False,
             device: str = "cpu", codec: str = "libx264", crf: int = 18, force: bool = False,
             progress: bool = True) -> TransferSummary:
    """Write `output`: the source face moving like the driver, with the driver's sound.

    A still driver lends its expression (mouth, eyes, brows) to the source's face; an image
    output (.png, .jpg, ...) takes a still driver and holds the one frame. `model`: a loaded
    FaceVid (`facevid.load_model`, to reuse it over many calls), or a weights name or file."""
    from facevid.face.track import FaceTracker, Landmarks68, make_backend
    from facevid.io.image import ImageWriter
    from facevid.io.video import VideoWriter, check_crf, check_output_path, is_image_path, iter_frames, probe
    from facevid.progress import progress_bar
    from facevid.weights import as_model

    if window < 1:
        raise ConfigError(f"--window must be 1 or more, got {window}")
    if motion not in MOTION_SOURCES:
        raise ConfigError(f"unknown --motion '{motion}' (choose from {', '.join(MOTION_SOURCES)})")
    check_crf(codec, crf)
    probe(source)
    drv_info = probe(driver)
    out = check_output_path(output, force)
    if out.resolve() in {Path(source).resolve(), Path(driver).resolve()}:
        raise ConfigError("the output must not be one of the inputs")
    still_out, expression = is_image_path(out), drv_info.is_image and not absolute
    if still_out and not drv_info.is_image:
        raise ConfigError(f"{out.name} is an image, which holds one frame: drive it with an image, or write a video")
    if expression and motion != "landmarks":
        raise ConfigError("an image driver gives its expression by its landmarks: use --motion landmarks")
    model = as_model(model, device)
    device = str(model.device)
    cfg = model.cfg
    spec = CropSpec(size=cfg.out_size, margin=cfg.crop_margin, center_y=cfg.crop_center_y)
    backend = make_backend(aligner)
    marks68 = Landmarks68(spec) if motion == "landmarks" else None
    first_image, first_face = _reference(source, FaceTracker(backend, spec, face=face), allow_truncated)
    backgrounds = _source_frames(source, FaceTracker(backend, spec, face=face), allow_truncated)
    source_crop = cut_crop(first_image, first_face.transform, cfg.out_size)
    source_points = marks68(first_image, first_face) if marks68 else None
    animate = Animator(model, source_crop, steps=cfg.sample_steps if steps is None else steps, guidance=guidance,
                       seed=seed, relative=not absolute, device=device, motion=motion, source_points=source_points,
                       expression=expression)
    summary = TransferSummary(source=str(source), driver=str(driver), output=str(out), steps=animate.steps,
                              relative=not absolute)
    tracker = FaceTracker(backend, spec, face=driver_face)
    mask = crop_mask(cfg.out_size, "face")
    started = clock.perf_counter()
    pending: list = []
    last_crop, last_points = source_crop, source_points   # until the driver shows a face, the source rests
    writer = ImageWriter(out, force=force) if still_out else \
        VideoWriter(out, drv_info.fps, audio_from=driver, codec=codec, crf=crf, force=force)
    with writer, progress_bar("transfer", drv_info.frame_count, enabled=progress) as advance:

        def flush():
            if not pending:
                return
            made = animate([p[2] for p in pending], np.stack([p[3] for p in pending]) if marks68 else None)
            for (time_s, (image, transform), *_), crop in zip(pending, made):
                if not paste:
                    writer.write(crop, time_s)
                elif transform is None:
                    writer.write(image, time_s)
                else:
                    writer.write(paste_back(image, crop, transform, mask=mask, colour_match=colour_match), time_s)
                advance(1)
            pending.clear()

        for frame in iter_frames(driver, allow_truncated=allow_truncated):
            found = tracker.update(frame.image, frame.index, frame.time)
            if found.found:
                last_crop = cut_crop(frame.image, found.transform, cfg.out_size)
                last_points = marks68(frame.image, found) if marks68 else None
            else:
                summary.driver_frames_without_face += 1
            pending.append((frame.time, next(backgrounds), last_crop, last_points))
            summary.frames += 1
            if len(pending) == window:
                flush()
        if summary.frames == summary.driver_frames_without_face:
            raise NoFaceError(tracker.not_found(f"the driver {driver} ({summary.frames} frames)"))
        flush()
    summary.finish(started)
    return summary
