"""The stage every task shares, streaming with memory bounded by a window of frames:

    frames → track_faces (track, crop, landmarks) → windows → the model (Animator: a source's
    content and landmarks driven by a window's motion) → Paster (paste back) → a writer

Each piece is a generator or a callable over one frame or one window, so a task is the few
lines that join them; transfer, encode, decode, eval and the benchmark all run through it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, TypeVar

import numpy as np
import torch

from facevid.errors import ConfigError
from facevid.face.crop import CropSpec
from facevid.io.arrays import points_to_unit, to_tensor, to_uint8
from facevid.model.warp import identity_grid
from facevid.sampling import check_sampler

if TYPE_CHECKING:
    from facevid.face.track import FaceTracker, Landmarks68
    from facevid.io.video import Frame

T = TypeVar("T")

# "landmarks": the face tracker's 68 landmarks (dlib, as in the training data) of source and
# driver; "keypoints": the model's KeypointNet on the crops; "codes": the landmark change the
# driver's motion codes imply (what `facevid decode` rebuilds)
MOTION_SOURCES = ("landmarks", "keypoints", "codes")


@dataclass
class FaceFrame:
    """One frame on its way through a task: the frame, and its face as the model sees it."""

    index: int
    time: float
    image: np.ndarray                 # the full frame (H, W, 3) uint8 RGB
    found: bool                       # a face was followed in this frame
    transform: np.ndarray | None      # this frame's frame→crop (2, 3); None without a face
    crop: np.ndarray | None           # the face crop at the model's size; the last face's without one
    points: np.ndarray | None = None  # 68 landmarks in crop pixels (when measured); the last face's without one


def track_faces(frames: Iterable[Frame], tracker: FaceTracker, size: int, landmarks: Landmarks68 | None = None, *,
                rest: tuple[np.ndarray, np.ndarray | None] | None = None, lookahead: int = 0) -> Iterator[FaceFrame]:
    """Follow the face through `frames` and cut its crop (and measure its 68 landmarks). A frame
    without a face carries the last face's crop and landmarks, or `rest` (a crop, landmarks)
    before the first face (None: no crop). `lookahead` > 0 smooths the track without lag over
    that many frames on either side (track.centred_smoothing; give an unsmoothed tracker)."""
    from facevid.face.crop import cut_crop
    from facevid.face.track import centred_smoothing

    crop, points = rest if rest is not None else (None, None)
    tracked = ((frame, tracker.update(frame.image, frame.index, frame.time)) for frame in frames)
    if lookahead > 0:
        tracked = centred_smoothing(tracked, tracker.spec.size, lookahead)
    for frame, face in tracked:
        if face.found:
            crop = cut_crop(frame.image, face.transform, size)
            points = landmarks(frame.image, face, crop) if landmarks is not None else None
        yield FaceFrame(frame.index, frame.time, frame.image, face.found, face.transform if face.found else None,
                        crop, points)


def windows(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last one shorter), read lazily."""
    if size < 1:
        raise ConfigError(f"--window must be 1 or more, got {size}")
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class Parts:
    """One frame the model made, apart: where the reference's pixels go and what it painted."""

    grid: np.ndarray        # (f, f, 2) float32 backward grid over the crop, normalised [-1, 1] (align_corners=False)
    generated: np.ndarray   # (S, S, 3) float32 added on top of the warp, in the model's units (2 = full scale)


class Paster:
    """Puts generated crops (size, size, 3) back into full frames under the feathered face
    mask, colour-matched to the frame's own face; a frame without a transform passes as it is."""

    def __init__(self, size: int, *, colour_match: bool = True):
        from facevid.face.crop import crop_mask

        self.mask, self.colour_match = crop_mask(size, "face"), colour_match

    def __call__(self, image: np.ndarray, crop: np.ndarray, transform: np.ndarray | None) -> np.ndarray:
        from facevid.face.crop import paste_back

        if transform is None:
            return image
        return paste_back(image, crop, transform, mask=self.mask, colour_match=self.colour_match)


def crop_spec(cfg) -> CropSpec:
    """The crop a model of config `cfg` sees: its size, margin and face centre."""
    return CropSpec(size=cfg.out_size, margin=cfg.crop_margin, center_y=cfg.crop_center_y)


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
                 expression: bool = False, sampler: str = "heun", parts: bool = False):
        if motion not in MOTION_SOURCES:
            raise ConfigError(f"unknown --motion '{motion}' (choose from {', '.join(MOTION_SOURCES)})")
        if motion == "landmarks" and source_points is None:
            raise ValueError("motion='landmarks' needs the source's landmarks")
        if expression and motion != "landmarks":
            raise ConfigError("an image driver gives its expression by its landmarks: use --motion landmarks")
        self.expression, self.source_pixels = expression, source_points
        self.model, self.steps, self.guidance, self.relative, self.device = model, steps, guidance, relative, device
        self.motion_source, self.sampler, self.parts = motion, check_sampler(sampler), parts
        with torch.no_grad():
            self.source = to_tensor(source_crop[None], source_crop.shape[0]).to(device)   # (1, 3, S, S)
            encoded = model.encode(self.source[:, None], self.source)
            self.content, self.source_motion = encoded.content, encoded.motion[:, 0]
            self.source_points = (crop_points(source_points, source_crop.shape[0])[None].to(device)
                                  if motion == "landmarks" else encoded.points[:, 0])
        self.driver_ref: torch.Tensor | None = None
        self.driver_ref_crop: torch.Tensor | None = None
        self.driver_ref_points: torch.Tensor | None = None
        # relative motion: the warp the driver's first frame gets, less the identity, is taken off
        # every frame's (the flow code's quantized zero and the flow net's bias, not the driver's motion)
        self.grid_offset: torch.Tensor | None = None
        self.generator = torch.Generator(device).manual_seed(seed)

    @torch.no_grad()
    def __call__(self, driver_crops: list[np.ndarray], driver_points: np.ndarray | None = None) -> list:
        """Generated crops (out_size) for a window of driver crops (out_size);
        with `parts`, each frame's `Parts` instead (the warp and the generated part, for Composer)."""
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
        if self.relative and self.grid_offset is None:   # the driver's first frame is the source, exactly
            first = model.warp(self.source, self.source_points, target[:, :1], ref_motion, motion[:, :1],
                               driver_ref_points)
            f = first.grid.shape[1]
            self.grid_offset = first.grid - identity_grid(1, f, f, device=first.grid.device, dtype=first.grid.dtype)
        out = model.decode(self.source, self.source_points, ref_motion, motion, self.content, steps=self.steps,
                           guidance=self.guidance, generator=self.generator, sampler=self.sampler, target_points=target,
                           driver_ref_points=driver_ref_points, parts=self.parts,
                           grid_offset=self.grid_offset)
        return self._frames(out)

    def _expression(self, driver_points: np.ndarray) -> list[np.ndarray]:
        from facevid.face.expression import expression_target

        size = self.model.cfg.out_size
        targets = np.stack([expression_target(self.source_pixels, d) for d in driver_points])
        target = crop_points(targets, size)[None].to(self.device)                        # (1, T, K, 2)
        motion = self.source_motion[:, None].expand(-1, len(targets), -1)                # its own, unchanged
        out = self.model.decode(self.source, self.source_points, self.source_motion, motion, self.content,
                                steps=self.steps, guidance=self.guidance, generator=self.generator,
                                sampler=self.sampler, target_points=target, driver_ref_points=self.source_points,
                                parts=self.parts)
        return self._frames(out)

    def _frames(self, out) -> list:
        if self.parts:
            grids, generated = out
            return [Parts(g.float().cpu().numpy(), r.permute(1, 2, 0).float().cpu().numpy())
                    for g, r in zip(grids[0], generated[0])]
        return [to_uint8(f) for f in out[0]]


class CodeEncoder:
    """A clip's discrete motion codes, relative to a reference face crop (what `facevid encode`
    stores): the reference's content and motion once, then the codes of each window of crops."""

    def __init__(self, model, reference_crop: np.ndarray):
        self.model, self.reference_crop = model, reference_crop
        with torch.no_grad():
            self.reference = to_tensor(reference_crop[None], reference_crop.shape[0]).to(model.device)
            encoded = model.encode(self.reference[:, None], self.reference)
        self.content = encoded.content[0].cpu().numpy()                      # (N, D)
        self.ref_motion = encoded.motion[0, 0, :model.cfg.motion_dim].cpu().numpy()

    @torch.no_grad()
    def __call__(self, crops: list[np.ndarray]) -> np.ndarray:
        """(W, G [+ C]) int codes of a window of crops (out_size)."""
        clip = to_tensor(np.stack(crops), crops[0].shape[0])[None].to(self.model.device)
        return self.model.encode(clip, self.reference).codes[0].cpu().numpy()


class CodeDecoder:
    """Crops from motion codes on the reference face they were encoded against (what
    `facevid decode` rebuilds): the reference crop, its content and motion, then each window."""

    def __init__(self, model, reference_crop: np.ndarray, content: np.ndarray, ref_motion: np.ndarray, *,
                 steps: int | None = None, seed: int = 0, sampler: str = "heun"):
        on = model.device
        self.model, self.steps = model, model.cfg.sample_steps if steps is None else steps
        self.sampler = check_sampler(sampler)
        self.reference = to_tensor(reference_crop[None], reference_crop.shape[0]).to(on)   # (1, 3, S, S)
        self.content = torch.from_numpy(np.asarray(content))[None].to(on)
        self.ref_motion = torch.from_numpy(np.asarray(ref_motion))[None].to(on)
        with torch.no_grad():
            self.ref_points = model.keypoints(self.reference)
        self.generator = torch.Generator(on).manual_seed(seed)

    @torch.no_grad()
    def __call__(self, codes: np.ndarray) -> list[np.ndarray]:
        """Crops (out_size) for a window of codes (W, G [+ C])."""
        model = self.model
        motion = model.motion_from_codes(torch.from_numpy(np.asarray(codes))[None].to(model.device))
        made = model.decode(self.reference, self.ref_points, self.ref_motion, motion, self.content,
                            generator=self.generator, steps=self.steps, sampler=self.sampler)
        return [to_uint8(f) for f in made[0]]
