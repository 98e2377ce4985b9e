""".fvl reader at the edges: every limit the format documents is accepted on the limit and
rejected just past it; the crop-plausibility check against OpenCV's inverse of the transform."""

from __future__ import annotations

import struct
from fractions import Fraction

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_codec import with_header
from test_fvl_fuzz import FUZZ, _layout, _valid_file, with_crc

from facevid.errors import InputError
from facevid.io.fvl import MAX_COORD, MAX_FPS, MAX_TIME, MIN_FPS, FvlFrame, FvlHeader, FvlWriter, _plausible, read_fvl


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bounds")
    return _valid_file(folder / "valid.fvl"), folder / "case.fvl"


def reads(path, raw: bytes):
    path.write_bytes(raw)
    return read_fvl(path)


def set_field(key, value):
    return lambda doc: {**doc, key: value}


@pytest.mark.parametrize("key, low, high, below, above", [
    ("crop_margin", 0, 2, -1e-9, 2 + 1e-9), ("crop_center_y", -10, 10, -10.001, 10.001),
    ("source_size", [1, 1], [16384, 16384], [0, 1], [1, 16385])])
def test_header_ranges_include_their_ends(valid, key, low, high, below, above):
    raw, path = valid
    for value in (low, high):
        read = getattr(reads(path, with_header(raw, set_field(key, value))).header, key)
        assert read == (tuple(value) if isinstance(value, list) else value)
    for value in (below, above):
        with pytest.raises(InputError, match=key):
            reads(path, with_header(raw, set_field(key, value)))


@pytest.mark.parametrize("key, above", [("codebook", (1 << 16) + 1), ("content_shape", [1, (1 << 16) + 1]),
                                        ("motion_dim", (1 << 20) + 1), ("flow_components", 4097),
                                        ("flow_bits", 17)])
def test_header_fields_past_their_limits_do_not_read(valid, key, above):
    raw, path = valid
    with pytest.raises(InputError, match=key):
        reads(path, with_header(raw, set_field(key, above)))


def test_frame_rates_at_the_limits_read(valid):
    raw, path = valid
    for fps in (MIN_FPS, Fraction(MAX_FPS)):
        assert reads(path, with_header(raw, set_field("fps", [fps.numerator, fps.denominator]))).header.fps == fps
    for fps in (MIN_FPS * Fraction(999, 1000), Fraction(MAX_FPS + 1)):
        with pytest.raises(InputError, match="fps"):
            reads(path, with_header(raw, set_field("fps", [fps.numerator, fps.denominator])))


def test_code_layout_must_agree(valid):
    """Flow bits without flow components (or the reverse) is a broken layout on its own; a header
    without the derived code_bits (older writers) reads; a wrong code_bits does not."""
    raw, path = valid
    for change in (set_field("flow_bits", 0), set_field("flow_components", 0), set_field("code_bits", 5)):
        with pytest.raises(InputError, match="code layout"):
            reads(path, with_header(raw, change))
    data = reads(path, with_header(raw, lambda doc: {k: v for k, v in doc.items() if k != "code_bits"}))
    assert len(data.frames) == 6


def _frame_file(path, codes, time_s=0.0) -> bytes:
    """One frame; codebook 6 in 3-bit fields, flow levels in 4 bits."""
    header = FvlHeader("tiny", "ab" * 32, Fraction(25), 16, 0.5, 0.4, 4, 6, (2, 3), 16, (64, 48),
                       flow_components=3, flow_bits=4)
    png = cv2.imencode(".png", np.full((16, 16, 3), 90, np.uint8))[1].tobytes()
    with FvlWriter(path, header, png, np.zeros((2, 3)), np.zeros(16)) as writer:
        writer.write(FvlFrame(time_s, True, np.eye(2, 3), np.asarray(codes)))
    return path.read_bytes()


def test_codes_just_below_their_limits_read_and_at_them_do_not(valid):
    """Codebook 6 in 3-bit fields: 5 is the largest code; a field holding 6 (its bits allow up
    to 7) is corrupt. Codes come back as int64."""
    _, path = valid
    raw = _frame_file(path, [5, 5, 5, 5, 15, 15, 15])
    data = reads(path, raw)
    assert data.frames[0].codes.tolist() == [5, 5, 5, 5, 15, 15, 15] and data.frames[0].codes.dtype == np.int64
    first, _ = _layout(raw)
    at = first + 1 + 8 + 1 + 24                  # the record's code bytes: the first group's 3 bits lead
    damaged = bytearray(raw)
    damaged[at] = (6 << 5) | (damaged[at] & 0x1F)
    with pytest.raises(InputError, match="out of range"):
        reads(path, with_crc(bytes(damaged)))


def test_a_face_flag_byte_other_than_0_or_1_is_corrupt(valid):
    raw, path = valid
    first, _ = _layout(raw)
    for flag in (2, 128, 255):                   # 255 would be -1 if the byte were read signed
        damaged = bytearray(raw)
        damaged[first + 9] = flag
        with pytest.raises(InputError, match="out of range"):
            reads(path, with_crc(bytes(damaged)))


def test_times_at_the_limits_read(valid):
    _, path = valid
    for time_s in (-MAX_TIME, MAX_TIME):
        assert reads(path, _frame_file(path, [0] * 7, time_s)).frames[0].time == time_s
    for time_s in (np.nextafter(-MAX_TIME, -np.inf), np.nextafter(MAX_TIME, np.inf)):
        raw = _frame_file(path, [0] * 7, 0.0)
        first, _ = _layout(raw)
        damaged = bytearray(raw)
        damaged[first + 1:first + 9] = struct.pack("<d", time_s)
        with pytest.raises(InputError, match="times must be finite"):
            reads(path, with_crc(bytes(damaged)))


def test_writer_abort_closes_and_may_be_called_again(tmp_path):
    header = FvlHeader("tiny", "ab" * 32, Fraction(25), 16, 0.5, 0.4, 4, 8, (2, 3), 16, (64, 48))
    writer = FvlWriter(tmp_path / "x.fvl", header, b"png", np.zeros((2, 3)), np.zeros(16))
    writer.abort()
    assert writer.file.closed and not writer.tmp.exists() and not (tmp_path / "x.fvl").exists()
    writer.abort()                               # a second abort (an error while cleaning up) is harmless
    assert list(tmp_path.iterdir()) == []


def reference_plausible(transform: np.ndarray, size: int) -> bool:
    """The check as documented, with OpenCV's inverse of the frame→crop transform."""
    a = transform.astype(np.float64)
    if not (np.abs(a) <= MAX_COORD).all():
        return False
    if a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0] == 0:
        return True
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
    inverse = cv2.invertAffineTransform(a)
    back = corners @ inverse[:, :2].T + inverse[:, 2]
    return bool((np.abs(back) <= MAX_COORD).all())


@FUZZ
@given(angle=st.floats(-np.pi, np.pi), log_scale=st.floats(-16, 4), shear=st.floats(-1, 1),
       tx=st.floats(-2 * MAX_COORD, 2 * MAX_COORD), ty=st.floats(-2 * MAX_COORD, 2 * MAX_COORD),
       size=st.sampled_from([16, 128, 1024]))
def test_the_crop_plausibility_check_matches_opencvs_inverse(angle, log_scale, shear, tx, ty, size):
    """Rotated, sheared and scaled transforms (crops from a pixel to far beyond the frame): the
    reader's decision is the reference's (a wrong sign or index in the inverse flips some)."""
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    linear = 2.0 ** log_scale * rotation @ np.array([[1, shear], [0, 1]])
    transform = np.hstack([linear, [[tx], [ty]]]).astype(np.float32)
    assert _plausible(transform, size) == reference_plausible(transform, size)


def test_the_crop_plausibility_check_on_its_limits():
    at_limit = np.array([[1, 0, MAX_COORD], [0, 1, MAX_COORD]], np.float32)   # crop corner (0, 0) at -MAX_COORD
    assert _plausible(at_limit, 16)
    assert not _plausible(np.array([[1, 0, -MAX_COORD], [0, 1, 0]], np.float32), 16)   # (16, y) past +MAX_COORD
    tiny = np.array([[1e-6, 0, 0], [0, 1e-6, 0]], np.float32)                          # a crop the size of 1e7 frames
    assert not _plausible(tiny, 16) and _plausible(np.array([[1e-6, 0, 0], [0, 1e-6, 0]], np.float32), 9)
    assert _plausible(np.zeros((2, 3), np.float32), 16)                              # OpenCV's all-zero inverse


def test_truncation_names_the_file(valid):
    raw, path = valid
    first, record = _layout(raw)
    for cut in (first + 8, first + record):       # the CRC's 4 bytes end: inside a record, before a tag
        with pytest.raises(InputError, match=f"{path.name} is truncated"):
            reads(path, with_crc(raw[:cut]))

