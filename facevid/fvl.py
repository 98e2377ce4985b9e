"""The `.fvl` file: a talking-face clip as content + discrete motion codes (version 2).

Layout (little-endian):

    magic       4 bytes   b"FVL\\x01"
    header      u32 length + UTF-8 JSON: format version, model name and sha256, frame rate
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

import json
import os
import struct
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from facevid.errors import InputError

MAGIC = b"FVL\x01"
VERSION = 2
READABLE_VERSIONS = (1, 2)
FRAME_TAG, END_TAG = 0x46, 0x45


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
    def from_json(cls, doc: dict, path) -> "FvlHeader":
        if doc.get("format") != "facevid-fvl" or doc.get("version") not in READABLE_VERSIONS:
            raise InputError(f"{path} is an .fvl file of an unknown version ({doc.get('version')})")
        try:
            header = cls(doc["model"], doc["model_sha256"], Fraction(*doc["fps"]), int(doc["crop_size"]),
                         float(doc["crop_margin"]), float(doc["crop_center_y"]), int(doc["groups"]),
                         int(doc["codebook"]), tuple(doc["content_shape"]), int(doc["motion_dim"]),
                         tuple(doc["source_size"]), int(doc.get("flow_components", 0)), int(doc.get("flow_bits", 0)))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
            raise InputError(f"{path} has a broken .fvl header ({error})") from error
        if header.groups < 1 or header.codebook < 2 or header.flow_components < 0 or not (
                0 < header.flow_bits <= 16 if header.flow_components else header.flow_bits == 0):
            raise InputError(f"{path} has a broken .fvl header (code layout)")
        return header


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


class FvlWriter:
    """Streams an .fvl file to a temporary name; `close()` renames it into place."""

    def __init__(self, path: Path, header: FvlHeader, reference_png: bytes, content: np.ndarray,
                 ref_motion: np.ndarray):
        self.path, self.header = Path(path), header
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.file: BinaryIO = open(self.tmp, "wb")
        self.crc, self.frames = 0, 0
        blob = json.dumps(header.to_json()).encode()
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
        tail = struct.pack("<BI", END_TAG, self.frames)
        self._put(tail)
        self.file.write(struct.pack("<I", self.crc))
        self.file.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc):
        if kind is None:
            self.close()
        else:
            self.abort()
        return False


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
    """Parse and check an .fvl file completely (CRC, lengths, tags, code ranges)."""
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
    try:
        header = FvlHeader.from_json(json.loads(sections[0]), path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} has a broken .fvl header") from error
    k, e = header.content_shape
    if len(sections[2]) != k * e * 2 + header.motion_dim * 4:
        raise InputError(f"{path} has a content section of the wrong size")
    content = np.frombuffer(sections[2][: k * e * 2], "<f2").astype(np.float32).reshape(k, e)
    ref_motion = np.frombuffer(sections[2][k * e * 2:], "<f4").astype(np.float32)
    frames = list(_frames(data, offset, header, path))
    return FvlFile(header, sections[1], content, ref_motion, frames)


def _frames(data: bytes, offset: int, header: FvlHeader, path) -> Iterator[FvlFrame]:
    code_bytes = (header.bits_per_frame + 7) // 8
    widths, limits = header.widths, header.limits
    count = 0
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
        if (codes >= limits).any() or not np.isfinite(time_s) or not np.isfinite(transform).all():
            raise InputError(f"{path} is corrupt (values out of range)")
        count += 1
        yield FvlFrame(time_s, bool(face), transform, codes)
