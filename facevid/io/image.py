"""`ImageWriter`: a one-frame output written as a still image (PNG, JPEG, ...), atomically,
with the interface of `facevid.io.writer.VideoWriter` so a task's loop writes either."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facevid.errors import FacevidError, InputError
from facevid.io.atomic import AtomicOutput, write_bytes


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """An (H, W, 3) uint8 RGB image written atomically in the format its extension names (cv2.imwrite
    would fail silently; a folder that refuses writes is an InputError)."""
    path = Path(path)
    ok, data = cv2.imencode(path.suffix.lower(), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"cannot encode an image as {path.suffix} ({path})")
    try:
        return write_bytes(path, data.tobytes())
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or error}") from error


class ImageWriter(AtomicOutput):
    """Writes the one frame it is given to `path` (by its extension) when closed; a second frame is an error."""

    def __init__(self, path: str | Path, *, force: bool = False):
        from facevid.io.writer import check_output_path

        self.path = check_output_path(path, force)
        self.frames_written = 0
        self._image: np.ndarray | None = None

    def write(self, image: np.ndarray, time: float | None = None) -> None:
        if self._image is not None:
            raise FacevidError(f"{self.path} is an image: it holds one frame (write a video to hold more)")
        self._image = np.ascontiguousarray(image)
        self.frames_written = 1

    def close(self) -> Path:
        if self._image is None:
            raise FacevidError(f"no frame was written to {self.path}")
        return write_image(self.path, self._image)

    def abort(self) -> None:
        self._image = None
