"""Video reading on PyAV: `probe` and streaming `iter_frames` (writing: io/writer.py).

Frames are (H, W, 3) uint8 RGB arrays in display orientation, read one at a time, with
their presentation times; a video that ends before its container says it should is an
error (or, with allow_truncated, a warning), and an image reads as a one-frame video.
"""

from __future__ import annotations

import heapq
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from facevid.errors import FacevidWarning, InputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".gif"})
IMAGE_FPS = Fraction(25)  # an image behaves as a one-frame video at this rate
_READ_ERRORS = (av.error.FFmpegError, OSError)


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learns about a video (or a still image) without decoding it all."""

    path: Path
    width: int  # display width (after rotation is applied)
    height: int  # display height
    fps: Fraction  # nominal rate (FFmpeg's guessed rate), exact: 29.97 is 30000/1001; images: 25
    frame_count: int | None  # as the container reports it (None if unknown); images: 1
    duration: float | None  # seconds; images: one frame, 1/25 s
    rotation: int  # clockwise degrees (0, 90, 180, 270) iter_frames turns frames; iPhone portrait: 90
    has_audio: bool
    is_image: bool


@dataclass
class Frame:
    """One decoded frame."""

    index: int  # 0, 1, 2, ... in presentation order
    time: float  # seconds from the container's start time (the clock audio is synced to)
    image: np.ndarray  # (H, W, 3) uint8 RGB, display orientation, C-contiguous


def is_image_path(path: str | Path) -> bool:
    """True if `path` names a still image by its extension."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def find_media(folder: Path, images: bool) -> list[Path]:
    """Every video (and, if asked, image) file under `folder`, recursively, sorted."""
    suffixes = VIDEO_SUFFIXES | (IMAGE_SUFFIXES if images else set())
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if not path.is_file():
        raise InputError(f"input {path} is not a file")
    return path


def _reason(error: BaseException) -> str:
    """A one-line reason from an FFmpeg/OS/Pillow error."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text.splitlines()[0]


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn PyAV and OS errors while reading `path` into InputError."""
    try:
        yield
    except _READ_ERRORS as e:
        raise InputError(f"cannot read {path} as video: {_reason(e)}") from e


def _start_offset(container: av.container.InputContainer) -> float:
    """The container's start time in seconds; Frame.time and remuxed audio are relative to it."""
    return container.start_time / av.time_base if container.start_time is not None else 0.0


def _clockwise(frame: av.VideoFrame) -> int:
    # VideoFrame.rotation is the display matrix's counter-clockwise angle in [-180, 180];
    # a player rotates the coded picture by it (iPhone portrait: -90, i.e. 90 clockwise).
    return (-round(frame.rotation / 90) * 90) % 360


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 RGB in display orientation."""
    image = frame.to_ndarray(format="rgb24")
    rotation = _clockwise(frame)
    if rotation:
        image = np.rot90(image, k=-rotation // 90)  # np.rot90 turns counter-clockwise
    return np.ascontiguousarray(image)


def _read_image(path: Path) -> np.ndarray:
    """A still image as (H, W, 3) uint8 RGB, upright per its EXIF orientation."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image)
            return np.array(upright.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"cannot read {path} as an image: {_reason(e)}") from e


def _open_video(path: Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open `path` and pick its first real video stream (not cover art)."""
    container = av.open(str(path), "r", metadata_errors="replace")
    attached = av.stream.Disposition.attached_pic
    streams = [s for s in container.streams.video if not s.disposition & attached]
    if not streams:
        container.close()
        raise InputError(f"{path} has no video stream")
    stream = streams[0]
    stream.thread_type = "AUTO"
    return container, stream


def _nominal_fps(stream: av.video.stream.VideoStream) -> Fraction:
    # FFmpeg's guess (r_frame_rate unless implausible, then the average) is exact for
    # constant-rate video even when the last frame is short; VFR gets a typical rate.
    for rate in (stream.guessed_rate, stream.average_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return IMAGE_FPS


def _duration(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def probe(path: str | Path) -> VideoInfo:
    """Size, rate, length, rotation and audio of a video or image; decodes one frame."""
    path = _existing(path)
    if is_image_path(path):
        height, width = _read_image(path).shape[:2]
        return VideoInfo(path, width, height, IMAGE_FPS, 1, float(1 / IMAGE_FPS),
                         0, has_audio=False, is_image=True)
    with _reading(path):
        container, stream = _open_video(path)
        with container:
            first = next(iter(container.decode(stream)), None)
            if first is None:
                raise InputError(f"{path} has no decodable video frames")
            rotation = _clockwise(first)
            width, height = first.width, first.height
            if rotation in (90, 270):
                width, height = height, width
            return VideoInfo(
                path, width, height, _nominal_fps(stream), stream.frames or None,
                _duration(container, stream), rotation,
                has_audio=bool(container.streams.audio), is_image=False,
            )


@dataclass(frozen=True)
class _Expected:
    """What a video stream says it holds: a frame count and where it ends (stream clock, s)."""

    frames: int | None
    end: float | None
    start: float
    fps: Fraction

    def count(self) -> int | None:
        """The frame count, else one estimated from the duration."""
        if self.frames:
            return self.frames
        return round((self.end - self.start) * self.fps) if self.end is not None else None


def _tag_seconds(text: str) -> float | None:
    """A Matroska DURATION tag ("HH:MM:SS.nnnnnnnnn") in seconds."""
    match = re.fullmatch(r"\s*(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)\s*", text)
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _own_end(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    """Where the video stream itself says it ends, in seconds on its clock (None if unsure)."""
    tag = next((v for k, v in stream.metadata.items() if k.upper().startswith("DURATION")), None)
    if tag is not None:
        return _tag_seconds(tag)
    if not (stream.duration and stream.time_base):
        return None
    duration = float(stream.duration * stream.time_base)
    if len(container.streams) > 1 and container.duration \
            and abs(duration - container.duration / av.time_base) < 1e-3:
        return None  # FFmpeg filled it in from the whole file's length
    return float((stream.start_time or 0) * stream.time_base) + duration


def _expected(container: av.container.InputContainer, stream: av.stream.Stream) -> _Expected:
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    return _Expected(stream.frames or None, _own_end(container, stream), start, _nominal_fps(stream))


def _is_short(expected: _Expected, count: int, end: float | None) -> bool:
    """True if `count` frames ending at `end` fall well short of what the stream says it holds."""
    checks = []
    if expected.frames:
        checks.append(count < expected.frames - max(2, 0.01 * expected.frames))
    if expected.end is not None and end is not None:
        slack = max(2 / expected.fps, 0.01 * (expected.end - expected.start))
        checks.append(end < expected.end - float(slack))
    return bool(checks) and all(checks)


def _decoded(container: av.container.InputContainer, stream: av.stream.Stream,
             errors: list[BaseException], keep_going: bool) -> Iterator[av.VideoFrame]:
    """The stream's frames; a demux error ends them, a decode error too unless `keep_going`."""
    packets = container.demux(stream)
    slots: list[int] | None = [] if container.format.name == "avi" else None
    while True:
        try:
            packet = next(packets, None)
        except _READ_ERRORS as e:
            errors.append(e)
            return
        if packet is None:
            return
        if slots is not None and packet.size and packet.dts is not None:
            heapq.heappush(slots, packet.dts)
        try:
            frames = packet.decode()
        except _READ_ERRORS as e:
            errors.append(e)
            if keep_going:
                continue
            return
        for frame in frames:
            if slots:  # AVI has only decode-order slots: FFmpeg's pts are guesses (h264: dts + 1)
                frame.pts = heapq.heappop(slots)
            yield frame


def _incomplete(path: Path, count: int, expected: _Expected, allow_truncated: bool) -> None:
    """Raise InputError, or warn if `allow_truncated`, about a video that decodes only in part."""
    total = expected.count()
    of = f"{count} of {total}" if total and total > count else f"only {count}"
    if not allow_truncated:
        raise InputError(f"{path} is truncated or damaged: {of} frames decode "
                         "(pass --allow-truncated to keep them)")
    warnings.warn(FacevidWarning(f"{path} is truncated or damaged: kept the {of} frames that decode"),
                  stacklevel=3)


def iter_frames(path: str | Path, *, allow_truncated: bool = False) -> Iterator[Frame]:
    """Decode `path` lazily, one Frame at a time; a video cut short raises InputError at its end."""
    path = _existing(path)
    if is_image_path(path):
        yield Frame(0, 0.0, _read_image(path))
        return
    errors: list[BaseException] = []
    count, end = 0, None
    with _reading(path):
        container, stream = _open_video(path)
        with container:
            offset, expected = _start_offset(container), _expected(container, stream)
            for frame in _decoded(container, stream, errors, keep_going=allow_truncated):
                time = frame.time - offset if frame.time is not None else count / expected.fps
                yield Frame(count, time, _to_rgb(frame))
                count += 1
                end = _frame_end(frame, expected.fps, end)
    if count == 0:
        if errors:
            raise InputError(f"cannot read {path} as video: {_reason(errors[0])}") from errors[0]
        raise InputError(f"{path} has no decodable video frames")
    if errors or _is_short(expected, count, end):
        _incomplete(path, count, expected, allow_truncated)


def _frame_end(frame: av.VideoFrame, fps: Fraction, end: float | None) -> float | None:
    """The later of `end` and where `frame` stops showing, in seconds on the stream clock."""
    if frame.time is None:
        return end
    shown = float(frame.duration * frame.time_base) if frame.duration and frame.time_base \
        else float(1 / fps)
    return frame.time + shown if end is None else max(end, frame.time + shown)
