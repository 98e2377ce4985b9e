"""`facevid eval` end to end on a tiny model and synthetic clips; the identity meter."""

from __future__ import annotations

import json

import numpy as np

from facevid import demo
from facevid.crop import CropSpec, align_transform, cut_crop
from facevid.identity import FaceMeter, jitter, motion_error, temporal_identity
from facevid.prepare import write_synthetic_cache

from test_cli_track import assert_one_line_error, run_cli


def test_face_meter_on_the_astronaut():
    spec = CropSpec(size=128)
    crop = cut_crop(demo.astronaut(), align_transform(demo.ASTRONAUT_LANDMARKS, spec), 128)
    meter = FaceMeter(spec)
    same = np.linalg.norm(meter.embedding(crop) - meter.embedding(crop[:, ::-1].copy()))
    assert same < 0.4      # the same face mirrored is the same person
    marks = meter.landmarks(crop)
    assert marks.shape == (68, 2) and 0.25 * 128 < marks[36:48, 1].mean() < 0.55 * 128


def test_motion_and_temporal_measures():
    base = np.zeros((5, 68, 2))
    base[:, 36:42] = [0, 0]
    base[:, 42:48] = [10, 0]
    moving = base.copy()
    moving[:, 48:68, 1] += np.arange(5)[:, None]
    assert motion_error(moving, moving) == 0
    assert motion_error(base, moving) > 0
    assert jitter(moving) == 0
    e = np.random.default_rng(0).normal(size=(4, 128))
    assert np.allclose(temporal_identity(np.repeat(e[:1], 4, 0)), 1.0)
    assert temporal_identity(e)[1] < 0.5


def test_eval_cli(capsys, tmp_path, tiny_weights):
    cache = tmp_path / "cache"
    write_synthetic_cache(cache, clips=2, frames=8, size=32, seed=5)
    code, out, err = run_cli(capsys, "eval", tiny_weights, "--data", cache, "--max-frames", 6, "--steps", 1,
                             "--sheet", tmp_path / "sheet.png", "--json")
    assert code == 0, err
    table = json.loads(out)["self_reenactment"]
    assert {"model", "model, warp only", "copy source", "landmark warp"} <= set(table)
    assert table["_frames"] == 12 and (tmp_path / "sheet.png").is_file()
    code, _, err = run_cli(capsys, "eval", tiny_weights, "--data", tmp_path / "nothing")
    assert_one_line_error(code, err)
