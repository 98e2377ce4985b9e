"""Tests for facevid.io.video and facevid.io.writer: every clip is synthesised here with PyAV (no outside media)."""

from __future__ import annotations

import os
import re
import types
import warnings
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from facevid.errors import ConfigError, FacevidError, FacevidWarning, InputError, OutputExistsError
from facevid.io.video import Frame, is_image_path, iter_frames, probe
from facevid.io.writer import AUDIO_TAIL, VideoWriter, check_crf, check_output_path

RED = (255, 0, 0)


def pattern(index: int, width: int = 64, height: int = 48) -> np.ndarray:
    """A frame that encodes `index` in 8 white/black blocks along the top and has a red
    orientation marker in its bottom-left corner."""
    image = np.zeros((height, width, 3), np.uint8)
    block = width // 8
    for bit in range(8):
        if index >> bit & 1:
            image[: height // 6, bit * block:(bit + 1) * block] = 255
    image[-height // 4:, : width // 4] = RED
    return image


def read_index(image: np.ndarray) -> int:
    height, width = image.shape[:2]
    block = width // 8
    band = image[1: height // 6 - 1]
    return sum(1 << bit for bit in range(8)
               if band[:, bit * block + 1:(bit + 1) * block - 1].mean() > 128)


def make_clip(path: Path, *, size: tuple[int, int] = (64, 48), fps: Fraction = Fraction(25),
              frames: int = 10, audio: str | None = None, times: list[float] | None = None,
              rotation: int | None = None, start: float = 0.0, codec: str = "libx264",
              pix_fmt: str = "yuv420p") -> Path:
    """Write a test clip. `times`: per-frame seconds (VFR); `rotation`: display-matrix degrees
    counter-clockwise (PyAV's convention); `start`: seconds added to every timestamp;
    `audio`: an encoder name (aac, pcm_s16le, libopus) for a 440 Hz mono sine."""
    width, height = size
    time_base = Fraction(1, 90000)
    times = times if times is not None else [i / fps for i in range(frames)]
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.time_base = video.codec_context.time_base = time_base
        if codec == "libx264":
            video.options = {"preset": "ultrafast", "crf": "12"}
        if rotation is not None:
            video.set_display_rotation(rotation)
        sound = _add_audio(out, audio) if audio else None
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(pattern(i, width, height), format="rgb24")
            if pix_fmt != "rgb24":
                frame = frame.reformat(format=pix_fmt)
            frame.pts, frame.time_base = round((t + start) / time_base), time_base
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound:
            _write_sine(out, sound, float(times[-1] + 1 / fps), start)
    return path


def _add_audio(out, codec: str):
    stream = out.add_stream(codec, rate=44100 if codec != "libopus" else 48000)
    stream.layout = "mono"
    return stream


def _write_sine(out, stream, seconds: float, start: float) -> None:
    rate = stream.rate
    total, step = round(seconds * rate), 1024
    fmt = "s16" if stream.codec_context.name == "pcm_s16le" else "flt"
    for first in range(0, total, step):
        t = np.arange(first, min(first + step, total)) / rate
        wave_ = 0.3 * np.sin(2 * np.pi * 440 * t)
        samples = (wave_ * 32767).astype(np.int16) if fmt == "s16" else wave_.astype(np.float32)
        frame = av.AudioFrame.from_ndarray(samples[None], format=fmt, layout="mono")
        frame.sample_rate, frame.pts = rate, first + round(start * rate)
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def audio_packets(path: Path) -> tuple[str | None, list]:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None, []
        stream = container.streams.audio[0]
        packets = [(p.pts, p.duration, p.time_base, bytes(p)) for p in container.demux(stream)
                   if p.size]
        return stream.codec_context.name, packets


def audio_seconds(packets: list) -> float:
    return float(sum(duration * time_base for _, duration, time_base, _ in packets))


def copy_video(src: Path, dst: Path, **kwargs) -> list[Frame]:
    """iter_frames → VideoWriter(audio_from=src), the way the pipeline does it."""
    frames = []
    with VideoWriter(dst, probe(src).fps, audio_from=src, preset="ultrafast", **kwargs) as writer:
        for frame in iter_frames(src):
            writer.write(frame.image, frame.time)
            frames.append(frame)
    return frames


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- reading -----------------------------------------------------------------------------

def test_probe_and_iter_frames_read_a_clip(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", fps=Fraction(30000, 1001), frames=12, audio="aac")
    info = probe(clip)
    assert (info.width, info.height, info.frame_count, info.rotation) == (64, 48, 12, 0)
    assert info.fps == Fraction(30000, 1001) and isinstance(info.fps, Fraction)
    assert info.has_audio and not info.is_image
    assert info.duration == pytest.approx(12 * 1001 / 30000, abs=1e-3)
    frames = list(iter_frames(clip))
    assert [f.index for f in frames] == list(range(12))
    assert [read_index(f.image) for f in frames] == list(range(12))
    assert [f.time for f in frames] == pytest.approx([i * 1001 / 30000 for i in range(12)], abs=1e-6)
    image = frames[0].image
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8 and image.flags.c_contiguous


def test_iter_frames_is_a_lazy_generator(tmp_path):
    frames = iter_frames(tmp_path / "not-there-yet.mp4")
    assert isinstance(frames, types.GeneratorType)  # nothing opened until the first next()
    make_clip(tmp_path / "not-there-yet.mp4", frames=5)
    first = next(frames)
    assert first.index == 0
    frames.close()


def test_time_is_relative_to_the_container_start(tmp_path):
    clip = make_clip(tmp_path / "late.mkv", frames=5, audio="aac", start=1.0)
    with av.open(str(clip)) as container:
        assert container.start_time / av.time_base == pytest.approx(1.0, abs=0.03)
    times = [f.time for f in iter_frames(clip)]
    assert times == pytest.approx([i / 25 for i in range(5)], abs=0.03)
    # The writer shifts the audio by the same offset, so audio and video both start near 0.
    out = tmp_path / "out.mkv"
    copy_video(clip, out)
    _, packets = audio_packets(out)
    assert float(packets[0][0] * packets[0][2]) == pytest.approx(0.0, abs=0.03)
    assert [f.time for f in iter_frames(out)] == pytest.approx(times, abs=1e-3)


@pytest.mark.parametrize("degrees, clockwise", [(-90, 90), (90, 270), (180, 180)])
def test_rotation_metadata_rotates_frames(tmp_path, degrees, clockwise):
    clip = make_clip(tmp_path / "phone.mp4", size=(64, 48), frames=3, rotation=degrees)
    with av.open(str(clip)) as container:  # the display matrix really is in the file
        assert next(container.decode(video=0)).rotation % 360 == degrees % 360
    info = probe(clip)
    assert info.rotation == clockwise
    assert (info.width, info.height) == ((48, 64) if clockwise in (90, 270) else (64, 48))
    frame = next(iter_frames(clip))
    assert frame.image.shape == (info.height, info.width, 3) and frame.image.flags.c_contiguous
    expected = np.rot90(pattern(0), k=-clockwise // 90)  # np.rot90 turns counter-clockwise
    assert np.abs(frame.image.astype(int) - expected).mean() < 6
    # The marker in the coded frame's bottom-left corner, seen upright:
    corner = {90: (slice(0, 12), slice(0, 12)), 270: (slice(-12, None), slice(-12, None)),
              180: (slice(0, 12), slice(-12, None))}[clockwise]
    assert frame.image[corner].mean(axis=(0, 1)) == pytest.approx(RED, abs=12)


def test_odd_sizes_read_exactly(tmp_path):
    clip = make_clip(tmp_path / "odd.mov", size=(65, 49), frames=3, codec="png", pix_fmt="rgb24")
    info = probe(clip)
    assert (info.width, info.height) == (65, 49)
    frames = list(iter_frames(clip))
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.image, pattern(i, 65, 49))


def test_images_are_one_frame_videos(tmp_path):
    image = pattern(5)
    Image.fromarray(image).save(tmp_path / "face.png")
    info = probe(tmp_path / "face.png")
    assert info.is_image and not info.has_audio
    assert (info.width, info.height, info.frame_count, info.fps) == (64, 48, 1, Fraction(25))
    frames = list(iter_frames(tmp_path / "face.png"))
    assert len(frames) == 1 and (frames[0].index, frames[0].time) == (0, 0.0)
    np.testing.assert_array_equal(frames[0].image, image)


def test_jpeg_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display = stored turned 90 degrees clockwise
    Image.fromarray(pattern(5)).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    info = probe(tmp_path / "phone.jpg")
    assert (info.width, info.height) == (48, 64)
    (frame,) = iter_frames(tmp_path / "phone.jpg")
    assert frame.image.shape == (64, 48, 3)
    assert np.abs(frame.image.astype(int) - np.rot90(pattern(5), k=-1)).mean() < 6
    assert frame.image[:12, :12].mean(axis=(0, 1)) == pytest.approx(RED, abs=12)


def test_is_image_path():
    assert is_image_path("a/b.PNG") and is_image_path("x.jpeg") and is_image_path("x.tiff")
    assert not is_image_path("x.mp4") and not is_image_path("png")


# --- errors when reading -------------------------------------------------------------------

def _unreadable(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.mp4"
    if kind == "text":
        path.write_text("not a video\n")
    elif kind == "truncated":
        data = make_clip(tmp_path / "whole.mp4", frames=10, audio="aac").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "audio-only":
        with av.open(str(path), "w") as out:
            _write_sine(out, _add_audio(out, "aac"), 0.2, 0.0)
    elif kind == "empty-image":
        path = tmp_path / "broken.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return path


@pytest.mark.parametrize("kind", ["missing", "text", "truncated", "audio-only", "empty-image"])
def test_unreadable_inputs_raise_input_error(tmp_path, kind):
    path = _unreadable(tmp_path, kind)
    with pytest.raises(InputError, match=path.name) as raised:
        probe(path)
    assert "\n" not in str(raised.value)
    with pytest.raises(InputError, match=path.name):
        list(iter_frames(path))


def test_a_video_without_frames_is_an_input_error(tmp_path):
    path = tmp_path / "empty.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()
    with pytest.raises(InputError, match="empty.mkv"):
        probe(path)
    with pytest.raises(InputError, match="empty.mkv"):
        list(iter_frames(path))


# --- writing -----------------------------------------------------------------------------

@pytest.mark.parametrize("name, fps, times, suffix", [
    ("25fps", Fraction(25), None, ".mp4"),
    ("ntsc", Fraction(30000, 1001), None, ".mp4"),
    ("vfr", Fraction(25), [0, 0.04, 0.1, 0.12, 0.3, 0.34, 0.5, 0.9, 0.94, 1.0], ".mp4"),
    ("vfr", Fraction(25), [0, 0.04, 0.1, 0.12, 0.3, 0.34, 0.5, 0.9, 0.94, 1.0], ".mkv"),
])
def test_round_trip_keeps_rate_times_and_audio(tmp_path, name, fps, times, suffix):
    src = make_clip(tmp_path / f"{name}{suffix}", fps=fps, frames=10, times=times, audio="aac")
    out = tmp_path / f"out{suffix}"
    frames = copy_video(src, out)
    info = probe(out)
    if times is None:
        assert info.fps == probe(src).fps == fps  # exactly: 29.97 stays 30000/1001
        assert info.frame_count == 10
    back = list(iter_frames(out))
    assert [read_index(f.image) for f in back] == list(range(10))
    assert [f.time for f in back] == pytest.approx([f.time for f in frames], abs=1e-3)
    src_codec, src_packets = audio_packets(src)
    codec, packets = audio_packets(out)
    assert codec == src_codec == "aac"
    assert audio_seconds(packets) == pytest.approx(audio_seconds(src_packets), abs=1024 / 44100)
    assert [p[3] for p in packets] == [p[3] for p in src_packets]  # copied, byte for byte
    assert files_in(tmp_path) == sorted([src.name, out.name])


@pytest.mark.parametrize("source, output, codec", [
    ("pcm.mkv", "out.mp4", "aac"),  # mp4 cannot hold pcm_s16le: re-encode to AAC
    ("aac.mp4", "out.webm", "opus"),  # webm holds only Opus/Vorbis
])
def test_audio_is_reencoded_when_the_container_cannot_hold_it(tmp_path, source, output, codec):
    src = make_clip(tmp_path / source, frames=25, audio=source.split(".")[0].replace("pcm", "pcm_s16le"))
    out = tmp_path / output
    copy_video(src, out)
    got, packets = audio_packets(out)
    assert got == codec
    assert audio_seconds(packets) == pytest.approx(1.0, abs=0.05)
    if codec == "opus":
        with av.open(str(out)) as container:
            assert container.streams.video[0].codec_context.name == "vp9"


def test_audio_from_a_wav_file_is_trimmed_to_the_video(tmp_path):
    tone = tmp_path / "tone.wav"
    with wave.open(str(tone), "wb") as wav:
        wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(16000)
        wav.writeframes(np.zeros(16000 * 2, "<i2").tobytes())  # 2 s of audio
    out = tmp_path / "out.mp4"
    with VideoWriter(out, Fraction(25), audio_from=tone, preset="ultrafast") as writer:
        for i in range(25):  # 1 s of video
            writer.write(pattern(i))
    codec, packets = audio_packets(out)
    assert codec == "aac"
    # Cut where the video ends (+ AUDIO_TAIL, + part of a 0.128 s WAV packet), not at 2 s.
    assert 1.0 <= audio_seconds(packets) <= 1.0 + AUDIO_TAIL + 0.128 + 2 * 1024 / 16000


def test_audio_is_interleaved_while_writing(tmp_path):
    src = make_clip(tmp_path / "long.mp4", frames=50, audio="aac")  # 2 s
    with VideoWriter(tmp_path / "out.mp4", Fraction(25), audio_from=src, preset="ultrafast") as writer:
        for i in range(25):
            writer.write(pattern(i))
        # Audio has been muxed up to (not far past) the latest frame: memory stays flat.
        pending = writer._audio._pending
        ahead = float(pending.pts * pending.time_base)
        assert 25 / 25 <= ahead <= 25 / 25 + 0.05


def test_a_source_without_audio_gives_a_silent_output(tmp_path):
    src = make_clip(tmp_path / "silent.mp4", frames=5)
    out = tmp_path / "out.mp4"
    copy_video(src, out)
    assert not probe(out).has_audio and len(list(iter_frames(out))) == 5


def test_odd_sizes_are_padded_by_one_edge_row_and_column(tmp_path):
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, Fraction(25), crf=0, preset="ultrafast") as writer:
        for i in range(3):
            writer.write(pattern(i, 65, 49))
    info = probe(out)
    assert (info.width, info.height) == (66, 50)
    for i, frame in enumerate(iter_frames(out)):
        assert np.abs(frame.image[:49, :65].astype(int) - pattern(i, 65, 49)).mean() < 3
        assert np.abs(frame.image[:, 65].astype(int) - frame.image[:, 64]).mean() < 3
        assert np.abs(frame.image[49].astype(int) - frame.image[48]).mean() < 3


def test_writer_defaults_to_index_over_fps(tmp_path):
    out = tmp_path / "cfr.mp4"
    with VideoWriter(out, Fraction(30000, 1001), preset="ultrafast") as writer:
        for i in range(6):
            writer.write(pattern(i))
        assert writer.frames_written == 6
    assert probe(out).fps == Fraction(30000, 1001)
    floaty = VideoWriter(tmp_path / "float.mp4", 29.97)
    assert floaty.fps == Fraction(2997, 100)  # a float rate becomes a small exact fraction
    floaty.abort()
    assert [f.time for f in iter_frames(out)] == pytest.approx([i * 1001 / 30000 for i in range(6)],
                                                               abs=1e-6)


@pytest.mark.parametrize("codec, suffix", [("libx265", ".mp4"), ("libsvtav1", ".mkv"),
                                           ("libx264", ".webm")])
def test_other_codecs(tmp_path, codec, suffix):
    out = tmp_path / f"out{suffix}"
    with VideoWriter(out, Fraction(25), codec=codec, preset="ultrafast") as writer:
        for i in range(4):
            writer.write(pattern(i))
    expected = {"libx265": "hevc", "libsvtav1": "av1", "libx264": "vp9"}[codec]
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name in (expected, "libdav1d")
    assert [read_index(f.image) for f in iter_frames(out)] == list(range(4))


# --- errors when writing -----------------------------------------------------------------

def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="use --force"):
        VideoWriter(out, Fraction(25))
    assert out.read_bytes() == b"precious" and files_in(tmp_path) == ["out.mp4"]
    with VideoWriter(out, Fraction(25), force=True, preset="ultrafast") as writer:
        writer.write(pattern(0))
    assert probe(out).frame_count == 1


def test_check_output_path(tmp_path):
    assert check_output_path(tmp_path / "new.mp4", force=False) == tmp_path / "new.mp4"
    with pytest.raises(FacevidError, match="does not exist"):
        check_output_path(tmp_path / "no" / "out.mp4", force=False)
    (tmp_path / "old.mp4").write_bytes(b"x")
    with pytest.raises(OutputExistsError):
        check_output_path(tmp_path / "old.mp4", force=False)
    assert check_output_path(str(tmp_path / "old.mp4"), force=True) == tmp_path / "old.mp4"


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_exception_inside_the_writer_leaves_nothing(tmp_path, error):
    src = make_clip(tmp_path / "src.mp4", frames=10, audio="aac")
    existing = tmp_path / "out.mp4"
    existing.write_bytes(b"precious")
    with pytest.raises(error):
        with VideoWriter(existing, Fraction(25), audio_from=src, force=True,
                         preset="ultrafast") as writer:
            for i in range(10):
                writer.write(pattern(i))
            raise error()
    assert files_in(tmp_path) == ["out.mp4", "src.mp4"]
    assert existing.read_bytes() == b"precious"


def test_abort_leaves_nothing(tmp_path):
    writer = VideoWriter(tmp_path / "out.mp4", Fraction(25), preset="ultrafast")
    for i in range(5):
        writer.write(pattern(i))
    assert any(name.startswith(".out.") for name in files_in(tmp_path))  # the temp file
    writer.abort()
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("bad", [np.zeros((48, 64, 3), np.float32), np.zeros((48, 64), np.uint8),
                                 np.zeros((50, 64, 3), np.uint8)])
def test_bad_frames_raise_and_leave_nothing(tmp_path, bad):
    with pytest.raises(FacevidError):
        with VideoWriter(tmp_path / "out.mp4", Fraction(25), preset="ultrafast") as writer:
            writer.write(pattern(0))
            writer.write(bad)
    assert files_in(tmp_path) == []


def test_writer_rejects_bad_settings(tmp_path):
    with pytest.raises(ConfigError, match="libx264"):
        VideoWriter(tmp_path / "out.mp4", Fraction(25), codec="mpeg2")
    with pytest.raises(ConfigError, match="medium"):
        VideoWriter(tmp_path / "out.mp4", Fraction(25), preset="warp")
    with pytest.raises(FacevidError, match=r"\.mp4"):
        VideoWriter(tmp_path / "out.xyz", Fraction(25))
    with pytest.raises(InputError, match="nope.mp4"):
        VideoWriter(tmp_path / "out.mp4", Fraction(25), audio_from=tmp_path / "nope.mp4")
    with pytest.raises(FacevidError, match="no frames"):
        VideoWriter(tmp_path / "out.mp4", Fraction(25)).close()
    assert files_in(tmp_path) == []


# --- truncated and damaged inputs --------------------------------------------------------

def noisy_clip(path: Path, frames: int = 100, **options: str) -> Path:
    """A 25 fps clip whose frames carry noise, so the header is a small part of the file."""
    with av.open(str(path), "w", options=options) as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(frames):
            image = pattern(i)
            image[12:36] = np.random.default_rng(i).integers(0, 256, (24, 64, 3), np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


def cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    short = path.with_name(f"cut-{path.name}")
    short.write_bytes(data[: int(len(data) * fraction)])
    return short


def read_until_error(path: Path) -> tuple[list[Frame], InputError | None]:
    frames = []
    try:
        for frame in iter_frames(path):
            frames.append(frame)
    except InputError as e:
        return frames, e
    return frames, None


TRUNCATED = r"is truncated or damaged: (\d+) of 100 frames decode \(pass --allow-truncated to keep them\)"


@pytest.mark.parametrize("name, options", [("fast.mp4", {"movflags": "faststart"}),  # frame count
                                           ("clip.mkv", {})])  # no count: the track's duration
def test_a_truncated_video_raises_after_the_frames_that_decode(tmp_path, capfd, name, options):
    short = cut(noisy_clip(tmp_path / name, **options), 0.3)
    frames, error = read_until_error(short)
    assert error is not None and re.search(TRUNCATED, str(error)) and short.name in str(error)
    assert 10 <= len(frames) <= 40 and int(re.search(TRUNCATED, str(error))[1]) == len(frames)
    assert [read_index(f.image) for f in frames] == list(range(len(frames)))
    with pytest.warns(FacevidWarning, match=r"kept the \d+ of 100 frames") as caught:
        kept = list(iter_frames(short, allow_truncated=True))
    assert len(kept) == len(frames) and len(caught) == 1 and "\n" not in str(caught[0].message)
    assert capfd.readouterr().err == ""  # FFmpeg's own log stays quiet


def test_a_truncated_input_aborts_the_writer(tmp_path):
    short = cut(noisy_clip(tmp_path / "fast.mp4", movflags="faststart"), 0.3)
    with pytest.raises(InputError, match="truncated"):
        copy_video(short, tmp_path / "out.mp4")
    assert files_in(tmp_path) == ["cut-fast.mp4", "fast.mp4"]


def test_a_damaged_packet_stops_a_strict_read(tmp_path):
    clip = noisy_clip(tmp_path / "fast.mp4", movflags="faststart")
    with av.open(str(clip)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    pos, size = packets[50]
    data = bytearray(clip.read_bytes())
    data[pos:pos + size] = b"\xff" * size
    (tmp_path / "bad.mp4").write_bytes(bytes(data))
    frames, error = read_until_error(tmp_path / "bad.mp4")
    assert error is not None and re.search(TRUNCATED, str(error)) and 40 <= len(frames) <= 50
    with pytest.warns(FacevidWarning, match="of 100 frames"):
        kept = list(iter_frames(tmp_path / "bad.mp4", allow_truncated=True))
    assert 95 <= len(kept) < 100  # the frames after the bad packet decode too


def _long_audio_mkv(path: Path, start: float) -> Path:
    """5 frames and 3 s of audio, with the video track's DURATION tag renamed away."""
    time_base = Fraction(1, 90000)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.time_base = video.codec_context.time_base = time_base
        video.options = {"preset": "ultrafast"}
        sound = _add_audio(out, "aac")
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            frame.pts, frame.time_base = round((i / 25 + start) / time_base), time_base
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        _write_sine(out, sound, 3.0, start)
    path.write_bytes(path.read_bytes().replace(b"DURATION", b"XURATION"))
    with av.open(str(path)) as container:  # FFmpeg gives the video the whole file's length
        stream = container.streams.video[0]
        length = container.duration / av.time_base
        assert length > 3 and float(stream.duration * stream.time_base) == pytest.approx(length, abs=1e-3)
    return path


def _vfr_avi(path: Path) -> Path:
    """AVI keeps a slot per 1/fps: the gaps become empty chunks that count as frames."""
    with VideoWriter(path, Fraction(25), preset="ultrafast") as writer:
        for i, time in enumerate([0, 0.04, 0.12, 0.2, 0.6, 0.64]):
            writer.write(pattern(i), time)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 17
    return path


def _written(path: Path, frames: int = 10, preset: str = "ultrafast") -> Path:
    with VideoWriter(path, Fraction(25), preset=preset) as writer:
        for i in range(frames):
            writer.write(pattern(i))
    return path


@pytest.mark.parametrize("name, make, count", [
    ("ntsc.mp4", lambda p: make_clip(p, fps=Fraction(30000, 1001), frames=12, audio="aac"), 12),
    ("vfr.mkv", lambda p: make_clip(p, times=[0, 0.04, 0.1, 0.12, 0.3, 0.34, 0.5, 0.9, 0.94, 1.0]), 10),
    ("vfr.mp4", lambda p: make_clip(p, times=[0, 0.04, 0.1, 0.12, 0.3, 0.34, 0.5, 0.9, 0.94, 1.0]), 10),
    ("late.mkv", lambda p: make_clip(p, frames=5, audio="aac", start=1.0), 5),
    ("rotated.mp4", lambda p: make_clip(p, frames=3, rotation=-90), 3),
    ("png.mov", lambda p: make_clip(p, frames=3, codec="png", pix_fmt="rgb24"), 3),
    ("vp9.webm", lambda p: make_clip(p, frames=10, codec="libvpx-vp9", audio="libopus"), 10),
    ("stream.ts", lambda p: make_clip(p, frames=10, audio="aac", start=0.5), 10),
    ("clip.nut", lambda p: make_clip(p, frames=10, audio="aac"), 10),
    ("clip.flv", lambda p: make_clip(p, frames=10, audio="aac"), 10),
    ("clip.avi", _written, 10),
    ("vfr.avi", _vfr_avi, 6),
    ("bframes.mp4", lambda p: _written(p, 30, preset="medium"), 30),  # B-frames, an edit list
    ("long-audio.mkv", lambda p: _long_audio_mkv(p, 0.0), 5),  # no tag: FFmpeg's fill-in
    ("late-long-audio.mkv", lambda p: _long_audio_mkv(p, 1.0), 5),
])
def test_complete_videos_are_not_called_truncated(tmp_path, name, make, count):
    path = tmp_path / name
    make(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frames = list(iter_frames(path))
    assert len(frames) == count


def test_undecodable_metadata_is_not_a_crash(tmp_path):
    for name in ("title.mkv", "title.mp4"):
        path = tmp_path / name
        with av.open(str(path), "w") as out:  # a title tag, then made invalid UTF-8
            out.metadata["title"] = "QQQQ"
            video = out.add_stream("libx264", rate=25)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
            for i in range(3):
                out.mux(video.encode(av.VideoFrame.from_ndarray(pattern(i), format="rgb24")))
            out.mux(video.encode(None))
        path.write_bytes(path.read_bytes().replace(b"QQQQ", b"\xc5\xc5\xc5\xc5"))
        assert probe(path).width == 64 and len(list(iter_frames(path))) == 3


# --- AVI -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fps, preset", [(Fraction(25), "ultrafast"), (Fraction(30000, 1001), "medium")])
def test_avi_keeps_frame_times_and_count(tmp_path, fps, preset):
    src = make_clip(tmp_path / "src.mp4", frames=10, audio="aac")  # AAC priming: a negative pts
    out = tmp_path / "out.avi"
    with VideoWriter(out, fps, audio_from=src, preset=preset) as writer:
        for i in range(10):
            writer.write(pattern(i), float(i / fps))
    frames = list(iter_frames(out))
    assert [f.time for f in frames] == pytest.approx([float(i / fps) for i in range(10)], abs=1e-6)
    assert [read_index(f.image) for f in frames] == list(range(10))
    info = probe(out)
    assert (info.frame_count, info.fps, info.has_audio) == (10, fps, True)
    with av.open(str(out)) as container:  # no B-frames: FFmpeg's own guessed pts are in order too
        pts = [frame.pts for frame in container.decode(video=0)]
    assert pts == sorted(pts)
    assert files_in(tmp_path) == ["out.avi", "src.mp4"]


# --- settings and temp files ---------------------------------------------------------------

@pytest.mark.parametrize("codec, high", [("libx264", 51), ("libx265", 51), ("libvpx-vp9", 63),
                                         ("libsvtav1", 63)])
def test_check_crf(codec, high):
    assert check_crf(codec, 0) == 0 and check_crf(codec, high) == high
    for bad in (-1, high + 1, 99):
        with pytest.raises(ConfigError, match=f"{codec} \\(use 0–{high}\\)"):
            check_crf(codec, bad)
    with pytest.raises(ConfigError, match="unknown video codec"):
        check_crf("mpeg2", 20)


def test_writer_rejects_a_crf_out_of_range(tmp_path):
    with pytest.raises(ConfigError, match="--crf 99 is out of range for libx264 \\(use 0–51\\)"):
        VideoWriter(tmp_path / "out.mp4", Fraction(25), crf=99)
    with pytest.raises(ConfigError, match="0–63"):
        VideoWriter(tmp_path / "out.mkv", Fraction(25), codec="libvpx-vp9", crf=64)
    assert files_in(tmp_path) == []
    VideoWriter(tmp_path / "out.webm", Fraction(25), crf=60).abort()  # webm: libx264 → VP9's range


def test_the_temp_file_is_made_beside_the_target_with_plain_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        writer = VideoWriter(tmp_path / "out.mp4", Fraction(25), preset="ultrafast")
        (tmp,) = files_in(tmp_path)
        assert re.fullmatch(r"\.out\.mp4\..+\.tmp\.mp4", tmp)
        writer.write(pattern(0))
        writer.abort()
        assert files_in(tmp_path) == []
        with VideoWriter(tmp_path / "out.mp4", Fraction(25), preset="ultrafast") as writer:
            writer.write(pattern(0))
        assert files_in(tmp_path) == ["out.mp4"]
        assert (tmp_path / "out.mp4").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
