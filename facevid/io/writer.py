"""Video writing on PyAV: `VideoWriter` with source-audio remux, and the checks of an output
before any work (`check_output_path`, `check_crf`).

Writing goes to a hidden temp file beside the target, which `close()` moves onto the target
with `os.replace`, so an error or Ctrl-C never leaves a half-written output. Audio from the
source is copied packet for packet where the output container can hold its codec, else
re-encoded (AAC, or Opus for WebM), and interleaved with the video as it is written.
Patterned on auto-editor's `render_av`.
"""

from __future__ import annotations

import os
from contextlib import suppress
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from facevid.errors import ConfigError, FacevidError, InputError, OutputExistsError
from facevid.io.atomic import AtomicOutput, temp_beside
from facevid.io.video import _READ_ERRORS, _existing, _reading, _reason, _start_offset, is_image_path

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
