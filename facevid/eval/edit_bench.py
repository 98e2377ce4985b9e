"""The edit benchmark: `facevid edit`'s own code (tasks.edit.Editor) on held-out clips and photos,
every output frame measured by dlib on the full frame (not the landmarks the edit aimed at).

For each attribute, shifts of -1, -0.5, +0.5 and +1 steps (a quarter of its slider range) on
every frame, and for the expression attributes `--set` targets at a quarter and three quarters
of the range. Per attribute, over the clips:

- gain: the least-squares slope of the measured change against the asked one (1: as asked);
  monotonic: the mean measured change grows with the strength (within 1% of the range);
- crosstalk: the largest mean change of another attribute at a full step, as a share of that
  attribute's range (the eye measures among themselves and a turn's on one eye not counted);
- set error: the mean distance of the measured attribute to its --set target;
- worst identity: the largest identity distance of an edited frame to its input frame;
- TL-ID / TG-ID: the edited clip's less the input's;
- flicker: the mean frame-to-frame move of the face box ÷ the input's (videos only; the worst clip);
- sharpness: the face's mean |Laplacian| ÷ the input face's;
- outside: the largest pixel change beyond the face's box grown to 2.5 times its size (0: the
  frame is untouched there).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facevid.errors import InputError
from facevid.eval.transfer_bench import FrameMeter, box_of, sharpness
from facevid.face.attributes import ATTRIBUTES, measure

SHIFTED = ("smile", "mouth", "eyes", "brows", "yaw", "pitch", "roll")
SET = ("smile", "mouth", "eyes", "brows")
STRENGTHS = (-1.0, -0.5, 0.5, 1.0)
EYES = {"eyes", "left-eye", "right-eye"}


@dataclass(frozen=True)
class EditClip:
    path: Path
    kind: str    # "video", or "photo": the clip's first frame, edited as a still


def read_clips(path: str | Path, media: str | Path) -> list[EditClip]:
    """The clips of a TSV (path, kind: video or photo; '#' comments), paths under `media`."""
    path, media = Path(path), Path(media)
    if not path.is_file():
        raise InputError(f"no clip list {path}")
    lines = [line for line in path.read_text(errors="replace").splitlines()
             if line.strip() and not line.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t"))
    if not rows or not {"path", "kind"} <= set(rows[0]):
        raise InputError(f"{path} is not an edit clip list (a tab-separated header: path, kind)")
    clips = []
    for i, row in enumerate(rows, 2):
        if row["kind"] not in ("video", "photo") or not (media / row["path"]).is_file():
            raise InputError(f"{path}, row {i}: want an existing file and kind video or photo, got {row}")
        clips.append(EditClip(media / row["path"], row["kind"]))
    return clips


def step(name: str) -> float:
    return 0.25 * (ATTRIBUTES[name].high - ATTRIBUTES[name].low)


def _span(name: str) -> float:
    return ATTRIBUTES[name].high - ATTRIBUTES[name].low


class _Scored:
    """One clip's input frames, measured once; `score` measures an edit of them against it."""

    def __init__(self, frames: list[np.ndarray], meter: FrameMeter):
        from facevid.face.identity import temporal_identity

        self.frames, self.meter = frames, meter
        self.found = [meter(f) for f in frames]
        self.faces = [i for i, (m, _) in enumerate(self.found) if m is not None]
        if not self.faces:
            raise InputError("dlib finds no face in an edit benchmark clip")
        self.values = {i: measure(self.found[i][0]) for i in self.faces}
        embeddings = np.array([self.found[i][1] for i in self.faces])
        self.tl, self.tg = temporal_identity(embeddings) if len(self.faces) > 1 else (1.0, 1.0)
        self.motion = _box_motion([self.found[i][0] for i in self.faces])
        self.sharp = {i: sharpness(frames[i], box_of(self.found[i][0], frames[i].shape)) for i in self.faces}

    def score(self, made: list[np.ndarray]) -> dict:
        """{"change": {attribute: mean change}, "values": {attribute: mean value}, worst identity, ...}."""
        from facevid.face.identity import temporal_identity

        found = {i: self.meter(made[i]) for i in self.faces}
        kept = [i for i in self.faces if found[i][0] is not None]
        if not kept:
            return {"lost": 1.0}
        after = {i: measure(found[i][0]) for i in kept}
        change = {n: float(np.mean([after[i][n] - self.values[i][n] for i in kept])) for n in ATTRIBUTES}
        values = {n: float(np.mean([after[i][n] for i in kept])) for n in ATTRIBUTES}
        identity = max(float(np.linalg.norm(found[i][1] - self.found[i][1])) for i in kept)
        tl, tg = temporal_identity(np.array([found[i][1] for i in kept])) if len(kept) > 1 else (1.0, 1.0)
        outside = 0
        for i in kept:
            x0, y0, x1, y1 = box_of(self.found[i][0], made[i].shape, 0.75)
            changed = np.abs(made[i].astype(np.int16) - self.frames[i]).max(-1)
            changed[y0:y1, x0:x1] = 0
            outside = max(outside, int(changed.max()))
        motion = _box_motion([found[i][0] for i in kept])
        return {"change": change, "values": values, "identity": identity, "lost": 1 - len(kept) / len(self.faces),
                "tl_id": tl - self.tl, "tg_id": tg - self.tg, "outside": outside,
                "flicker": motion / self.motion if self.motion > 0 else float("nan"),
                "sharpness": float(np.mean([sharpness(made[i], box_of(found[i][0], made[i].shape)) / self.sharp[i]
                                            for i in kept]))}


def _box_motion(marks: list[np.ndarray]) -> float:
    """The mean frame-to-frame move of the landmarks' box corners, in eye distances."""
    from facevid.face.identity import iod

    if len(marks) < 2:
        return 0.0
    boxes = np.array([np.concatenate([m.min(0), m.max(0)]) / iod(m) for m in marks])
    return float(np.abs(np.diff(boxes, axis=0)).mean())


def _clip_frames(clip: EditClip, max_frames: int) -> tuple[list[np.ndarray], float]:
    from facevid.io.video import iter_frames, probe

    frames = []
    for frame in iter_frames(clip.path):
        if frame.index >= (1 if clip.kind == "photo" else max_frames):
            break
        frames.append(frame.image)
    return frames, float(probe(clip.path).fps)


def edit_benchmark(model, clips: list[EditClip], *, max_frames: int = 24, directions=None,
                   progress: bool = False) -> dict:
    """{"attributes": {name: row}, "clips": [names], "max_frames"}: see the module."""
    from facevid.progress import progress_bar
    from facevid.tasks.edit import Span, _directions, edit_frames

    directions, meter = _directions(directions), FrameMeter()
    runs = {name: [] for name in SHIFTED}
    sets = {name: [] for name in SET}
    work = len(clips) * (len(SHIFTED) * len(STRENGTHS) + 2 * len(SET))
    with progress_bar("edit benchmark", work, enabled=progress, unit=None) as advance:
        for clip in clips:
            frames, fps = _clip_frames(clip, max_frames)
            scored = _Scored(frames, meter)

            def edited(**edit):
                made = list(edit_frames(frames, fps=fps, span=Span(), model=model, directions=directions, **edit))
                advance(1)
                return scored.score(made)

            for name in SHIFTED:
                runs[name].append([(s * step(name), edited(shift={name: s * step(name)})) for s in STRENGTHS])
            for name in SET:
                low, high = ATTRIBUTES[name].low, ATTRIBUTES[name].high
                for target in (low + 0.25 * (high - low), low + 0.75 * (high - low)):
                    sets[name].append((target, edited(target={name: target})))
    rows = {name: _row(name, runs[name], sets.get(name, [])) for name in SHIFTED}
    return {"attributes": rows, "clips": [f"{c.path.stem} ({c.kind})" for c in clips], "max_frames": max_frames}


def _row(name: str, runs: list, sets: list) -> dict:
    """One attribute's scores over the clips' runs [(asked, score), ...] and --set runs."""
    scores = [s for clip in runs for _, s in clip if "change" in s]
    asked = np.array([a for clip in runs for a, s in clip if "change" in s])
    got = np.array([s["change"][name] for s in scores])
    means = [np.mean([s["change"][name] for clip in runs for a, s in clip if a == k * step(name) and "change" in s])
             for k in STRENGTHS]
    full = [s for clip in runs for a, s in clip if abs(a) == step(name) and "change" in s]
    cross = {other: abs(np.mean([s["change"][other] * np.sign(a) for clip in runs for a, s in clip
                                 if abs(a) == step(name) and "change" in s])) / _span(other)
             for other in ATTRIBUTES if other != name and not (name in EYES and other in EYES)
             and not (name == "yaw" and other in EYES)}
    every = scores + [s for _, s in sets if "change" in s]
    row = {"gain": float(asked @ got / (asked @ asked)) if len(asked) else float("nan"),
           "monotonic": bool(all(b >= a - 0.01 * _span(name) for a, b in zip(means, means[1:]))),
           "crosstalk": float(max(cross.values())), "crosstalk_with": max(cross, key=cross.get),
           "worst_identity": max(s["identity"] for s in every),
           "lost": float(np.mean([s["lost"] for clip in runs for _, s in clip])),
           "tl_id": float(min(s["tl_id"] for s in every)), "tg_id": float(min(s["tg_id"] for s in every)),
           "flicker": max((s["flicker"] for s in full if np.isfinite(s["flicker"])), default=float("nan")),
           "sharpness": float(min(s["sharpness"] for s in every)), "outside": int(max(s["outside"] for s in every))}
    if sets:
        row["set_error"] = float(np.mean([abs(s["values"][name] - target) for target, s in sets if "change" in s]))
    return row


def table(result: dict) -> str:
    """The benchmark as Markdown, one row per attribute."""
    head = ("attribute", "step", "gain", "monotonic", "crosstalk", "set error", "worst id", "TL-ID Δ", "TG-ID Δ",
            "flicker", "sharpness", "outside")
    lines = [f"edit benchmark: {len(result['clips'])} clips ({', '.join(result['clips'])}), up to "
             f"{result['max_frames']} frames each, full frames measured by dlib",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, r in result["attributes"].items():
        set_error = f"{r['set_error']:.3f}" if "set_error" in r else "-"
        lines.append(f"| {name} | {step(name):g} {ATTRIBUTES[name].unit} | {r['gain']:.2f} | "
                     f"{'yes' if r['monotonic'] else 'no'} | {r['crosstalk']:.0%} ({r['crosstalk_with']}) | "
                     f"{set_error} | {r['worst_identity']:.3f} | {r['tl_id']:+.3f} | {r['tg_id']:+.3f} | "
                     f"{r['flicker']:.2f} | {r['sharpness']:.2f} | {r['outside']} |")
    return "\n".join(lines)
