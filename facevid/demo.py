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
# ... and its 68 landmarks (iBUG layout), measured once with dlib's 68-point model.
ASTRONAUT_LANDMARKS68 = np.array([
    (179, 104), (180, 116), (181, 127), (182, 139), (185, 150), (191, 160), (200, 168), (209, 176), (220, 178),
    (232, 177), (243, 171), (253, 163), (260, 154), (265, 143), (268, 131), (270, 120), (272, 108), (186, 94),
    (192, 88), (200, 87), (208, 89), (216, 92), (236, 93), (244, 91), (252, 91), (260, 92), (265, 99), (226, 102),
    (225, 111), (225, 119), (225, 127), (214, 131), (219, 133), (224, 134), (229, 133), (234, 132), (195, 101),
    (200, 98), (207, 98), (212, 104), (206, 104), (199, 104), (237, 106), (243, 100), (250, 100), (255, 105),
    (250, 107), (244, 107), (201, 139), (209, 139), (218, 139), (224, 141), (230, 140), (238, 140), (246, 141),
    (238, 151), (229, 155), (222, 156), (216, 155), (208, 150), (204, 141), (218, 143), (223, 144), (230, 143),
    (243, 142), (229, 150), (223, 151), (217, 150)], float)


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
    from facevid.io.writer import VideoWriter

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


def talking_landmarks(frames: int, fps: float = 25.0, seed: int = 0) -> np.ndarray:
    """(frames, 68, 2) astronaut landmarks moving like a synthetic talking head: the
    renderer's landmark motion (mouth, blinks, brows, small turns) relative to its rest
    pose, scaled to the astronaut's face."""
    from facevid import synthetic

    rng = np.random.default_rng(seed)
    identity = synthetic.random_identity(rng)
    rest = synthetic.landmarks(identity, synthetic.Motion(), size=256)
    motions = synthetic.random_motion_sequence(rng, frames, fps)
    from facevid.face.identity import iod

    scale = iod(ASTRONAUT_LANDMARKS68) / iod(rest)
    moving = np.stack([synthetic.landmarks(identity, m, size=256) for m in motions])
    return ASTRONAUT_LANDMARKS68 + (moving - rest) * scale


def make_talking_clip(path: Path, *, frames: int = 75, fps: Fraction = Fraction(25), size: tuple[int, int] = (512, 512),
                      motion: Motion = Motion(), seed: int = 0, force: bool = False, crf: int = 20) -> np.ndarray:
    """A clip of the astronaut talking: her face warped piecewise-affinely along synthetic
    talking-head landmark motion, moved by `motion`, with a tone track. Returns the true
    68 landmarks per frame (frame pixels)."""
    from facevid.face.landmark_warp import piecewise_affine_warp
    from facevid.io.writer import VideoWriter

    path = Path(path)
    photo = astronaut()
    marks = talking_landmarks(frames, float(fps), seed)
    truth = []
    tone = write_tone(path.with_suffix(".wav"), frames / float(fps) + 0.5)
    try:
        with VideoWriter(path, fps, audio_from=tone, crf=crf, force=force) as writer:
            for i in range(frames):
                t = i / float(fps)
                face = piecewise_affine_warp(photo, ASTRONAUT_LANDMARKS68, marks[i])
                transform = frame_transform(motion, t, size)
                truth.append(marks[i] @ transform[:, :2].T + transform[:, 2])
                writer.write(render_frame(face, transform, size), t)
    finally:
        tone.unlink(missing_ok=True)
    return np.stack(truth)


EXAMPLE_MOTION = Motion(shift=(30.0, 12.0), angle=8.0, zoom=0.08, period=3.0)


def make_examples(folder: Path, force: bool = False) -> list[Path]:
    """The bundled example clip(s) (`examples/` in the repository)."""
    folder.mkdir(parents=True, exist_ok=True)
    clip = folder / "astronaut.mp4"
    make_clip(clip, frames=75, size=(512, 512), motion=EXAMPLE_MOTION, force=force, crf=26)
    talking = folder / "talking.mp4"
    make_talking_clip(talking, frames=100, motion=Motion(shift=(10.0, 4.0), angle=4.0, zoom=0.03, period=4.0),
                      force=force, crf=26)
    face = folder / "face.jpg"
    if force or not face.exists():
        import cv2

        cv2.imwrite(str(face), cv2.cvtColor(np.ascontiguousarray(astronaut()[:, ::-1]), cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
    return [clip, talking, face]


if __name__ == "__main__":
    for made in make_examples(Path(sys.argv[1] if len(sys.argv) > 1 else "examples"), force="--force" in sys.argv):
        print(made)
