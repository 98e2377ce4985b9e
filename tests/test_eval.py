"""`facevid eval` end to end on a tiny model and synthetic clips; the identity meter; the
synthetic-head factor estimator and benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli_track import assert_one_line_error, run_cli

from facevid import demo, synthetic
from facevid.config import PRESETS
from facevid.eval.factors import fit_estimator, synthetic_benchmark
from facevid.eval.reenactment import RECONSTRUCTION, Scores, akd, bits_per_frame, mouth_opening
from facevid.face.crop import CropSpec, align_transform, cut_crop
from facevid.face.identity import FaceMeter, jitter, motion_error, temporal_identity
from facevid.train.prepare import write_synthetic_cache
from facevid.weights import load_weights


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
    # in the driver's first frame's eye distances (10 px): the mouth 2 px off on average
    assert motion_error(base, moving) == pytest.approx(np.arange(5).mean() * 20 / 68 / 10)
    zoomed = moving.copy()
    zoomed[1:] *= 2   # the eyes' distance doubles after frame 0: the first frame's still sets the unit
    assert motion_error(zoomed, zoomed) == 0 and motion_error(moving, zoomed) == pytest.approx(
        np.linalg.norm(zoomed - zoomed[:1] - (moving - moving[:1]), axis=-1).mean() / 10)
    assert jitter(moving) == 0
    e = np.random.default_rng(0).normal(size=(4, 128))
    assert np.allclose(temporal_identity(np.repeat(e[:1], 4, 0)), 1.0)
    assert temporal_identity(e)[1] < 0.5


def test_mouth_opening_and_mouth_psnr():
    marks = np.zeros((68, 2))
    marks[36:42], marks[42:48] = [0, 0], [20, 0]                      # IOD 20
    assert mouth_opening(marks) == 0
    marks[[61, 62, 63], 1] = 40
    marks[[67, 66, 65], 1] = 44
    assert mouth_opening(marks) == pytest.approx(0.2)
    real = np.zeros((40, 40, 3), np.uint8)
    fake = real.copy()
    fake[:5] = 255                                                   # wrong far from the mouth only
    scores = Scores()
    mouth = np.array([[15.0, 20.0], [25.0, 26.0]])
    scores.add_mouth("far", real, fake, mouth)
    fake[22, 20] = 255                                               # ... and now inside it
    scores.add_mouth("inside", real, fake, mouth)
    table = scores.table()
    assert table["far"]["mouth_psnr"] > 90 and table["inside"]["mouth_psnr"] < 30


def test_akd_and_bits_per_frame():
    real = np.zeros((68, 2))
    real[45] = [10, 0]
    assert akd(real, real) == 0 and akd(real, real + [0, 1]) == pytest.approx(0.1)
    tiny = PRESETS["tiny"]                                   # 4 groups of 8 codes + 16 flow levels of 4 bits
    still = bits_per_frame(tiny, np.zeros((16, 20), int))
    frames = np.arange(16)[:, None]
    spread = bits_per_frame(tiny, np.concatenate([np.tile(frames % 8, (1, 4)), np.tile(frames, (1, 16))], 1))
    assert still["nominal"] == still["stored"] == 76 and still["entropy"] == 0 and spread["entropy"] == 76


@pytest.fixture(scope="module")
def estimator():
    """The benchmark's default estimator at the tiny model's crop size (fitted once, ~15 s)."""
    return fit_estimator(PRESETS["tiny"].out_size)


def test_factor_estimator_reads_held_out_heads(estimator):
    # held-out R² measured at 32 px: yaw 0.99, pitch 0.97, roll 0.98, mouth_open 0.73,
    # face_width 0.94, skin/background 1.00; smile 0.23 and blink 0.48 are not measurable
    r2 = estimator.r2
    assert min(r2["yaw"], r2["roll"], r2["skin_g"], r2["background_b"]) > 0.9 and r2["pitch"] > 0.85
    assert r2["mouth_open"] > 0.55 and r2["face_width"] > 0.8
    rng = np.random.default_rng(123)
    identity, motion = synthetic.random_identity(rng), synthetic.Motion(yaw=0.4, mouth_open=0.9)
    values = estimator(synthetic.render(identity, motion, 32)[None])[0]
    yaw = len(synthetic.IDENTITY_FACTORS) + synthetic.MOTION_FACTORS.index("yaw")
    assert abs(values[yaw] - 0.4) < 0.15


def test_synthetic_benchmark_is_bracketed_by_the_baselines(one_thread, tiny_weights, estimator):
    result = synthetic_benchmark(load_weights(tiny_weights), pairs=3, frames=12, steps=1, estimator=estimator)
    methods = result["methods"]
    copy, paste = methods["copy source"], methods["paste driver"]
    assert set(methods) == {"model", "copy source", "paste driver"}
    assert copy["identity"] < 0.3 * paste["identity"]       # measured 0.19 vs 1.42
    assert paste["motion"] < 0.6 * copy["motion"]           # measured 0.11 vs 0.39
    assert paste["yaw"] < copy["yaw"] and copy["psnr"] > paste["psnr"]
    assert "yaw" in result["motion_factors"] and "skin_r" in result["identity_factors"]


def test_eval_cli(capsys, tmp_path, tiny_weights, estimator):
    cache = tmp_path / "cache"
    write_synthetic_cache(cache, clips=2, frames=8, size=32, seed=5)
    code, out, err = run_cli(capsys, "eval", tiny_weights, "--data", cache, "--max-frames", 6, "--steps", 1,
                             "--sheet", tmp_path / "sheet.png", "--synthetic", "--json")
    assert code == 0, err
    result = json.loads(out)
    table = result["self_reenactment"]
    assert {"model", RECONSTRUCTION, "model, warp only", "copy source", "landmark warp"} <= set(table)
    assert {"psnr", "ssim", "l1", "akd", "no_face", "mouth_psnr"} <= set(table["model"])
    assert table["_frames"] == 12 and 0 <= table["_mouth_frames"] <= 10 and (tmp_path / "sheet.png").is_file()
    assert table["_bits_per_frame"]["nominal"] == 76 and table["_reconstruction_fps"] > 0
    synthetic_table = result["synthetic"]
    assert {"identity", "motion", "psnr", *synthetic.MOTION_FACTORS} <= set(synthetic_table["methods"]["model"])
    assert synthetic_table["estimator"]["r2"]["yaw"] > 0.9 and (tmp_path / "sheet_synthetic.png").is_file()
    code, _, err = run_cli(capsys, "eval", tiny_weights, "--data", tmp_path / "nothing")
    assert_one_line_error(code, err)
    code, _, err = run_cli(capsys, "eval", tiny_weights)
    assert_one_line_error(code, err)


def test_each_frame_is_scored_against_its_own_real_frame():
    """Methods that return the real frames exactly, one frame late, or the first frame held:
    only the exact one scores perfectly, and being late costs (a score taken against the
    wrong real frame cannot tell them apart)."""
    from facevid import demo
    from facevid.config import PRESETS
    from facevid.eval.reenactment import LandmarkMeter, _score_clip
    from facevid.face.crop import CropSpec, align_transform, cut_crop, transform_points
    from facevid.face.landmark_warp import piecewise_affine_warp

    cfg = PRESETS["small"]
    spec = CropSpec(size=cfg.out_size, margin=cfg.crop_margin, center_y=cfg.crop_center_y)
    photo, marks = demo.astronaut(), demo.talking_landmarks(10, seed=1)
    matrix = align_transform(demo.ASTRONAUT_LANDMARKS, spec)
    real = np.stack([cut_crop(piecewise_affine_warp(photo, demo.ASTRONAUT_LANDMARKS68, m), matrix, spec.size)
                     for m in marks])
    crop_marks = np.stack([transform_points(matrix, m) for m in marks])
    methods = {"exact": real.copy(), "one frame late": np.concatenate([real[:1], real[:-1]]),
               "copy source": np.repeat(real[:1], len(real), 0)}
    scores = Scores()
    _score_clip(scores, LandmarkMeter(cfg), real, crop_marks, methods)
    table = scores.table()
    print({name: (round(row["psnr"], 1), row["akd"]) for name, row in table.items()})
    assert table["exact"]["psnr"] > 60 and table["exact"]["akd"] == pytest.approx(0, abs=1e-9)
    for worse in ("one frame late", "copy source"):
        assert table[worse]["psnr"] < table["exact"]["psnr"] - 10 and table[worse]["akd"] > 0


def test_eval_cross_cli(capsys, tmp_path, tiny_weights):
    """`eval --cross`: each clip's first frame driven by the next clip's person; its table,
    printed and as JSON, and its sheet."""
    cache = tmp_path / "cache"
    write_synthetic_cache(cache, clips=3, frames=8, size=32, seed=7)
    code, out, err = run_cli(capsys, "eval", tiny_weights, "--data", cache, "--max-frames", 6, "--steps", 0,
                             "--cross", "--sheet", tmp_path / "sheet.png", "--json")
    assert code == 0, err
    result = json.loads(out)
    cross = result["cross_reenactment"]
    assert set(cross) == {"model", "copy source", "paste driver", "landmark warp"}
    # the driver pasted as it is: its motion is the driver's exactly, its identity over time the driver's own
    assert cross["paste driver"]["motion"] == 0 and cross["paste driver"]["tl_id"] == pytest.approx(1.0)
    for row in cross.values():
        assert {"identity", "same_person", "motion", "jitter", "tl_id", "tg_id"} <= set(row)
        assert all(np.isfinite(v) for v in row.values() if isinstance(v, float))
    assert cross["copy source"]["motion"] > 0 and (tmp_path / "sheet_cross.png").is_file()
    from facevid.eval.run import tables  # what the command prints without --json

    printed = tables(result)
    assert "cross-reenactment" in printed and "| copy source |" in printed and "self-reenactment" in printed


def test_jitter_and_temporal_identity_on_known_values():
    marks = np.zeros((3, 68, 2))
    marks[:, 42:48, 0] = 10                           # eye distance 10
    marks[:, :, 1] += (np.arange(3.0) ** 2)[:, None]  # every point accelerates: second difference 2 px
    assert jitter(marks) == pytest.approx(2 / 10)
    e = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]])   # cosines 0.6 (0-1), 0.8 (1-2), 0 (0-2)
    local, overall = temporal_identity(e)
    assert local == pytest.approx(0.7) and overall == pytest.approx(1.4 / 3)


def test_mouth_psnr_looks_only_at_the_mouths_box():
    real = np.zeros((64, 64, 3), np.uint8)
    fake = real.copy()
    fake[50:] = 200                                   # changed below the mouth's box only
    mouth = np.array([[20.0, 30.0], [44.0, 30.0], [32.0, 38.0]])
    scores = Scores()
    scores.add_mouth("m", real, fake, mouth)
    assert scores.table()["m"]["mouth_psnr"] > 140   # identical there (the mse is floored at 1e-10)
    fake[36, 32] = 255                                # and a change inside it counts
    scores.add_mouth("n", real, fake, mouth)
    assert scores.table()["n"]["mouth_psnr"] < 60


def test_self_reenactment_makes_each_row_as_named(tmp_path, tiny_weights, monkeypatch):
    """Each row of the table is made with the settings its name gives (the model with the steps
    asked for, the 1-step mean, the warp alone from landmarks, keypoints and codes); the model's
    frames/s sums every clip's time; the share of real frames without a face is over all clips."""
    from types import SimpleNamespace

    from facevid.eval import reenactment as R
    from facevid.io.cache import load_cache

    cache = tmp_path / "cache"
    write_synthetic_cache(cache, clips=2, frames=6, size=32, seed=7)
    calls = []
    reenact, reconstruct, score = R.reenact, R.reconstruct, R._score_clip

    def spy_reenact(model, source, driver, **kw):
        calls.append((kw.get("steps"), kw.get("motion")))
        return reenact(model, source, driver, **kw)

    def spy_reconstruct(model, frames, **kw):
        calls.append(("reconstruct", kw.get("steps")))
        return reconstruct(model, frames, **kw)

    clock = iter(range(10_000))
    monkeypatch.setattr(R, "reenact", spy_reenact)
    monkeypatch.setattr(R, "reconstruct", spy_reconstruct)
    monkeypatch.setattr(R, "_score_clip", lambda *args: (3, score(*args)[1]))   # 3 face-less real frames a clip
    monkeypatch.setattr(R, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))   # 1 s a reading
    clips = load_cache(cache)
    table = R.self_reenactment(load_weights(tiny_weights), clips, max_frames=5, steps=2)
    assert calls == [(2, None), ("reconstruct", 2), (1, None), (0, None), (0, "keypoints"), (0, "codes")] * 2
    assert table["_frames"] == 10
    assert table["_model_fps"] == pytest.approx(10 / 2) and table["_reconstruction_fps"] == pytest.approx(10 / 2)
    assert table["_real_no_face"] == pytest.approx(2 * 3 / (10 - 2))


def test_score_clip_counts_the_real_frames_without_a_face():
    from facevid.eval.reenactment import _score_clip

    real = np.zeros((4, 32, 32, 3), np.uint8)
    real[2] += 1                                       # the meter finds no face in this one
    marks = np.zeros((4, 68, 2))
    marks[:, 42:48, 0] = 10                            # eye distance 10, the mouth still

    def meter(crop):
        return None if crop.max() == 1 else np.zeros((68, 2))

    scores = Scores()
    assert _score_clip(scores, meter, real, marks, {"copy": real[:1].repeat(4, 0)}) == (1, 0)
    assert scores.table()["copy"]["psnr"] > 0
