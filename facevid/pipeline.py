"""The model stage every task shares: a source face's content and landmarks, then windows of
driving frames → motion → decoded crops (relative, absolute or expression transfer)."""

from __future__ import annotations

import numpy as np
import torch

from facevid.errors import ConfigError
from facevid.io.arrays import points_to_unit, to_tensor, to_uint8

# "landmarks": the face tracker's 68 landmarks (dlib, as in the training data) of source and
# driver; "keypoints": the model's KeypointNet on the crops; "codes": the landmark change the
# driver's motion codes imply (what `facevid decode` rebuilds)
MOTION_SOURCES = ("landmarks", "keypoints", "codes")


def crop_points(pixels: np.ndarray, size: int) -> torch.Tensor:
    """Landmarks in crop pixels (..., K, 2) → the model's normalised coordinates, float32."""
    return torch.from_numpy(points_to_unit(np.asarray(pixels, np.float32), size))


class Animator:
    """The model side of a transfer: the source's content and keypoints, the driver's reference.

    With motion="landmarks", `source_points` (K, 2) and each call's `driver_points` (T, K, 2)
    are the 68 landmarks in crop pixels. With `expression` (a still driver, which has no motion
    of its own), each driver frame's expression is put on the source's face: the source is
    warped, as its own face, to `expression_target` of its landmarks and the driver's."""

    def __init__(self, model, source_crop: np.ndarray, *, steps: int, guidance: float, seed: int, relative: bool,
                 device: str = "cpu", motion: str = "codes", source_points: np.ndarray | None = None,
                 expression: bool = False):
        if motion not in MOTION_SOURCES:
            raise ConfigError(f"unknown --motion '{motion}' (choose from {', '.join(MOTION_SOURCES)})")
        if motion == "landmarks" and source_points is None:
            raise ValueError("motion='landmarks' needs the source's landmarks")
        if expression and motion != "landmarks":
            raise ConfigError("an image driver gives its expression by its landmarks: use --motion landmarks")
        self.expression, self.source_pixels = expression, source_points
        self.model, self.steps, self.guidance, self.relative, self.device = model, steps, guidance, relative, device
        self.motion_source = motion
        with torch.no_grad():
            self.source = to_tensor(source_crop[None], source_crop.shape[0]).to(device)   # (1, 3, S, S)
            encoded = model.encode(self.source[:, None], self.source)
            self.content, self.source_motion = encoded.content, encoded.motion[:, 0]
            self.source_points = (crop_points(source_points, source_crop.shape[0])[None].to(device)
                                  if motion == "landmarks" else encoded.points[:, 0])
        self.driver_ref: torch.Tensor | None = None
        self.driver_ref_crop: torch.Tensor | None = None
        self.driver_ref_points: torch.Tensor | None = None
        self.generator = torch.Generator(device).manual_seed(seed)

    @torch.no_grad()
    def __call__(self, driver_crops: list[np.ndarray], driver_points: np.ndarray | None = None) -> list[np.ndarray]:
        """Generated crops (out_size) for a window of driver crops (out_size)."""
        model, cfg = self.model, self.model.cfg
        if self.expression:
            return self._expression(driver_points)
        frames = to_tensor(np.stack(driver_crops), cfg.out_size).to(self.device)[None]   # (1, T, 3, S, S)
        if self.driver_ref_crop is None:   # motion is measured from the driver's first frame, or from the source
            self.driver_ref_crop = frames[:, 0] if self.relative else self.source
        encoded = model.encode(frames, self.driver_ref_crop)
        motion, points = encoded.motion, encoded.points   # points: KeypointNet's, which the encoder used
        if self.motion_source == "landmarks":
            if driver_points is None:
                raise ValueError("motion='landmarks' needs the driver's landmarks")
            points = crop_points(driver_points, driver_crops[0].shape[0])[None].to(self.device)
        if self.driver_ref is None:
            self.driver_ref = motion[:, 0]
            self.driver_ref_points = points[:, 0]
        driver_ref_points = self.driver_ref_points   # whose geometry the flow code's flow has
        if not self.relative:
            target, ref_motion, driver_ref_points = points, self.source_motion, None
        elif self.motion_source in ("keypoints", "landmarks"):   # the driver's own landmark change
            target, ref_motion = self.source_points[:, None] + points - self.driver_ref_points[:, None], self.driver_ref
        else:                                     # the change the motion codes imply
            target = self.source_points[:, None] + model.displacement(motion, self.driver_ref)
            ref_motion = self.driver_ref
        out = model.decode(self.source, self.source_points, ref_motion, motion, self.content, steps=self.steps,
                           guidance=self.guidance, generator=self.generator, target_points=target,
                           driver_ref_points=driver_ref_points)
        return [to_uint8(f) for f in out[0]]

    def _expression(self, driver_points: np.ndarray) -> list[np.ndarray]:
        from facevid.face.expression import expression_target

        size = self.model.cfg.out_size
        targets = np.stack([expression_target(self.source_pixels, d) for d in driver_points])
        target = crop_points(targets, size)[None].to(self.device)                        # (1, T, K, 2)
        motion = self.source_motion[:, None].expand(-1, len(targets), -1)                # its own, unchanged
        out = self.model.decode(self.source, self.source_points, self.source_motion, motion, self.content,
                                steps=self.steps, guidance=self.guidance, generator=self.generator,
                                target_points=target, driver_ref_points=self.source_points)
        return [to_uint8(f) for f in out[0]]
