"""The README's main command, on the bundled example, with the bundled model."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_cli_track import run_cli

from facevid.io.video import iter_frames, probe
from facevid.weights import DEFAULT, registry

ROOT = Path(__file__).resolve().parent.parent


def readme_main_command() -> list[str]:
    """The facevid command at the end of the README's first set-up line."""
    first = re.search(r"```bash\n(.+)\n", (ROOT / "README.md").read_text()).group(1)
    return shlex.split(first.split("&&")[-1].strip())


@pytest.mark.weights
@pytest.mark.skipif(DEFAULT not in registry(), reason="no bundled weights listed in weights.toml")
def test_readme_transfer_on_the_bundled_example(capsys, tmp_path, monkeypatch):
    command = readme_main_command()
    assert command[:4] == [".venv/bin/facevid", "transfer", "examples/face.jpg", "examples/talking.mp4"]
    monkeypatch.chdir(tmp_path)
    args = [str(ROOT / a) if a.startswith("examples/") else a for a in command[1:]]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    output = tmp_path / args[args.index("-o") + 1]
    info, driver = probe(output), probe(ROOT / "examples/talking.mp4")
    assert info.frame_count == driver.frame_count and info.fps == driver.fps and info.has_audio
    source = cv2.cvtColor(cv2.imread(str(ROOT / "examples/face.jpg")), cv2.COLOR_BGR2RGB).astype(int)
    assert (info.width, info.height) == (source.shape[1], source.shape[0])
    frames = np.stack([f.image for f in iter_frames(output)]).astype(int)
    # far from the face the photo is kept as it is (up to the video codec) ...
    for corner in (np.s_[:, :80, :80], np.s_[:, -80:, -80:], np.s_[:, -80:, :80]):
        assert np.abs(frames[corner] - source[corner[1:]]).mean() < 4
    # ... while the face moves: it differs from the photo and from frame to frame
    face = np.s_[:, 85:170, 250:330]   # the mirrored astronaut's face (dlib's box in examples/face.jpg)
    assert np.abs(frames[face] - source[face[1:]]).mean() > 2
    assert np.abs(np.diff(frames[face], axis=0)).mean() > 0.5
