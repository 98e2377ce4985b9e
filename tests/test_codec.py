"""`facevid encode` / `decode` and the .fvl parser (round trip, fuzzing, errors)."""

from __future__ import annotations

import json
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
        assert np.array_equal(unpack_codes(pack_codes(codes, bits), 24, bits), codes)
    assert len(pack_codes(np.zeros(24, int), 5)) == 15   # 120 bits


def _small_file(path):
    header = FvlHeader("m", "0" * 64, Fraction(30000, 1001), 32, 0.5, 0.4, 4, 8, (2, 3), 16, (64, 48))
    with FvlWriter(path, header, b"png", np.ones((2, 3)), np.zeros(16)) as w:
        for t in range(5):
            w.write(FvlFrame(t / 30, t != 2, np.eye(2, 3), np.array([t, 1, 7, 0])))
    return path


def test_file_round_trip_and_fuzzing(tmp_path):
    path = _small_file(tmp_path / "x.fvl")
    data = read_fvl(path)
    assert data.header.fps == Fraction(30000, 1001) and data.header.bits_per_frame == 12
    assert [f.codes[0] for f in data.frames] == [0, 1, 2, 3, 4] and not data.frames[2].has_face
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
    assert summary["frames"] == 40 and summary["bits_per_frame"] == 4 * 3
    assert summary["motion_kbps"] == pytest.approx(12 * 25 / 1000)
    assert len(read_fvl(fvl).frames) == 40
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
