"""`facevid edit`: the named attribute moves, nothing else does, only in its span; errors in one line."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_cli_track import assert_one_line_error, run_cli

from facevid.eval.transfer_bench import FrameMeter
from facevid.face.attributes import ATTRIBUTES, measure
from facevid.io.video import iter_frames, probe
from facevid.tasks.edit import Span


def read(path) -> np.ndarray:
    return next(iter_frames(path)).image


@pytest.fixture(scope="module")
def meter():
    return FrameMeter()


@pytest.mark.weights
def test_an_edit_of_strength_zero_gives_back_the_photo_bit_for_bit(capsys, tmp_path, photo):
    out = tmp_path / "same.png"
    code, _, err = run_cli(capsys, "edit", photo, "--attr", "smile=0", "--attr", "roll=0", "-o", out, "-q")
    assert code == 0, err
    assert np.array_equal(read(out), read(photo))


@pytest.mark.weights
@pytest.mark.parametrize("edit, name, low, high", [
    (("--attr", "smile=+0.25"), "smile", 0.12, 0.4),
    (("--attr", "mouth=+0.3"), "mouth", 0.12, 0.45),
    (("--set", "eyes=0.15"), "eyes", -0.25, -0.06),
    (("--attr", "brows=+0.08"), "brows", 0.03, 0.14),
    (("--attr", "roll=+10"), "roll", 8.0, 12.0),
])
def test_edit_moves_the_attribute_it_names_and_keeps_the_person(capsys, tmp_path, photo, meter, edit, name, low,
                                                                 high):
    """Measured by dlib on the output (not the landmarks the edit aimed at): the named attribute
    moves by about what was asked (a change of its measure; --set eyes=0.15 from the photo's
    0.3), the other expression attributes by less than 15% of their own range (the edit
    benchmark's bar), and the person stays the same."""
    out = tmp_path / "edited.png"
    code, _, err = run_cli(capsys, "edit", photo, *edit, "-o", out, "-q")
    assert code == 0, err
    (before, person), (after, same) = meter(read(photo)), meter(read(out))
    assert after is not None
    change = {k: measure(after)[k] - v for k, v in measure(before).items()}
    assert low < change[name] < high, change
    for other in {"smile", "mouth", "eyes", "brows"} - {name}:
        assert abs(change[other]) < 0.15 * (ATTRIBUTES[other].high - ATTRIBUTES[other].low), (other, change)
    assert np.linalg.norm(same - person) < 0.3, np.linalg.norm(same - person)


@pytest.mark.weights
def test_edit_changes_only_its_time_span_and_keeps_sound_and_timing(capsys, tmp_path, moving_clip, meter):
    """40 frames at 25 fps: mouth +0.3 from 0.4 s to 1.0 s, eased over 0.2 s. Written losslessly,
    the frames outside the span are those of an edit of strength zero; inside its full part the
    mouth is open; frame count, rate, timestamps and sound are the input's."""
    video, _ = moving_clip
    edited, plain = tmp_path / "edited.mp4", tmp_path / "plain.mp4"
    for out, strength in ((edited, "0.3"), (plain, "0")):
        code, _, err = run_cli(capsys, "edit", video, "--attr", f"mouth={strength}", "--from", "0.4", "--to", "1.0",
                               "--ramp", "0.2", "--crf", 0, "-o", out, "-q")
        assert code == 0, err
    a, b, source = list(iter_frames(edited)), list(iter_frames(plain)), list(iter_frames(video))
    assert len(a) == len(b) == len(source) == 40
    assert [f.time for f in a] == pytest.approx([f.time for f in source], abs=1e-3)
    info = probe(edited)
    assert info.has_audio and info.fps == probe(video).fps
    span = Span(0.4, 1.0, 0.2)
    for fa, fb in zip(a, b):
        if span.weight(fa.time) == 0:
            assert np.array_equal(fa.image, fb.image), fa.index
        elif span.weight(fa.time) == 1:
            opened = measure(meter(fa.image)[0])["mouth"] - measure(meter(fb.image)[0])["mouth"]
            assert opened > 0.12, (fa.index, opened)


@pytest.mark.weights
def test_the_preview_strip_shows_each_edit_growing_with_its_strength(capsys, tmp_path, photo, meter):
    """`--preview`: a row per asked edit, the photo's face at strengths -1, -0.5, 0, 0.5, 1; dlib
    on each tile measures the attribute rising along the row, and the middle tile is the input."""
    strip = tmp_path / "strip.png"
    code, _, err = run_cli(capsys, "edit", photo, "--attr", "smile=+0.25", "--set", "mouth=0.4", "--preview", strip)
    assert code == 0, err
    assert "strengths -1 to +1 of smile, mouth" in err
    sheet, cell = read(strip), 256
    assert (sheet.shape[0] - 22) == 2 * cell and (sheet.shape[1] - 5 * cell) < cell
    left = sheet.shape[1] - 5 * cell
    rows = [[sheet[22 + r * cell: 22 + (r + 1) * cell, left + c * cell: left + (c + 1) * cell] for c in range(5)]
            for r in range(2)]
    assert np.array_equal(rows[0][2], rows[1][2])
    for name, row in zip(("smile", "mouth"), rows):
        values = [measure(meter(tile)[0])[name] for tile in row]
        assert all(b > a for a, b in zip(values, values[1:])), (name, values)


def test_span_weights_ease_in_and_out():
    span = Span(1.0, 3.0, 0.5)
    assert [span.weight(t) for t in (0.9, 1.0, 1.25, 1.5, 2.0, 2.5, 2.75, 3.0, 3.1)] == \
        pytest.approx([0, 0, 0.5, 1, 1, 1, 0.5, 0, 0])
    assert Span().weight(1e6) == 1.0


def test_list_attrs_names_every_attribute_with_unit_and_range(capsys):
    code, out, _ = run_cli(capsys, "edit", "--list-attrs")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert names == ["smile", "mouth", "eyes", "left-eye", "right-eye", "brows", "yaw", "pitch", "roll"]
    assert "degrees" in out and "eye distances" in out


@pytest.mark.parametrize("args, message", [
    (("--attr", "grin=1"), "unknown attribute 'grin' in --attr (known: smile, mouth, eyes"),
    (("--attr", "smile=5"), "--attr smile=5 is out of range"),
    (("--set", "mouth=-1"), "--set mouth=-1 is out of range"),
    (("--attr", "smile"), "--attr takes NAME=VALUE"),
    (("--attr", "smile=abc"), "needs a number"),
    (("--attr", "smile=0.1", "--set", "smile=1"), "not both"),
    (("--attr", "smile=0.1", "--from", "3", "--to", "2"), "must come after --from"),
    (("--attr", "smile=0.1", "--from", "0", "--to", "1", "--ramp", "0.6"), "more than half the span"),
    (("--attr", "smile=0.1", "--ramp", "-1"), "must be 0 or more"),
    ((), "nothing to edit"),
])
def test_edit_errors_are_one_line_and_leave_no_output(capsys, tmp_path, photo, tiny_weights, args, message):
    out = tmp_path / "out.png"
    code, _, err = run_cli(capsys, "edit", photo, *args, "-o", out, "--weights", tiny_weights)
    assert_one_line_error(code, err)
    assert message in err and not out.exists()


def test_edit_refuses_bad_inputs_in_one_line(capsys, tmp_path, photo, tiny_weights):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((256, 256, 3), 128, np.uint8))
    crafted = tmp_path / "directions.safetensors"
    crafted.write_bytes(b"\x80\x04\x95 not a safetensors file")
    cases = [((blank, "-o", tmp_path / "a.png"), "no face"),
             ((tmp_path / "missing.mp4", "-o", tmp_path / "b.mp4"), "does not exist"),
             ((photo, "-o", tmp_path / "c.mp4"), "an image in, so an image out"),
             ((photo, "-o", tmp_path / "d.png", "--directions", crafted), "directions"),
             ((photo, "-o", tmp_path / "e.png", "--wobble"), "No such option"),
             ((photo, "--preview", tmp_path / "f.mp4"), "--preview writes an image"),
             ((photo, "-o", tmp_path / "g.png", "--preview", tmp_path / "h.png"), "not both")]
    for args, message in cases:
        code, _, err = run_cli(capsys, "edit", *args, "--attr", "smile=0.1", "--weights", tiny_weights)
        assert_one_line_error(code, err)
        assert message.lower() in err.lower(), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.png", "directions.safetensors"]


@pytest.mark.weights
def test_the_edit_benchmark_measures_what_each_slider_does(tmp_path, photo):
    """`facevid eval --edits` on the astronaut photo: each measured change follows its slider
    (roll exactly, the expressions most of the way), a smile or a mouth changes nothing beyond the
    face, and the table has one row per attribute."""
    from facevid.eval.edit_bench import SHIFTED, edit_benchmark, read_clips, table
    from facevid.weights import load_model

    (tmp_path / "clips.tsv").write_text(f"# one photo\npath\tkind\n{photo.name}\tphoto\n")
    clips = read_clips(tmp_path / "clips.tsv", photo.parent)
    result = edit_benchmark(load_model("small"), clips)
    rows = result["attributes"]
    assert list(rows) == list(SHIFTED)
    assert rows["roll"]["gain"] == pytest.approx(1.0, abs=0.1) and rows["roll"]["monotonic"]
    for name in ("smile", "mouth", "brows", "yaw"):
        assert rows[name]["gain"] > 0.4 and rows[name]["monotonic"], (name, rows[name])
        assert rows[name]["crosstalk"] < 0.15 and rows[name]["worst_identity"] < 0.6
    assert rows["smile"]["outside"] == 0 and rows["mouth"]["outside"] == 0
    text = table(result)
    assert text.count("\n| ") == 1 + len(SHIFTED) and "face (photo)" in text


def test_edit_clip_lists_are_checked(tmp_path):
    from facevid.errors import InputError
    from facevid.eval.edit_bench import read_clips

    with pytest.raises(InputError, match="no clip list"):
        read_clips(tmp_path / "none.tsv", tmp_path)
    (tmp_path / "a.tsv").write_text("file\tkind\nx.mp4\tvideo\n")
    with pytest.raises(InputError, match="not an edit clip list"):
        read_clips(tmp_path / "a.tsv", tmp_path)
    (tmp_path / "b.tsv").write_text("path\tkind\nmissing.mp4\tvideo\n")
    with pytest.raises(InputError, match="row 2"):
        read_clips(tmp_path / "b.tsv", tmp_path)
