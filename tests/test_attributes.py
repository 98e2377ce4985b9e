"""The measured attributes (facevid.face.attributes) on synthetic heads, whose landmarks are exact."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facevid.face.attributes import ATTRIBUTES, measure
from facevid.synthetic.factors import Identity, Motion
from facevid.synthetic.geometry import landmarks

# each synthetic motion factor, the attribute it drives, and the sign of the change
DRIVES = [("smile", "smile", 1), ("mouth_open", "mouth", 1), ("blink", "eyes", -1), ("blink", "left-eye", -1),
          ("blink", "right-eye", -1), ("brows", "brows", 1), ("yaw", "yaw", 1), ("pitch", "pitch", 1),
          ("roll", "roll", 1)]
STEPS = {"smile": 1.0, "mouth_open": 1.0, "blink": 0.9, "brows": 1.0, "yaw": 0.35, "pitch": 0.25, "roll": 0.3}


def test_every_attribute_is_measured_with_its_unit_and_range():
    marks = landmarks(Identity(), Motion(), size=256)
    values = measure(marks)
    assert set(values) == set(ATTRIBUTES)
    for name, attribute in ATTRIBUTES.items():
        assert attribute.low < attribute.high and attribute.unit and attribute.about
        assert np.isfinite(values[name])


@pytest.mark.parametrize("factor, name, sign", DRIVES)
def test_each_attribute_moves_with_its_own_factor_and_monotonically(factor, name, sign):
    """Stepping one factor of a synthetic head moves its attribute the right way at every step,
    by a good part of the attribute's range, while the other attributes move less than 15% of
    their own range (the pose measures under 7°). Not asked: one eye's aspect under a turn of the
    head (a turned eye is foreshortened)."""
    identity = Identity()
    amounts = np.linspace(0, STEPS[factor], 5)
    if factor in ("smile", "brows", "yaw", "pitch", "roll"):
        amounts = np.linspace(-STEPS[factor], STEPS[factor], 7)
    rows = [measure(landmarks(identity, Motion(**{factor: float(a)}), size=256)) for a in amounts]
    trace = np.array([r[name] for r in rows]) * sign
    assert np.all(np.diff(trace) > 0), (name, trace)
    span = ATTRIBUTES[name].high - ATTRIBUTES[name].low
    assert trace[-1] - trace[0] > 0.2 * span
    own = {n for f, n, _ in DRIVES if f == factor}
    for other, attribute in ATTRIBUTES.items():
        if other in own or (factor == "yaw" and other.endswith("-eye")):
            continue
        moved = np.ptp([r[other] for r in rows])
        limit = 7.0 if attribute.unit == "degrees" else 0.15 * (attribute.high - attribute.low)
        assert moved < limit, (factor, other, moved)


def test_expression_attributes_ignore_the_heads_place_size_and_roll():
    marks = landmarks(Identity(), Motion(smile=0.5, mouth_open=0.4, brows=0.3), size=256)
    a = math.radians(20)
    moved = 1.7 * marks @ np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]) + [40.0, -15.0]
    before, after = measure(marks), measure(moved)
    for name in ("smile", "mouth", "eyes", "left-eye", "right-eye", "brows", "yaw", "pitch"):
        assert after[name] == pytest.approx(before[name], abs=1e-6 if ATTRIBUTES[name].unit != "degrees" else 1e-3)
    assert after["roll"] - before["roll"] == pytest.approx(20.0, abs=1e-6)


def test_head_pose_changes_as_the_synthetic_head_turns():
    """The fitted yaw and pitch change by the head's own turn within 10% (the synthetic head's true
    angles), and neither moves when only the expression does."""
    identity = Identity()

    def pose(**motion):
        values = measure(landmarks(identity, Motion(**motion), size=256))
        return np.array([values["yaw"], values["pitch"]])

    turn = pose(yaw=0.4) - pose(yaw=-0.4)
    tilt = pose(pitch=0.3) - pose(pitch=-0.3)
    assert turn[0] == pytest.approx(math.degrees(0.8), rel=0.1) and abs(turn[1]) < 1.0
    assert tilt[1] == pytest.approx(math.degrees(0.6), rel=0.1) and abs(tilt[0]) < 1.0
    rest = pose()
    for expression in ({"smile": 1.0}, {"mouth_open": 1.0}, {"blink": 1.0}, {"brows": -1.0}):
        assert np.abs(pose(**expression) - rest).max() < 1.0, expression


def test_smile_is_the_mouth_corners_spread_plus_their_lift():
    marks = landmarks(Identity(), Motion(), size=256)
    eyes = np.linalg.norm(marks[42:48].mean(0) - marks[36:42].mean(0))
    base = measure(marks)["smile"]
    lifted, spread = marks.copy(), marks.copy()
    lifted[[48, 54], 1] -= 0.05 * eyes                     # both corners up (y is down)
    spread[48, 0] -= 0.05 * eyes
    spread[54, 0] += 0.05 * eyes
    assert measure(lifted)["smile"] - base == pytest.approx(0.05, abs=1e-3)
    assert measure(spread)["smile"] - base == pytest.approx(0.10, abs=2e-3)
