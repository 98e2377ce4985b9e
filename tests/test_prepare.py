"""`facevid prepare`: a folder of videos → a resumable crop cache; bad files are skipped."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_cli_track import _no_face_clip, assert_one_line_error, run_cli

from facevid.errors import InputError
from facevid.face.crop import CropSpec
from facevid.face.track import Landmarks68
from facevid.io.cache import CACHE_VERSION, load_cache, load_manifest


def _folder(tmp_path, moving_clip):
    videos = tmp_path / "videos"
    (videos / "alice").mkdir(parents=True)
    (videos / "bob" / "deep").mkdir(parents=True)
    shutil.copy(moving_clip[0], videos / "alice" / "talk.mp4")
    shutil.copy(moving_clip[0], videos / "bob" / "deep" / "again.mov.mp4")
    (videos / "bob" / "broken.mp4").write_text("not a video")
    _no_face_clip(videos / "bob" / "noise.mp4")
    (videos / "notes.txt").write_text("ignored: not a video suffix")
    return videos


def test_prepare_crops_skips_and_resumes(capsys, tmp_path, moving_clip):
    videos = _folder(tmp_path, moving_clip)
    cache = tmp_path / "cache"
    code, out, err = run_cli(capsys, "prepare", videos, "-o", cache, "--size", 64, "--json", "-q")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["added"] == 2 and len(summary["skipped"]) == 2
    assert err.count("warning: skipped") == 2 and "broken.mp4" in err and "noise.mp4" in err
    manifest = load_manifest(cache)
    assert {c["identity"] for c in manifest["clips"]} == {"alice", "deep"}
    clip = manifest["clips"][0]
    crops = np.load(cache / "clips" / f"{clip['name']}.npy", mmap_mode="r")
    assert crops.shape == (40, 64, 64, 3) and clip["frames"] == 40
    marks = np.load(cache / "clips" / f"{clip['name']}.npz")
    assert marks["landmarks68"].shape == (40, 68, 2) and marks["landmarks5"].shape == (40, 5, 2)
    # landmarks land on the aligned face: eyes in the upper half of the crop, nose near the middle
    assert 0.3 * 64 < marks["landmarks5"][:, :4, 1].mean() < 0.5 * 64
    loaded = load_cache(cache)
    assert len(loaded) == 2 and loaded[0].landmarks.min() > -1 and loaded[0].landmarks.max() < 1
    # re-running resumes: nothing is redone; labels given later update identities
    labels = tmp_path / "labels.csv"
    labels.write_text("path,identity\nalice/talk.mp4,Alice A\n")
    code, out, err = run_cli(capsys, "prepare", videos, "-o", cache, "--size", 64, "--labels", labels, "--json", "-q")
    assert code == 0
    again = json.loads(out)
    assert again["added"] == 0 and again["resumed"] == 4
    assert {c["identity"] for c in load_manifest(cache)["clips"]} == {"Alice A", "deep"}
    # a skipped file is tried again once it changed (or with --retry-skipped), and listed once
    shutil.copy(moving_clip[0], videos / "bob" / "broken.mp4")
    code, out, err = run_cli(capsys, "prepare", videos, "-o", cache, "--size", 64, "--json", "-q")
    third = json.loads(out)
    assert code == 0 and third["added"] == 1 and third["resumed"] == 3, err
    assert [s["source"] for s in third["skipped"]] == ["bob/noise.mp4"]
    code, out, err = run_cli(capsys, "prepare", videos, "-o", cache, "--size", 64, "--json", "-q", "--retry-skipped")
    assert code == 0 and json.loads(out)["resumed"] == 3 and err.count("skipped bob/noise.mp4") == 1
    assert len(load_manifest(cache)["skipped"]) == 1


def test_prepare_errors(capsys, tmp_path, moving_clip):
    code, _, err = run_cli(capsys, "prepare", tmp_path / "missing", "-o", tmp_path / "cache", "-q")
    assert_one_line_error(code, err)
    assert not (tmp_path / "cache").exists()
    videos = _folder(tmp_path, moving_clip)
    assert run_cli(capsys, "prepare", videos, "-o", tmp_path / "cache", "--size", 64, "-q")[0] == 0
    code, _, err = run_cli(capsys, "prepare", videos, "-o", tmp_path / "cache", "--size", 96, "-q")
    assert_one_line_error(code, err)
    assert "--size" in err
    code, _, err = run_cli(capsys, "prepare", videos, "-o", tmp_path / "c2", "--labels", tmp_path / "none.csv", "-q")
    assert_one_line_error(code, err)


def test_version_1_cache_is_upgraded_by_prepare(capsys, tmp_path, moving_clip):
    videos = _folder(tmp_path, moving_clip)
    cache = tmp_path / "cache"
    assert run_cli(capsys, "prepare", videos, "-o", cache, "--size", 64, "-q")[0] == 0
    clip = load_manifest(cache)["clips"][0]
    npz = cache / "clips" / f"{clip['name']}.npz"
    measured = np.load(npz)["landmarks68"]
    # the 68 landmarks are those of the crop (cut at the measuring size; here the stored 64-px
    # crop scaled up is measured again), not the frame's
    marks = Landmarks68(CropSpec(size=64))
    on_crops = np.stack([marks.on_crop(c) for c in np.load(cache / "clips" / f"{clip['name']}.npy")])
    assert np.abs(on_crops - measured).mean() < 1.0
    # an old cache: landmarks measured otherwise, version 1
    arrays = dict(np.load(npz))
    arrays["landmarks68"] = measured + 2.0
    np.savez(npz, **arrays)
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["version"] = 1
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="facevid prepare"):
        load_cache(cache)
    code, _, err = run_cli(capsys, "train", cache, "-o", tmp_path / "run", "--preset", "tiny", "-q")
    assert_one_line_error(code, err)
    assert run_cli(capsys, "prepare", videos, "-o", cache, "--size", 64, "-q")[0] == 0
    assert load_manifest(cache)["version"] == CACHE_VERSION
    np.testing.assert_allclose(np.load(npz)["landmarks68"], on_crops, atol=1e-4)
    assert len(load_cache(cache)) == 2
