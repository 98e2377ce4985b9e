"""`facevid learn-attr`: a direction learned from two folders of examples moves what the examples
differ by and nothing they share; `edit --attr-file` uses it; errors in one line."""

from __future__ import annotations

import json
from fractions import Fraction

import cv2
import numpy as np
import pytest
from test_cli_track import assert_one_line_error, run_cli

from facevid import demo
from facevid.eval.transfer_bench import FrameMeter
from facevid.face.identity import iod
from facevid.face.landmark_warp import piecewise_affine_warp
from facevid.face.learned import LearnedAttribute, fit_attribute, load_attribute, nuisance
from facevid.io.video import iter_frames

# The examples' attribute, "grin": the mouth corners pulled out and up (share of the eye distance
# per landmark: corners fully, their neighbours less), on the astronaut's face.
GRIN = {48: (-1, 1.0), 54: (1, 1.0), 49: (-1, 0.5), 53: (1, 0.5), 59: (-1, 0.5), 55: (1, 0.5), 60: (-1, 0.8),
        64: (1, 0.8)}
LOWER_LIP = [56, 57, 58, 65, 66, 67]


def grinning(rng, grin: float) -> np.ndarray:
    """The astronaut grinning by `grin`, her mouth opened by chance (in both folders: not the
    attribute) and the photo turned, scaled and shifted at random."""
    photo, marks = demo.astronaut(), demo.ASTRONAUT_LANDMARKS68.astype(np.float64)
    moved, d = marks.copy(), iod(marks)
    for i, (side, share) in GRIN.items():
        moved[i] += share * grin * d * np.array([0.10 * side, -0.06])
    moved[LOWER_LIP, 1] += rng.uniform(0, 0.10) * d
    image = piecewise_affine_warp(photo, marks, moved)
    h, w = image.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2 + rng.uniform(-20, 20), h / 2 + rng.uniform(-20, 20)),
                                   rng.uniform(-8, 8), rng.uniform(0.9, 1.1))
    return cv2.warpAffine(image, turn, (w, h), borderMode=cv2.BORDER_REFLECT)


def write(path, image):
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """6 photos grinning and a short video grinning; 6 photos not."""
    from facevid.io.writer import VideoWriter

    folder, rng = tmp_path_factory.mktemp("examples"), np.random.default_rng(0)
    for label, grin in (("positive", 1.0), ("negative", 0.0)):
        (folder / label).mkdir()
        for k in range(6):
            write(folder / label / f"{k}.png", grinning(rng, grin * rng.uniform(0.7, 1.0) + rng.uniform(-0.1, 0.1)))
    with VideoWriter(folder / "positive" / "clip.mp4", Fraction(25), crf=20) as writer:
        for i in range(6):
            writer.write(grinning(rng, rng.uniform(0.7, 1.0)), i / 25)
    return folder


@pytest.fixture(scope="module")
def grin(examples, tmp_path_factory):
    """The attribute learned from the examples (bundled weights' crop)."""
    import facevid

    out = tmp_path_factory.mktemp("learned") / "grin.safetensors"
    facevid.learn_attribute("grin", examples / "positive", examples / "negative", out, progress=False)
    return out


@pytest.mark.weights
def test_learn_attr_finds_what_the_examples_differ_by(grin):
    """Held out file by file, the examples are told apart; the direction pulls the mouth corners
    out and up (what the folders differ by), and hardly moves the lower lip (which both share)."""
    learned = load_attribute(grin)
    assert learned.accuracy >= 0.9 and (learned.positives, learned.negatives, learned.frames) == (7, 6, 18)
    v = learned.vector / np.abs(learned.vector).max()
    assert v[48, 0] < -0.3 and v[54, 0] > 0.3, v[[48, 54]]             # corners apart
    assert v[48, 1] < 0 and v[54, 1] < 0, v[[48, 54]]                   # and up
    corners = np.linalg.norm(learned.vector[[48, 54]], axis=1).mean()
    assert np.linalg.norm(learned.vector[LOWER_LIP], axis=1).mean() < 0.5 * corners


@pytest.mark.weights
def test_edit_with_a_learned_attribute_grins_the_face_and_keeps_the_person(capsys, tmp_path, grin, photo):
    """Measured by dlib on the edited photo: the learned slider widens the smile more with
    more strength, opens the mouth little, keeps the person; --set reaches the same look."""
    path, meter = grin, FrameMeter()
    from facevid.face.attributes import measure

    before, person = meter(next(iter_frames(photo)).image)
    changes = []
    for edit in (("--attr", "grin=0.5"), ("--attr", "grin=1"), ("--set", "grin=1")):
        out = tmp_path / f"{edit[0][2:]}-{edit[1]}.png"
        code, _, err = run_cli(capsys, "edit", photo, "--attr-file", path, *edit, "-o", out, "-q")
        assert code == 0, err
        after, same = meter(next(iter_frames(out)).image)
        changes.append({k: measure(after)[k] - v for k, v in measure(before).items()})
        assert np.linalg.norm(same - person) < 0.3
    (half, full, reached) = changes
    assert 0.03 < half["smile"] < full["smile"] and full["smile"] > 0.07, changes
    assert abs(full["mouth"]) < 0.05 and abs(full["eyes"]) < 0.06, full
    assert reached["smile"] > 0.5 * full["smile"], reached


def test_the_fit_takes_out_what_the_head_does_and_finds_the_rest():
    """On landmarks alone: the positive faces differ from the negative by a move of four
    points, and also (as chance would have it in a small sample) by a turn, a shift and a zoom
    of the whole face, and a move along a direction named as known (a stand-in for yaw).
    The normal found is the four points' move, nothing of the rest, and the slider's 0 and 1
    are the two folders' means."""
    rng = np.random.default_rng(1)
    mean = demo.ASTRONAUT_LANDMARKS68 / 256.0 - 1
    signal = np.zeros((68, 2))
    signal[[48, 54, 19, 24], :] = [[-1, 0], [1, 0], [0, -1], [0, -1]]
    known = rng.normal(size=(68, 2))

    def faces(label, n):
        out = []
        for _ in range(n):
            a, s = rng.normal(0.1 * label, 0.02), 1 + rng.normal(0.05 * label, 0.02)
            shift = rng.normal(0.1 * label, 0.02, 2)
            turn = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            face = mean + (0.02 * (label > 0) + rng.normal(0, 0.004)) * signal + 0.02 * label * known
            out.append(((face - mean.mean(0)) @ turn.T + mean.mean(0) + shift + rng.normal(0, 0.002, (68, 2)))[None])
        return out

    positive, negative = faces(1, 10), faces(-1, 10)
    learned = fit_attribute("brows-and-mouth", positive, negative, others=[known])
    basis = nuisance(np.concatenate(positive + negative).mean(0), [known])
    truth = (signal.ravel() - (signal.ravel() @ basis.T) @ basis)
    assert learned.accuracy >= 0.95
    assert learned.normal.ravel() @ truth / np.linalg.norm(truth) > 0.95
    assert np.abs(basis @ learned.normal.ravel()).max() < 1e-6
    assert learned.positive > learned.negative


def test_learned_attributes_round_trip_and_crafted_files_are_refused(tmp_path):
    normal = np.zeros((68, 2))
    normal[48, 0] = 1.0
    learned = LearnedAttribute("wide", normal, 0.1, 0.3, 0.9, 4, 5, 30, (0.5, 0.1))
    learned.save(tmp_path / "wide.safetensors")
    back = load_attribute(tmp_path / "wide.safetensors")
    assert back.name == "wide" and np.array_equal(back.normal, normal) and back.crop == (0.5, 0.1)
    assert back.measure(normal * 0.3) == pytest.approx(1.0) and back.slider.low < 0 < 1 < back.slider.high
    from safetensors.numpy import save_file

    save_file({"normal": (2 * normal).astype(np.float32)}, str(tmp_path / "long.safetensors"),
              metadata={"format": "facevid-attribute", "name": "wide", "negative": "0", "positive": "1",
                        "accuracy": "1", "positives": "3", "negatives": "3", "frames": "6", "crop_margin": "0.5",
                        "crop_center_y": "0.1"})
    save_file({"normal": normal.astype(np.float32)}, str(tmp_path / "smile.safetensors"),
              metadata={"format": "facevid-attribute", "name": "smile"})
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04\x95 not safetensors")
    for name, message in (("long", "invalid direction"), ("smile", "invalid metadata"), ("pickle", "cannot read")):
        with pytest.raises(Exception, match=message):
            load_attribute(tmp_path / f"{name}.safetensors")


def test_learn_attr_refuses_bad_folders_and_names_in_one_line(capsys, tmp_path, examples, tiny_weights):
    blank, few, empty = tmp_path / "blank", tmp_path / "few", tmp_path / "empty"
    for folder in (blank, few, empty):
        folder.mkdir()
    for k in range(4):
        write(blank / f"{k}.png", np.full((200, 200, 3), 90 + 20 * k, np.uint8))
    for k in range(2):
        write(few / f"{k}.png", grinning(np.random.default_rng(k), 1.0))
    (empty / "notes.txt").write_text("no media here")
    positive, negative = examples / "positive", examples / "negative"
    out = tmp_path / "out.safetensors"
    cases = [(("grin", "--positive", blank, "--negative", negative), "a face in 0 of 4 files"),
             (("grin", "--positive", few, "--negative", negative), "at least 3 files"),
             (("grin", "--positive", empty, "--negative", negative), "holds no images or videos"),
             (("grin", "--positive", tmp_path / "missing", "--negative", negative), "is not a folder"),
             (("grin", "--positive", positive, "--negative", positive), "two different folders"),
             (("smile", "--positive", positive, "--negative", negative), "a measured attribute already"),
             (("Grin!", "--positive", positive, "--negative", negative), "lower-case letters"),
             (("grin", "--positive", positive, "--negative", negative, "--frames", "0"), "--frames must be"),
             (("grin", "--negative", negative), "Missing option")]
    for args, message in cases:
        code, _, err = run_cli(capsys, "learn-attr", *args, "-o", out, "--weights", tiny_weights)
        assert_one_line_error(code, err)
        assert message.lower() in err.lower(), err
        assert not out.exists()


def test_edit_refuses_bad_attribute_files_in_one_line(capsys, tmp_path, photo, tiny_weights):
    normal = np.zeros((68, 2))
    normal[48, 0] = 1.0
    LearnedAttribute("wide", normal, 0.1, 0.3, 0.9, 4, 5, 30, (0.9, 0.3)).save(tmp_path / "other-crop.safetensors")
    (tmp_path / "crafted.safetensors").write_bytes(b"\x80\x04\x95 not safetensors")
    cases = [(("--attr-file", tmp_path / "crafted.safetensors", "--attr", "smile=0.1"), "cannot read"),
             (("--attr-file", tmp_path / "other-crop.safetensors", "--attr", "wide=0.5"), "learned in a crop"),
             (("--attr-file", tmp_path / "other-crop.safetensors", "--attr-file", tmp_path / "other-crop.safetensors",
               "--attr", "wide=0.5"), "two attributes are named 'wide'"),
             (("--attr-file", tmp_path / "other-crop.safetensors", "--attr", "wide=3"), "out of range"),
             (("--attr", "wide=0.5"), "unknown attribute 'wide'")]
    for args, message in cases:
        code, _, err = run_cli(capsys, "edit", photo, *args, "-o", tmp_path / "out.png", "--weights", tiny_weights)
        assert_one_line_error(code, err)
        assert message.lower() in err.lower(), err
    assert not (tmp_path / "out.png").exists()
    code, out, _ = run_cli(capsys, "edit", "--list-attrs", "--attr-file", tmp_path / "other-crop.safetensors")
    assert code == 0 and "wide" in out and "learned" in out and "smile" in out


@pytest.mark.weights
def test_learn_attr_json_summary_counts_files_and_faces(capsys, examples, tmp_path):
    out = tmp_path / "grin.safetensors"
    code, stdout, err = run_cli(capsys, "learn-attr", "grin", "--positive", examples / "positive", "--negative",
                                examples / "negative", "-o", out, "--json", "--frames", "2")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["positive_files"] == 7 and summary["negative_files"] == 6 and summary["frames"] == 14
    assert summary["accuracy"] >= 0.9 and out.exists()


def test_learn_attr_draws_a_bar_in_a_terminal_and_stops_cleanly_on_sigterm(tmp_path, examples, tiny_weights):
    """As a person runs it: a progress bar and the summary line; a SIGTERM leaves no file."""
    import signal

    from terminal import run_in_terminal
    from test_terminal import assert_bar

    args = ("learn-attr", "grin", "--positive", examples / "positive", "--negative", examples / "negative",
            "--weights", tiny_weights)
    code, shown = run_in_terminal(*args, "-o", tmp_path / "grin.safetensors")
    assert_bar(code, shown, "learn-attr")
    assert "grin: held-out accuracy" in shown and (tmp_path / "grin.safetensors").exists()
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    code, shown = run_in_terminal(*args, "-o", stopped / "grin.safetensors",
                                  signal_after=("learn-attr ", signal.SIGTERM))
    assert code == 143 and "facevid: error: terminated" in shown and "Traceback" not in shown, shown[-2000:]
    assert list(stopped.iterdir()) == []
