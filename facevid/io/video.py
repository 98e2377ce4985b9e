"""Video I/O on PyAV: `probe`, streaming `iter_frames`, and `VideoWriter` with source-audio remux.

Frames are (H, W, 3) uint8 RGB arrays in display orientation. Reading streams one frame at
a time; writing goes to a hidden temp file beside the target, which `close()` moves onto
the target with `os.replace`, so an error or Ctrl-C never leaves a half-written output.
Audio from the source is copied packet for packet where the output container can hold its
codec, else re-encoded (AAC, or Opus for WebM), and interleaved with the video as it is
written. Patterned on auto-editor's `render_av`.
"""

from __future__ import annotations

import heapq
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from facevid.errors import ConfigError, FacevidError, FacevidWarning, InputError, OutputExistsError
from facevid.io.atomic import AtomicOutput, temp_beside

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
IMAGE_FPS = Fraction(25)  # an image behaves as a one-frame video at this rate
TIME_BASE = Fraction(1, 90000)  # writer's video time base (MKV/WebM muxers force 1/1000)
AUDIO_TAIL = 0.1  # seconds of source audio kept past the last frame's nominal end

VIDEO_CODECS = ("libx264", "libx265", "libvpx-vp9", "libsvtav1")
CRF_RANGES = {"libx264": (0, 51), "libx265": (0, 51), "libvpx-vp9": (0, 63), "libsvtav1": (0, 63)}
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast",
                "medium", "slow", "slower", "veryslow", "placebo")
# The x264 preset names mapped onto libvpx-vp9 `cpu-used` and SVT-AV1 `preset` (fast → slow).
VP9_SPEED = dict(zip(X264_PRESETS, (8, 8, 7, 6, 5, 4, 3, 2, 1, 0)))
SVT_PRESET = dict(zip(X264_PRESETS, (13, 12, 11, 10, 9, 8, 6, 4, 2, 1)))

# Audio codecs copied without re-encoding, by muxer name; other muxers ask FFmpeg.
_MP4_AUDIO = frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"})
COPYABLE_AUDIO = {"mp4": _MP4_AUDIO, "mov": _MP4_AUDIO, "ipod": _MP4_AUDIO,
                  "webm": frozenset({"opus", "vorbis"})}

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


def check_output_path(path: str | Path, force: bool) -> Path:
    """Validate an output path before any work: its folder exists, and it is new or `force`."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"output {path} is a folder")
    if path.exists() and not force:
        raise OutputExistsError(f"output {path} exists (use --force to overwrite)")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write into the output folder {path.parent}: permission denied")
    return path


def check_crf(codec: str, crf: int) -> int:
    """Raise ConfigError unless `crf` is a valid constant rate factor for `codec`; returns it."""
    if codec not in CRF_RANGES:
        raise ConfigError(f"unknown video codec {codec!r} (choose from {', '.join(VIDEO_CODECS)})")
    low, high = CRF_RANGES[codec]
    if isinstance(crf, bool) or not isinstance(crf, int) or not low <= crf <= high:
        raise ConfigError(f"--crf {crf} is out of range for {codec} (use {low}–{high})")
    return crf


def _encoder_options(codec: str, crf: int, preset: str) -> dict[str, str]:
    if preset not in X264_PRESETS:
        raise ConfigError(f"unknown preset {preset!r} (choose from {', '.join(X264_PRESETS)})")
    if codec == "libx264":
        return {"crf": str(crf), "preset": preset}
    if codec == "libx265":
        return {"crf": str(crf), "preset": preset, "x265-params": "log-level=error"}
    if codec == "libvpx-vp9":  # constant quality needs b=0
        return {"crf": str(crf), "b": "0", "deadline": "good", "row-mt": "1",
                "cpu-used": str(VP9_SPEED[preset])}
    return {"crf": str(crf), "preset": str(SVT_PRESET[preset])}  # libsvtav1


def _pad_even(image: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: repeat the last row / column once where odd."""
    height, width = image.shape[:2]
    if height % 2 or width % 2:
        image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    return image


class _AudioRemux:
    """Streams the audio of `path` into an output container, in step with the video."""

    def __init__(self, container: av.container.InputContainer, stream: av.audio.AudioStream):
        self._in, self._stream = container, stream
        self._offset = _start_offset(container)
        self._packets = (p for p in container.demux(stream) if p.dts is not None)
        self._pending: av.Packet | None = None
        self._out_stream: av.audio.AudioStream | None = None
        self._copy = False
        self._drop_early = False  # AVI: drop priming packets that end before 0
        self._next_pts: int | None = None  # re-encode: running sample count

    @classmethod
    def open(cls, path: str | Path) -> _AudioRemux | None:
        """The audio of `path`, or None if it has none."""
        path = _existing(path)
        if is_image_path(path):
            return None
        with _reading(path):
            container = av.open(str(path), "r", metadata_errors="replace")
        if not container.streams.audio:
            container.close()
            return None
        return cls(container, container.streams.audio[0])

    def attach(self, out: av.container.OutputContainer) -> None:
        """Add the output audio stream: a copy of the source's, or an AAC/Opus encoder."""
        codec = self._stream.codec_context.codec.canonical_name
        # AVI keeps no timestamps: a negative one would make FFmpeg shift (and pad) the video.
        self._drop_early = out.format.name == "avi"
        allowed = COPYABLE_AUDIO.get(out.format.name, out.supported_codecs)
        if codec in allowed:
            with suppress(ValueError):  # FFmpeg refuses the template: re-encode instead
                self._out_stream = out.add_stream_from_template(self._stream)
                self._copy = True
                return
        encoder = "libopus" if out.format.name == "webm" else "aac"
        rates = av.Codec(encoder, "w").audio_rates or ()
        rate = self._stream.rate if not rates or self._stream.rate in rates else 48000
        layout = "mono" if self._stream.channels == 1 else "stereo"
        self._out_stream = out.add_stream(encoder, rate=rate, layout=layout)

    def _time(self, packet: av.Packet) -> float:
        ts = packet.pts if packet.pts is not None else packet.dts
        return float(ts * packet.time_base) - self._offset

    def _end(self, packet: av.Packet) -> float:
        return self._time(packet) + float((packet.duration or 0) * packet.time_base)

    def mux_until(self, out: av.container.OutputContainer, until: float) -> None:
        """Mux source audio packets that start before `until` seconds."""
        while True:
            if self._pending is None:
                self._pending = next(self._packets, None)
                if self._pending is None:
                    return
            if self._time(self._pending) >= until:
                return
            packet, self._pending = self._pending, None
            if self._drop_early and self._end(packet) <= 0:
                continue  # priming before 0: AVI cannot hold it
            if self._copy:
                self._mux_copy(out, packet)
            else:
                self._mux_encoded(out, packet)

    def _mux_copy(self, out: av.container.OutputContainer, packet: av.Packet) -> None:
        shift = round(self._offset / packet.time_base)
        packet.dts -= shift
        if packet.pts is not None:
            packet.pts -= shift
        packet.stream = self._out_stream
        out.mux(packet)

    def _mux_encoded(self, out: av.container.OutputContainer, packet: av.Packet) -> None:
        # The encoder resamples and cuts frames to its frame_size itself (PyAV wraps an
        # AudioResampler with frame_size); we give it gap-free pts in samples.
        for frame in packet.decode():
            if self._next_pts is None:
                self._next_pts = round((frame.time - self._offset) * frame.sample_rate)
            frame.pts, frame.time_base = self._next_pts, Fraction(1, frame.sample_rate)
            self._next_pts += frame.samples
            out.mux(self._out_stream.encode(frame))

    def finish(self, out: av.container.OutputContainer, until: float) -> None:
        """Mux the audio up to `until` (the end of the video) and flush the encoder."""
        self.mux_until(out, until)
        if not self._copy:
            out.mux(self._out_stream.encode(None))

    def close(self) -> None:
        self._in.close()


class VideoWriter(AtomicOutput):
    """Encodes RGB frames into `path` through a temp file, with the audio of `audio_from`.

    The first frame fixes the size; odd widths/heights are padded by one repeated edge
    column/row (yuv420p needs even sizes), so a 65x49 input gives a 66x50 video. Use it as
    a context manager: leaving the block normally calls close(), an exception (Ctrl-C
    included) calls abort(), which deletes the temp file and leaves `path` untouched.
    """

    def __init__(self, path: str | Path, fps: Fraction, *, audio_from: str | Path | None = None,
                 codec: str = "libx264", crf: int = 18, preset: str = "medium",
                 force: bool = False):
        self.path = check_output_path(path, force)
        self.fps = Fraction(fps).limit_denominator(100_000)  # a float 29.97 becomes 2997/100
        if self.fps <= 0:
            raise ConfigError(f"fps must be positive, got {fps}")
        self.frames_written = 0
        self._size: tuple[int, int] | None = None  # (width, height) before padding
        self._last_pts = -1
        self._end_time = 0.0  # seconds: end of the latest frame
        self._done = False
        self._time_base = TIME_BASE  # 1/fps for AVI, which keeps no real timestamps
        self._audio = _AudioRemux.open(audio_from) if audio_from is not None else None
        self._tmp: Path | None = None
        try:
            self._tmp = temp_beside(self.path)  # created exclusively; av.open writes into it
        except OSError as e:
            self._close_early()
            raise FacevidError(f"cannot write {self.path}: {_reason(e)}") from e
        try:
            self._out = av.open(str(self._tmp), "w")  # the muxer goes by the .tmp.mp4 suffix
        except (ValueError, *_READ_ERRORS) as e:
            self._close_early()
            raise FacevidError(f"cannot write {self.path}: {_reason(e)} "
                               "(use a .mp4, .mov, .mkv or .webm file name)") from e
        try:
            self._video = self._add_video_stream(codec, crf, preset)
            if self._audio:
                self._audio.attach(self._out)
        except BaseException:
            self.abort()
            raise

    def _close_early(self) -> None:
        """Undo a half-done __init__: close the audio source, delete the temp file."""
        if self._audio:
            self._audio.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)

    def _add_video_stream(self, codec: str, crf: int, preset: str) -> av.video.stream.VideoStream:
        if self._out.format.name == "webm" and codec == "libx264":
            codec = "libvpx-vp9"
        options = _encoder_options(codec, check_crf(codec, crf), preset)
        try:
            stream = self._out.add_stream(codec, rate=self.fps)
        except (ValueError, av.error.FFmpegError) as e:
            raise ConfigError(f"cannot put {codec} video in {self.path.name}: {_reason(e)}") from e
        stream.options = options
        stream.pix_fmt = "yuv420p"
        if self._out.format.name == "avi":  # one tick per frame; no B-frames (no pts to reorder by)
            self._time_base = 1 / self.fps
            stream.codec_context.max_b_frames = 0
        stream.time_base = stream.codec_context.time_base = self._time_base
        # Frames are converted from RGB with BT.709 matrices (limited range); say so.
        stream.codec_context.colorspace = stream.codec_context.color_primaries = 1
        stream.codec_context.color_trc = stream.codec_context.color_range = 1
        if codec == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner to stderr otherwise
        if codec == "libx265" and self._out.format.name in ("mp4", "mov", "ipod"):
            stream.codec_tag = "hvc1"  # what Apple players want
        return stream

    def _check_image(self, image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 \
                or image.ndim != 3 or image.shape[2] != 3:
            got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
            raise FacevidError(f"a frame must be an (H, W, 3) uint8 RGB array, got {got}")
        height, width = image.shape[:2]
        if self._size is None:
            self._size = (width, height)
            self._video.width, self._video.height = width + width % 2, height + height % 2
        elif self._size != (width, height):
            raise FacevidError(f"frame {self.frames_written} is {width}x{height}, "
                               f"but the video is {self._size[0]}x{self._size[1]}")
        return _pad_even(np.ascontiguousarray(image))

    def write(self, image: np.ndarray, time: float | None = None) -> None:
        """Encode one (H, W, 3) uint8 RGB frame shown at `time` seconds (default index / fps)."""
        if self._done:
            raise FacevidError(f"writer for {self.path} is already closed")
        image = self._check_image(image)
        start = Fraction(self.frames_written) / self.fps if time is None else time
        # Strictly increasing pts on the fine time base keep VFR timing exactly.
        tb = self._time_base
        pts = max(round(start / tb), self._last_pts + 1)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
            format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
        frame.pts, frame.time_base = pts, tb
        frame.duration = max(1, round(1 / (self.fps * tb)))  # the last frame's shows this long
        try:
            self._out.mux(self._video.encode(frame))
            self._last_pts = pts
            self._end_time = float((pts + frame.duration) * tb)
            if self._audio:  # audio up to the end of this frame; video packets lag behind it
                self._audio.mux_until(self._out, self._end_time)
        except (av.error.FFmpegError, OSError) as e:
            raise FacevidError(f"cannot write {self.path}: {_reason(e)}") from e
        self.frames_written += 1

    def close(self) -> Path:
        """Flush, mux the remaining audio, and move the file into place; returns the path.

        Audio is cut where the video ends (plus AUDIO_TAIL), so a clip cut short keeps
        its sound in step rather than running on."""
        if self._done:
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise FacevidError(f"no frames were written to {self.path}")
        try:
            self._out.mux(self._video.encode(None))
            if self._audio:  # the last frame's true duration is unknown: allow a little slack
                self._audio.finish(self._out, self._end_time + AUDIO_TAIL)
            self._out.close()
            os.replace(self._tmp, self.path)
        except BaseException as e:
            self.abort()
            if isinstance(e, (av.error.FFmpegError, OSError)):
                raise FacevidError(f"cannot write {self.path}: {_reason(e)}") from e
            raise
        self._done = True
        if self._audio:
            self._audio.close()
        return self.path

    def abort(self) -> None:
        """Stop, and delete the temp file; the target path is left as it was."""
        if self._done:
            return
        self._done = True
        with suppress(*_READ_ERRORS, ValueError):
            self._out.close()
        if self._audio:
            self._audio.close()
        with suppress(FileNotFoundError):
            self._tmp.unlink()
