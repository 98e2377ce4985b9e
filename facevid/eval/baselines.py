"""Baselines that every evaluation runs beside the model.

- copy the source: perfect identity, no motion;
- paste the driver: perfect motion, wrong identity;
- the classical landmark warp: a piecewise-affine warp of the source (Delaunay triangles
  over dlib's 68 landmarks plus fixed border points) driven by the driver's relative
  landmark motion. It matches landmarks by construction but tears at eyes and lips and
  has no mouth interior. It uses dlib's 68-point model (iBUG 300-W: non-commercial),
  so it is for evaluation only.
"""

from __future__ import annotations

import numpy as np

from facevid.face.landmark_warp import piecewise_affine_warp


def landmark_warp(source: np.ndarray, source_landmarks: np.ndarray, driver_landmarks: np.ndarray,
                  driver_reference: np.ndarray) -> np.ndarray:
    """The classical relative landmark warp: the driver's change of landmarks from its own
    reference frame, applied to the source's landmarks."""
    target = source_landmarks + (driver_landmarks - driver_reference)
    return piecewise_affine_warp(source, source_landmarks, target)
