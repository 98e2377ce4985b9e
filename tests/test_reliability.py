"""Hostile inputs and signals: crafted checkpoints, DDP stops, SIGTERM, unwritable folders,
escaping cache names, image outputs and image drivers, and the small flags."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from terminal import environment, run_in_terminal
from test_cli_track import assert_one_line_error, run_cli

from facevid.eval.reenactment import mouth_opening
from facevid.face.expression import expression_target, eye_openness
from facevid.train.prepare import write_synthetic_cache
from facevid.weights import DEFAULT, registry

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--preset", "tiny", "--threads", "1", "-q"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("rel_cache")
    write_synthetic_cache(path, clips=4, frames=12, size=32, seed=7)
    return path


@pytest.fixture
def unwritable(tmp_path):
    """A folder this process cannot create files in (root ignores modes: a sysfs folder then)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    folder = Path("/sys/kernel")
    try:
        (folder / "facevid_probe").touch()
    except OSError:
        yield folder
        return
    pytest.skip("no folder refuses writes here")


class Evil:
    """A pickle that runs a command when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ---------------------------------------------------------------------------- crafted checkpoints

def test_crafted_training_checkpoint_is_refused_and_runs_nothing(capsys, tmp_path, cache):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    assert run_cli(capsys, "train", cache, "-o", run, "--max-steps", 1, *FAST)[0] == 0
    torch.save({"model": Evil(marker), "step": 1}, run / "checkpoint.pt")
    code, _, err = run_cli(capsys, "train", cache, "-o", run, "--max-steps", 2, "--resume", *FAST)
    assert_one_line_error(code, err)
    assert "not a facevid checkpoint" in err and not marker.exists()


def test_crafted_mouth_checkpoint_is_refused_and_runs_nothing(capsys, tmp_path, cache, tiny_weights):
    run, marker = tmp_path / "mouth", tmp_path / "pwned"
    run.mkdir()
    torch.save({"refiner": Evil(marker)}, run / "mouth_checkpoint.pt")
    code, _, err = run_cli(capsys, "train-mouth", cache, "--weights", tiny_weights, "-o", tmp_path / "m.safetensors",
                           "--run-dir", run, "--steps", 2, "--batch", 2, "-q")
    assert_one_line_error(code, err)
    assert "not a facevid checkpoint" in err and not marker.exists()
    assert not (tmp_path / "m.safetensors").exists()


# ---------------------------------------------------------------------------- DDP stops

def _rank_env(rank: int, port: int) -> dict:
    return environment(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_ranks(cache, run, *extra):
    port = _free_port()
    cmd = [sys.executable, "-m", "facevid", "train", str(cache), "-o", str(run), *FAST, *map(str, extra)]
    return [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_rank_env(rank, port)) for rank in (0, 1)]


def _finish(ranks, timeout=240):
    results = []
    for proc in ranks:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in ranks:
                p.kill()
            pytest.fail("a DDP rank hung (waiting in a collective the other never entered)")
        results.append((proc.returncode, err))
    return results


def _agree(run):
    ranks = json.loads((run / "ddp_ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["weight_sums"][0] == ranks["weight_sums"][1]
    assert (run / "model.safetensors").is_file()
    assert not [p for p in run.iterdir() if ".tmp" in p.name]


def test_ddp_time_limit_stops_every_rank_together(tmp_path, cache):
    run = tmp_path / "ddp"
    results = _finish(_start_ranks(cache, run, "--max-steps", 100000, "--max-minutes", 0.03))
    for code, err in results:
        assert code == 0, err[-3000:]
    _agree(run)


def test_ddp_sigterm_to_one_rank_stops_both(tmp_path, cache):
    run = tmp_path / "ddp"
    ranks = _start_ranks(cache, run, "--max-steps", 100000)
    deadline = time.time() + 180
    while not (run / "log.jsonl").exists() and time.time() < deadline:   # rank 0 logs at step 10
        time.sleep(0.2)
    ranks[1].send_signal(signal.SIGTERM)
    results = _finish(ranks)
    for code, err in results:
        assert code == 143, err[-3000:]
        assert "Traceback" not in err and "terminated at step" in err
    _agree(run)


# ---------------------------------------------------------------------------- SIGTERM

@pytest.mark.parametrize("command", ["transfer", "encode", "edit"])
def test_sigterm_leaves_nothing_behind(tmp_path, moving_clip, photo, tiny_weights, command):
    video, _ = moving_clip
    out = tmp_path / ("out.fvl" if command == "encode" else "out.mp4")
    args = {"transfer": [photo, video, "--window", 1], "encode": [video, "--window", 1],
            "edit": [video, "--attr", "smile=0.2"]}[command]
    before = set(tmp_path.iterdir())
    code, shown = run_in_terminal(command, *args, "-o", out, "--weights", tiny_weights,
                                  signal_after=(f"{command} ", signal.SIGTERM))
    assert code == 143, shown[-2000:]
    assert "Traceback" not in shown and "facevid: error: terminated" in shown
    assert set(tmp_path.iterdir()) == before   # no output, no temp file


# ---------------------------------------------------------------------------- unwritable folders

def test_unwritable_output_folder_is_one_line(capsys, tmp_path, unwritable, moving_clip, photo, cache,
                                              tiny_weights):
    video, _ = moving_clip
    cases = [
        ("encode", video, "-o", unwritable / "c.fvl", "--weights", tiny_weights, "-q"),
        ("prepare", video.parent, "-o", unwritable / "cache", "-q"),
        ("train", cache, "-o", unwritable / "run", "--max-steps", 1, *FAST),
        ("eval", tiny_weights, "--data", cache, "--max-frames", 2, "--sheet", unwritable / "s.png"),
        ("track", video, "-o", unwritable / "t.mp4", "-q"),
        ("transfer", photo, video, "-o", unwritable / "x.mp4", "--weights", tiny_weights, "-q"),
    ]
    for args in cases:
        code, _, err = run_cli(capsys, *args)
        assert_one_line_error(code, err)
        assert str(unwritable) in err, (args[0], err)


# ---------------------------------------------------------------------------- caches

def test_cache_clip_names_cannot_leave_the_cache(capsys, tmp_path, tiny_weights):
    cache = tmp_path / "cache"
    write_synthetic_cache(cache, clips=2, frames=8, size=32, seed=1)
    outside = tmp_path / "x.npz"
    outside.write_bytes(b"left alone")
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["clips"][0]["name"] = "../../x"
    (cache / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(capsys, "eval", tiny_weights, "--data", cache, "--max-frames", 2)
    assert_one_line_error(code, err)
    assert "outside the cache" in err
    manifest.update(version=1, crop={"size": 64, "margin": 0.5, "center_y": 0.4})   # prepare upgrades version 1
    (cache / "manifest.json").write_text(json.dumps(manifest))
    videos = tmp_path / "videos"
    videos.mkdir()
    code, _, err = run_cli(capsys, "prepare", videos, "-o", cache, "--size", 64, "-q")
    assert_one_line_error(code, err)
    assert outside.read_bytes() == b"left alone"


# ---------------------------------------------------------------------------- image outputs and drivers

def test_expression_target_takes_the_drivers_expression_on_the_sources_shape():
    from facevid.synthetic import Motion, landmarks, random_identity

    rng = np.random.default_rng(0)
    closed, opened = Motion(mouth_open=0.0), Motion(mouth_open=1.0, blink=0.6, brows=0.5)
    source = landmarks(random_identity(rng), closed, size=256)
    driver = landmarks(random_identity(rng), opened, size=256)
    turned = driver @ np.array([[0.9, -0.3], [0.3, 0.9]]).T * 0.8 + 20   # another pose and size
    target = expression_target(source, turned)
    assert mouth_opening(target) == pytest.approx(mouth_opening(driver), abs=0.01)
    assert eye_openness(target) == pytest.approx(eye_openness(driver), abs=0.01)
    assert np.allclose(target[27:36], source[27:36])   # the nose stays the source's
    assert np.allclose(target[:4], source[:4]) and target[8, 1] > source[8, 1]   # the chin drops with the jaw
    assert np.allclose(expression_target(source, source), source, atol=1e-3)


def test_image_to_image_transfer_writes_an_image(capsys, tmp_path, photo, tiny_weights, moving_clip):
    out = tmp_path / "out.png"
    code, _, err = run_cli(capsys, "transfer", photo, photo, "-o", out, "--weights", tiny_weights, "-q")
    assert code == 0, err
    made, source = cv2.imread(str(out)), cv2.imread(str(photo))
    assert made.shape == source.shape
    code, _, err = run_cli(capsys, "transfer", photo, moving_clip[0], "-o", tmp_path / "o.png",
                           "--weights", tiny_weights, "-q")
    assert_one_line_error(code, err)
    assert "image" in err and not (tmp_path / "o.png").exists()


def _marks(image):
    from facevid.face.crop import CropSpec
    from facevid.face.track import FaceTracker, Landmarks68, make_backend

    spec = CropSpec(size=256, margin=0.5)
    face = FaceTracker(make_backend("dlib"), spec).update(image, 0, 0.0)
    assert face.found
    return Landmarks68(spec)(image, face)


@pytest.mark.weights
@pytest.mark.skipif(DEFAULT not in registry(), reason="no bundled weights listed in weights.toml")
def test_image_driver_lends_its_expression(capsys, tmp_path):
    """The driver's open mouth on the photo's closed one, measured on the output by dlib:
    within 0.1 inter-ocular distances of the driver's opening, eyes within 0.05 of its ratio."""
    from facevid.io.video import iter_frames

    frame = next(f.image for f in iter_frames(ROOT / "examples/talking.mp4") if f.index == 63)
    driver = tmp_path / "driver.png"
    cv2.imwrite(str(driver), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out.png"
    code, _, err = run_cli(capsys, "transfer", ROOT / "examples/face.jpg", driver, "-o", out, "-q")
    assert code == 0, err
    read = lambda p: cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)   # noqa: E731
    src, drv, made = (_marks(read(p)) for p in (ROOT / "examples/face.jpg", driver, out))
    assert mouth_opening(drv) - mouth_opening(src) > 0.15   # the driver opens the mouth, the photo does not
    assert abs(mouth_opening(made) - mouth_opening(drv)) < 0.1
    assert abs(eye_openness(made) - eye_openness(drv)) < 0.05


# ---------------------------------------------------------------------------- small flags

def test_face_rank_beyond_the_faces_shown_says_so(capsys, tmp_path, photo):
    image = cv2.imread(str(photo))
    two = tmp_path / "two.png"
    cv2.imwrite(str(two), np.hstack([image, image]))
    code, _, err = run_cli(capsys, "track", two, "-o", tmp_path / "t.mp4", "--face", 3, "-q")
    assert_one_line_error(code, err)
    assert "at most 2 faces" in err


def test_crf_out_of_range_is_refused_before_work(capsys, tmp_path, moving_clip, photo, tiny_weights):
    video, _ = moving_clip
    for args in (("track", video, "-o", tmp_path / "t.mp4"),
                 ("transfer", photo, video, "-o", tmp_path / "x.mp4", "--weights", tiny_weights)):
        code, _, err = run_cli(capsys, *args, "--crf", 99, "-q")
        assert_one_line_error(code, err)
        assert "0" in err and "51" in err
    assert not list(tmp_path.iterdir())


def test_quiet_prints_nothing(capsys, tmp_path, moving_clip, photo, tiny_weights):
    video, _ = moving_clip
    for args in (("track", video, "-o", tmp_path / "t.mp4"),
                 ("transfer", photo, video, "-o", tmp_path / "x.mp4", "--weights", tiny_weights),
                 ("encode", video, "-o", tmp_path / "c.fvl", "--weights", tiny_weights),
                 ("decode", tmp_path / "c.fvl", "-o", tmp_path / "d.mp4", "--weights", tiny_weights)):
        code, out, err = run_cli(capsys, *args, "-q")
        assert code == 0 and out == "" and err == "", (args[0], err)


def test_eval_takes_a_registry_name_and_keeps_sheets(capsys, tmp_path, tiny_weights, cache, monkeypatch):
    from facevid import weights as W

    toml = tmp_path / "weights.toml"
    toml.write_text(f'[weights.tiny]\npath = "{tiny_weights}"\nsha256 = "{W.sha256_of(tiny_weights)}"\n'
                    f"size = {tiny_weights.stat().st_size}\n")
    monkeypatch.setattr(W.registry, "__defaults__", (toml, "weights"))
    sheet = tmp_path / "s.png"
    code, out, err = run_cli(capsys, "eval", "tiny", "--data", cache, "--max-frames", 3, "--max-clips", 1,
                             "--sheet", sheet, "--json")
    assert code == 0, err
    assert json.loads(out)["self_reenactment"] and sheet.is_file()
    code, _, err = run_cli(capsys, "eval", "tiny", "--data", cache, "--max-frames", 3, "--sheet", sheet)
    assert_one_line_error(code, err)
    assert "--force" in err


@pytest.mark.parametrize("command", ["encode", "decode", "eval", "transfer", "edit"])
def test_device_flag_is_checked(capsys, tmp_path, moving_clip, photo, tiny_weights, cache, command):
    video, _ = moving_clip
    args = {"encode": ("encode", video, "-o", tmp_path / "c.fvl", "--weights", tiny_weights),
            "edit": ("edit", video, "--attr", "smile=0.1", "-o", tmp_path / "e.mp4", "--weights", tiny_weights),
            "decode": ("decode", tmp_path / "c.fvl", "-o", tmp_path / "d.mp4", "--weights", tiny_weights),
            "eval": ("eval", tiny_weights, "--data", cache),
            "transfer": ("transfer", photo, video, "-o", tmp_path / "x.mp4", "--weights", tiny_weights)}[command]
    if command == "decode":
        assert run_cli(capsys, "encode", video, "-o", tmp_path / "c.fvl", "--weights", tiny_weights, "-q")[0] == 0
    code, _, err = run_cli(capsys, *args, "--device", "tpu", "-q" if command != "eval" else "--json")
    assert_one_line_error(code, err)
    assert "tpu" in err
    if not torch.cuda.is_available():
        code, _, err = run_cli(capsys, *args, "--device", "cuda", "-q" if command != "eval" else "--json")
        assert_one_line_error(code, err)
        assert "no CUDA" in err


# ---------------------------------------------------------------------------- inputs of every shape

def _faststart_copy(video: Path, out: Path) -> Path:
    """The clip re-encoded with its index (moov) at the front, as web video is: a cut copy still opens."""
    import av

    from facevid.io.video import iter_frames

    frames = [f.image for f in iter_frames(video)]
    with av.open(str(out), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.pix_fmt, stream.width, stream.height = "yuv420p", frames[0].shape[1], frames[0].shape[0]
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return out


def test_a_truncated_driver_is_an_error_unless_allowed(capsys, tmp_path, moving_clip, photo, tiny_weights):
    whole = _faststart_copy(moving_clip[0], tmp_path / "whole.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.3)])
    for args in (("track", cut, "-o", tmp_path / "t.mp4"),
                 ("transfer", photo, cut, "-o", tmp_path / "x.mp4", "--weights", tiny_weights)):
        code, _, err = run_cli(capsys, *args, "-q")
        assert_one_line_error(code, err)
        assert "truncated" in err and "--allow-truncated" in err
        assert not Path(args[args.index("-o") + 1]).exists()
        code, _, err = run_cli(capsys, *args, "-q", "--allow-truncated")
        assert code == 0 and err.count("facevid: warning:") == 1 and "Traceback" not in err, err
    from facevid.io.video import probe

    assert 0 < probe(tmp_path / "x.mp4").frame_count < 40


@pytest.mark.parametrize("kind", ["grey", "alpha", "large", "tiny", "empty", "one_frame"])
def test_images_and_clips_of_every_shape(capsys, tmp_path, photo, moving_clip, kind):
    image = cv2.imread(str(photo))
    path = tmp_path / f"{kind}.png"
    if kind == "grey":
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    elif kind == "alpha":
        cv2.imwrite(str(path), np.dstack([image, np.full(image.shape[:2], 200, np.uint8)]))
    elif kind == "large":   # 4000 x 3000, the face in it at 3x
        big = np.full((3000, 4000, 3), 90, np.uint8)
        big[800:2336, 1200:2736] = cv2.resize(image, (1536, 1536), interpolation=cv2.INTER_CUBIC)
        path = tmp_path / "large.jpg"
        cv2.imwrite(str(path), big)
    elif kind == "tiny":
        cv2.imwrite(str(path), cv2.resize(image, (12, 12), interpolation=cv2.INTER_AREA))
    elif kind == "empty":
        path = tmp_path / "empty.mp4"
        path.write_bytes(b"")
    elif kind == "one_frame":
        from facevid.io.writer import VideoWriter

        path = tmp_path / "one.mp4"
        with VideoWriter(path, 25) as writer:
            writer.write(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    out = tmp_path / "out.mp4"
    code, _, err = run_cli(capsys, "track", path, "-o", out, "-q", "--json")
    if kind in ("tiny", "empty"):
        assert_one_line_error(code, err)
        assert not out.exists()
        return
    assert code == 0, err
    from facevid.io.video import probe

    info = probe(out)
    assert info.frame_count == 1
    expected = (4000, 3000) if kind == "large" else (image.shape[1], image.shape[0])
    assert (info.width, info.height) == expected


def test_prepare_skips_a_truncated_video_unless_allowed(capsys, tmp_path, moving_clip):
    videos = tmp_path / "videos"
    videos.mkdir()
    whole = _faststart_copy(moving_clip[0], tmp_path / "whole.mp4")
    for name in ("a.mp4", "b.mp4"):
        (videos / name).write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.4)])
    code, out, err = run_cli(capsys, "prepare", videos, "-o", tmp_path / "c1", "--size", 64, "--json", "-q")
    assert code == 0 and json.loads(out)["added"] == 0 and err.count("is truncated or damaged") == 2, err
    code, out, err = run_cli(capsys, "prepare", videos, "-o", tmp_path / "c2", "--size", 64, "--json", "-q",
                             "--allow-truncated")
    assert code == 0 and json.loads(out)["added"] == 2 and err.count("facevid: warning:") == 2, err
