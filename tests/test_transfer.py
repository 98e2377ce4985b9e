"""`facevid transfer` end to end with a tiny model: outputs, determinism, error paths."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from test_cli_track import _no_face_clip, assert_one_line_error, run_cli
from test_reliability import _faststart_copy

from facevid import demo
from facevid.io.video import iter_frames, probe


def _frames(path):
    return np.stack([f.image for f in iter_frames(path)])


def test_transfer_photo_keeps_driver_timing_audio_and_background(capsys, tmp_path, tiny_weights, photo,
                                                                    moving_clip):
    driver, _ = moving_clip
    out = tmp_path / "out.mp4"
    code, _, err = run_cli(capsys, "transfer", photo, driver, "-o", out, "--weights", tiny_weights, "--steps", 2,
                           "--window", 8, "-q")
    assert code == 0, err
    info, drv = probe(out), probe(driver)
    assert info.frame_count == drv.frame_count and info.fps == drv.fps and info.has_audio
    assert (info.width, info.height) == (512, 512)
    frames, source = _frames(out), demo.astronaut()
    # the corners are far from the face: the source background, unchanged (up to the codec)
    assert np.abs(frames[:, :60, :60].astype(int) - source[:60, :60]).mean() < 3
    # the face region is the model's output, not the photo
    face = frames[:, 80:170, 180:270].astype(int)
    assert np.abs(face - source[80:170, 180:270]).mean() > 1.0


def test_transfer_is_seeded_and_writes_crops(capsys, tmp_path, tiny_weights, photo, moving_clip):
    driver, _ = moving_clip
    runs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        out = tmp_path / f"{name}.mp4"
        code, _, err = run_cli(capsys, "transfer", photo, driver, "-o", out, "--weights", tiny_weights,
                               "--steps", 3, "--seed", seed, "--no-paste-back", "--crf", 0, "-q")
        assert code == 0, err
        runs.append(_frames(out))
    assert runs[0].shape[1:3] == (32, 32)
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])


@pytest.mark.parametrize("motion", ["landmarks", "keypoints", "codes"])
def test_transfer_video_source_and_absolute(capsys, tmp_path, tiny_weights, moving_clip, still_clip, motion):
    out = tmp_path / "out.mp4"
    code, out_text, err = run_cli(capsys, "transfer", still_clip[0], moving_clip[0], "-o", out, "--weights",
                                  tiny_weights, "--absolute", "--steps", 0, "--motion", motion, "--json", "-q")
    assert code == 0, err
    assert probe(out).frame_count == probe(moving_clip[0]).frame_count
    assert '"relative": false' in out_text


_IMPORTS_DIFFUSERS = """
import sys
from facevid.cli import main
try:
    main(sys.argv[1:])
except SystemExit as done:
    print(done.code, 'diffusers' in sys.modules, file=sys.stderr)
"""


@pytest.mark.parametrize("steps, sampler, imports", [(1, "heun", False), (0, "dpm++", False), (2, "heun", False),
                                                     (2, "dpm++", True), (2, "euler", True)])
def test_diffusers_is_imported_only_when_its_sampler_runs(tmp_path, tiny_weights, photo, clip_factory, steps, sampler,
                                                         imports):
    import subprocess
    import sys

    short, _ = clip_factory("short", frames=6, size=(160, 144), audio=False)   # a process per case: keep it short
    run = subprocess.run([sys.executable, "-c", _IMPORTS_DIFFUSERS, "transfer", str(photo), str(short),
                          "-o", str(tmp_path / "o.mp4"), "--weights", str(tiny_weights), "--steps", str(steps),
                          "--sampler", sampler, "-q"], capture_output=True, text=True, timeout=300)
    assert run.stderr.strip().splitlines()[-1] == f"0 {imports}", run.stderr


def test_samplers_make_different_seeded_outputs(capsys, tmp_path, tiny_weights, photo, moving_clip):
    made = {}
    for sampler in ("heun", "euler", "dpm++"):
        out = tmp_path / f"{sampler}.mp4"
        code, _, err = run_cli(capsys, "transfer", photo, moving_clip[0], "-o", out, "--weights", tiny_weights,
                               "--steps", 3, "--sampler", sampler, "--no-paste-back", "--crf", 0, "-q")
        assert code == 0, err
        made[sampler] = _frames(out).astype(int)
    assert all((made[a] != made[b]).any() for a, b in (("heun", "euler"), ("euler", "dpm++"), ("heun", "dpm++")))


def test_api_transfer_defaults_and_options_reach_the_run(tmp_path, tiny_weights, photo, clip_factory, moving_clip):
    """`facevid.transfer` from Python: steps, guidance, absolute and aligner reach the run (its
    summary reports what ran), colour matching is on unless turned off, a variable frame rate
    driver's timestamps are kept, a truncated driver is refused by default (the CLI's
    --allow-truncated is tested in test_reliability), and --render-size takes 16 to 2048 inclusive."""
    from fractions import Fraction

    import facevid
    from facevid.errors import ConfigError, FacevidError
    from facevid.io.writer import VideoWriter
    from facevid.tasks.transfer import DEFAULT_MOTION, _check_options

    driver, _ = clip_factory("short", frames=6, size=(160, 160), audio=False, base_scale=0.5)
    runs = {}
    for name, options in (("default", {}), ("matched", {"colour_match": True}), ("unmatched", {"colour_match": False}),
                          ("absolute", {"steps": 1, "absolute": True, "guidance": 2.0})):
        out = tmp_path / f"{name}.mp4"
        options = {"steps": 0, **options}
        summary = facevid.transfer(photo, driver, out, model=str(tiny_weights), crf=0, render_size=64,
                                   progress=False, **options)
        runs[name] = (_frames(out), summary)
    assert runs["default"][1].steps == 0 and runs["default"][1].relative
    assert runs["absolute"][1].steps == 1 and not runs["absolute"][1].relative and runs["absolute"][1].guidance == 2.0
    assert np.array_equal(runs["default"][0], runs["matched"][0])
    assert not np.array_equal(runs["default"][0], runs["unmatched"][0])
    whole = _faststart_copy(moving_clip[0], tmp_path / "whole.mp4")     # its index first: a cut copy opens
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.3)])
    with pytest.raises(FacevidError, match="cut.mp4 is truncated"):
        facevid.transfer(photo, cut, tmp_path / "from_cut.mp4", model=str(tiny_weights), steps=0, render_size=64,
                         progress=False)
    assert not (tmp_path / "from_cut.mp4").exists()
    vfr, times = tmp_path / "vfr.mp4", [0, 0.04, 0.1, 0.12, 0.3, 0.34, 0.5, 0.9]     # the driver's timing is kept
    with VideoWriter(vfr, Fraction(25)) as writer:
        for frame, time in zip(iter_frames(moving_clip[0]), times):
            writer.write(frame.image, time)
    facevid.transfer(photo, vfr, tmp_path / "vfr_out.mp4", model=str(tiny_weights), steps=0, render_size=64,
                     progress=False)
    assert [f.time for f in iter_frames(tmp_path / "vfr_out.mp4")] == pytest.approx(times, abs=1e-3)
    with pytest.raises(ConfigError, match="unknown aligner 'magic'"):
        facevid.transfer(photo, driver, tmp_path / "x.mp4", model=str(tiny_weights), aligner="magic", progress=False)
    for size in (16, 2048):
        _check_options(16, DEFAULT_MOTION, size)
    for size in (15, 2049):
        with pytest.raises(ConfigError, match="render-size"):
            _check_options(16, DEFAULT_MOTION, size)


@pytest.mark.parametrize("case", ["missing_source", "no_face_source", "no_face_driver", "exists", "bad_weights",
                                  "not_weights", "flag", "motion", "sampler", "pose", "render_size"])
def test_transfer_errors(capsys, tmp_path, tiny_weights, photo, moving_clip, case):
    source, driver, out, weights, extra = photo, moving_clip[0], tmp_path / "out.mp4", tiny_weights, []
    if case == "missing_source":
        source = tmp_path / "nobody.png"
    elif case == "no_face_source":
        source = tmp_path / "noise.png"
        cv2.imwrite(str(source), np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    elif case == "no_face_driver":
        driver = _no_face_clip(tmp_path / "noise.mp4")
    elif case == "exists":
        out.write_bytes(b"keep")
    elif case == "bad_weights":
        weights = tmp_path / "missing.safetensors"
    elif case == "not_weights":
        weights = tmp_path / "junk.safetensors"
        weights.write_bytes(b"\x00" * 100)
    elif case == "flag":
        extra = ["--steps", "many"]
    elif case == "motion":
        extra = ["--motion", "telepathy"]
    elif case == "sampler":
        extra = ["--sampler", "ddim", "--steps", "2"]
    elif case == "pose":
        extra = ["--pose", "sideways"]
    elif case == "render_size":
        extra = ["--render-size", "8"]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run_cli(capsys, "transfer", source, driver, "-o", out, "--weights", weights, "-q", *extra)
    assert_one_line_error(code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if case == "exists":
        assert out.read_bytes() == b"keep"


def test_animator_moves_the_source_landmarks_by_the_drivers_change(tiny_weights, monkeypatch):
    """motion="landmarks": the warp's targets are the source's landmarks plus the driver's
    change since its first frame (relative), or the driver's own (absolute), in model units."""
    from facevid.pipeline import Animator, crop_points
    from facevid.weights import load_model

    model = load_model(tiny_weights)
    size = model.cfg.out_size
    rng = np.random.default_rng(0)
    source_marks = rng.uniform(4, size - 4, (68, 2))
    driver_marks = rng.uniform(4, size - 4, (5, 68, 2))
    crops = list(rng.integers(0, 255, (5, size, size, 3), dtype=np.uint8))
    seen = []
    original = model.decode
    monkeypatch.setattr(model, "decode", lambda *a, **k: seen.append((a[1], k["target_points"])) or original(*a, **k))
    for relative in (True, False):
        animate = Animator(model, crops[0], steps=0, guidance=1.0, seed=0, relative=relative, motion="landmarks",
                           source_points=source_marks)
        assert len(animate(crops[:3], driver_marks[:3]) + animate(crops[3:], driver_marks[3:])) == 5
    src = crop_points(source_marks, size)
    drv = crop_points(driver_marks, size)
    relative_targets = torch.cat([seen[0][1], seen[1][1]], 1)[0]
    assert torch.equal(seen[0][0][0], src)
    assert torch.allclose(relative_targets, src + drv - drv[0], atol=1e-6)
    assert torch.allclose(torch.cat([seen[2][1], seen[3][1]], 1)[0], drv, atol=1e-6)
    with pytest.raises(ValueError, match="needs the source's landmarks"):
        Animator(model, crops[0], steps=0, guidance=1.0, seed=0, relative=True, motion="landmarks")
