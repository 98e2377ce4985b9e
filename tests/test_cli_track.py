"""`facevid track` end to end through the command line, with its error paths."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from facevid.cli import main
from facevid.io.video import probe
from facevid.io.writer import VideoWriter


def run_cli(capsys, *args):
    """Run `facevid ARGS` in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def assert_one_line_error(code, err):
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("facevid: error:")
    assert "Traceback" not in err


def test_version_and_help(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.startswith("facevid ")
    code, out, _ = run_cli(capsys, "track", "--help")
    assert code == 0 and "--crops" in out and "Example" in out


def test_track_writes_video_crops_and_json(capsys, tmp_path, moving_clip):
    path, truth = moving_clip
    out, crops = tmp_path / "tracked.mp4", tmp_path / "crops.mp4"
    code, stdout, err = run_cli(capsys, "track", path, "-o", out, "--crops", crops, "--size", 96, "--json", "-q")
    assert code == 0, err
    source, drawn, cropped = probe(path), probe(out), probe(crops)
    assert drawn.frame_count == source.frame_count == len(truth)
    assert drawn.fps == source.fps and drawn.has_audio
    assert (drawn.width, drawn.height) == (source.width, source.height)
    assert (cropped.width, cropped.height) == (96, 96) and cropped.frame_count == len(truth)
    doc = json.loads(stdout)
    assert doc["summary"]["frames"] == len(truth) and doc["summary"]["frames_without_face"] == 0
    assert len(doc["frames"]) == len(truth)
    first = doc["frames"][0]
    assert first["found"] and len(first["landmarks"]) == 5 and np.array(first["transform"]).shape == (2, 3)
    assert np.abs(np.array(first["landmarks"]) - truth[0]).max() < 6
    # every record has the documented fields; the box holds the true landmarks, the score is the detector's
    assert set(first) == {"index", "time", "found", "detected", "faces_seen", "box", "score", "landmarks",
                          "landmarks68", "transform"}
    (x0, y0, x1, y1), marks = first["box"], np.array(first["landmarks"])
    assert x0 < marks[:, 0].min() and marks[:, 0].max() < x1 and y0 < marks[:, 1].min() and marks[:, 1].max() < y1
    assert first["detected"] and first["faces_seen"] == 1 and first["score"] is not None


def test_track_counts_frames_without_face(capsys, tmp_path, moving_clip):
    path, _ = moving_clip
    from facevid.io.video import iter_frames

    gappy = tmp_path / "gappy.mp4"
    with VideoWriter(gappy, Fraction(25)) as writer:
        for frame in iter_frames(path):
            writer.write(frame.image if not 10 <= frame.index < 15 else np.zeros_like(frame.image), frame.time)
    code, stdout, _ = run_cli(capsys, "track", gappy, "-o", tmp_path / "out.mp4", "--json", "-q")
    assert code == 0
    doc = json.loads(stdout)
    assert doc["summary"]["frames_without_face"] == 5
    assert [f["index"] for f in doc["frames"] if not f["found"]] == list(range(10, 15))
    assert probe(tmp_path / "out.mp4").frame_count == probe(path).frame_count


def _no_face_clip(path):
    rng = np.random.default_rng(0)
    with VideoWriter(path, Fraction(25)) as writer:
        for _ in range(6):
            writer.write(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    return path


@pytest.mark.parametrize("case", ["missing", "not_video", "truncated", "no_face", "exists", "aligner",
                                  "flag", "bad_face", "same_file"])
def test_track_errors_one_line_no_output(capsys, tmp_path, moving_clip, case):
    good, _ = moving_clip
    src, out = good, tmp_path / "out.mp4"
    extra = []
    if case == "missing":
        src = tmp_path / "nope.mp4"
    elif case == "not_video":
        src = tmp_path / "notes.mp4"
        src.write_text("this is not a video\n")
    elif case == "truncated":
        src = tmp_path / "cut.mp4"
        data = good.read_bytes()
        src.write_bytes(data[: len(data) // 3])
    elif case == "no_face":
        src = _no_face_clip(tmp_path / "noise.mp4")
    elif case == "exists":
        out.write_bytes(b"keep me")
    elif case == "aligner":
        extra = ["--aligner", "magic"]
    elif case == "flag":
        extra = ["--frobnicate"]
    elif case == "bad_face":
        extra = ["--face", "0"]
    elif case == "same_file":
        out = good
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run_cli(capsys, "track", src, "-o", out, "-q", *extra)
    assert_one_line_error(code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing new, nothing left behind
    if case == "exists":
        assert out.read_bytes() == b"keep me"
    if case == "same_file":
        assert probe(good).frame_count == 40


def test_console_script_runs_as_module(tmp_path):
    result = subprocess.run([sys.executable, "-m", "facevid", "track", str(tmp_path / "missing.mp4"), "-o",
                             str(tmp_path / "o.mp4")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "missing.mp4" in result.stderr
