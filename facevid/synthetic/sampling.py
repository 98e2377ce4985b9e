"""Random identities and smooth, talking-like motion sequences (all randomness from a Generator)."""

from __future__ import annotations

import colorsys
import math

import numpy as np

from facevid.synthetic.factors import HAIR_STYLES, IDENTITY_RANGES, RGB, Identity, Motion

_SKIN_TONES = np.array(
    [
        (0.99, 0.87, 0.78),
        (0.96, 0.80, 0.68),
        (0.90, 0.71, 0.56),
        (0.80, 0.60, 0.44),
        (0.66, 0.46, 0.32),
        (0.50, 0.34, 0.23),
        (0.36, 0.24, 0.16),
    ]
)
_HAIR_COLOURS = np.array(
    [
        (0.08, 0.07, 0.06),  # black
        (0.22, 0.13, 0.07),  # dark brown
        (0.42, 0.26, 0.13),  # brown
        (0.86, 0.72, 0.42),  # blonde
        (0.66, 0.27, 0.10),  # red
        (0.62, 0.62, 0.62),  # grey
        (0.90, 0.89, 0.86),  # white
        (0.20, 0.30, 0.70),  # dyed blue
        (0.85, 0.40, 0.62),  # dyed pink
    ]
)
_HAIR_P = np.array([0.22, 0.21, 0.16, 0.13, 0.08, 0.08, 0.04, 0.04, 0.04])
_EYE_COLOURS = np.array(
    [
        (0.36, 0.21, 0.10),  # brown
        (0.16, 0.10, 0.07),  # dark brown
        (0.30, 0.52, 0.82),  # blue
        (0.30, 0.56, 0.30),  # green
        (0.50, 0.56, 0.62),  # grey
        (0.52, 0.42, 0.18),  # hazel
    ]
)


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (float(r), float(g), float(b))


def _clip_rgb(c) -> RGB:
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return (float(c[0]), float(c[1]), float(c[2]))


def random_identity(rng: np.random.Generator) -> Identity:
    """Draw a random identity; all randomness comes from ``rng``."""
    kw: dict = {}
    for name, (lo, hi) in IDENTITY_RANGES.items():
        kw[name] = float(rng.uniform(lo, hi))
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] + rng.uniform(-0.03, 0.03, 3)
    kw["skin"] = _clip_rgb(skin)
    kw["hair"] = _clip_rgb(_HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_P)] + rng.uniform(-0.04, 0.04, 3))
    kw["eyes"] = _clip_rgb(_EYE_COLOURS[rng.integers(len(_EYE_COLOURS))] + rng.uniform(-0.04, 0.04, 3))
    natural = np.asarray(kw["skin"]) * np.array([0.82, 0.52, 0.52])
    painted = np.asarray(_hsv(rng.uniform(-0.06, 0.03), rng.uniform(0.5, 0.8), rng.uniform(0.5, 0.85)))
    kw["lips"] = _clip_rgb(natural + rng.uniform(0.0, 0.7) ** 2 * (painted - natural))
    kw["background"] = _hsv(rng.uniform(), rng.uniform(0.15, 0.55), rng.uniform(0.45, 0.92))
    kw["clothes"] = _hsv(rng.uniform(), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.85))
    kw["hair_style"] = int(rng.choice(len(HAIR_STYLES), p=[0.15, 0.35, 0.3, 0.2]))
    return Identity(**kw)


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, f_lo: float, f_hi: float, k: int = 4) -> np.ndarray:
    """Sum of ``k`` random sinusoids with frequencies in [f_lo, f_hi] Hz; unit standard deviation."""
    f = rng.uniform(f_lo, f_hi, k)
    ph = rng.uniform(0, 2 * np.pi, k)
    amp = rng.uniform(0.5, 1.0, k)
    x = (amp[:, None] * np.sin(2 * np.pi * f[:, None] * t[None, :] + ph[:, None])).sum(0)
    return x / math.sqrt(0.5 * float((amp**2).sum()))


def _events(rng: np.random.Generator, duration: float, gap_lo: float, gap_hi: float, first_hi: float) -> list[float]:
    out = []
    t = rng.uniform(0.0, first_hi)
    while t < duration:
        out.append(t)
        t += rng.uniform(gap_lo, gap_hi)
    return out


def _window(t: np.ndarray, fps: float, t0: float, length: float) -> tuple[slice, np.ndarray]:
    """Frames (times t) covering [t0, t0 + length] and their phase in [0, 1]."""
    n = len(t)
    sl = slice(max(0, int(math.floor(t0 * fps))), min(n, int(math.ceil((t0 + length) * fps)) + 1))
    return sl, np.clip((t[sl] - t0) / length, 0.0, 1.0)


def _speech(rng: np.random.Generator, t: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Syllable-by-syllable mouth opening inside utterances, and the stressed syllables' brow lift."""
    n, dur = len(t), len(t) / float(fps)
    mouth = np.zeros(n)
    stress = np.zeros(n)
    tt = rng.uniform(0.0, 0.8)
    while tt < dur:
        utt_end = tt + rng.uniform(1.0, 4.0)
        while tt < utt_end and tt < dur:
            syl = rng.uniform(0.16, 0.29)
            depth = rng.uniform(0.25, 1.0) ** 0.8
            sl, ph = _window(t, fps, tt, syl)
            mouth[sl] = np.maximum(mouth[sl], depth * np.sin(np.pi * ph) ** 2)
            if rng.uniform() < 0.2:  # stressed syllable: brows go up a little
                sl, ph = _window(t, fps, tt, 2.5 * syl)
                stress[sl] = np.maximum(stress[sl], depth * np.sin(np.pi * ph) ** 2)
            tt += syl * rng.uniform(0.9, 1.1)
        tt = utt_end + rng.uniform(0.3, 1.2)
    return np.clip(mouth, 0.0, 1.0), stress


def _blinks(rng: np.random.Generator, t: np.ndarray, fps: float) -> np.ndarray:
    """Blinks: fast close (first 40%), slower open."""
    blink = np.zeros(len(t))
    for b0 in _events(rng, len(t) / float(fps), 1.5, 6.0, 3.0):
        sl, ph = _window(t, fps, b0, rng.uniform(0.2, 0.35))
        shape = np.where(ph < 0.4, np.sin(0.5 * np.pi * ph / 0.4) ** 2, np.cos(0.5 * np.pi * (ph - 0.4) / 0.6) ** 2)
        shape[(ph <= 0.0) | (ph >= 1.0)] = 0.0
        blink[sl] = np.maximum(blink[sl], shape)
    return blink


def random_motion_sequence(rng: np.random.Generator, n_frames: int, fps: float = 25.0) -> list[Motion]:
    """A smooth, talking-like motion track of ``n_frames`` frames sampled at ``fps``.

    Speech comes in utterances of 1-4 s separated by 0.3-1.2 s pauses; within an
    utterance the mouth opens once per syllable (about 3.5-6 syllables/s, random
    depth). Blinks (0.2-0.35 s) happen every 1.5-6 s. The head sways slowly
    (0.05-0.5 Hz) with small nods, smile drifts over seconds and brows rise on
    stressed syllables. Every factor stays inside MOTION_RANGES.
    """
    n = int(n_frames)
    if n <= 0:
        return []
    t = np.arange(n) / float(fps)
    mouth, stress = _speech(rng, t, fps)   # draws from rng in this order: speech, blinks, the rest
    blink = _blinks(rng, t, fps)

    kw = max(1, int(round(fps)))  # one-second moving average: "is talking"
    talking = np.convolve(mouth, np.ones(kw) / kw, mode="full")[kw // 2 : kw // 2 + n]

    def soft(x: np.ndarray, lim: float) -> np.ndarray:
        return lim * np.tanh(x / lim)

    yaw = soft(0.32 * _smooth_noise(rng, t, 0.05, 0.35), 0.5)
    pitch = soft(0.14 * _smooth_noise(rng, t, 0.05, 0.45) + 0.05 * talking * _smooth_noise(rng, t, 0.8, 1.6, 2), 0.3)
    roll = soft(0.17 * _smooth_noise(rng, t, 0.05, 0.35), 0.3)
    smile = soft(0.25 + 0.6 * _smooth_noise(rng, t, 0.05, 0.25), 1.0)
    brows = soft(0.35 * _smooth_noise(rng, t, 0.05, 0.4) + 0.8 * stress, 1.0)

    return [
        Motion(
            yaw=float(yaw[i]),
            pitch=float(pitch[i]),
            roll=float(roll[i]),
            mouth_open=float(mouth[i]),
            smile=float(smile[i]),
            blink=float(blink[i]),
            brows=float(brows[i]),
        )
        for i in range(n)
    ]
