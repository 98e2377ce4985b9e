"""A data set of synthetic clips: identities, motions, frames and landmarks."""

from __future__ import annotations

import numpy as np

from facevid.synthetic.factors import IDENTITY_FACTORS, MOTION_FACTORS, identity_vector, motion_vector
from facevid.synthetic.geometry import landmarks
from facevid.synthetic.render import render
from facevid.synthetic.sampling import random_identity, random_motion_sequence


def make_dataset(n_identities: int, frames_per_clip: int, size: int = 64, seed: int = 0, fps: float = 25.0) -> dict:
    """One clip per random identity with a random talking motion track.

    Returns ``clips`` (N, T, S, S, 3) uint8, ``motion`` (N, T, len(MOTION_FACTORS))
    float32, ``identity`` (N, len(IDENTITY_FACTORS)) float32 and ``landmarks``
    (N, T, 68, 2) float32, all reproducible from ``seed``.
    """
    rng = np.random.default_rng(seed)
    N, T, S = int(n_identities), int(frames_per_clip), int(size)
    clips = np.zeros((N, T, S, S, 3), np.uint8)
    mot = np.zeros((N, T, len(MOTION_FACTORS)), np.float32)
    ids = np.zeros((N, len(IDENTITY_FACTORS)), np.float32)
    lms = np.zeros((N, T, 68, 2), np.float32)
    for i in range(N):
        idn = random_identity(rng)
        motions = random_motion_sequence(rng, T, fps)
        ids[i] = identity_vector(idn)
        for j, m in enumerate(motions):
            clips[i, j] = render(idn, m, S)
            mot[i, j] = motion_vector(m)
            lms[i, j] = landmarks(idn, m, S)
    return {"clips": clips, "motion": mot, "identity": ids, "landmarks": lms}
