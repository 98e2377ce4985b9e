"""`facevid track`: follow one face through a video, draw what was tracked, write the aligned crops."""

from __future__ import annotations

import json
import tempfile
import time as clock
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from facevid.errors import ConfigError, NoFaceError
from facevid.face.crop import CropSpec, cut_crop, invert_affine, transform_points
from facevid.face.track import FaceTracker, TrackedFace, make_backend
from facevid.progress import progress_bar
from facevid.tasks.summary import TaskSummary


@dataclass(kw_only=True)
class TrackSummary(TaskSummary):
    """What `track` did: counts, timing and the outputs written."""

    input: str
    crops: str | None
    frames_with_face: int = 0
    frames_without_face: int = 0
    detector_runs: int = 0
    aligner: str = ""


def draw_track(frame: np.ndarray, face: TrackedFace, size: int) -> np.ndarray:
    """The frame with the face box (green), landmarks (red) and crop square (blue) drawn."""
    out = frame.copy()
    thick = max(1, round(max(frame.shape[:2]) / 400))
    if not face.found:
        cv2.putText(out, "no face", (8, 24 * thick), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * thick, (255, 64, 64), thick,
                    cv2.LINE_AA)
        return out
    x0, y0, x1, y1 = np.round(face.box).astype(int)
    cv2.rectangle(out, (x0, y0), (x1, y1), (0, 220, 0), thick, cv2.LINE_AA)
    square = transform_points(invert_affine(face.transform), np.array([[0, 0], [size, 0], [size, size], [0, size]], float))
    cv2.polylines(out, [np.round(square).astype(np.int32)], True, (64, 128, 255), thick, cv2.LINE_AA)
    for x, y in np.round(face.landmarks68 if face.landmarks68 is not None else face.landmarks).astype(int):
        cv2.circle(out, (int(x), int(y)), thick + 1, (255, 32, 32), -1, cv2.LINE_AA)
    return out


def track(video: str | Path, output: str | Path, *, crops: str | Path | None = None, aligner: str = "auto",
          face: int = 1, size: int = 256, margin: float = 0.5, detect_every: int = 1, smooth: bool = True,
          codec: str = "libx264", crf: int = 18, force: bool = False, progress: bool = True,
          allow_truncated: bool = False, on_frame: Callable[[TrackedFace], None] | None = None) -> TrackSummary:
    """Follow the face through `video`; write it with the track drawn (and the crop stream).

    Raises NoFaceError (leaving no output) when no frame has a face."""
    from facevid.io.video import iter_frames, probe
    from facevid.io.writer import VideoWriter, check_crf, check_output_path

    check_crf(codec, crf)
    info = probe(video)
    spec = CropSpec(size=size, margin=margin)
    outputs = [check_output_path(output, force)] + ([check_output_path(crops, force)] if crops else [])
    if len(set(o.resolve() for o in outputs) | {Path(video).resolve()}) != len(outputs) + 1:
        raise ConfigError("the input and every output must be different files")
    backend = make_backend(aligner)
    tracker = FaceTracker(backend, spec, face=face, detect_every=detect_every, smooth=smooth)
    summary = TrackSummary(input=str(video), output=str(output), crops=str(crops) if crops else None,
                           aligner=backend.name)
    start = clock.perf_counter()
    with VideoWriter(output, info.fps, audio_from=video, codec=codec, crf=crf, force=force) as drawn, \
            (VideoWriter(crops, info.fps, codec=codec, crf=crf, force=force) if crops else nullcontext()) as crop_writer, \
            progress_bar("track", info.frame_count, enabled=progress) as advance:
        for frame in iter_frames(video, allow_truncated=allow_truncated):
            tracked = tracker.update(frame.image, frame.index, frame.time)
            _count(summary, tracked)
            drawn.write(draw_track(frame.image, tracked, size), frame.time)
            if crop_writer is not None:
                crop = cut_crop(frame.image, tracked.transform, size) if tracked.found else np.zeros((size, size, 3), np.uint8)
                crop_writer.write(crop, frame.time)
            if on_frame is not None:
                on_frame(tracked)
            advance(1)
        if summary.frames_with_face == 0:
            raise NoFaceError(tracker.not_found(f"{video} ({summary.frames} frames)"))
    summary.finish(start)
    return summary


def _count(summary: TrackSummary, tracked: TrackedFace) -> None:
    summary.frames += 1
    summary.detector_runs += tracked.detected
    if tracked.found:
        summary.frames_with_face += 1
    else:
        summary.frames_without_face += 1


class JsonFrames:
    """Spools per-frame records to a temporary file so memory stays flat, then prints
    one JSON document {"summary": ..., "frames": [...]} at the end."""

    def __init__(self):
        self._spool = tempfile.TemporaryFile("w+t")
        self._count = 0

    def __call__(self, tracked: TrackedFace) -> None:
        self._spool.write(json.dumps(tracked.to_json()) + "\n")
        self._count += 1

    def dump(self, summary: dict, stream) -> None:
        stream.write('{"summary": ' + json.dumps(summary) + ', "frames": [')
        self._spool.seek(0)
        for i, line in enumerate(self._spool):
            stream.write(("," if i else "") + "\n" + line.rstrip("\n"))
        stream.write("\n]}\n")
        self._spool.close()
