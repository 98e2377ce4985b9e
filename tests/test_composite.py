"""Transfer's paste-back as one warp of the source frame (facevid/face/composite.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facevid.face.composite import Composer, grid_positions
from facevid.face.crop import head_change
from facevid.pipeline import Parts

SIZE = 64                                                   # the model's crop side
TRANSFORM = np.array([[0.5, 0.0, -20.0], [0.0, 0.5, -20.0]])   # frame x = 40 + 2 u: the crop covers 40..168


def identity_grid(f: int = 16) -> np.ndarray:
    c = (np.arange(f, dtype=np.float32) * 2 + 1) / f - 1
    xs, ys = np.meshgrid(c, c)
    return np.stack([xs, ys], -1)


def shifted(dx_crop_px: float, f: int = 16) -> np.ndarray:
    """A backward grid taking each crop pixel's content from `dx_crop_px` to its right."""
    grid = identity_grid(f)
    grid[..., 0] += dx_crop_px * 2 / SIZE
    return grid


def nothing_painted() -> np.ndarray:
    return np.zeros((SIZE, SIZE, 3), np.float32)


@pytest.fixture
def texture() -> np.ndarray:
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 255, (50, 50, 3)).astype(np.float32)
    return cv2.resize(noise, (200, 200), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def test_still_model_output_leaves_the_frame_as_it_is(texture):
    compose = Composer(SIZE, texture, TRANSFORM)
    out = compose(texture, TRANSFORM, None, Parts(identity_grid(), nothing_painted()))
    assert np.array_equal(out, texture)
    still = compose(texture, TRANSFORM, head_change(TRANSFORM, TRANSFORM), Parts(identity_grid(), nothing_painted()))
    assert np.array_equal(still, texture)


def test_the_models_grid_moves_the_face_at_the_frames_own_pixels(texture):
    """4 crop pixels of the model's flow are 8 frame pixels here: inside the crop the output is
    the photo moved by exactly that, outside the crop it is the photo untouched."""
    out = Composer(SIZE, texture, TRANSFORM)(texture, TRANSFORM, None, Parts(shifted(4), nothing_painted()))
    inner = (slice(80, 130), slice(80, 130))   # where the model's positions hold (crop_mask "head")
    moved = texture[80:130, 88:138]
    assert np.abs(out[inner].astype(int) - moved).max() <= 1
    assert np.abs(out[inner].astype(int) - texture[inner]).mean() > 10   # it did move
    assert np.array_equal(out[:, :38], texture[:, :38]) and np.array_equal(out[:38], texture[:38])


def test_grid_positions_match_the_models_flow_upsampling():
    """A flow that varies across the grid, sampled at the crop's pixels as the model's own warp
    (warp_image: the flow resized bilinearly, align_corners=False) samples it."""
    import torch

    from facevid.model.warp import warp_image

    f = 8
    rng = np.random.default_rng(1)
    grid = identity_grid(f) + rng.normal(0, 0.05, (f, f, 2)).astype(np.float32)
    # an image whose pixel values are its own x coordinate: warping it reads where the grid points
    xs = np.tile(np.arange(SIZE, dtype=np.float32), (SIZE, 1))
    warped = warp_image(torch.from_numpy(xs)[None, None], torch.from_numpy(grid)[None])[0, 0].numpy()
    u, v = np.meshgrid(np.arange(SIZE, dtype=np.float32), np.arange(SIZE, dtype=np.float32))
    su, _ = grid_positions(grid, u, v, SIZE)
    inside = (su > 1) & (su < SIZE - 2)
    assert np.abs(su - warped)[inside].max() < 1e-3


def test_the_crops_border_blends_positions_so_an_edge_bends_and_does_not_double():
    """A vertical white line crossing the crop's feathered border while the model moves the
    crop's content 8 crop pixels sideways: each row still shows one full-strength line (blended
    pixels would show two faint ones in the border)."""
    image = np.zeros((200, 200, 3), np.uint8)
    image[:, 100:104] = 255
    out = Composer(SIZE, image, TRANSFORM)(image, TRANSFORM, None, Parts(shifted(8), nothing_painted()))
    for row in out[20:190, :, 0]:
        bright = row > 128
        runs = np.count_nonzero(np.diff(bright.astype(int)) == 1)
        assert runs == 1 and row.max() > 230
    assert out[100, 84:88, 0].min() > 230 and out[100, 100:104, 0].max() < 20   # moved 16 frame px in the middle


def test_a_video_sources_face_comes_from_its_first_frame_and_the_rest_from_this_one(texture):
    """Background frame and reference differ (a video source): inside the crop the face is the
    reference's, far outside it the current frame's, and the border fades between them."""
    later = np.full_like(texture, 40)
    out = Composer(SIZE, texture, TRANSFORM, colour_match=False)(later, TRANSFORM, None,
                                                                 Parts(identity_grid(), nothing_painted()))
    assert np.abs(out[80:130, 80:130].astype(int) - texture[80:130, 80:130]).max() <= 1
    assert (out[:38] == 40).all() and (out[:, 172:] == 40).all()


def test_what_the_model_paints_is_added_on_the_face_only(texture):
    grey = np.full_like(texture, 100)
    painted = np.full((SIZE, SIZE, 3), 0.4, np.float32)   # 0.4 model units = 51 grey levels
    out = Composer(SIZE, grey, TRANSFORM)(grey, TRANSFORM, None, Parts(identity_grid(), painted))
    assert abs(int(out[106, 104, 0]) - 151) <= 1          # the face's centre (crop 0.5, 0.53)
    assert (out[45, 45] == 100).all() and (out[:38] == 100).all()   # the crop's corner, outside it


def test_the_cap_reduces_a_denser_reference(texture):
    """--render-size: a reference denser than the cap is first reduced to it (a softer face)."""
    fine = np.where((np.indices((200, 200)).sum(0) % 2)[..., None] == 1, 255, 0).astype(np.uint8).repeat(3, 2)
    parts = Parts(identity_grid(), nothing_painted())

    def detail(cap):
        out = Composer(SIZE, fine, TRANSFORM, cap=cap)(fine, TRANSFORM, None, parts)
        return float(np.abs(cv2.Laplacian(out[80:120, 80:120, 0].astype(np.float32), cv2.CV_32F)).mean())

    assert detail(1024) > 4 * detail(SIZE)


def test_the_carried_head_moves_the_face_and_the_far_background_stays():
    """The driver's head moved 10 frame pixels right and the model's grid is still: the face
    moves rigidly with it, by one sampling of the photo, and the frame far from the head is untouched."""
    rng = np.random.default_rng(2)
    photo = cv2.resize(rng.uniform(0, 255, (100, 100, 3)).astype(np.float32), (400, 400),
                       interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
    now = TRANSFORM.copy()
    now[0, 2] -= 5.0                                          # crop x = 0.5 (frame x - 10) - 20
    out = Composer(SIZE, photo, TRANSFORM)(photo, TRANSFORM, head_change(TRANSFORM, now),
                                           Parts(identity_grid(), nothing_painted()))
    assert np.abs(out[70:130, 80:140].astype(int) - photo[70:130, 70:130]).max() <= 1
    assert np.array_equal(out[:, 300:], photo[:, 300:]) and np.array_equal(out[330:], photo[330:])


def test_a_crop_beyond_the_frame_leaves_it_as_it_is(texture):
    """A face whose crop lies wholly outside the frame (a head carried off its edge): no error, the frame unchanged."""
    away = TRANSFORM.copy()
    away[:, 2] += 500.0
    painted = np.ones((SIZE, SIZE, 3), np.float32)
    out = Composer(SIZE, texture, TRANSFORM)(texture, away, None, Parts(shifted(4), painted))
    assert np.array_equal(out, texture)
