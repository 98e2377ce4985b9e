"""The classical landmark-warp baseline."""

import numpy as np

from facevid.eval.baselines import landmark_warp
from facevid.face.landmark_warp import piecewise_affine_warp


def _image(size=64):
    rng = np.random.default_rng(0)
    img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
    img[20:28, 30:38] = 255
    return img


def test_identity_warp_returns_the_image():
    img = _image()
    pts = np.array([[20.0, 20.0], [40.0, 22.0], [30.0, 40.0], [25.0, 50.0], [45.0, 45.0]])
    out = piecewise_affine_warp(img, pts, pts)
    assert np.abs(out.astype(int) - img).max() <= 1


def test_moving_landmarks_moves_the_content():
    img = _image()
    src = np.array([[34.0, 24.0], [15.0, 15.0], [50.0, 15.0], [15.0, 50.0], [50.0, 50.0]])
    dst = src.copy()
    dst[0] += [6, 8]                       # move the bright square's centre
    out = piecewise_affine_warp(img, src, dst)
    ys, xs = np.nonzero(out[..., 0] > 200)
    assert abs(xs.mean() - 40) < 2 and abs(ys.mean() - 32) < 2


def test_relative_driving_applies_the_drivers_change():
    img = _image()
    src = np.array([[34.0, 24.0], [15.0, 15.0], [50.0, 15.0], [15.0, 50.0], [50.0, 50.0]])
    ref = src + 3.0                        # the driver's own reference frame, elsewhere
    drv = ref.copy()
    drv[0] += [0, 5]
    out = landmark_warp(img, src, drv, ref)
    ys, _ = np.nonzero(out[..., 0] > 200)
    assert abs(ys.mean() - 29) < 2
