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


def _frames(path) -> list:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _psnr(a, b) -> float:
    import numpy as np

    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-10)))


def test_frame_level_transfer_is_the_file_task(tmp_path, tiny_weights, photo, moving_clip):
    """Arrays in, arrays out: the same frames the command writes (up to the video codec's loss)."""
    import numpy as np

    video, _ = moving_clip
    model = facevid.load_model(tiny_weights)
    image, driver = _frames(photo)[0], _frames(video)
    made = list(facevid.transfer_frames(image, iter(driver), model=model, window=7))
    assert len(made) == len(driver) and all(f.shape == image.shape and f.dtype == np.uint8 for f in made)
    facevid.transfer(photo, video, tmp_path / "t.mp4", model=model, window=7, crf=0, progress=False)
    written = _frames(tmp_path / "t.mp4")
    # equal up to x264's 4:2:0 chroma, and each frame the written frame of its own time
    same = [_psnr(a, b) for a, b in zip(made, written)]
    print(f"frame-level vs file: {min(same):.1f} dB at worst")
    assert min(same) > 35
    assert all(_psnr(made[i], written[i]) > _psnr(made[i], written[i + 1]) + 3 for i in range(len(made) - 1))
    assert max(np.abs(a.astype(int) - image).max() for a in made) > 20   # it is not the photo held still
    with pytest.raises(facevid.InputError):
        next(facevid.transfer_frames(image.astype(float), driver, model=model))
    # a weights file for a model (on the default device), and a driver with no face: the error says so
    blank = [np.zeros_like(driver[0])] * 3
    with pytest.raises(facevid.NoFaceError, match="the driver [(]3 frames[)]"):
        list(facevid.transfer_frames(image, blank, model=str(tiny_weights)))


def test_frame_level_codec_is_the_file_task(tmp_path, tiny_weights, moving_clip):
    import numpy as np

    video, _ = moving_clip
    model = facevid.load_model(tiny_weights)
    frames = _frames(video)
    codes = facevid.encode_frames(frames, model=model, window=5)
    facevid.encode(video, tmp_path / "c.fvl", model=model, window=5, progress=False)
    stored = facevid.read_codes(tmp_path / "c.fvl")
    assert np.array_equal(codes.codes, stored.codes) and np.array_equal(codes.reference, stored.reference)
    assert len(set(map(tuple, codes.codes))) > 1                       # the motion is in the codes
    made = list(facevid.decode_frames(stored, model=model, backgrounds=frames))
    facevid.decode(tmp_path / "c.fvl", tmp_path / "d.mp4", model=model, background=video, crf=0,
                   progress=False)
    written = _frames(tmp_path / "d.mp4")
    assert len(made) == len(frames) and min(_psnr(a, b) for a, b in zip(made, written)) > 35
    with pytest.raises(facevid.NoFaceError):
        facevid.encode_frames([np.zeros((96, 96, 3), np.uint8)] * 3, model=model)


def test_relative_transfer_gives_back_the_source_on_the_drivers_first_frame(tiny_weights, photo, moving_clip):
    """Relative motion is the driver's change since its first frame: that frame, whatever the
    model's warp makes of it (an untrained model's flow net here), gives back the photo itself,
    and the later frames move."""
    import numpy as np

    video, _ = moving_clip
    image, driver = _frames(photo)[0], _frames(video)[:6]
    made = list(facevid.transfer_frames(image, iter(driver), model=facevid.load_model(tiny_weights), steps=0))
    assert np.abs(made[0].astype(int) - image).max() <= 1
    assert np.abs(made[-1].astype(int) - image).max() > 20


def test_frame_level_edit_is_the_file_task(tmp_path, tiny_weights, moving_clip):
    """facevid.edit_frames: arrays in, arrays out, the frames `facevid.edit` writes; outside its
    span every frame is the input's own; bad edits raise ConfigError."""
    import numpy as np

    video, _ = moving_clip
    model = facevid.load_model(tiny_weights)
    frames = _frames(video)
    span = facevid.Span(0.4, 1.0, 0.2)
    made = list(facevid.edit_frames(iter(frames), shift={"smile": 0.2}, span=span, model=model))
    assert len(made) == len(frames)
    outside = [i for i in range(len(frames)) if span.weight(i / 25) == 0]
    inside = [i for i in range(len(frames)) if span.weight(i / 25) == 1]
    assert all(np.array_equal(made[i], frames[i]) for i in outside)
    assert all(np.abs(made[i].astype(int) - frames[i]).max() > 10 for i in inside)
    summary = facevid.edit(video, tmp_path / "e.mp4", shift={"smile": 0.2}, span=span, model=model, crf=0,
                           progress=False)
    assert summary.frames == len(frames) and summary.edited_frames == len(frames) - len(outside)
    written = _frames(tmp_path / "e.mp4")
    assert min(_psnr(a, b) for a, b in zip(made, written)) > 35
    with pytest.raises(facevid.ConfigError, match="unknown attribute 'grin'"):
        list(facevid.edit_frames(frames, shift={"grin": 1.0}, model=model))
    with pytest.raises(facevid.ConfigError, match="out of range"):
        list(facevid.edit_frames(frames, target={"mouth": 3.0}, model=model))
