"""`facevid encode` / `decode` and the .fvl parser (round trip, fuzzing, errors)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_cli_track import assert_one_line_error, run_cli

from facevid.errors import ConfigError, InputError
from facevid.io.fvl import MAGIC, FvlFrame, FvlHeader, FvlWriter, pack_codes, read_fvl, unpack_codes
from facevid.io.video import probe
from facevid.tasks import codec
from facevid.weights import WeightsEntry, sha256_of

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
        with pytest.raises(ValueError, match="4 values below 8 and 2 below 4"):
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



def split_fvl(raw: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """An .fvl file's header JSON, reference PNG, content section and records (frames + trailer, no CRC)."""
    offset, parts = 4, []
    for _ in range(3):
        size = struct.unpack("<I", raw[offset:offset + 4])[0]
        parts.append(raw[offset + 4:offset + 4 + size])
        offset += 4 + size
    return (*parts, raw[offset:-4])


def join_fvl(blob: bytes, png: bytes, content: bytes, records: bytes) -> bytes:
    """The inverse of split_fvl, with a valid CRC."""
    body = MAGIC + b"".join(struct.pack("<I", len(part)) + part for part in (blob, png, content)) + records
    return body + struct.pack("<I", zlib.crc32(body))


def with_header(raw: bytes, change) -> bytes:
    """`raw` with its header JSON doc passed through change(doc) (a dict, or JSON text / bytes to use as is)."""
    blob, *rest = split_fvl(raw)
    doc = change(json.loads(blob))
    blob = doc if isinstance(doc, bytes) else doc.encode() if isinstance(doc, str) else json.dumps(doc).encode()
    return join_fvl(blob, *rest)


def _set(**fields):
    return lambda doc: {**doc, **fields}


def _png(shape) -> bytes:
    return cv2.imencode(".png", np.full(shape, 90, np.uint8))[1].tobytes()


def _rebuilt(src: Path, dst: Path, png: bytes | None = None, times=None, transform=None, **changes) -> Path:
    """A consistent, valid-CRC copy of `src` with other header fields, reference PNG, frame times or transforms."""
    data = read_fvl(src)
    header = dataclasses.replace(data.header, **changes)
    content = np.resize(data.content, header.content_shape)
    with FvlWriter(dst, header, data.reference_png if png is None else png, content,
                   np.resize(data.ref_motion, header.motion_dim)) as writer:
        for i, frame in enumerate(data.frames):
            codes = np.resize(frame.codes, header.limits.shape) % header.limits
            time_s = frame.time if times is None else times(i)
            matrix = frame.transform if transform is None else transform(i, frame.transform)
            writer.write(FvlFrame(time_s, frame.has_face, matrix, codes))
    return dst


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, tiny_weights, moving_clip):
    """The moving clip encoded with the tiny weights (read only)."""
    path = tmp_path_factory.mktemp("encoded") / "clip.fvl"
    codec.encode(moving_clip[0], path, model=str(tiny_weights), progress=False)
    return path


def _decode_error(capsys, fvl, out, *extra) -> str:
    code, _, err = run_cli(capsys, "decode", fvl, "-o", out, "--steps", 0, "-q", *extra)
    assert_one_line_error(code, err)
    assert not out.exists()
    return err


def test_encode_names_the_weights_never_by_path(encoded, tmp_path, tiny_weights, moving_clip, monkeypatch):
    header = read_fvl(encoded).header
    assert header.model == "tiny" and header.model_sha256 == sha256_of(tiny_weights)
    entry = WeightsEntry("tiny-reg", Path(tiny_weights), sha256_of(tiny_weights), Path(tiny_weights).stat().st_size, {})
    monkeypatch.setattr("facevid.weights.registry", lambda: {"tiny-reg": entry})
    codec.encode(moving_clip[0], tmp_path / "r.fvl", model="tiny-reg", progress=False)
    assert read_fvl(tmp_path / "r.fvl").header.model == "tiny-reg"


def test_decode_never_opens_the_model_field(capsys, tmp_path, encoded, tiny_weights):
    # the weights file itself (with its true sha256), then a file that never ends
    for i, (model, sha) in enumerate([(str(tiny_weights), sha256_of(tiny_weights)), ("/dev/zero", "a" * 64)]):
        crafted = tmp_path / f"c{i}.fvl"
        crafted.write_bytes(with_header(encoded.read_bytes(), _set(model=model, model_sha256=sha)))
        err = _decode_error(capsys, crafted, tmp_path / "o.mp4")
        assert "not installed" in err and f"{model} (sha256 {sha[:12]})" in err and "--weights" in err
    crafted = tmp_path / "other.fvl"
    crafted.write_bytes(with_header(encoded.read_bytes(), _set(model_sha256="ab" * 32)))
    assert "other weights" in _decode_error(capsys, crafted, tmp_path / "o.mp4", "--weights", tiny_weights)


def test_decode_finds_weights_by_sha256_in_the_registry(capsys, tmp_path, encoded, tiny_weights, monkeypatch):
    size = Path(tiny_weights).stat().st_size
    entry = WeightsEntry("tiny-reg", Path(tiny_weights), sha256_of(tiny_weights), size, {})
    other = dataclasses.replace(entry, name="other", path=tmp_path / "other.safetensors", sha256="0" * 64)
    monkeypatch.setattr("facevid.weights.registry", lambda: {"other": other, "tiny-reg": entry})
    fvl = tmp_path / "c.fvl"
    fvl.write_bytes(with_header(encoded.read_bytes(), _set(model="shown only")))   # found by sha256, not by name
    code, _, err = run_cli(capsys, "decode", fvl, "-o", tmp_path / "r.mp4", "--steps", 0, "-q")
    assert code == 0, err
    assert probe(tmp_path / "r.mp4").frame_count == 40
    monkeypatch.setattr("facevid.weights.registry", lambda: {"tiny-reg": dataclasses.replace(entry, size=size + 1)})
    assert "wrong size" in _decode_error(capsys, fvl, tmp_path / "o.mp4")   # verified before use


BAD_FIELDS = [("model", "a\nb"), ("model", "x" * 201), ("model", ""), ("model", 5),
              ("model_sha256", "AB" * 32), ("model_sha256", "0" * 63), ("model_sha256", None),
              ("fps", [0, 1]), ("fps", [-25, 1]), ("fps", [10 ** 6, 1]), ("fps", [1, 10 ** 6]), ("fps", "25"),
              ("fps", [[25], [1]]), ("fps", [25.0, 1]), ("source_size", [0, 10]), ("source_size", [20000, 10]),
              ("source_size", [64]), ("content_shape", [0, 3]), ("content_shape", [10 ** 9, 1]),
              ("content_shape", []), ("content_shape", [2]), ("content_shape", [2, 3, 1]), ("content_shape", ["2", 3]),
              ("content_shape", [None, None]), ("content_shape", [2.0, 3]), ("codebook", 10 ** 300),
              ("crop_size", 1e18), ("crop_size", True), ("crop_margin", float("nan")), ("crop_margin", float("inf")),
              ("groups", -4), ("groups", 10 ** 30), ("codebook", 1), ("motion_dim", 0), ("motion_dim", 15),
              ("flow_bits", 0), ("flow_components", -1), ("code_bits", 9), ("version", True), ("format", None)]


# plain ids: mutmut cannot pass ids with nested brackets or escapes on to pytest
@pytest.mark.parametrize("key, value", BAD_FIELDS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BAD_FIELDS)])
def test_reader_checks_every_header_field(tmp_path, key, value):
    path = _small_file(tmp_path / "x.fvl")
    path.write_bytes(with_header(path.read_bytes(), _set(**{key: value})))
    with pytest.raises(InputError, match="x.fvl") as error:
        read_fvl(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("change", [
    lambda doc: [doc], lambda doc: "[" * 100_000 + "]" * 100_000, lambda doc: '{"groups": ' + "9" * 5000 + "}",
    lambda doc: json.dumps(doc).replace('"crop_margin": 0.5', '"crop_margin": NaN'),
    lambda doc: {k: v for k, v in doc.items() if k != "groups"}, lambda doc: b"\xff\xfe{}",
    lambda doc: json.dumps({**doc, "model": "m" * 70_000})],
    ids=["list", "deep", "huge_int", "nan", "missing", "not_utf8", "too_long"])
def test_reader_rejects_broken_header_documents(tmp_path, change):
    path = _small_file(tmp_path / "x.fvl")
    path.write_bytes(with_header(path.read_bytes(), change))
    with pytest.raises(InputError, match="x.fvl"):
        read_fvl(path)


@pytest.mark.parametrize("times", [lambda i: 1e18 * (i == 3), lambda i: -1e18, lambda i: 4.0 - i,
                                   lambda i: 1e7 + i], ids=["huge", "huge_negative", "decreasing", "past_limit"])
def test_reader_rejects_bad_frame_times(tmp_path, times):
    path = _small_file(tmp_path / "x.fvl")
    _rebuilt(path, tmp_path / "y.fvl", times=times)
    with pytest.raises(InputError, match="y.fvl.*times must be finite"):
        read_fvl(tmp_path / "y.fvl")


def test_reader_keeps_equal_times_and_rejects_bad_content(tmp_path):
    path = _small_file(tmp_path / "x.fvl")
    assert [f.time for f in read_fvl(_rebuilt(path, tmp_path / "y.fvl", times=lambda i: 1.0)).frames] == [1.0] * 5
    blob, png, content, records = split_fvl(path.read_bytes())
    path.write_bytes(join_fvl(blob, png, np.float16(np.inf).tobytes() + content[2:], records))
    with pytest.raises(InputError, match="not finite"):
        read_fvl(path)


def test_reader_rejects_transforms_that_map_the_crop_absurdly_far(tmp_path):
    path = _small_file(tmp_path / "x.fvl")
    far = [np.array([[3e38, 0, -3e38], [0, 3e38, -3e38]]), np.eye(2, 3) * 1e-9, np.eye(2, 3) + [[0, 0, 2e7], [0, 0, 0]]]
    for i, matrix in enumerate(far):
        _rebuilt(path, tmp_path / f"{i}.fvl", transform=lambda k, m: matrix if k == 1 else m)
        with pytest.raises(InputError, match="out of range in frame 1"):
            read_fvl(tmp_path / f"{i}.fvl")
    no_face = _rebuilt(path, tmp_path / "y.fvl", transform=lambda k, m: np.full((2, 3), 3e38) if k == 2 else m)
    assert read_fvl(no_face).frames[2].transform.max() > 1e38   # frame 2 has no face: its transform is unused
    singular = _rebuilt(path, tmp_path / "z.fvl", transform=lambda k, m: np.zeros((2, 3)))
    assert len(read_fvl(singular).frames) == 5


def _bad_files(src: Path, folder: Path) -> dict[str, Path]:
    """Valid-CRC files that the reader accepts but the tiny model cannot decode."""
    made = {f"png_{name}": _rebuilt(src, folder / f"png_{name}.fvl", png=png) for name, png in [
        ("garbage", b"garbage"), ("empty", b""), ("small", _png((16, 16, 3))), ("gray", _png((32, 32))),
        ("rgba", _png((32, 32, 4))), ("cut", _png((32, 32, 3))[:60]), ("wide", _png((32, 48, 3)))]}
    for key, value in [("content_shape", (3, 32)), ("content_shape", (2, 16)), ("groups", 8), ("codebook", 16),
                       ("motion_dim", 32), ("crop_size", 64), ("flow_components", 8), ("flow_bits", 5)]:
        made[f"{key}_{value}"] = _rebuilt(src, folder / f"{key}.fvl", **{key: value})
    return made


def test_decode_checks_the_file_against_the_model(capsys, tmp_path, encoded, tiny_weights):
    for name, path in _bad_files(encoded, tmp_path).items():
        read_fvl(path)   # structurally fine
        err = _decode_error(capsys, path, tmp_path / "o.mp4", "--weights", tiny_weights)
        assert path.name in err, name


def test_decode_of_bad_header_values_is_one_line(capsys, tmp_path, encoded, tiny_weights, moving_clip):
    raw = encoded.read_bytes()
    for i, change in enumerate([_set(fps=[10 ** 6, 1]), _set(fps=[1, 10 ** 9]), _set(source_size=[0, 0])]):
        (tmp_path / f"{i}.fvl").write_bytes(with_header(raw, change))
    _rebuilt(encoded, tmp_path / "3.fvl", times=lambda i: 1e18 if i == 20 else i / 25)
    huge = np.array([[3e38, 0, -3e38], [0, 3e38, -3e38]])   # its crop maps back onto less than a pixel
    _rebuilt(encoded, tmp_path / "4.fvl", transform=lambda i, m: huge if i == 5 else m)
    for i in range(5):
        assert f"{i}.fvl" in _decode_error(capsys, tmp_path / f"{i}.fvl", tmp_path / "o.mp4", "--weights", tiny_weights,
                                           "--background", moving_clip[0])


def test_writer_never_follows_planted_links(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / ".x.fvl.tmp").symlink_to(victim)   # the temp name older writers used
    path = _small_file(tmp_path / "x.fvl")
    assert victim.read_bytes() == b"keep" and path.is_file() and not path.is_symlink()
    assert len(read_fvl(path).frames) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.fvl.tmp", "victim", "x.fvl"]
    with pytest.raises(RuntimeError):
        with FvlWriter(tmp_path / "y.fvl", read_fvl(path).header, b"png", np.ones((2, 3)), np.zeros(16)):
            raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.fvl.tmp", "victim", "x.fvl"]


def test_encode_never_writes_through_links(capsys, tmp_path, tiny_weights, moving_clip):
    victim, other = tmp_path / "victim", tmp_path / "other"
    victim.write_bytes(b"keep")
    other.write_bytes(b"keep too")
    out = tmp_path / "out.fvl"
    (tmp_path / ".out.fvl.tmp").symlink_to(victim)
    out.symlink_to(other)
    code, _, err = run_cli(capsys, "encode", moving_clip[0], "-o", out, "--weights", tiny_weights, "--force", "-q")
    assert code == 0, err
    assert victim.read_bytes() == b"keep" and other.read_bytes() == b"keep too"
    assert out.is_file() and not out.is_symlink() and len(read_fvl(out).frames) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.fvl.tmp", "other", "out.fvl", "victim"]


def test_decode_refuses_to_overwrite_its_inputs(capsys, tmp_path, encoded, tiny_weights, moving_clip):
    video, fvl = tmp_path / "bg.mp4", tmp_path / "c.fvl"
    shutil.copy(moving_clip[0], video)
    shutil.copy(encoded, fvl)
    before = video.read_bytes(), fvl.read_bytes()
    with pytest.raises(ConfigError, match="must not be one of the inputs"):
        codec.decode(fvl, video, model=str(tiny_weights), background=video, force=True, progress=False)
    (tmp_path / "link.mp4").symlink_to(video)
    for out, extra in [(video, ["--background", video]), (tmp_path / "link.mp4", ["--background", video]),
                       (fvl, []), (tmp_path / "." / "c.fvl", ["--background", video])]:
        code, _, err = run_cli(capsys, "decode", fvl, "-o", out, "--weights", tiny_weights, "--force", "-q",
                               "--steps", 0, *extra)
        assert_one_line_error(code, err)
        assert "must not be one of the inputs" in err
    assert (video.read_bytes(), fvl.read_bytes()) == before
