"""Fuzzing facevid.io.video's readers with mutated bytes: every failure must be an InputError."""

from __future__ import annotations

import io
import signal
import warnings
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_video import make_clip, pattern

from facevid.errors import FacevidError, FacevidWarning
from facevid.io.video import iter_frames, probe

EXAMPLES = 100
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
SECONDS = 10  # one example (probe and two decodes of a 16-frame clip) takes milliseconds


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    """Tiny valid files by suffix: 16 frames 64x48 (mp4 with AAC audio, mkv), a PNG and a JPEG."""
    folder = tmp_path_factory.mktemp("seeds")
    files = {".mp4": make_clip(folder / "a.mp4", frames=16, audio="aac"),
             ".mkv": make_clip(folder / "a.mkv", frames=16, fps=Fraction(30000, 1001))}
    made = {suffix: path.read_bytes() for suffix, path in files.items()}
    for suffix, kind in ((".png", "PNG"), (".jpg", "JPEG")):
        buffer = io.BytesIO()
        Image.fromarray(pattern(3)).save(buffer, kind)
        made[suffix] = buffer.getvalue()
    return made


def mutations(size: int):
    """Byte edits for a file of `size` bytes: (kind, offset, length, value)."""
    edit = st.tuples(st.sampled_from(["flip", "overwrite", "truncate", "duplicate", "zero"]),
                     st.integers(0, size - 1), st.integers(1, 256), st.integers(0, 255))
    return st.lists(edit, min_size=1, max_size=4)


def mutate(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for kind, offset, length, value in edits:
        offset %= max(len(out), 1)
        if kind == "flip":
            out[offset] ^= 1 << (value % 8)
        elif kind == "overwrite":
            out[offset:offset + length] = bytes((value + i * 37) % 256 for i in range(length))
        elif kind == "zero":
            out[offset:offset + length] = bytes(len(out[offset:offset + length]))
        elif kind == "truncate":
            del out[offset:]
        else:  # duplicate a chunk in place
            out[offset:offset] = out[offset:offset + length]
        if not out:
            out = bytearray(b"\0")
    return bytes(out)


class Hang(Exception):
    """An example ran past SECONDS."""


@contextmanager
def time_limit(seconds: int):
    def ring(signum, frame):
        raise Hang(f"no result after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def read_all(path: Path) -> None:
    """probe and iter_frames (strict, then lenient): each succeeds or raises FacevidError."""
    with time_limit(SECONDS), warnings.catch_warnings():
        warnings.simplefilter("ignore", FacevidWarning)
        for read in (lambda: probe(path), lambda: list(iter_frames(path)),
                     lambda: list(iter_frames(path, allow_truncated=True))):
            try:
                read()
            except FacevidError:
                pass


def check(tmp_path: Path, suffix: str, data: bytes) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    read_all(path)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".png", ".jpg"])
def test_seeds_read(seeds, tmp_path, suffix):
    path = tmp_path / f"seed{suffix}"
    path.write_bytes(seeds[suffix])
    frames = list(iter_frames(path))
    assert len(frames) == (1 if suffix in (".png", ".jpg") else 16)
    assert probe(path).width == 64


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".png", ".jpg"])
def test_mutated_files_fail_cleanly(seeds, tmp_path, suffix):
    data = seeds[suffix]

    @FUZZ
    @given(mutations(len(data)))
    def run(edits):
        check(tmp_path, suffix, mutate(data, edits))

    run()


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_random_cuts_fail_cleanly(seeds, tmp_path, suffix):
    data = seeds[suffix]

    @FUZZ
    @given(st.integers(1, len(data) - 1))
    def run(cut):
        check(tmp_path, suffix, data[:cut])

    run()


def test_random_bytes_fail_cleanly(tmp_path):
    @FUZZ
    @given(st.binary(min_size=1, max_size=2048), st.sampled_from([".mp4", ".mkv", ".png", ".jpg"]))
    def run(data, suffix):
        check(tmp_path, suffix, data)

    run()
