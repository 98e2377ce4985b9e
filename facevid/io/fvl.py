"""The `.fvl` file: a talking-face clip as content + discrete motion codes (version 2).

Layout (little-endian):

    magic       4 bytes   b"FVL\\x01"
    header      u32 length + UTF-8 JSON: format version, model sha256 (and its name, shown in
                messages only: never opened as a path), frame rate
                (numerator, denominator), crop size and spec, groups G, codebook size V,
                bits per code, flow components C and bits per level, content shape,
                source frame size
    reference   u32 length + PNG of the reference crop (the pixels the decoder warps)
    content     u32 length + float16 content tokens (K x E) + float32 reference motion (G*d)
    frames      repeated: u8 record tag 0x46 ("F"), f64 time, u8 face flag, 6 x f32
                frame→crop transform, ceil((G * code bits + C * flow bits) / 8) bytes: the
                G codes then the C flow levels, packed MSB-first
    trailer     u8 tag 0x45 ("E"), u32 frame count, u32 CRC-32 of every byte before it

Motion costs G * log2(V) + C * flow bits per frame (24 * 5 + 32 * 5 = 280 for `small`).
Version 1 (no flow levels) is still read. Anything truncated, corrupt or foreign is rejected
with an InputError.
"""

from __future__ import annotations

import functools
import json
import os
import re
import reprlib
import struct
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from facevid.errors import InputError
from facevid.io.atomic import AtomicOutput, temp_beside

MAGIC = b"FVL\x01"
VERSION = 2
READABLE_VERSIONS = (1, 2)
FRAME_TAG, END_TAG = 0x46, 0x45
MAX_HEADER_BYTES = 1 << 16
MAX_NAME = 200
MAX_FPS, MIN_FPS = 1000, Fraction(1, 1000)
MAX_SOURCE_SIZE = 16384
MAX_TIME = 1e7               # seconds (about 116 days)
MAX_COORD = 1e7              # pixels: a face frame's transform, and its crop mapped back into the frame
_MISSING = object()


def _whole(low: int, high: int) -> tuple:
    return (lambda v: type(v) is int and low <= v <= high), f"a whole number in {low}..{high}"


def _real(low: float, high: float) -> tuple:
    return (lambda v: type(v) in (int, float) and low <= v <= high), f"a number in {low}..{high}"


def _pair(low: int, high: int) -> tuple:
    ok, what = _whole(low, high)
    return (lambda v: type(v) is list and len(v) == 2 and all(map(ok, v))), f"a list of two of {what}"


_NAME = (lambda v: type(v) is str and 0 < len(v) <= MAX_NAME and v.isprintable()), \
    f"a printable name of 1..{MAX_NAME} characters"
_SHA256 = (lambda v: type(v) is str and re.fullmatch("[0-9a-f]{64}", v) is not None), "64 lowercase hex digits"


def _field(doc: dict, path, key: str, check: tuple, default=_MISSING):
    """doc[key] if it passes `check` (a predicate and what it wants), else an InputError naming both."""
    value = doc.get(key, default)
    ok, what = check
    if value is _MISSING or not ok(value):
        got = "nothing" if value is _MISSING else reprlib.repr(value)
        raise InputError(f"{path} has a broken .fvl header ({key} must be {what}, got {got})")
    return value


@dataclass
class FvlHeader:
    model: str
    model_sha256: str
    fps: Fraction
    crop_size: int
    crop_margin: float
    crop_center_y: float
    groups: int
    codebook: int
    content_shape: tuple[int, int]
    motion_dim: int
    source_size: tuple[int, int]
    flow_components: int = 0
    flow_bits: int = 0

    @property
    def code_bits(self) -> int:
        return max(1, (self.codebook - 1).bit_length())

    @property
    def widths(self) -> np.ndarray:
        """Bits of each stored value of a frame: G codes, then C flow levels."""
        return np.array([self.code_bits] * self.groups + [self.flow_bits] * self.flow_components, np.int64)

    @property
    def limits(self) -> np.ndarray:
        """One past the largest valid value of each stored value."""
        return np.array([self.codebook] * self.groups + [2 ** self.flow_bits] * self.flow_components, np.int64)

    @property
    def bits_per_frame(self) -> int:
        return int(self.widths.sum())

    def to_json(self) -> dict:
        return {"format": "facevid-fvl", "version": VERSION, "model": self.model, "model_sha256": self.model_sha256,
                "fps": [self.fps.numerator, self.fps.denominator], "crop_size": self.crop_size,
                "crop_margin": self.crop_margin, "crop_center_y": self.crop_center_y, "groups": self.groups,
                "codebook": self.codebook, "code_bits": self.code_bits, "content_shape": list(self.content_shape),
                "motion_dim": self.motion_dim, "source_size": list(self.source_size),
                "flow_components": self.flow_components, "flow_bits": self.flow_bits}

    @classmethod
    def from_json(cls, doc, path) -> "FvlHeader":
        """Check every field's type and range (no model needed); anything else is an InputError."""
        if not isinstance(doc, dict) or doc.get("format") != "facevid-fvl":
            raise InputError(f"{path} has a broken .fvl header (not a facevid-fvl header)")
        version = doc.get("version")
        if type(version) is not int or version not in READABLE_VERSIONS:
            raise InputError(f"{path} is an .fvl file of an unknown version ({reprlib.repr(version)})")
        field = functools.partial(_field, doc, path)
        header = cls(field("model", _NAME), field("model_sha256", _SHA256), Fraction(*field("fps", _pair(1, 10 ** 9))),
                     field("crop_size", _whole(16, 1024)), float(field("crop_margin", _real(0, 2))),
                     float(field("crop_center_y", _real(-10, 10))), field("groups", _whole(1, 4096)),
                     field("codebook", _whole(2, 1 << 16)), tuple(field("content_shape", _pair(1, 1 << 16))),
                     field("motion_dim", _whole(1, 1 << 20)), tuple(field("source_size", _pair(1, MAX_SOURCE_SIZE))),
                     field("flow_components", _whole(0, 4096), 0), field("flow_bits", _whole(0, 16), 0))
        header._check_layout(doc, path)
        return header

    def _check_layout(self, doc: dict, path) -> None:
        """The fields that must agree with each other."""
        if not MIN_FPS <= self.fps <= MAX_FPS:
            raise InputError(f"{path} has a broken .fvl header (fps {float(self.fps):g} is not in "
                             f"{float(MIN_FPS):g}..{MAX_FPS})")
        if (self.flow_bits == 0) != (self.flow_components == 0) or self.motion_dim % self.groups \
                or doc.get("code_bits", self.code_bits) != self.code_bits:
            raise InputError(f"{path} has a broken .fvl header (code layout)")


@dataclass
class FvlFrame:
    time: float
    has_face: bool
    transform: np.ndarray     # (2, 3) float32
    codes: np.ndarray         # (G + C,) int64: motion codes, then flow levels


def pack_codes(codes: np.ndarray, widths: np.ndarray) -> bytes:
    """Ints (N,), each below 2**widths[i] → bytes, each value MSB first, one after the other."""
    as_bits = [(int(value) >> np.arange(width - 1, -1, -1)) & 1 for value, width in zip(codes, widths)]
    return np.packbits(np.concatenate(as_bits).astype(np.uint8)).tobytes()


def unpack_codes(data: bytes, widths: np.ndarray) -> np.ndarray:
    as_bits = np.unpackbits(np.frombuffer(data, np.uint8)).astype(np.int64)
    ends = np.cumsum(widths)
    return np.array([(as_bits[end - width:end] << np.arange(width - 1, -1, -1)).sum()
                     for end, width in zip(ends, widths)], np.int64)


class FvlWriter(AtomicOutput):
    """Streams an .fvl file to a temporary name; `close()` renames it into place."""

    def __init__(self, path: Path, header: FvlHeader, reference_png: bytes, content: np.ndarray,
                 ref_motion: np.ndarray):
        self.path, self.header = Path(path), header
        self.tmp = temp_beside(self.path)   # created exclusively, a random name: no planted link is followed
        self.crc, self.frames = 0, 0
        self.file: BinaryIO | None = None
        try:
            self.file = open(self.tmp, "wb")
            self._start(reference_png, content, ref_motion)
        except BaseException:
            self.abort()
            raise

    def _start(self, reference_png: bytes, content: np.ndarray, ref_motion: np.ndarray) -> None:
        blob = json.dumps(self.header.to_json()).encode()
        self._put(MAGIC + struct.pack("<I", len(blob)) + blob)
        self._put(struct.pack("<I", len(reference_png)) + reference_png)
        payload = content.astype("<f2").tobytes() + ref_motion.astype("<f4").tobytes()
        self._put(struct.pack("<I", len(payload)) + payload)

    def _put(self, data: bytes) -> None:
        self.file.write(data)
        self.crc = zlib.crc32(data, self.crc)

    def write(self, frame: FvlFrame) -> None:
        codes, limits = np.asarray(frame.codes, np.int64), self.header.limits
        if codes.shape != limits.shape or codes.min() < 0 or (codes >= limits).any():
            raise ValueError(f"codes must be {self.header.groups} values below {self.header.codebook} and "
                             f"{self.header.flow_components} below {2 ** self.header.flow_bits}")
        record = struct.pack("<BdB6f", FRAME_TAG, frame.time, int(frame.has_face),
                             *np.asarray(frame.transform, np.float32).ravel())
        self._put(record + pack_codes(codes, self.header.widths))
        self.frames += 1

    def close(self) -> Path:
        try:
            self._put(struct.pack("<BI", END_TAG, self.frames))
            self.file.write(struct.pack("<I", self.crc))
            self.file.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
        self.tmp.unlink(missing_ok=True)


@dataclass
class FvlFile:
    header: FvlHeader
    reference_png: bytes
    content: np.ndarray         # (K, E) float32
    ref_motion: np.ndarray      # (G*d,) float32
    frames: list[FvlFrame]


def _take(data: bytes, offset: int, size: int, path) -> tuple[bytes, int]:
    if offset + size > len(data):
        raise InputError(f"{path} is truncated (not a complete .fvl file)")
    return data[offset:offset + size], offset + size


def read_fvl(path: str | Path) -> FvlFile:
    """Parse and check an .fvl file completely (CRC, lengths, tags, field types and ranges, code ranges)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}") from error
    if data[:4] != MAGIC:
        raise InputError(f"{path} is not an .fvl file")
    if len(data) < 13 or zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise InputError(f"{path} is corrupt or truncated (checksum mismatch)")
    offset = 4
    sections = []
    for _ in range(3):
        raw, offset = _take(data, offset, 4, path)
        blob, offset = _take(data, offset, struct.unpack("<I", raw)[0], path)
        sections.append(blob)
    header = FvlHeader.from_json(_header_doc(sections[0], path), path)
    content, ref_motion = _content(sections[2], header, path)
    frames = list(_frames(data, offset, header, path))
    return FvlFile(header, sections[1], content, ref_motion, frames)


def _header_doc(blob: bytes, path):
    """The header's JSON (any JSON value: from_json checks its shape)."""
    if len(blob) > MAX_HEADER_BYTES:
        raise InputError(f"{path} has a broken .fvl header (over {MAX_HEADER_BYTES} bytes)")
    try:
        return json.loads(blob)
    except (ValueError, RecursionError) as error:   # bad JSON or UTF-8, huge numbers, deep nesting
        raise InputError(f"{path} has a broken .fvl header (not valid JSON)") from error


def _content(section: bytes, header: FvlHeader, path) -> tuple[np.ndarray, np.ndarray]:
    k, e = header.content_shape
    if len(section) != k * e * 2 + header.motion_dim * 4:
        raise InputError(f"{path} has a content section of the wrong size")
    content = np.frombuffer(section[: k * e * 2], "<f2").astype(np.float32).reshape(k, e)
    ref_motion = np.frombuffer(section[k * e * 2:], "<f4").astype(np.float32)
    if not (np.isfinite(content).all() and np.isfinite(ref_motion).all()):
        raise InputError(f"{path} is corrupt (content values that are not finite)")
    return content, ref_motion


def _plausible(transform: np.ndarray, size: int) -> bool:
    """Whether a frame→crop transform and the crop's corners mapped back into the frame stay within MAX_COORD."""
    a = transform.astype(np.float64)
    if not (np.abs(a) <= MAX_COORD).all():
        return False
    det = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]
    if det == 0:   # inverted as all zeros (as OpenCV does): the crop lands on one pixel
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        inverse = np.array([[a[1, 1], -a[0, 1]], [-a[1, 0], a[0, 0]]]) / det
        corners = (np.array([[0, 0], [size, 0], [0, size], [size, size]]) - a[:, 2]) @ inverse.T
    return bool((np.abs(corners) <= MAX_COORD).all())


def _frames(data: bytes, offset: int, header: FvlHeader, path) -> Iterator[FvlFrame]:
    code_bytes = (header.bits_per_frame + 7) // 8
    widths, limits = header.widths, header.limits
    count, last_time = 0, -MAX_TIME
    while True:
        tag, offset = _take(data, offset, 1, path)
        if tag[0] == END_TAG:
            raw, offset = _take(data, offset, 4, path)
            if struct.unpack("<I", raw)[0] != count or offset != len(data) - 4:
                raise InputError(f"{path} is corrupt (frame count or length mismatch)")
            return
        if tag[0] != FRAME_TAG:
            raise InputError(f"{path} is corrupt (unknown record)")
        raw, offset = _take(data, offset, 8 + 1 + 24 + code_bytes, path)
        time_s, face = struct.unpack("<dB", raw[:9])
        transform = np.frombuffer(raw[9:33], "<f4").reshape(2, 3).copy()
        codes = unpack_codes(raw[33:], widths)
        if (codes >= limits).any() or face > 1 or not np.isfinite(transform).all() or (
                face and not _plausible(transform, header.crop_size)):
            raise InputError(f"{path} is corrupt (values out of range in frame {count})")
        if not last_time <= time_s <= MAX_TIME:   # also false for NaN
            raise InputError(f"{path} is corrupt (frame {count} is at {time_s!r} s: times must be finite, "
                             f"within ±{MAX_TIME:g} s and never decrease)")
        count, last_time = count + 1, time_s
        yield FvlFrame(time_s, bool(face), transform, codes)
