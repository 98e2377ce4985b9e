"""Bounded, deterministic fuzzing of the .fvl reader: it returns a sane file or raises InputError."""

from __future__ import annotations

import json
import math
import struct
import zlib
from fractions import Fraction

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_codec import join_fvl, split_fvl

from facevid.errors import InputError
from facevid.io.fvl import (
    MAX_FPS,
    MAX_NAME,
    MAX_SOURCE_SIZE,
    MAX_TIME,
    MIN_FPS,
    FvlFrame,
    FvlHeader,
    FvlWriter,
    read_fvl,
)

FUZZ = settings(derandomize=True, deadline=None, database=None, max_examples=250,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
KEYS = ["format", "version", "model", "model_sha256", "fps", "crop_size", "crop_margin", "crop_center_y", "groups",
        "codebook", "code_bits", "content_shape", "motion_dim", "source_size", "flow_components", "flow_bits"]


def _valid_file(path) -> bytes:
    """A small valid .fvl (no model needed): 16x16 reference, 2x3 content, 6 frames of random codes."""
    rng = np.random.default_rng(0)
    header = FvlHeader("tiny", "ab" * 32, Fraction(25), 16, 0.5, 0.4, 4, 8, (2, 3), 16, (64, 48),
                       flow_components=3, flow_bits=4)
    png = cv2.imencode(".png", np.full((16, 16, 3), 90, np.uint8))[1].tobytes()
    with FvlWriter(path, header, png, rng.normal(size=(2, 3)), rng.normal(size=16)) as writer:
        for t in range(6):
            codes = rng.integers(0, header.limits)
            writer.write(FvlFrame(t / 25, t != 2, rng.normal(size=(2, 3)), codes))
    return path.read_bytes()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """(a valid file's bytes, a path to write each mutated file to)."""
    folder = tmp_path_factory.mktemp("fuzz")
    return _valid_file(folder / "valid.fvl"), folder / "case.fvl"


def assert_sane(data) -> None:
    """Every bound the reader promises, on a file it accepted."""
    h = data.header
    assert type(h.model) is str and 0 < len(h.model) <= MAX_NAME and h.model.isprintable()
    assert len(h.model_sha256) == 64 and set(h.model_sha256) <= set("0123456789abcdef")
    assert MIN_FPS <= h.fps <= MAX_FPS and 16 <= h.crop_size <= 1024
    assert all(type(v) is int and 1 <= v <= MAX_SOURCE_SIZE for v in h.source_size)
    assert all(type(v) is int and 1 <= v <= 1 << 16 for v in h.content_shape)
    assert 1 <= h.groups <= 4096 and 2 <= h.codebook <= 1 << 16 and 0 <= h.flow_bits <= 16
    assert math.isfinite(h.crop_margin) and math.isfinite(h.crop_center_y)
    assert data.content.shape == h.content_shape and data.ref_motion.shape == (h.motion_dim,)
    assert np.isfinite(data.content).all() and np.isfinite(data.ref_motion).all()
    times = [f.time for f in data.frames]
    assert all(-MAX_TIME <= t <= MAX_TIME for t in times) and times == sorted(times)
    for frame in data.frames:
        assert np.isfinite(frame.transform).all() and frame.codes.shape == h.limits.shape
        assert (0 <= frame.codes).all() and (frame.codes < h.limits).all()


def read_or_reject(path, raw: bytes) -> None:
    path.write_bytes(raw)
    try:
        data = read_fvl(path)
    except InputError as error:
        assert "\n" not in str(error)
        return
    assert_sane(data)


EDITS = st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "double"]),
                           st.integers(0, 1 << 16), st.integers(0, 255),
                           st.floats(allow_nan=True, allow_infinity=True)), min_size=1, max_size=4)


def mutate(raw: bytes, edits) -> bytes:
    """Apply byte edits: bit flips, byte sets, inserts, deletes, truncation, an f64 written anywhere."""
    data = bytearray(raw)
    for kind, where, byte, real in edits:
        at = where % max(len(data), 1)
        if kind == "flip" and data:
            data[at] ^= 1 << (byte % 8)
        elif kind == "set" and data:
            data[at] = byte
        elif kind == "insert":
            data[at:at] = bytes([byte]) * (1 + byte % 8)
        elif kind == "delete":
            del data[at:at + 1 + byte % 8]
        elif kind == "truncate":
            del data[at:]
        elif kind == "double":
            data[at:at + 8] = struct.pack("<d", real)
    return bytes(data)


def with_crc(data: bytes) -> bytes:
    """`data` with its last four bytes replaced by the CRC of the rest (the reader's checksum passes)."""
    body = data[:-4] if len(data) >= 4 else data
    return body + struct.pack("<I", zlib.crc32(body))


@FUZZ
@given(edits=EDITS)
def test_mutated_bytes_are_read_or_rejected(scratch, edits):
    raw, path = scratch
    read_or_reject(path, mutate(raw, edits))


@FUZZ
@given(edits=EDITS)
def test_mutated_bytes_with_a_valid_crc_are_read_or_rejected(scratch, edits):
    raw, path = scratch
    read_or_reject(path, with_crc(mutate(raw, edits)))


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70),
                      st.sampled_from([0, -1, 1, 2, 16, 1024, 4096, 10 ** 9, 10 ** 300]),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                      st.sampled_from(["", "\n", "x" * 201, "ab" * 32, "AB" * 32, "facevid-fvl"]))
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(st.text(max_size=3), inner, max_size=2)),
                          max_leaves=6)
FIELD_EDITS = st.lists(st.one_of(st.tuples(st.just("set"), st.sampled_from(KEYS + ["extra"]), JSON_VALUE),
                                 st.tuples(st.just("drop"), st.sampled_from(KEYS), st.none()),
                                 st.tuples(st.just("nest"), st.sampled_from(KEYS), st.integers(1, 3))),
                       min_size=1, max_size=3)


def edit_header(doc: dict, edits) -> dict:
    """Header fields set to any JSON value, dropped, or wrapped in lists."""
    doc = dict(doc)
    for kind, key, value in edits:
        if kind == "set":
            doc[key] = value
        elif kind == "drop":
            doc.pop(key, None)
        else:
            doc[key] = json.loads("[" * value + json.dumps(doc.get(key)) + "]" * value)
    return doc


@FUZZ
@given(edits=FIELD_EDITS)
def test_mutated_header_fields_are_read_or_rejected(scratch, edits):
    raw, path = scratch
    blob, *rest = split_fvl(raw)
    doc = edit_header(json.loads(blob), edits)
    read_or_reject(path, join_fvl(json.dumps(doc).encode(), *rest))


@FUZZ
@given(times=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=6, max_size=6))
def test_frame_times_are_read_or_rejected(scratch, times):
    raw, path = scratch
    blob, png, content, records = split_fvl(raw)
    step = len(records[:-5]) // 6   # six frame records of one size, then the trailer
    edited = bytearray(records)
    for i, time_s in enumerate(times):
        edited[i * step + 1:i * step + 9] = struct.pack("<d", time_s)
    read_or_reject(path, join_fvl(blob, png, content, bytes(edited)))


def test_the_valid_file_reads(scratch):
    raw, path = scratch
    path.write_bytes(raw)
    data = read_fvl(path)
    assert_sane(data)
    assert len(data.frames) == 6 and data.header.bits_per_frame == 4 * 3 + 3 * 4


def _layout(raw: bytes) -> tuple[int, int]:
    """(offset of the first frame record, bytes per record) of _valid_file's file."""
    offset = 4
    for _ in range(3):
        offset += 4 + struct.unpack("<I", raw[offset:offset + 4])[0]
    return offset, 1 + 8 + 1 + 24 + 3   # tag, time, face, transform, 4 x 3 + 3 x 4 bits of codes


def _damage(raw: bytes, case: str) -> bytes:
    data = bytearray(raw)
    first, record = _layout(raw)
    third = first + 2 * record
    trailer = len(data) - 9
    if case == "frame count":
        data[trailer + 1:trailer + 5] = struct.pack("<I", 7)
    elif case == "record tag":
        data[third] = 0x00
    elif case == "face flag":
        data[third + 9] = 2
    elif case == "time not finite":
        data[third + 1:third + 9] = struct.pack("<d", float("nan"))
    elif case == "time goes back":
        data[third + 1:third + 9] = struct.pack("<d", -1.0)
    elif case == "transform":
        data[first + 10:first + 14] = struct.pack("<f", 1e30)
    elif case == "bytes after the trailer":
        data[trailer + 5:trailer + 5] = b"\x00\x00"
    elif case == "content size":
        at = 4 + 4 + struct.unpack("<I", raw[4:8])[0]
        at += 4 + struct.unpack("<I", raw[at:at + 4])[0]
        size = struct.unpack("<I", raw[at:at + 4])[0]
        data[at:at + 4 + size] = struct.pack("<I", size + 2) + raw[at + 4:at + 4 + size] + b"\x00\x00"
    return with_crc(bytes(data))


@pytest.mark.parametrize("case, says", [
    ("frame count", "frame count"), ("record tag", "unknown record"), ("face flag", "out of range"),
    ("time not finite", "times must be finite"), ("time goes back", "never decrease"), ("transform", "out of range"),
    ("bytes after the trailer", "length mismatch"), ("content size", "content section")],
    ids=lambda v: v.replace(" ", "_"))   # no spaces: mutmut passes test ids through a shell-like split
def test_structural_damage_with_a_valid_crc_is_rejected_by_name(scratch, case, says):
    """The checksum passes, so only the reader's structural checks can tell: each names the damage."""
    raw, path = scratch
    path.write_bytes(_damage(raw, case))
    with pytest.raises(InputError, match=says):
        read_fvl(path)
