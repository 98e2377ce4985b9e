"""`facevid edit`: change what a face does across a whole video (or a photo), one slider per
measured attribute (facevid.face.attributes), over a time span.

Each frame is edited from itself: its own crop is the model's reference, its landmarks moved
along the attribute directions (facevid.face.directions, fitted on the training clips) are the
warp's target, and the warp that the unedited landmarks would get, less the identity, is taken
off (as relative transfer takes off the driver's first frame's), so an edit of strength zero is
no edit. The warp is rendered into the frame at its own pixels (face/composite.py); `roll` turns
the whole head instead (the carried head's map). Frames outside the span, and frames without a
face, pass unchanged, bit for bit.
"""

from __future__ import annotations

import math
import time as clock
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from facevid.config import RENDER_SIZE
from facevid.errors import ConfigError, NoFaceError
from facevid.face.attributes import ATTRIBUTES, Attribute, measure
from facevid.face.composite import Composer
from facevid.face.crop import invert_affine, transform_points
from facevid.face.learned import LearnedAttribute
from facevid.pipeline import Parts, crop_points, crop_spec, track_faces, windows
from facevid.tasks.summary import TaskSummary, write_frames

if TYPE_CHECKING:
    from facevid.face.directions import Directions
    from facevid.io.video import Frame
    from facevid.model.facevid import FaceVid

LOOKAHEAD = 3   # frames of the track read ahead (as transfer's driver): the smoothing lags none


@dataclass(frozen=True)
class Span:
    """When an edit applies, in seconds: fully from `start + ramp` to `end - ramp`, eased in and
    out over `ramp` (smoothstep), not at all before `start` or after `end`."""

    start: float = 0.0
    end: float = math.inf
    ramp: float = 0.0

    def __post_init__(self):
        if not (self.start >= 0 and self.ramp >= 0 and math.isfinite(self.start) and math.isfinite(self.ramp)):
            raise ConfigError(f"--from and --ramp must be 0 or more, got {self.start} and {self.ramp}")
        if not self.end > self.start:
            raise ConfigError(f"--to ({self.end}) must come after --from ({self.start})")
        if 2 * self.ramp > self.end - self.start:
            raise ConfigError(f"--ramp {self.ramp} s is more than half the span {self.start}-{self.end} s")

    def weight(self, time: float) -> float:
        if time < self.start or time > self.end:
            return 0.0
        if self.ramp == 0:
            return 1.0
        t = min(1.0, (time - self.start) / self.ramp, (self.end - time) / self.ramp)
        return t * t * (3 - 2 * t)


def parse_edits(items: Iterable[str], option: str, known: dict[str, Attribute] = ATTRIBUTES) -> dict[str, float]:
    """`NAME=VALUE` strings (--attr: a shift, --set: a target) → {name: value}, checked (check_edits)
    against the `known` attributes (known_attributes: the measured ones and any learned)."""
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"{option} takes NAME=VALUE, got '{item}'")
        if name not in known:
            raise ConfigError(f"unknown attribute '{name}' in {option} (known: {', '.join(known)})")
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{option} {name} needs a number, got '{text}'") from None
        if name in out:
            raise ConfigError(f"{option} gives {name} twice")
        out[name] = value
    return check_edits(out, option, known)


def check_edits(edits: dict[str, float], option: str, known: dict[str, Attribute] = ATTRIBUTES) -> dict[str, float]:
    """`edits` checked against the `known` attributes: known names, a shift (--attr) at most one
    slider range either way, a target (--set) within the range."""
    for name, value in edits.items():
        if name not in known:
            raise ConfigError(f"unknown attribute '{name}' in {option} (known: {', '.join(known)})")
        a = known[name]
        span = a.high - a.low
        if not isinstance(value, (int, float)) or not math.isfinite(value) or \
                (option == "--attr" and abs(value) > span) or (option == "--set" and not a.low <= value <= a.high):
            allowed = f"-{span:g} to +{span:g}" if option == "--attr" else f"{a.low:g} to {a.high:g}"
            raise ConfigError(f"{option} {name}={value:g} is out of range ({allowed} {a.unit})"
                              if isinstance(value, (int, float)) else f"{option} {name} needs a number")
    return dict(edits)


def list_attributes(known: dict[str, Attribute] = ATTRIBUTES) -> str:
    """The attributes, their units and slider ranges, one per line (`facevid edit --list-attrs`)."""
    return "\n".join(f"{a.name:10s} {a.low:g} to {a.high:g} {a.unit}: {a.about}" for a in known.values())


def load_learned(attributes: Iterable[LearnedAttribute | str | Path]) -> list[LearnedAttribute]:
    """Learned attributes (facevid learn-attr), loaded where given as files."""
    from facevid.face.learned import load_attribute

    return [a if isinstance(a, LearnedAttribute) else load_attribute(a) for a in attributes]


def known_attributes(learned: Iterable[LearnedAttribute] = ()) -> dict[str, Attribute]:
    """The measured attributes and the `learned` ones' sliders, by name (each name once)."""
    known = dict(ATTRIBUTES)
    for a in learned:
        if a.name in known:
            raise ConfigError(f"two attributes are named '{a.name}' (--attr-file)")
        known[a.name] = a.slider
    return known


def roll_change(degrees: float, size: int) -> np.ndarray:
    """The head change (crop.head_change) that leans a head `degrees` clockwise about its crop's centre."""
    a = math.radians(degrees)
    lin = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    centre = np.array([(size - 1) / 2] * 2)
    return np.hstack([lin, (centre - lin @ centre)[:, None]])


class Editor:
    """`Editor(model, directions, shift=..., target=...)` once, then `editor(frames)` yields the
    edited frames. `shift`: attribute → a change in its unit; `target`: attribute → a value to
    reach on every frame; both applied over `span`, eased by its ramp. `learned`: attributes
    learned from examples (facevid.face.learned), edited as the measured ones are. Frames go
    through the model `window` at a time."""

    def __init__(self, model: FaceVid, directions: Directions, *, shift: dict[str, float] | None = None,
                 target: dict[str, float] | None = None, span: Span = Span(), face: int = 1, aligner: str = "auto",
                 render_size: int = RENDER_SIZE, window: int = 16, learned: Iterable[LearnedAttribute] = ()):
        from facevid.face.track import FaceTracker, Landmarks68, make_backend

        if not 16 <= render_size <= 2048:
            raise ConfigError(f"--render-size must be between 16 and 2048, got {render_size}")
        if window < 1:
            raise ConfigError(f"--window must be 1 or more, got {window}")
        learned = list(learned)
        known, spec = known_attributes(learned), crop_spec(model.cfg)
        for a in learned:
            a.check_crop(spec.margin, spec.center_y)
        self.learned = {a.name: a for a in learned}
        self.model, self.directions = model, _with_learned(directions, learned)
        self.span, self.cap, self.window = span, render_size, window
        self.shift, self.target = check_edits(shift or {}, "--attr", known), check_edits(target or {}, "--set", known)
        both = set(self.shift) & set(self.target)
        if both:
            raise ConfigError(f"{', '.join(sorted(both))}: give an attribute --attr or --set, not both")
        self.size = model.cfg.out_size
        self.tracker = FaceTracker(make_backend(aligner), spec, face=face, smooth=False)
        self.landmarks = Landmarks68(spec)
        self.frames = self.edited = self.frames_without_face = 0

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        from facevid.io.video import Frame

        faces = track_faces(frames, self.tracker, self.size, self.landmarks, lookahead=LOOKAHEAD)
        for chunk in windows(faces, self.window):
            self.frames += len(chunk)
            self.frames_without_face += sum(not f.found for f in chunk)
            jobs = [(i, f, self.span.weight(f.time)) for i, f in enumerate(chunk) if f.found]
            jobs = [(i, f, w) for i, f, w in jobs if w > 0] if self.shift or self.target else []
            made = {}
            if jobs:
                plans = [self.plan(f.transform, f.points, w) for _, f, w in jobs]
                parts = self.parts([f.crop for _, f, _ in jobs], [f.points for _, f, _ in jobs],
                                   [moved for moved, _ in plans])
                for (i, f, _), part, (_, change) in zip(jobs, parts, plans):
                    made[i] = self.render(f.image, f.transform, part, change)
            self.edited += len(jobs)
            for i, f in enumerate(chunk):
                yield Frame(f.index, f.time, made.get(i, f.image))

    def values(self, frame_points: np.ndarray, points: np.ndarray) -> dict[str, float]:
        """Every attribute of a face with these landmarks (frame and crop pixels), learned ones too."""
        from facevid.io.arrays import points_to_unit

        values = measure(frame_points)
        unit = points_to_unit(np.asarray(points, np.float64), self.size)
        values.update({n: a.measure(unit) for n, a in self.learned.items()})
        return values

    def amounts(self, frame_points: np.ndarray, points: np.ndarray, weight: float) -> dict[str, float]:
        """Each attribute's change on a face with these landmarks (frame and crop pixels), at `weight`."""
        out = {n: weight * v for n, v in self.shift.items()}
        if self.target:
            values = self.values(frame_points, points)
            out.update({n: weight * (v - values[n]) for n, v in self.target.items()})
        return out

    def plan(self, transform: np.ndarray, points: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray | None]:
        """A face's edit (its frame → crop `transform`, 68 landmarks in crop pixels): where its
        landmarks go (crop pixels) and the head's turn (crop.head_change; None: none)."""
        return self.move(points, self.amounts(transform_points(invert_affine(transform), points), points, weight))

    def move(self, points: np.ndarray, amounts: dict[str, float]) -> tuple[np.ndarray, np.ndarray | None]:
        """Where a face's landmarks (crop pixels) go for `amounts` (attribute → change), and the
        head's turn (None: none)."""
        amounts = dict(amounts)
        roll = amounts.pop("roll", 0.0)
        moved = self.directions.apply(points, amounts, scale=self.size / 2)
        return moved, (roll_change(roll, self.size) if roll else None)

    def parts(self, crops: list[np.ndarray], points: list[np.ndarray], moved: list[np.ndarray]) -> list[Parts]:
        """The model's warp of each crop onto itself with its landmarks `points` moved to `moved`
        (crop pixels), less the warp the unmoved landmarks get: the identity at no move."""
        import torch

        from facevid.io.arrays import to_tensor
        from facevid.model.warp import identity_grid

        model, device, n = self.model, self.model.device, len(crops)
        with torch.no_grad():
            reference = to_tensor(np.stack(crops), self.size).to(device)                   # (B, 3, S, S)
            encoded = model.encode(reference[:, None], reference)
            own, motion = encoded.motion[:, 0], encoded.motion
            source = crop_points(np.stack(points), self.size).to(device)                   # (B, K, 2)
            goal = crop_points(np.stack(moved), self.size)[:, None].to(device)             # (B, 1, K, 2)
            pin = torch.ones(n, dtype=torch.bool, device=device)   # every landmark's move carried (the full TPS)
            still = model.warp(reference, source, source[:, None], own, motion, pin=pin)
            f = still.grid.shape[1]
            offset = still.grid - identity_grid(n, f, f, device=device, dtype=still.grid.dtype)
            grids, generated = model.decode(reference, source, own, motion, encoded.content, steps=0,
                                            target_points=goal, pin=pin, parts=True, grid_offset=offset)
        return [Parts(g.float().cpu().numpy(), r.permute(1, 2, 0).float().cpu().numpy())
                for g, r in zip(grids[:, 0], generated[:, 0])]

    def render(self, image: np.ndarray, transform: np.ndarray, parts: Parts, change: np.ndarray | None) -> np.ndarray:
        """The warp rendered into the frame itself at its own pixels, the head turned by `change`."""
        return Composer(self.size, image, transform, cap=self.cap)(image, transform, change, parts)


def edit_frames(frames: Iterable[np.ndarray], *, shift: dict[str, float] | None = None,
                target: dict[str, float] | None = None, span: Span = Span(), fps: float = 25.0,
                model: FaceVid | str | None = None, directions: Directions | str | Path | None = None,
                attributes: Iterable[LearnedAttribute | str | Path] = (), device: str = "cpu",
                **options) -> Iterator[np.ndarray]:
    """The frame-level edit, arrays in and arrays out: each frame (H, W, 3) uint8 RGB edited, lazily
    (frame i is at time i / fps for `span`). `attributes`: learned attributes (or their files) to
    edit beside the measured ones. `options`: Editor's (face, aligner, render_size)."""
    from facevid.io.arrays import as_rgb
    from facevid.io.video import Frame
    from facevid.weights import as_model

    run = Editor(as_model(model, device), _directions(directions), shift=shift, target=target, span=span,
                 learned=load_learned(attributes), **options)
    for frame in run(Frame(i, i / fps, as_rgb(image, "a frame")) for i, image in enumerate(frames)):
        yield frame.image


def _directions(directions: Directions | str | Path | None) -> Directions:
    """Loaded directions, a directions file, or None: the bundled ones."""
    from facevid.face.directions import load_directions
    from facevid.weights import bundled_directions

    if directions is None:
        return bundled_directions()
    return directions if hasattr(directions, "vectors") else load_directions(directions)


def _with_learned(directions: Directions, learned: list[LearnedAttribute]) -> Directions:
    """`directions` and the learned attributes' directions beside them."""
    from facevid.face.directions import Directions

    if not learned:
        return directions
    vectors = np.concatenate([directions.vectors, np.stack([a.vector for a in learned])])
    return Directions(directions.names + tuple(a.name for a in learned), vectors, directions.frames)


PREVIEW_STRENGTHS = (-1.0, -0.5, 0.0, 0.5, 1.0)


def preview_strip(run: Editor, frames: Iterable[Frame], cell: int = 256) -> tuple[np.ndarray, Frame]:
    """`edit --preview`: the first frame with a face inside the editor's span, edited at each
    strength of PREVIEW_STRENGTHS (a multiple of the asked shift, or of the way to the asked
    target), one row per asked attribute, each tile the face's region of the frame at `cell`
    pixels: (the strip as an image, the frame)."""
    from facevid.io.image import labelled_grid

    face = next((f for f in track_faces(frames, run.tracker, run.size, run.landmarks, lookahead=LOOKAHEAD)
                 if f.found and run.span.weight(f.time) > 0), None)
    if face is None:
        raise NoFaceError(run.tracker.not_found("the edit's time span"))
    frame_points = transform_points(invert_affine(face.transform), face.points)
    values = run.values(frame_points, face.points)
    asked = [(n, v, f"{n} {v:+g}") for n, v in run.shift.items()] + \
            [(n, v - values[n], f"{n} ={v:g}") for n, v in run.target.items()]
    box = _face_box(frame_points, face.image.shape)
    rows = []
    for name, amount, _ in asked:
        plans = [run.move(face.points, {name: s * amount}) for s in PREVIEW_STRENGTHS if s]
        parts = iter(run.parts([face.crop] * len(plans), [face.points] * len(plans), [m for m, _ in plans]))
        changes = iter(change for _, change in plans)
        made = [run.render(face.image, face.transform, next(parts), next(changes)) if s else face.image
                for s in PREVIEW_STRENGTHS]
        rows.append([image[box[1]:box[3], box[0]:box[2]] for image in made])
    columns = [f"strength {s:+g}" if s else "0: the input" for s in PREVIEW_STRENGTHS]
    return labelled_grid(rows, columns, cell, row_titles=[title for _, _, title in asked]), face


def _face_box(points: np.ndarray, shape: tuple) -> tuple[int, int, int, int]:
    """A square about the landmarks, twice their extent (room for a turned or rolled head), in the frame."""
    centre = (points.min(0) + points.max(0)) / 2
    side = min(2.0 * float((points.max(0) - points.min(0)).max()), shape[0], shape[1])
    x0 = int(np.clip(round(centre[0] - side / 2), 0, shape[1] - side))
    y0 = int(np.clip(round(centre[1] - side / 2), 0, shape[0] - side))
    return x0, y0, x0 + int(side), y0 + int(side)


@dataclass(kw_only=True)
class EditSummary(TaskSummary):
    input: str
    edits: dict = field(default_factory=dict)
    edited_frames: int = 0
    frames_without_face: int = 0
    preview_time: float | None = None   # --preview: the time of the frame shown


def edit(input: str | Path, output: str | Path, *, shift: dict[str, float] | None = None,
         target: dict[str, float] | None = None, span: Span = Span(), model: FaceVid | str | None = None,
         directions: Directions | str | Path | None = None, face: int = 1, aligner: str = "auto",
         render_size: int = RENDER_SIZE, device: str = "cpu", codec: str = "libx264", crf: int = 18,
         allow_truncated: bool = False, force: bool = False, progress: bool = True,
         preview: bool = False, attributes: Iterable[LearnedAttribute | str | Path] = ()) -> EditSummary:
    """Write `output`, the input video (or photo: an image out) with its face edited; sound, frame
    rate and timestamps kept. `directions`: loaded Directions, a file, or None (the bundled ones);
    `attributes`: learned attributes (or their files, facevid learn-attr) to edit beside them.
    `preview`: `output` is an image instead, one frame at strengths -1 to 1 of each edit (preview_strip)."""
    from facevid.io.image import ImageWriter
    from facevid.io.video import is_image_path, iter_frames, probe
    from facevid.io.writer import VideoWriter, check_crf, check_output_path
    from facevid.weights import as_model

    check_crf(codec, crf)
    info = probe(input)
    out = check_output_path(output, force)
    if out.resolve() == Path(input).resolve():
        raise ConfigError("the output must not be the input")
    if preview and not is_image_path(out):
        raise ConfigError(f"--preview writes an image (.png or .jpg), got {out.name}")
    if is_image_path(out) != info.is_image and not preview:
        raise ConfigError(f"edit writes what it reads: {'an image' if info.is_image else 'a video'} in, "
                          f"so {'an image' if info.is_image else 'a video'} out (got {out.name})")
    run = Editor(as_model(model, device), _directions(directions), shift=shift, target=target, span=span, face=face,
                 aligner=aligner, render_size=render_size, learned=load_learned(attributes))
    summary = EditSummary(input=str(input), output=str(out), edits={**(shift or {}), **(target or {})})
    started = clock.perf_counter()
    if preview:
        strip, frame = preview_strip(run, iter_frames(input, allow_truncated=allow_truncated))
        with ImageWriter(out, force=force) as writer:
            writer.write(strip)
        summary.frames, summary.edited_frames = 1, 4 * len(summary.edits)
        summary.preview_time = frame.time
        summary.finish(started)
        return summary
    writer = ImageWriter(out, force=force) if info.is_image else \
        VideoWriter(out, info.fps, audio_from=input, codec=codec, crf=crf, force=force)
    def check():
        if run.frames == run.frames_without_face:
            raise NoFaceError(run.tracker.not_found(f"{input} ({run.frames} frames)"))

    write_frames(run(iter_frames(input, allow_truncated=allow_truncated)), writer, "edit", info.frame_count,
                 progress=progress, check=check)
    summary.frames, summary.edited_frames, summary.frames_without_face = run.frames, run.edited, run.frames_without_face
    summary.finish(started)
    return summary
