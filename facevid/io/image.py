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


def labelled_grid(rows: list[list[np.ndarray]], columns: list[str], cell: int = 128,
                  row_titles: list[str] | None = None) -> np.ndarray:
    """A sheet of images: rows of equally many (H, W, 3) uint8 images, each scaled to `cell`
    square, under a header row of column titles (and beside a column of row titles)."""
    header, left = 22, (8 * max(map(len, row_titles)) + 12 if row_titles else 0)
    sheet = np.full((header + cell * len(rows), left + cell * len(columns), 3), 255, np.uint8)
    for j, title in enumerate(columns):
        cv2.putText(sheet, title, (left + j * cell + 4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1,
                    cv2.LINE_AA)
    for i, row in enumerate(rows):
        if row_titles:
            cv2.putText(sheet, row_titles[i], (4, header + i * cell + cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                        (0, 0, 0), 1, cv2.LINE_AA)
        for j, image in enumerate(row):
            image = np.ascontiguousarray(image, np.uint8)
            shrink = max(image.shape[:2]) > cell
            tile = cv2.resize(image, (cell, cell), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
            sheet[header + i * cell: header + (i + 1) * cell, left + j * cell: left + (j + 1) * cell] = tile
    return sheet


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
