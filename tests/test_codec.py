"""`facevid encode` / `decode` and the .fvl parser (round trip, fuzzing, errors)."""

from __future__ import annotations

import json
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from facevid.errors import InputError
from facevid.fvl import FvlFrame, FvlHeader, FvlWriter, pack_codes, read_fvl, unpack_codes
from facevid.video import probe

from test_cli_track import assert_one_line_error, run_cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_code_packing_round_trip():
    rng = np.random.default_rng(0)
    for bits in (1, 3, 5, 8):
        codes = rng.integers(0, 2 ** bits, 24)
        widths = np.full(24, bits)
        assert np.array_equal(unpack_codes(pack_codes(codes, widths), widths), codes)
    widths = np.array([5] * 24 + [3] * 32)   # motion codes, then flow levels of another width
    codes = rng.integers(0, 2 ** widths)
    assert np.array_equal(unpack_codes(pack_codes(codes, widths), widths), codes)
    assert len(pack_codes(np.zeros(24, int), np.full(24, 5))) == 15   # 120 bits
    assert len(pack_codes(codes, widths)) == 27                       # 216 bits


def _small_file(path, flow=3):
    header = FvlHeader("m", "0" * 64, Fraction(30000, 1001), 32, 0.5, 0.4, 4, 8, (2, 3), 16, (64, 48),
                       flow_components=flow, flow_bits=5 if flow else 0)
    with FvlWriter(path, header, b"png", np.ones((2, 3)), np.zeros(16)) as w:
        for t in range(5):
            w.write(FvlFrame(t / 30, t != 2, np.eye(2, 3), np.array([t, 1, 7, 0] + [31, t, 0][:flow])))
    return path


def _as_version_1(path):
    """Rewrite a file without flow levels as format version 1 wrote it (no flow keys)."""
    raw = path.read_bytes()
    length = struct.unpack("<I", raw[4:8])[0]
    doc = json.loads(raw[8:8 + length])
    doc["version"] = 1
    del doc["flow_components"], doc["flow_bits"]
    blob = json.dumps(doc).encode()
    body = raw[:4] + struct.pack("<I", len(blob)) + blob + raw[8 + length:-4]
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)))


def test_version_1_files_still_read(tmp_path):
    path = _small_file(tmp_path / "v1.fvl", flow=0)
    _as_version_1(path)
    data = read_fvl(path)
    assert data.header.flow_components == 0 and data.header.bits_per_frame == 12
    assert [f.codes.tolist() for f in data.frames][3] == [3, 1, 7, 0]


def test_writer_rejects_levels_out_of_range(tmp_path):
    header = FvlHeader("m", "0" * 64, Fraction(25), 32, 0.5, 0.4, 4, 8, (2, 3), 16, (64, 48),
                       flow_components=2, flow_bits=2)
    with FvlWriter(tmp_path / "x.fvl", header, b"png", np.ones((2, 3)), np.zeros(16)) as w:
        with pytest.raises(ValueError):
            w.write(FvlFrame(0.0, True, np.eye(2, 3), np.array([0, 1, 7, 0, 3, 4])))   # 4 needs 3 bits
        with pytest.raises(ValueError):
            w.write(FvlFrame(0.0, True, np.eye(2, 3), np.array([0, 1, 7, 0, 3])))      # a level missing


def test_file_round_trip_and_fuzzing(tmp_path):
    path = _small_file(tmp_path / "x.fvl")
    data = read_fvl(path)
    assert data.header.fps == Fraction(30000, 1001) and data.header.bits_per_frame == 12 + 15
    assert [f.codes[0] for f in data.frames] == [0, 1, 2, 3, 4] and not data.frames[2].has_face
    assert data.frames[4].codes.tolist() == [4, 1, 7, 0, 31, 4, 0]
    raw = path.read_bytes()
    rng = np.random.default_rng(1)
    bad = tmp_path / "bad.fvl"
    for i in range(200):   # truncations and byte flips are all rejected cleanly
        mutated = bytearray(raw)
        if i % 2:
            mutated = mutated[: rng.integers(0, len(raw))]
        else:
            pos = rng.integers(0, len(raw))
            mutated[pos] ^= 1 << int(rng.integers(0, 8))
        bad.write_bytes(bytes(mutated))
        with pytest.raises(InputError):
            read_fvl(bad)
    bad.write_bytes(b"RIFF" + raw[4:])
    with pytest.raises(InputError, match="not an .fvl"):
        read_fvl(bad)


def test_encode_decode_cli(capsys, tmp_path, tiny_weights, moving_clip):
    video, _ = moving_clip
    fvl, recon, pasted = tmp_path / "c.fvl", tmp_path / "r.mp4", tmp_path / "p.mp4"
    code, out, err = run_cli(capsys, "encode", video, "-o", fvl, "--weights", tiny_weights, "--json", "-q")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["frames"] == 40 and summary["bits_per_frame"] == 4 * 3 + 16 * 4   # codes + flow levels
    assert summary["motion_kbps"] == pytest.approx(76 * 25 / 1000)
    frames = read_fvl(fvl).frames
    assert len(frames) == 40
    levels = np.stack([f.codes[4:] for f in frames])
    assert len(np.unique(levels, axis=0)) > 1   # the head moves: its flow levels change
    code, _, err = run_cli(capsys, "decode", fvl, "-o", recon, "--weights", tiny_weights, "--steps", 1, "-q")
    assert code == 0, err
    info = probe(recon)
    assert info.frame_count == 40 and (info.width, info.height) == (32, 32) and info.fps == 25
    code, _, err = run_cli(capsys, "decode", fvl, "-o", pasted, "--weights", tiny_weights, "--background", video,
                           "--steps", 0, "-q")
    assert code == 0, err
    info = probe(pasted)
    assert (info.width, info.height) == (320, 288) and info.has_audio and info.frame_count == 40


def test_codec_errors(capsys, tmp_path, tiny_weights, moving_clip):
    video, _ = moving_clip
    junk = tmp_path / "junk.fvl"
    junk.write_bytes(b"hello")
    code, _, err = run_cli(capsys, "decode", junk, "-o", tmp_path / "o.mp4", "--weights", tiny_weights, "-q")
    assert_one_line_error(code, err)
    code, _, err = run_cli(capsys, "encode", video, "-o", tmp_path / "o.mp4", "--weights", tiny_weights, "-q")
    assert_one_line_error(code, err)   # encode writes .fvl only
    fvl = tmp_path / "ok.fvl"
    assert run_cli(capsys, "encode", video, "-o", fvl, "--weights", tiny_weights, "-q")[0] == 0
    code, _, err = run_cli(capsys, "decode", fvl, "-o", tmp_path / "o.mp4", "--weights", tiny_weights,
                           "--background", EXAMPLES / "astronaut.mp4", "-q")
    assert_one_line_error(code, err)   # a background of another size
    code, _, err = run_cli(capsys, "encode", tmp_path / "none.mp4", "-o", tmp_path / "o.fvl", "-q")
    assert_one_line_error(code, err)
    assert not (tmp_path / "o.fvl").exists() and not (tmp_path / "o.mp4").exists()
