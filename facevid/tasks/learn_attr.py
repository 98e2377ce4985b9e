"""`facevid learn-attr`: an attribute learned from two folders of examples, images or videos
(facevid.face.learned), for `facevid edit --attr-file`.

Every file's faces are followed as `edit` follows them (the same tracker, crop and landmarks, in
the model's crop), a video's at up to `max_frames` frames spread over it; a file without a face
is skipped and counted.
"""

from __future__ import annotations

import time as clock
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facevid.errors import ConfigError, FacevidWarning, InputError
from facevid.face.learned import MIN_FILES, check_name, fit_attribute
from facevid.pipeline import crop_spec, track_faces
from facevid.tasks.summary import TaskSummary

if TYPE_CHECKING:
    from facevid.model.facevid import FaceVid

MAX_FRAMES = 30
WEAK = 0.6   # below this held-out accuracy, learn-attr warns


@dataclass(kw_only=True)
class LearnSummary(TaskSummary):
    name: str
    accuracy: float = 0.0
    positive_files: int = 0
    negative_files: int = 0
    skipped: list = field(default_factory=list)    # files in which no face was found


def folder_media(folder: str | Path, option: str) -> list[Path]:
    """The images and videos under a folder, sorted; an error if it has none."""
    from facevid.io.video import find_media

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{option} {folder} is not a folder")
    files = find_media(folder, images=True)
    if not files:
        raise InputError(f"{option} {folder} holds no images or videos")
    return files


def file_faces(path: Path, tracker, landmarks, size: int, max_frames: int) -> np.ndarray:
    """(n, 68, 2) the faces of an image or video (up to `max_frames` frames spread over it),
    landmarks in the crop's normalised coordinates; n = 0 where no face is found."""
    from facevid.io.arrays import points_to_unit
    from facevid.io.video import iter_frames, probe

    total = max(probe(path).frame_count, 1)
    keep = set(np.linspace(0, total - 1, min(max_frames, total)).round().astype(int).tolist())
    frames = (f for f in iter_frames(path, allow_truncated=True) if f.index in keep)
    faces = [f.points for f in track_faces(frames, tracker, size, landmarks) if f.found]
    return points_to_unit(np.array(faces, np.float64), size) if faces else np.zeros((0, 68, 2))


def learn_attribute(name: str, positive: str | Path, negative: str | Path, output: str | Path, *,
                    model: FaceVid | str | None = None, aligner: str = "auto", max_frames: int = MAX_FRAMES,
                    force: bool = False, progress: bool = True) -> LearnSummary:
    """Write `output`, the attribute `name` learned from the faces under `positive` and `negative`."""
    from facevid.face.track import FaceTracker, Landmarks68, make_backend
    from facevid.io.writer import check_output_path
    from facevid.progress import progress_bar
    from facevid.weights import as_model, bundled_directions

    check_name(name)
    if max_frames < 1:
        raise ConfigError(f"--frames must be 1 or more, got {max_frames}")
    if Path(positive).resolve() == Path(negative).resolve():
        raise ConfigError("--positive and --negative must be two different folders")
    given = {"--positive": Path(positive), "--negative": Path(negative)}
    folders = {option: folder_media(folder, option) for option, folder in given.items()}
    out = check_output_path(output, force)
    cfg = as_model(model, "cpu").cfg
    spec, started = crop_spec(cfg), clock.perf_counter()
    summary = LearnSummary(name=name, output=str(out))
    backend, landmarks, faces = make_backend(aligner), Landmarks68(spec), {}
    with progress_bar("learn-attr", sum(map(len, folders.values())), enabled=progress, unit=None) as advance:
        for option, files in folders.items():
            faces[option] = []
            for path in files:
                found = file_faces(path, FaceTracker(backend, spec, smooth=False), landmarks, cfg.out_size,
                                   max_frames)
                if len(found):
                    faces[option].append(found)
                else:
                    summary.skipped.append(str(path))
                advance(1)
            if len(faces[option]) < MIN_FILES:
                raise InputError(f"{option} {given[option]}: a face in "
                                 f"{len(faces[option])} of {len(files)} files; learn-attr needs faces in at least "
                                 f"{MIN_FILES} files of each folder")
    directions = bundled_directions()
    learned = fit_attribute(name, faces["--positive"], faces["--negative"],
                            others=[directions.vector("yaw"), directions.vector("pitch")],
                            crop=(spec.margin, spec.center_y))
    if learned.accuracy < WEAK:
        warnings.warn(f"held-out accuracy {learned.accuracy:.2f}: the folders' faces barely differ in their "
                      f"landmarks, so the direction is mostly noise (more or clearer examples help)", FacevidWarning)
    learned.save(out)
    summary.frames, summary.accuracy = learned.frames, learned.accuracy
    summary.positive_files, summary.negative_files = learned.positives, learned.negatives
    summary.finish(started)
    return summary

