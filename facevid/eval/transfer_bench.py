"""The transfer benchmark: `facevid transfer` as a user runs it, scored on full output frames.

Each pair of a list (splits/transfer_pairs.tsv) is a source (a photo, or a video's first frame
saved as one) and a driver clip (its first `max_frames` frames). The real `transfer` writes an
mp4 (H.264, its default quality) that is read back; dlib measures every full output frame at
its own resolution (68 landmarks, 128-D identity), beside two baselines made on the same full
frames: copying the source, and the classical landmark warp of the source's frame driven by the
driver's landmark motion (head pose included). Scores per pair and their mean:

- identity: distance of each frame's embedding to the source's; the share under 0.6 (dlib's
  same-person threshold), the mean and the worst frame; frames without a face count as misses;
- motion: the output's landmark change since its first frame against the driver's since its
  own, each in its first face's frame (eye line level, eye distance 1), ÷ the same error of
  copying the source; "with head" counts roll, shift and zoom, "head removed" aligns every
  frame's stable points onto the first's first (expression only);
- sharpness: the mean absolute Laplacian of the face (and of the mouth) ÷ the source face's;
- where a video drives itself from its first frame: PSNR/SSIM of the face region (the real
  frame's landmark box) against the real frames;
- jitter of the output's landmarks beside the driver's, TL-ID/TG-ID of its embeddings.
A PNG sheet shows each pair's worst frames (by identity distance, then motion error) at the
face's own pixels.
"""

from __future__ import annotations

import csv
import math
import tempfile
import time as clock
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facevid.errors import InputError
from facevid.face.expression import similarity_fit
from facevid.face.landmarks import LEFT_EYE, MOUTH, RIGHT_EYE, STABLE

SAME_PERSON = 0.6
METHODS = ("facevid", "copy source", "landmark warp")
PAIR_COLUMNS = ["source", "driver", "facevid", "landmark warp", "real"]
SHEET_FRAMES = 3


@dataclass(frozen=True)
class Pair:
    source: Path
    driver: Path
    kind: str          # "cross": another person drives; "self": a video drives itself from its first frame
    why: str = ""

    @property
    def name(self) -> str:
        return f"{self.source.stem} <- {self.driver.stem}"


def read_pairs(path: str | Path, media: str | Path) -> list[Pair]:
    """The pairs of a TSV (source, driver, kind[, why]; '#' comments), paths under `media`."""
    path, media = Path(path), Path(media)
    if not path.is_file():
        raise InputError(f"no pair list {path}")
    if not media.is_dir():
        raise InputError(f"no media folder {media} (the folder the pair list's paths are under)")
    lines = [line for line in path.read_text(errors="replace").splitlines()
             if line.strip() and not line.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t"))
    if not rows or not {"source", "driver", "kind"} <= set(rows[0]):
        raise InputError(f"{path} is not a pair list (a tab-separated header: source, driver, kind, why)")
    pairs = []
    for i, row in enumerate(rows, 2):
        if row["kind"] not in ("cross", "self"):
            raise InputError(f"{path}, row {i}: kind must be 'cross' or 'self', got {row['kind']!r}")
        source, driver = media / row["source"], media / row["driver"]
        for file in (source, driver):
            if not file.is_file():
                raise InputError(f"{path}, row {i}: no file {file}")
        pairs.append(Pair(source, driver, row["kind"], row.get("why") or ""))
    return pairs


class FrameMeter:
    """dlib on full frames: the largest face's 68 landmarks and 128-D identity embedding."""

    def __init__(self):
        from facevid.face.track import DlibBackend, dlib_model

        self.backend = DlibBackend()
        self._dlib = self.backend._dlib
        self.shape68, self.encoder = dlib_model("sixty-eight"), dlib_model("identity")

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        image = np.ascontiguousarray(image)    # dlib takes no strided views
        found = self.backend.detect(image)
        if not found:
            return None, None
        x0, y0, x1, y1 = (int(round(v)) for v in found[0][0])
        shape = self.shape68(image, self._dlib.rectangle(x0, y0, x1, y1))
        marks = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
        return marks, np.array(self.encoder.compute_face_descriptor(image, shape))


def face_frame(marks: np.ndarray) -> np.ndarray:
    """The (2, 3) similarity taking a face's landmarks to its own frame: eye centres level,
    their midpoint at 0, their distance 1."""
    left, right = marks[LEFT_EYE].mean(0), marks[RIGHT_EYE].mean(0)
    d = right - left
    scale = 1.0 / max(float(np.hypot(*d)), 1e-9)
    angle = math.atan2(d[1], d[0])
    c, s = scale * math.cos(-angle), scale * math.sin(-angle)
    lin = np.array([[c, -s], [s, c]])
    return np.hstack([lin, (-lin @ ((left + right) / 2))[:, None]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def landmark_changes(marks: list[np.ndarray | None], head: bool = True) -> list[np.ndarray | None]:
    """Each frame's landmarks minus the first's, in the first face's frame; with `head` False
    every frame is first aligned onto the first by a similarity fit of its stable points."""
    first = marks[0]
    if first is None:
        return [None] * len(marks)
    to_face = face_frame(first)
    base = _apply(to_face, first)
    out = []
    for m in marks:
        if m is None:
            out.append(None)
            continue
        if not head:
            m = _apply(similarity_fit(m[STABLE], first[STABLE]), m)
        out.append(_apply(to_face, m) - base)
    return out


def motion_errors(output: list, driver: list, head: bool) -> tuple[float, float]:
    """(error, copying the source's error): mean landmark distance of the output's change to
    the driver's, in eye distances, over the frames where both have a face."""
    made, want = landmark_changes(output, head), landmark_changes(driver, head)
    err, copy = [], []
    for m, w in zip(made, want):
        if m is not None and w is not None:
            err.append(np.linalg.norm(m - w, axis=1).mean())
            copy.append(np.linalg.norm(w, axis=1).mean())
    return (float(np.mean(err)), float(np.mean(copy))) if err else (float("nan"), float("nan"))


def sharpness(image: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    grey = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F)).mean()) if grey.size else float("nan")


def box_of(points: np.ndarray, shape: tuple[int, ...], grow: float = 0.05) -> tuple[int, int, int, int]:
    lo, hi = points.min(0), points.max(0)
    pad = (hi - lo) * grow
    x0, y0 = np.maximum(np.floor(lo - pad), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(hi + pad) + 1, [shape[1], shape[0]]).astype(int)
    return int(x0), int(y0), int(x1), int(y1)


def mouth_box(marks: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    eyes = float(np.linalg.norm(marks[LEFT_EYE].mean(0) - marks[RIGHT_EYE].mean(0)))
    mouth = marks[MOUTH]
    return box_of(np.vstack([mouth.min(0) - 0.15 * eyes, mouth.max(0) + 0.15 * eyes]), shape, 0.0)


def warp_window(source: np.ndarray, source_marks: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The classical landmark warp of the source frame, computed on a window about the face
    (its border held still, three face sizes across) and put back into the full frame."""
    from facevid.face.landmark_warp import piecewise_affine_warp

    both = np.vstack([source_marks, target])
    lo, hi = both.min(0), both.max(0)
    pad = (hi - lo).max()
    h, w = source.shape[:2]
    x0, y0 = (int(max(v, 0)) for v in np.floor(lo - pad))
    x1, y1 = int(min(np.ceil(hi[0] + pad), w)), int(min(np.ceil(hi[1] + pad), h))
    out = source.copy()
    shift = np.array([x0, y0], np.float64)
    out[y0:y1, x0:x1] = piecewise_affine_warp(source[y0:y1, x0:x1], source_marks - shift, target - shift)
    return out


def warp_target(source_marks: np.ndarray, driver_first: np.ndarray, driver_now: np.ndarray) -> np.ndarray:
    """The source's landmarks moved by the driver's change since its first frame, head pose
    included, carried from the driver's face frame into the source's."""
    to_drv, to_src = face_frame(driver_first), face_frame(source_marks)
    change = _apply(to_drv, driver_now) - _apply(to_drv, driver_first)
    back = np.linalg.inv(np.vstack([to_src, [0, 0, 1]]))[:2]
    return _apply(back, _apply(to_src, source_marks) + change)


def face_crop(image: np.ndarray, marks: np.ndarray | None, centre_box: tuple[int, int, int, int]) -> np.ndarray:
    """A square about the face (1.6 face sizes), at the image's own pixels."""
    x0, y0, x1, y1 = centre_box if marks is None else box_of(marks, image.shape, 0.0)
    side = int(max(x1 - x0, y1 - y0) * 1.6) + 1
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    h, w = image.shape[:2]
    a, b = max(cx - side // 2, 0), max(cy - side // 2, 0)
    return image[b:min(b + side, h), a:min(a + side, w)]


def _square(tile: np.ndarray, cell: int) -> np.ndarray:
    """A tile fitted into a cell x cell square, shrunk only if larger, centred on white."""
    scale = min(1.0, cell / max(tile.shape[:2]))
    if scale < 1:
        tile = cv2.resize(tile, (max(1, round(tile.shape[1] * scale)), max(1, round(tile.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    out = np.full((cell, cell, 3), 255, np.uint8)
    y, x = (cell - tile.shape[0]) // 2, (cell - tile.shape[1]) // 2
    out[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    return out


def _driver_clip(pair: Pair, max_frames: int, folder: Path):
    """(source image, its path as a PNG, the driver's first frames, their clip, fps)."""
    from facevid.io.image import write_image
    from facevid.io.video import iter_frames, probe
    from facevid.io.writer import VideoWriter

    source = next(iter_frames(pair.source)).image
    source_path = write_image(folder / "source.png", source)
    info = probe(pair.driver)
    frames = []
    clip = folder / "driver.mp4"
    with VideoWriter(clip, info.fps, audio_from=None, crf=0) as writer:
        for frame in iter_frames(pair.driver):
            if frame.index >= max_frames:
                break
            frames.append(frame.image)
            writer.write(frame.image, frame.time)
    return source, source_path, frames, clip


def score_pair(model, pair: Pair, meter: FrameMeter, *, max_frames: int, options: dict,
               sheet_rows: list | None = None, cell: int = 256) -> dict:
    """One pair's scores per method (facevid and the two baselines)."""
    from facevid.face.identity import iod, jitter
    from facevid.io.video import iter_frames
    from facevid.tasks.transfer import transfer

    with tempfile.TemporaryDirectory(prefix="facevid-bench-") as tmp:
        folder = Path(tmp)
        source, source_path, driver, clip = _driver_clip(pair, max_frames, folder)
        started = clock.perf_counter()
        transfer(source_path, clip, folder / "out.mp4", model=model, progress=False, **options)
        seconds = clock.perf_counter() - started
        made = [f.image for f in iter_frames(folder / "out.mp4")]
    src_marks, src_emb = meter(source)
    if src_marks is None:
        raise InputError(f"dlib finds no face in the first frame of {pair.source}")
    drv = [meter(f) for f in driver]
    drv_marks = [m for m, _ in drv]
    drv_first = next((m for m in drv_marks if m is not None), None)
    if drv_first is None:
        raise InputError(f"dlib finds no face in {pair.driver}")
    src_face, src_mouth = box_of(src_marks, source.shape), mouth_box(src_marks, source.shape)
    src_sharp, src_mouth_sharp = sharpness(source, src_face), sharpness(source, src_mouth)
    outputs = {
        "facevid": made,
        "copy source": [source] * len(driver),
        "landmark warp": [source if m is None else warp_window(source, src_marks, warp_target(src_marks, drv_first, m))
                          for m in drv_marks],
    }
    result, measured = {}, {}
    for method, frames in outputs.items():
        found = [meter(f) for f in frames] if method != "copy source" else [(src_marks, src_emb)] * len(frames)
        measured[method] = found
        result[method] = method_row(frames, found, drv_marks, src_emb, (src_sharp, src_mouth_sharp),
                                    real=driver if pair.kind == "self" else None)
    steady = [m / iod(m) for m in drv_marks if m is not None]
    result["_driver"] = {"jitter": jitter(np.stack(steady)) if len(steady) > 2 else float("nan"),
                         "frames": len(driver), "fps": len(driver) / seconds,
                         "source": f"{source.shape[1]}x{source.shape[0]}"}
    if sheet_rows is not None:
        sheet_rows.extend(_worst_rows(pair, source, src_marks, driver, drv_marks, outputs, measured, cell))
    return result


def method_row(frames: list[np.ndarray], found: list, drv_marks: list, src_emb: np.ndarray,
               src_sharpness: tuple[float, float], real: list[np.ndarray] | None = None) -> dict:
    """One method's scores on a pair: `found` its frames' (landmarks, embedding) or Nones,
    `real` the real frames where a video drives itself."""
    from facevid.eval.reenactment import psnr, ssim
    from facevid.face.identity import iod, jitter, temporal_identity

    marks = [m for m, _ in found]
    dist = np.array([np.linalg.norm(e - src_emb) if e is not None else np.inf for _, e in found])
    with_head, copy_head = motion_errors(marks, drv_marks, head=True)
    no_head, copy_no_head = motion_errors(marks, drv_marks, head=False)
    faces = [(f, m) for f, m in zip(frames, marks) if m is not None]
    sharp = [sharpness(f, box_of(m, f.shape)) / src_sharpness[0] for f, m in faces]
    mouth = [sharpness(f, mouth_box(m, f.shape)) / src_sharpness[1] for f, m in faces]
    steady = [m / iod(m) for m in marks if m is not None]
    embeddings = np.array([e for _, e in found if e is not None])
    tl, tg = temporal_identity(embeddings) if len(embeddings) > 1 else (float("nan"), float("nan"))
    row = {"frames": len(frames), "no_face": float(np.mean([m is None for m in marks])),
           "same_person": float(np.mean(dist < SAME_PERSON)),
           "identity": float(np.mean(dist[np.isfinite(dist)])) if np.isfinite(dist).any() else float("nan"),
           "worst_identity": float(dist.max()),
           "motion": with_head / max(copy_head, 1e-9), "motion_no_head": no_head / max(copy_no_head, 1e-9),
           "motion_error": with_head, "sharpness": float(np.mean(sharp)) if sharp else float("nan"),
           "mouth_sharpness": float(np.mean(mouth)) if mouth else float("nan"),
           "jitter": jitter(np.stack(steady)) if len(steady) > 2 else float("nan"), "tl_id": tl, "tg_id": tg}
    if real is not None:
        regions = [(f, r, box_of(m, r.shape, 0.1)) for f, r, m in zip(frames, real, drv_marks) if m is not None]
        row["psnr"] = float(np.mean([psnr(f[y0:y1, x0:x1], r[y0:y1, x0:x1]) for f, r, (x0, y0, x1, y1) in regions]))
        row["ssim"] = float(np.mean([ssim(f[y0:y1, x0:x1], r[y0:y1, x0:x1]) for f, r, (x0, y0, x1, y1) in regions]))
    return row


def _worst_rows(pair, source, src_marks, driver, drv_marks, outputs, measured, cell) -> list[list[np.ndarray]]:
    """The pair's worst facevid frames (identity distance, then motion error), as sheet rows."""
    _, src_emb = measured["copy source"][0]
    made = measured["facevid"]
    changes, wanted = landmark_changes([m for m, _ in made]), landmark_changes(drv_marks)

    def badness(i):
        marks, emb = made[i]
        if marks is None:
            return (np.inf, np.inf)
        motion = np.linalg.norm(changes[i] - wanted[i], axis=1).mean() if wanted[i] is not None else 0.0
        return (float(np.linalg.norm(emb - src_emb)) > SAME_PERSON, float(motion))

    worst = sorted(range(len(made)), key=badness, reverse=True)[:SHEET_FRAMES]
    face_box = box_of(src_marks, source.shape, 0.0)
    rows = []
    for i in sorted(worst):
        tiles = [face_crop(source, src_marks, face_box), face_crop(driver[i], drv_marks[i], face_box),
                 face_crop(outputs["facevid"][i], made[i][0] if made[i][0] is not None else src_marks, face_box),
                 face_crop(outputs["landmark warp"][i], src_marks, face_box)]
        tiles.append(face_crop(driver[i], drv_marks[i], face_box) if pair.kind == "self"
                     else np.full((8, 8, 3), 255, np.uint8))
        rows.append([_square(t, cell) for t in tiles])
    return rows


def transfer_benchmark(model, pairs: list[Pair], *, max_frames: int = 100, options: dict | None = None,
                       sheet_rows: list | None = None, progress: bool = False) -> dict:
    """{"pairs": {name: {method: row, "_driver": ...}}, "mean": {method: row}}; `progress` draws a
    bar over the pairs on a terminal."""
    from facevid.progress import progress_bar

    meter = FrameMeter()
    per_pair = {}
    with progress_bar("transfer benchmark", len(pairs), enabled=progress, unit=None) as advance:
        for pair in pairs:
            per_pair[pair.name] = {"kind": pair.kind, **score_pair(model, pair, meter, max_frames=max_frames,
                                                                 options=options or {}, sheet_rows=sheet_rows)}
            advance(1)
    mean = {}
    for method in METHODS:
        rows = [p[method] for p in per_pair.values()]
        keys = {k for r in rows for k in r}
        mean[method] = {k: float(np.nanmean([r[k] for r in rows if k in r])) for k in sorted(keys)}
    mean["_driver"] = {"jitter": float(np.nanmean([p["_driver"]["jitter"] for p in per_pair.values()])),
                       "fps": float(np.mean([p["_driver"]["fps"] for p in per_pair.values()]))}
    return {"pairs": per_pair, "mean": mean, "max_frames": max_frames, "options": options or {}}


def table(result: dict) -> str:
    """The benchmark as Markdown: the mean per method, then facevid per pair."""
    cols = ("same_person", "identity", "worst_identity", "motion", "motion_no_head", "sharpness", "mouth_sharpness",
            "psnr", "ssim", "jitter", "tl_id", "tg_id")
    head = ("same person", "identity", "worst id", "motion ÷ copy", "… head removed", "sharpness", "mouth sharp.",
            "self PSNR", "self SSIM", "jitter", "TL-ID", "TG-ID")

    def cells(row):
        return " | ".join("-" if row.get(k) is None or not np.isfinite(row.get(k)) else
                          f"{row[k]:.0%}" if k == "same_person" else f"{row[k]:.2f}" if k == "psnr" else
                          f"{row[k]:.3f}" for k in cols)

    mean = result["mean"]
    lines = [f"transfer benchmark: {len(result['pairs'])} pairs, up to {result['max_frames']} driver frames each, "
             f"full output frames; driver jitter {mean['_driver']['jitter']:.3f}; transfer "
             f"{mean['_driver']['fps']:.1f} frames/s" + (f"; options {result['options']}" if result["options"] else ""),
             "| method | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    lines += [f"| {m} | {cells(mean[m])} |" for m in METHODS]
    lines += ["", "| facevid per pair | kind | source | " + " | ".join(head) + " |", "|---" * (len(head) + 3) + "|"]
    lines += [f"| {name} | {p['kind']} | {p['_driver']['source']} | {cells(p['facevid'])} |"
              for name, p in result["pairs"].items()]
    return "\n".join(lines)
