"""Every command with a progress bar, run as a person runs it: in a pseudo-terminal."""

from __future__ import annotations

import shutil

import pytest
from terminal import run_in_terminal

from facevid.train.prepare import write_synthetic_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("pty_cache")
    write_synthetic_cache(path, clips=3, frames=12, size=32, seed=5)
    return path


def assert_bar(code: int, shown: str, name: str) -> None:
    assert code == 0, shown[-3000:]
    assert "Traceback" not in shown and "Error" not in shown, shown[-3000:]
    bars = [line for line in shown.splitlines() if line.lstrip().startswith(name) and "━" in line]
    assert bars, f"no progress bar for {name}:\n{shown[-3000:]}"


def test_track_transfer_edit_encode_decode_draw_a_bar(tmp_path, moving_clip, photo, tiny_weights):
    video, _ = moving_clip
    code, shown = run_in_terminal("track", video, "-o", tmp_path / "t.mp4")
    assert_bar(code, shown, "track")
    assert "40 frames" in shown   # the summary line follows the bar
    code, shown = run_in_terminal("transfer", photo, video, "-o", tmp_path / "x.mp4", "--weights", tiny_weights)
    assert_bar(code, shown, "transfer")
    code, shown = run_in_terminal("edit", video, "--attr", "smile=0.2", "--from", "0.5", "-o", tmp_path / "e.mp4",
                                  "--weights", tiny_weights)
    assert_bar(code, shown, "edit")
    assert "40 frames (27 edited)" in shown   # from 0.5 s: frames 13-39
    code, shown = run_in_terminal("encode", video, "-o", tmp_path / "c.fvl", "--weights", tiny_weights)
    assert_bar(code, shown, "encode")
    code, shown = run_in_terminal("decode", tmp_path / "c.fvl", "-o", tmp_path / "d.mp4", "--weights", tiny_weights)
    assert_bar(code, shown, "decode")


def test_prepare_train_and_train_mouth_draw_a_bar(tmp_path, moving_clip, cache, tiny_weights):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(moving_clip[0], videos / "a.mp4")
    code, shown = run_in_terminal("prepare", videos, "-o", tmp_path / "cache", "--size", 64)
    assert_bar(code, shown, "prepare")
    code, shown = run_in_terminal("train", cache, "-o", tmp_path / "run", "--preset", "tiny", "--max-steps", 3,
                                  "--threads", 1)
    assert_bar(code, shown, "train")
    code, shown = run_in_terminal("train-mouth", cache, "--weights", tiny_weights, "-o", tmp_path / "m.safetensors",
                                  "--run-dir", tmp_path / "mouth", "--steps", 2, "--batch", 2)
    assert_bar(code, shown, "mouth data")


def test_eval_pairs_draws_a_bar(tmp_path, moving_clip, tiny_weights):
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(moving_clip[0], media / "moving.mp4")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("source\tdriver\tkind\nmoving.mp4\tmoving.mp4\tself\n")
    code, shown = run_in_terminal("eval", tiny_weights, "--pairs", pairs, "--media", media, "--max-frames", 6)
    assert_bar(code, shown, "transfer benchmark")
    assert "| facevid |" in shown   # the table follows the bar
