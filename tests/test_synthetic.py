"""Tests of the procedural talking-head renderer (facevid.synthetic)."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from facevid import synthetic as syn
from facevid.synthetic import (
    HAIR_STYLES,
    IDENTITY_FACTORS,
    MOTION_FACTORS,
    MOTION_RANGES,
    Identity,
    Motion,
    identity_from_vector,
    identity_vector,
    landmarks,
    landmarks_clip,
    make_dataset,
    motion_from_vector,
    motion_vector,
    random_identity,
    random_motion_sequence,
    render,
    render_clip,
)


def _ids(n: int, seed: int = 0) -> list[Identity]:
    rng = np.random.default_rng(seed)
    return [random_identity(rng) for _ in range(n)]


def _diff_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int32) - b.astype(np.int32)).sum(-1).astype(np.float64)


def _fraction_in(d: np.ndarray, rows: tuple[float, float], cols: tuple[float, float]) -> float:
    s = d.shape[0]
    r0, r1 = int(rows[0] * s), int(math.ceil(rows[1] * s))
    c0, c1 = int(cols[0] * s), int(math.ceil(cols[1] * s))
    total = d.sum()
    assert total > 0, "the factor changed nothing"
    return float(d[r0:r1, c0:c1].sum() / total)


# ----------------------------------------------------------------------------- basics


def test_factor_names_and_vectors_round_trip():
    assert MOTION_FACTORS == ("yaw", "pitch", "roll", "mouth_open", "smile", "blink", "brows")
    assert set(MOTION_RANGES) == set(MOTION_FACTORS)
    assert len(set(IDENTITY_FACTORS)) == len(IDENTITY_FACTORS)
    for name in ("face_width", "face_height", "jaw", "skin_r", "skin_g", "skin_b", "hair_style", "eye_spacing", "nose_length"):
        assert name in IDENTITY_FACTORS
    for idn in _ids(5):
        v = identity_vector(idn)
        assert v.shape == (len(IDENTITY_FACTORS),) and v.dtype == np.float64
        assert v[IDENTITY_FACTORS.index("face_width")] == idn.face_width
        assert v[IDENTITY_FACTORS.index("skin_g")] == idn.skin[1]
        assert identity_from_vector(v) == idn
    m = Motion(yaw=0.1, pitch=-0.2, roll=0.3, mouth_open=0.4, smile=-0.5, blink=0.6, brows=0.7)
    np.testing.assert_array_equal(motion_vector(m), [0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7])
    assert motion_from_vector(motion_vector(m)) == m
    with pytest.raises(ValueError):
        identity_from_vector(np.zeros(3))


def test_random_identity_is_reproducible_and_in_range():
    a, b = _ids(20, seed=7), _ids(20, seed=7)
    assert a == b
    assert _ids(3, seed=8) != a[:3]
    styles = {i.hair_style for i in _ids(60, seed=1)}
    assert styles == set(range(len(HAIR_STYLES)))
    for idn in a:
        for name, (lo, hi) in syn.IDENTITY_RANGES.items():
            assert lo <= getattr(idn, name) <= hi, name
        for c in (idn.skin, idn.hair, idn.eyes, idn.lips, idn.background, idn.clothes):
            assert len(c) == 3 and all(0.0 <= x <= 1.0 for x in c)


@pytest.mark.parametrize("size", [64, 128])
def test_render_shapes_dtypes_and_determinism(size):
    idn = _ids(1, seed=3)[0]
    m = Motion(yaw=0.2, pitch=-0.1, roll=0.05, mouth_open=0.5, smile=0.3, blink=0.2, brows=-0.4)
    state = np.random.get_state()
    a = render(idn, m, size)
    b = render(idn, m, size)
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # no global RNG use
    assert a.shape == (size, size, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    # a fresh, equal (not identical) identity renders the same too
    np.testing.assert_array_equal(render(identity_from_vector(identity_vector(idn)), m, size), a)
    clip = render_clip(idn, [m, Motion()], size)
    assert clip.shape == (2, size, size, 3) and clip.dtype == np.uint8
    np.testing.assert_array_equal(clip[0], a)
    assert render_clip(idn, [], size).shape == (0, size, size, 3)
    lm = landmarks(idn, m, size)
    assert lm.shape == (68, 2) and np.issubdtype(lm.dtype, np.floating)
    np.testing.assert_array_equal(lm, landmarks(idn, m, size))


def test_unusual_identities():
    idn = _ids(1, seed=3)[0]
    listy = dataclasses.replace(idn, skin=list(idn.skin))  # unhashable: no caching, same result
    np.testing.assert_array_equal(render(listy, Motion(yaw=0.1), 64), render(idn, Motion(yaw=0.1), 64))
    with pytest.raises(ValueError):
        render(dataclasses.replace(idn, hair_style=len(HAIR_STYLES)), Motion())
    with pytest.raises(ValueError):
        render(idn, Motion(), 4)
    # expression factors outside their range are clamped, never crash
    a = render(idn, Motion(mouth_open=3.0, smile=-5.0, blink=2.0, brows=9.0), 64)
    b = render(idn, Motion(mouth_open=1.0, smile=-1.0, blink=1.0, brows=1.0), 64)
    np.testing.assert_array_equal(a, b)


def test_landmarks_scale_with_size():
    idn = _ids(1, seed=4)[0]
    m = Motion(yaw=-0.3, mouth_open=0.7)
    a, b = landmarks(idn, m, 64), landmarks(idn, m, 128)
    np.testing.assert_allclose((a + 0.5) * 2, b + 0.5, atol=1e-9)
    np.testing.assert_allclose(landmarks_clip(idn, [m, m], 64), np.stack([a, a]))


def test_all_hair_styles_render_and_differ():
    base = dataclasses.replace(_ids(1, seed=5)[0], hair=(0.1, 0.08, 0.06), skin=(0.9, 0.72, 0.6))
    frames = [render(dataclasses.replace(base, hair_style=k), Motion(), 64) for k in range(len(HAIR_STYLES))]
    for i, j in itertools.combinations(range(len(frames)), 2):
        assert _diff_map(frames[i], frames[j]).mean() > 3.0, (HAIR_STYLES[i], HAIR_STYLES[j])


def test_aligned_crop_layout():
    """Eyes about 40% from the top, chin near 85-90%, head centred."""
    for idn in _ids(10, seed=6):
        lm = landmarks(idn, Motion(), 64) + 0.5  # in units where the crop is [0, 64]
        eye_y = lm[36:48, 1].mean() / 64
        chin_y = lm[8, 1] / 64
        assert 0.38 < eye_y < 0.42
        assert 0.82 < chin_y < 0.91
        assert abs(lm[:, 0].mean() / 64 - 0.5) < 0.02


# ----------------------------------------------------------------------------- factors


@pytest.mark.parametrize("idn", _ids(4, seed=11))
def test_expression_factors_change_the_right_region(idn):
    f0 = render(idn, Motion(), 64)

    def frac(rows, cols, **kw):
        return _fraction_in(_diff_map(f0, render(idn, Motion(**kw), 64)), rows, cols)

    lower_middle = ((0.55, 1.0), (0.1, 0.9))
    eye_band = ((0.3, 0.5), (0.1, 0.9))
    above_eyes = ((0.2, 0.42), (0.1, 0.9))
    assert frac(*lower_middle, mouth_open=1.0) > 0.85
    assert frac(*eye_band, blink=1.0) > 0.95
    assert frac(*above_eyes, brows=1.0) > 0.95
    assert frac(*above_eyes, brows=-1.0) > 0.95
    d = _diff_map(f0, render(idn, Motion(smile=1.0), 64))
    assert _fraction_in(d, (0.55, 0.9), (0.2, 0.8)) + _fraction_in(d, (0.3, 0.5), (0.1, 0.9)) > 0.95


@pytest.mark.parametrize("idn", _ids(4, seed=12))
def test_expression_factors_move_the_right_landmarks(idn):
    S = 128
    lm0 = landmarks(idn, Motion(), S)
    # mouth_open: inner lips part, lower lip and chin go down, eyes stay
    lo = landmarks(idn, Motion(mouth_open=1.0), S)
    assert abs(lm0[66, 1] - lm0[62, 1]) < 0.5
    assert lo[66, 1] - lo[62, 1] > 0.05 * S
    assert lo[8, 1] > lm0[8, 1] + 0.02 * S
    np.testing.assert_allclose(lo[17:48], lm0[17:48])
    # blink closes both eyes
    lb = landmarks(idn, Motion(blink=1.0), S)
    for top, bottom in ((37, 41), (38, 40), (43, 47), (44, 46)):
        assert lm0[bottom, 1] - lm0[top, 1] > 0.02 * S
        assert abs(lb[bottom, 1] - lb[top, 1]) < 1e-6
    # brows up / down
    assert np.all(landmarks(idn, Motion(brows=1.0), S)[17:27, 1] < lm0[17:27, 1] - 0.015 * S)
    assert np.all(landmarks(idn, Motion(brows=-1.0), S)[17:27, 1] > lm0[17:27, 1] + 0.015 * S)
    # smile lifts the mouth corners, frown lowers them
    centre = lambda lm: lm[[62, 66], 1].mean()  # noqa: E731
    ls, lf = landmarks(idn, Motion(smile=1.0), S), landmarks(idn, Motion(smile=-1.0), S)
    for c in (48, 54):
        assert ls[c, 1] < centre(ls) - 0.01 * S
        assert lf[c, 1] > centre(lf) + 0.01 * S
    assert ls[54, 0] - ls[48, 0] > lm0[54, 0] - lm0[48, 0]  # and widens it


def _eye_angle(lm: np.ndarray) -> float:
    a, b = lm[36:42].mean(0), lm[42:48].mean(0)
    return math.atan2(b[1] - a[1], b[0] - a[0])


@pytest.mark.parametrize("idn", _ids(4, seed=13))
def test_pose_factors_move_the_face(idn):
    S = 64
    lm0 = landmarks(idn, Motion(), S)
    nose0 = lm0[30]
    for yaw in (-0.5, -0.25, 0.25, 0.5):
        d = landmarks(idn, Motion(yaw=yaw), S)[30] - nose0
        assert np.sign(d[0]) == np.sign(yaw) and abs(d[0]) > 0.15 * abs(yaw) * S
        assert abs(d[1]) < 0.3 * abs(d[0])
    for pitch in (-0.3, 0.3):
        d = landmarks(idn, Motion(pitch=pitch), S)[30] - nose0
        assert np.sign(d[1]) == np.sign(pitch) and abs(d[1]) > 0.1 * abs(pitch) * S
        assert abs(d[0]) < 0.3 * abs(d[1])
    assert abs(_eye_angle(lm0)) < 1e-6
    for roll in (-0.3, -0.1, 0.2, 0.3):
        assert abs(_eye_angle(landmarks(idn, Motion(roll=roll), S)) - roll) < 0.01
    # yaw: the far side compresses (eye widths), the near side does not shrink as much
    ly = landmarks(idn, Motion(yaw=0.5), S)
    w_left = ly[39, 0] - ly[36, 0]
    w_right = ly[45, 0] - ly[42, 0]
    assert w_right < 0.8 * w_left  # turning right: the image-right eye is the far one
    # the rendered image follows: turning moves image content
    assert _diff_map(render(idn, Motion(), S), render(idn, Motion(yaw=0.3), S)).mean() > 5


def test_identity_changes_appearance_not_motion():
    ids = _ids(6, seed=21)
    m = Motion(yaw=0.2, mouth_open=0.6)
    frames = [render(i, m, 64) for i in ids]
    for a, b in itertools.combinations(frames, 2):
        assert _diff_map(a, b).mean() > 20.0  # clearly different people
    # the same motion change displaces mouth/eye landmarks the same way for everyone
    changes = [Motion(mouth_open=1.0), Motion(blink=1.0), Motion(yaw=0.4), Motion(pitch=0.3), Motion(roll=0.3)]
    for mc in changes:
        disp = np.stack([(landmarks(i, mc, 64) - landmarks(i, Motion(), 64))[36:68].ravel() for i in ids])
        mean = disp.mean(0)
        for d in disp:
            cos = d @ mean / (np.linalg.norm(d) * np.linalg.norm(mean))
            assert cos > 0.9, mc


def test_landmarks_stay_inside_the_image_over_the_factor_ranges():
    corners = list(itertools.product(*[MOTION_RANGES[n] for n in MOTION_FACTORS]))
    for idn in _ids(4, seed=31):
        for c in corners:
            lm = landmarks(idn, Motion(*c), 64)
            assert lm.min() >= 0.0 and lm.max() <= 63.0, c


def test_landmarks_follow_the_rendered_geometry():
    S = 128
    for idn in _ids(4, seed=41):
        img = render(idn, Motion(mouth_open=1.0), S).astype(np.float64)
        lm = landmarks(idn, Motion(mouth_open=1.0), S)
        # the mouth interior between the inner lips is dark
        x, y = np.round((lm[62] + lm[66]) / 2 + [0, 0.01 * S]).astype(int)
        assert img[y, x].mean() < 90
        # the lower-lip landmarks enclose lip colour: redder than the cheek (shading keeps hue)
        closed = render(idn, Motion(), S).astype(np.float64) + 1.0
        lmc = landmarks(idn, Motion(), S)
        lip = closed[tuple(np.round((lmc[57] + lmc[66]) / 2).astype(int)[::-1])]
        cheek = closed[tuple(np.round((lmc[48] + lmc[4]) / 2).astype(int)[::-1])]
        assert lip[0] / lip[1:].sum() > 1.15 * cheek[0] / cheek[1:].sum()
        # jaw landmarks lie on the face outline: 3 px inside is face, 3 px outside is not
        # (recoloured so that no palette coincidence hides the outline)
        blue = (0.1, 0.1, 0.8)
        plain = dataclasses.replace(idn, skin=(0.7, 0.7, 0.7), hair=blue, background=blue, clothes=blue)
        img = render(plain, Motion(), S).astype(np.float64)
        np.testing.assert_array_equal(landmarks(plain, Motion(), S), lmc)
        # open eyes: around the eye centre is eye (iris, pupil); closed eyes: eyelid skin
        c = np.round(lmc[[37, 38, 40, 41]].mean(0)).astype(int)
        shut = render(plain, Motion(blink=1.0), S).astype(np.float64)
        patch = (slice(c[1] - 1, c[1] + 2), slice(c[0] - 1, c[0] + 2))
        assert np.abs(img[patch].mean((0, 1)) - shut[patch].mean((0, 1))).sum() > 60
        centre = lmc[27:36].mean(0)
        for k in range(3, 14):
            n = (lmc[k] - centre) / np.linalg.norm(lmc[k] - centre)
            xi, yi = np.round(lmc[k] - 3 * n).astype(int)
            xo, yo = np.round(lmc[k] + 3 * n).astype(int)
            assert np.abs(img[yi, xi] - img[yo, xo]).sum() > 40, k


# ----------------------------------------------------------------------------- motion tracks


def _track(seed: int, n: int = 400, fps: float = 25.0) -> np.ndarray:
    return np.stack([motion_vector(m) for m in random_motion_sequence(np.random.default_rng(seed), n, fps)])


def test_motion_sequence_basics():
    rng = np.random.default_rng(0)
    ms = random_motion_sequence(rng, 50)
    assert len(ms) == 50 and all(isinstance(m, Motion) for m in ms)
    assert random_motion_sequence(np.random.default_rng(0), 0) == []
    np.testing.assert_array_equal(_track(3), _track(3))
    assert not np.array_equal(_track(3), _track(4))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_motion_sequence_is_smooth_in_range_and_covers_it(seed):
    v = _track(seed, 400)
    lo = np.array([MOTION_RANGES[n][0] for n in MOTION_FACTORS])
    hi = np.array([MOTION_RANGES[n][1] for n in MOTION_FACTORS])
    assert np.all(v >= lo) and np.all(v <= hi)
    d = np.abs(np.diff(v, axis=0))
    idx = {n: i for i, n in enumerate(MOTION_FACTORS)}
    # slow factors: small steps at 25 fps
    for n, step in (("yaw", 0.08), ("pitch", 0.06), ("roll", 0.05), ("smile", 0.12), ("brows", 0.3)):
        assert d[:, idx[n]].max() < step, n
        assert d[:, idx[n]].mean() < step / 2.5, n
    # fast factors (syllables, blinks) still change gradually (several frames per event)
    for n in ("mouth_open", "blink"):
        assert d[:, idx[n]].max() < 0.8, n
    # coverage over 16 s
    for n in ("yaw", "pitch", "roll", "smile", "brows"):
        span = v[:, idx[n]].max() - v[:, idx[n]].min()
        assert span > 0.45 * (hi[idx[n]] - lo[idx[n]]), n
    for n in ("mouth_open", "blink"):
        assert v[:, idx[n]].max() > 0.8 and v[:, idx[n]].min() < 0.05, n


def test_motion_sequence_has_talking_rhythm():
    v = _track(5, 750)  # 30 s
    mouth = v[:, MOTION_FACTORS.index("mouth_open")]
    blink = v[:, MOTION_FACTORS.index("blink")]
    # syllables: about 2.5-7 mouth openings per second while speaking
    peaks = np.sum((mouth[1:-1] > mouth[:-2]) & (mouth[1:-1] >= mouth[2:]) & (mouth[1:-1] > 0.2))
    speaking = np.mean(mouth > 0.02) * 30
    assert 2.5 < peaks / speaking < 7.5
    # blinks every few seconds
    blinks = np.sum((blink[1:] > 0.5) & (blink[:-1] <= 0.5))
    assert 4 <= blinks <= 20
    # higher frame rate -> smaller steps for the same motion
    d25 = np.abs(np.diff(_track(5, 250, 25.0), axis=0)).max(0)
    d50 = np.abs(np.diff(_track(5, 500, 50.0), axis=0)).max(0)
    assert np.all(d50 <= d25 + 1e-9)


# ----------------------------------------------------------------------------- data set


def test_make_dataset():
    ds = make_dataset(3, 5, size=32, seed=9)
    assert ds["clips"].shape == (3, 5, 32, 32, 3) and ds["clips"].dtype == np.uint8
    assert ds["motion"].shape == (3, 5, len(MOTION_FACTORS)) and ds["motion"].dtype == np.float32
    assert ds["identity"].shape == (3, len(IDENTITY_FACTORS)) and ds["identity"].dtype == np.float32
    assert ds["landmarks"].shape == (3, 5, 68, 2) and ds["landmarks"].dtype == np.float32
    again = make_dataset(3, 5, size=32, seed=9)
    for k in ds:
        np.testing.assert_array_equal(ds[k], again[k])
    # rows are consistent with the public functions
    idn = identity_from_vector(ds["identity"][1].astype(np.float64))
    m = motion_from_vector(ds["motion"][1, 2].astype(np.float64))
    assert np.abs(render(idn, m, 32).astype(int) - ds["clips"][1, 2]).max() <= 2  # float32 round trip
    np.testing.assert_allclose(landmarks(idn, m, 32), ds["landmarks"][1, 2], atol=0.05)
    assert len({ds["identity"][i].tobytes() for i in range(3)}) == 3
