"""Test and example clips made by the project itself, with known ground truth.

The face is the public-domain NASA astronaut portrait that scikit-image ships
(`skimage.data.astronaut()`); clips move it by known similarity transforms, so a
tracker can be scored against the truth, and carry a synthetic audio track.
`python -m facevid.demo examples/` writes the bundled example clip.
"""

from __future__ import annotations

import math
import sys
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

# The astronaut's 5 landmarks in the 512x512 photo (dlib 5-point model, template order),
# the ground truth that every clip's known transform is applied to.
ASTRONAUT_LANDMARKS = np.array([(255, 104), (237, 105), (195, 101), (212, 103), (224, 135)], float)
ASTRONAUT_FACE_CENTRE = np.array([224.0, 125.0])


def astronaut() -> np.ndarray:
    """The 512x512 RGB astronaut photo (public domain, shipped inside scikit-image)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@dataclass(frozen=True)
class Motion:
    """A known head motion: per-frame similarity of the photo about the face centre."""

    shift: tuple[float, float] = (0.0, 0.0)   # amplitude in pixels (x, y)
    angle: float = 0.0                       # amplitude in degrees
    zoom: float = 0.0                        # amplitude as a fraction of the scale
    period: float = 2.0                      # seconds per cycle


def frame_transform(motion: Motion, t: float, size: tuple[int, int], base_scale: float | None = None) -> np.ndarray:
    """Photo → frame (2, 3) similarity at time t.

    At rest the photo is scaled by `base_scale` (default: to cover the frame width) and
    hung from the top centre of the frame; the motion adds a smooth sinusoidal shift,
    rotation and zoom about the face centre."""
    base = max(size) / 512 if base_scale is None else base_scale
    rest = np.array([(size[0] - 512 * base) / 2, 0.0]) + base * ASTRONAUT_FACE_CENTRE
    phase = 2 * math.pi * t / motion.period
    angle = math.radians(motion.angle * math.sin(phase))
    scale = base * (1.0 + motion.zoom * math.sin(phase + 1.0))
    shift = np.array(motion.shift) * np.array([math.sin(phase), math.sin(2 * phase)])
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    lin = np.array([[c, -s], [s, c]])
    return np.hstack([lin, (rest + shift - lin @ ASTRONAUT_FACE_CENTRE)[:, None]])


def render_frame(photo: np.ndarray, transform: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.warpAffine(photo, transform, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def write_tone(path: Path, seconds: float, rate: int = 16000) -> Path:
    """A mono 16-bit WAV of a warbling tone (a stand-in for speech)."""
    t = np.arange(int(seconds * rate)) / rate
    signal = 0.3 * np.sin(2 * np.pi * (220 + 40 * np.sin(2 * np.pi * 3 * t)) * t)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((signal * 32767).astype("<i2").tobytes())
    return path


def make_clip(path: Path, *, frames: int = 50, fps: Fraction = Fraction(25), size: tuple[int, int] = (512, 512),
              motion: Motion = Motion(), audio: bool = True, force: bool = False,
              crf: int = 18, base_scale: float | None = None) -> np.ndarray:
    """Write an astronaut clip; returns the true landmarks per frame, (frames, 5, 2)."""
    from facevid.video import VideoWriter

    path = Path(path)
    photo = astronaut()
    truth = []
    tone = write_tone(path.with_suffix(".wav"), frames / float(fps) + 0.5) if audio else None
    try:
        with VideoWriter(path, fps, audio_from=tone, crf=crf, force=force) as writer:
            for i in range(frames):
                t = i / float(fps)
                transform = frame_transform(motion, t, size, base_scale)
                truth.append(ASTRONAUT_LANDMARKS @ transform[:, :2].T + transform[:, 2])
                writer.write(render_frame(photo, transform, size), t)
    finally:
        if tone is not None:
            tone.unlink(missing_ok=True)
    return np.stack(truth)


EXAMPLE_MOTION = Motion(shift=(30.0, 12.0), angle=8.0, zoom=0.08, period=3.0)


def make_examples(folder: Path, force: bool = False) -> list[Path]:
    """The bundled example clip(s) (`examples/` in the repository)."""
    folder.mkdir(parents=True, exist_ok=True)
    clip = folder / "astronaut.mp4"
    make_clip(clip, frames=75, size=(512, 512), motion=EXAMPLE_MOTION, force=force, crf=26)
    return [clip]


if __name__ == "__main__":
    for made in make_examples(Path(sys.argv[1] if len(sys.argv) > 1 else "examples"), force="--force" in sys.argv):
        print(made)
