"""The Python API, used as a program embedding facevid would: only names from `import facevid`."""

from __future__ import annotations

import subprocess
import sys

import pytest

import facevid


def test_import_is_light_and_lists_the_api():
    code = "import facevid, sys; print(sorted(m for m in ('torch', 'av', 'cv2', 'diffusers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert {"load_model", "transfer", "encode", "decode", "track", "FacevidError"} <= set(dir(facevid))
    with pytest.raises(AttributeError):
        facevid.no_such_thing


def test_one_model_serves_every_task(tmp_path, tiny_weights, photo, moving_clip):
    video, _ = moving_clip
    model = facevid.load_model(tiny_weights)
    moved = facevid.transfer(photo, video, tmp_path / "t.mp4", model=model, progress=False)
    assert moved.frames == 40 and moved.to_json()["output"].endswith("t.mp4")
    coded = facevid.encode(video, tmp_path / "c.fvl", model=model, progress=False)
    assert coded.frames == 40 and coded.bits_per_frame > 0
    made = facevid.decode(tmp_path / "c.fvl", tmp_path / "d.mp4", model=model, progress=False)
    assert made.frames == 40
    tracked = facevid.track(video, tmp_path / "k.mp4", progress=False)
    assert tracked.frames_with_face == 40


def test_errors_are_facevid_errors(tmp_path, tiny_weights, photo):
    with pytest.raises(facevid.InputError):
        facevid.transfer(tmp_path / "nobody.png", photo, tmp_path / "o.mp4", model=str(tiny_weights))
    with pytest.raises(facevid.FacevidError):
        facevid.load_model(tmp_path / "missing.safetensors")
    other = facevid.load_model(tiny_weights)
    facevid.encode(photo, tmp_path / "c.fvl", model=other, progress=False)
    stranger = facevid.FaceVid(other.cfg)   # not loaded from a file: no sha256 to name it by
    with pytest.raises(facevid.InputError):
        facevid.decode(tmp_path / "c.fvl", tmp_path / "d.mp4", model=stranger, progress=False)
