"""Shared fixtures: test clips made in code from the public-domain astronaut photo."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facevid import demo
from facevid.config import PRESETS
from facevid.model.facevid import FaceVid
from facevid.weights import export_weights


@pytest.fixture(scope="session")
def clip_factory(tmp_path_factory):
    """make(name, **make_clip kwargs) -> (path, true landmarks); cached per session."""
    folder = tmp_path_factory.mktemp("clips")
    made: dict[str, tuple[Path, np.ndarray]] = {}

    def make(name: str, **kwargs):
        if name not in made:
            path = folder / f"{name}.mp4"
            made[name] = (path, demo.make_clip(path, **kwargs))
        return made[name]

    return make


@pytest.fixture(scope="session")
def moving_clip(clip_factory):
    """40 frames, 25 fps, 320x288, the face shifting, turning and zooming; with audio."""
    return clip_factory("moving", frames=40, fps=Fraction(25), size=(320, 288),
                        motion=demo.Motion(shift=(20.0, 8.0), angle=8.0, zoom=0.06, period=1.6), base_scale=1.0)


@pytest.fixture(scope="session")
def still_clip(clip_factory):
    """30 frames of a face that does not move at all (for jitter)."""
    return clip_factory("still", frames=30, fps=Fraction(25), size=(320, 288), audio=False, base_scale=1.0)


@pytest.fixture
def one_thread():
    """Torch on one thread for a test (faster than two on this busy 2-core machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    return export_weights(FaceVid(PRESETS["tiny"]).eval(), path)


@pytest.fixture(scope="session")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "face.png"
    cv2.imwrite(str(path), cv2.cvtColor(demo.astronaut(), cv2.COLOR_RGB2BGR))
    return path
