"""`facevid transfer`: animate a source face (photo or video) with a driver's motion.

Streaming end to end through the shared stage (pipeline.py): driver frames → track → crop →
window of W frames → motion → relative (default) or absolute landmarks on the source →
decode → paste back into the source frame → write with the driver's timestamps and audio.
Memory is bounded by W. `Transfer` is the frame-level stage (Frames in, Frames out),
`transfer_frames` the same on plain arrays, `transfer` the command on files.
"""

from __future__ import annotations

import time as clock
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np

from facevid.config import DEFAULT_MOTION, RENDER_SIZE
from facevid.errors import ConfigError, NoFaceError
from facevid.face.composite import Composer
from facevid.face.crop import cut_crop, fit_head_change, head_change, limit_head_change
from facevid.io.arrays import as_rgb
from facevid.pipeline import MOTION_SOURCES, Animator, Parts, crop_spec, track_faces, windows
from facevid.tasks.summary import TaskSummary, write_frames

if TYPE_CHECKING:
    from facevid.io.video import Frame
    from facevid.model.facevid import FaceVid


@dataclass(kw_only=True)
class TransferSummary(TaskSummary):
    source: str
    driver: str
    driver_frames_without_face: int = 0
    steps: int = 0
    guidance: float = 1.0
    relative: bool = True


def _source_frames(frames: Iterable[Frame], tracker) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(frame, frame→crop transform) of the source, for every output frame: a photo repeats,
    a video plays and then holds its last frame; a frame without a face keeps the last transform."""
    last = None
    for frame in frames:
        face = tracker.update(frame.image, frame.index, frame.time)
        last = (frame.image, face.transform if face.found else (last[1] if last else None))
        yield last
    while last is not None:
        yield last


def _reference(frames: Iterable[Frame], tracker, what: str):
    """The first source frame with a face, and the tracked face (its frame→crop transform)."""
    for frame in frames:
        face = tracker.update(frame.image, frame.index, frame.time)
        if face.found:
            return frame.image, face
    raise NoFaceError(tracker.not_found(what))


class Transfer:
    """The source face moving like a driver, frame by frame: `Transfer(model, source)` once,
    then `transfer(driver_frames)` yields the output frames (full frames, pasted back, or the
    crops with paste=False) with the driver's indices and times.

    `source`: a function returning the source's frames (an iterator of `Frame`; it is read
    twice: for the reference face, then as the backgrounds). A still driver (`expression`)
    lends its expression to the source's face."""

    def __init__(self, model: FaceVid, source: Callable[[], Iterable[Frame]], *, steps: int | None = None,
                 guidance: float = 1.0, seed: int = 0, absolute: bool = False, paste: bool = True,
                 colour_match: bool = True, window: int = 16, aligner: str = "auto", motion: str = DEFAULT_MOTION,
                 face: int = 1, driver_face: int = 1, expression: bool = False, sampler: str = "heun",
                 render_size: int = RENDER_SIZE, pose: str = "carry", source_name: str = "the source"):
        from facevid.face.track import FaceTracker, Landmarks68, make_backend

        _check_options(window, motion, render_size, pose)
        cfg = model.cfg
        self.size, self.window, self.source = cfg.out_size, window, source
        self.spec = crop_spec(cfg)
        self.backend = make_backend(aligner)
        self.face, self.driver_face = face, driver_face
        self.landmarks = Landmarks68(self.spec) if motion == "landmarks" else None
        first_image, first_face = _reference(source(), FaceTracker(self.backend, self.spec, face=face), source_name)
        self.source_crop = cut_crop(first_image, first_face.transform, cfg.out_size)
        self.carry = pose == "carry" and not absolute and not expression
        self.source_points = self.landmarks(first_image, first_face) if self.landmarks else None
        self.animate = Animator(model, self.source_crop, steps=cfg.sample_steps if steps is None else steps,
                                guidance=guidance, seed=seed, relative=not absolute, device=str(model.device),
                                motion=motion, source_points=self.source_points, expression=expression,
                                sampler=sampler, parts=paste)
        # the face is rendered into the frame at the source's own pixel density (up to render_size)
        self.paste = Composer(cfg.out_size, first_image, first_face.transform, cap=render_size,
                              colour_match=colour_match) if paste else None
        self.frames = self.frames_without_face = 0
        # the driver's track is smoothed without lag (look-ahead), so the head's pose lands on time
        self.tracker = FaceTracker(self.backend, self.spec, face=driver_face, smooth=False)

    def __call__(self, driver: Iterable[Frame]) -> Iterator[Frame]:
        from facevid.face.track import FaceTracker
        from facevid.io.video import Frame

        backgrounds = _source_frames(self.source(), FaceTracker(self.backend, self.spec, face=self.face))
        faces = track_faces(driver, self.tracker, self.size, self.landmarks,
                            rest=(self.source_crop, self.source_points), lookahead=LOOKAHEAD)
        first = change = None   # the driver's first face, and its head's change of pose since
        for chunk in windows(faces, self.window):   # until the driver shows a face, the source rests
            points = np.stack([f.points for f in chunk]) if self.landmarks else None
            for f, crop in zip(chunk, self.animate([f.crop for f in chunk], points)):
                image, transform = next(backgrounds)
                self.frames += 1
                self.frames_without_face += not f.found
                if self.carry and f.found:
                    first = f.transform if first is None else first
                    change = limit_head_change(head_change(first, f.transform), self.size)
                    if transform is not None:   # no further than the frame leaves room to stretch the body
                        side = self.size / np.sqrt(abs(np.linalg.det(transform[:, :2])))
                        change = fit_head_change(change, transform, image.shape, self.size, HEAD_ROOM * side)
                yield Frame(f.index, f.time, self._paste(image, crop, transform, change) if self.paste else crop)

    def _paste(self, image: np.ndarray, made: Parts, transform: np.ndarray | None,
               change: np.ndarray | None) -> np.ndarray:
        """The model's face rendered into the source frame, the head moved as the driver's moved."""
        return image if transform is None else self.paste(image, transform, change, made)


def transfer_frames(source: np.ndarray | Sequence[np.ndarray], driver: Iterable[np.ndarray], *,
                    model: FaceVid | str | None = None, device: str = "cpu", **options) -> Iterator[np.ndarray]:
    """The frame-level transfer, arrays in and arrays out: `source` one photo (H, W, 3) uint8 RGB
    or a video's frames (a sequence, read twice), `driver` any iterable of frames; yields one
    output frame (the source's size) per driver frame, lazily. `options`: transfer's (steps,
    seed, absolute, paste, motion, window, ...)."""
    from facevid.io.video import Frame
    from facevid.weights import as_model

    still = isinstance(source, np.ndarray) and source.ndim == 3
    frames = [source] if still else source

    def source_frames():
        return (Frame(i, i / 25.0, as_rgb(image, "a source frame")) for i, image in enumerate(frames))

    run = Transfer(as_model(model, device), source_frames, **options)
    for frame in run(Frame(i, i / 25.0, as_rgb(image, "a driver frame")) for i, image in enumerate(driver)):
        yield frame.image
    if run.frames and run.frames == run.frames_without_face:
        raise NoFaceError(run.tracker.not_found(f"the driver ({run.frames} frames)"))


HEAD_ROOM = 0.1   # how far past the frame's edge (× the face crop's side) the carried head may pull the border
LOOKAHEAD = 3   # frames of the driver's track read ahead: its smoothing then lags none
POSES = ("carry", "still")   # the driver's head motion moves the source's head, or the head stays where it is


def _check_options(window: int, motion: str, render_size: int = RENDER_SIZE, pose: str = "carry") -> None:
    if pose not in POSES:
        raise ConfigError(f"unknown --pose '{pose}' (choose from {', '.join(POSES)})")
    if not 16 <= render_size <= 2048:
        raise ConfigError(f"--render-size must be between 16 and 2048, got {render_size}")
    if window < 1:
        raise ConfigError(f"--window must be 1 or more, got {window}")
    if motion not in MOTION_SOURCES:
        raise ConfigError(f"unknown --motion '{motion}' (choose from {', '.join(MOTION_SOURCES)})")


def transfer(source: str | Path, driver: str | Path, output: str | Path, *, model: FaceVid | str | None = None,
             steps: int | None = None, guidance: float = 1.0, seed: int = 0, absolute: bool = False,
             paste: bool = True, colour_match: bool = True, window: int = 16, aligner: str = "auto",
             motion: str = DEFAULT_MOTION, face: int = 1, driver_face: int = 1, allow_truncated: bool = False,
             sampler: str = "heun", render_size: int = RENDER_SIZE, pose: str = "carry", device: str = "cpu",
             codec: str = "libx264", crf: int = 18, force: bool = False, progress: bool = True) -> TransferSummary:
    """Write `output`: the source face moving like the driver, with the driver's sound.

    A still driver lends its expression (mouth, eyes, brows) to the source's face; an image
    output (.png, .jpg, ...) takes a still driver and holds the one frame. `model`: a loaded
    FaceVid (`facevid.load_model`, to reuse it over many calls), or a weights name or file."""
    from facevid.io.image import ImageWriter
    from facevid.io.video import is_image_path, iter_frames, probe
    from facevid.io.writer import VideoWriter, check_crf, check_output_path
    from facevid.weights import as_model

    _check_options(window, motion, render_size, pose)
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
    run = Transfer(as_model(model, device), lambda: iter_frames(source, allow_truncated=allow_truncated),
                   steps=steps, guidance=guidance, seed=seed, absolute=absolute, paste=paste,
                   colour_match=colour_match, window=window, aligner=aligner, motion=motion, face=face,
                   driver_face=driver_face, expression=expression, sampler=sampler, render_size=render_size, pose=pose,
                   source_name=f"the source {source}")
    summary = TransferSummary(source=str(source), driver=str(driver), output=str(out), steps=run.animate.steps,
                              guidance=run.animate.guidance, relative=run.animate.relative)   # what runs
    started = clock.perf_counter()
    writer = ImageWriter(out, force=force) if still_out else \
        VideoWriter(out, drv_info.fps, audio_from=driver, codec=codec, crf=crf, force=force)
    def check():
        if run.frames == run.frames_without_face:
            raise NoFaceError(run.tracker.not_found(f"the driver {driver} ({run.frames} frames)"))

    write_frames(run(iter_frames(driver, allow_truncated=allow_truncated)), writer, "transfer",
                 drv_info.frame_count, progress=progress, check=check)
    summary.frames, summary.driver_frames_without_face = run.frames, run.frames_without_face
    summary.finish(started)
    return summary
