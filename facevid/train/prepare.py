"""`facevid prepare`: track and crop a folder of videos into a training cache.

Layout of a cache folder:

    manifest.json            format version, crop spec, one entry per clip, skipped files
    clips/NAME.npy           (T, S, S, 3) uint8 aligned crops of the frames with a face
    clips/NAME.npz           per kept frame: frame index, time, 5 landmarks and (optional)
                             68 landmarks, both in crop pixels; the frame→crop transforms

Version 2 measures the 68 landmarks on the aligned crop (facevid.face.track.Landmarks68), as
`transfer` measures the driver's; version 1 measured them on the frame, on a box fitted to
each frame's 5 landmarks. `facevid prepare` on a version-1 cache re-measures them on the
stored crops (a few ms a frame) before it adds anything; synthetic caches hold exact
landmarks and are read whatever their version.

Every clip is written atomically and the manifest after every clip, so an interrupted
run resumes where it stopped; unreadable or faceless files are skipped with a warning.
"""

from __future__ import annotations

import csv
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from facevid.errors import ConfigError, FacevidError, InputError
from facevid.face.crop import CropSpec, cut_crop, transform_points
from facevid.io.atomic import atomic_open, atomic_path, make_folder, temp_beside, write_json
from facevid.io.cache import CACHE_VERSION, load_manifest
from facevid.io.video import find_media


@dataclass
class PrepareSummary:
    cache: str
    clips: int = 0            # clips in the cache now
    added: int = 0            # clips added by this run
    resumed: int = 0          # clips already there (skipped by this run)
    skipped: list = field(default_factory=list)   # [{"source", "reason"}]
    frames: int = 0           # frames in the cache now


def read_labels(path: Path | None) -> dict[str, str]:
    """A CSV/TSV with an 'identity' column and path columns ('local', 'path' or 'file');
    every path column is a key, so paths relative to the videos folder or to anywhere else
    in it match."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise InputError(f"cannot read labels file {path}: {error.strerror}") from error
    lines = text.splitlines()
    rows = list(csv.DictReader(lines, delimiter="\t" if lines and "\t" in lines[0] else ","))
    keys = [k for k in ("local", "path", "file") if rows and k in rows[0]]
    if not keys or "identity" not in rows[0]:
        raise InputError(f"labels file {path} needs a 'path' (or 'local') column and an 'identity' column")
    labels: dict[str, str] = {}
    for key in reversed(keys):   # 'local' wins over 'path' where both match
        labels.update({row[key]: row["identity"] for row in rows if row.get("identity") and row.get(key)})
    return labels


def clip_name(relative: Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(relative.with_suffix(""))).strip("_")[:150]


def upgrade_cache(cache: Path, manifest: dict, *, progress: bool = True) -> None:
    """Version 1 → 2: every real clip's 68 landmarks re-measured on its stored crops, clip by
    clip (atomically; an interrupted upgrade starts again), then the manifest's version."""
    from facevid.face.track import Landmarks68
    from facevid.progress import progress_bar

    crop = manifest["crop"]
    if not crop.get("synthetic"):
        marks = Landmarks68(CropSpec(size=crop["size"], margin=crop["margin"], center_y=crop["center_y"]))
        with progress_bar("re-measure landmarks", len(manifest["clips"]), enabled=progress, unit="clips/s") as advance:
            for entry in manifest["clips"]:
                stem = cache / "clips" / entry["name"]
                arrays = dict(np.load(stem.with_suffix(".npz")))
                if "landmarks68" in arrays:
                    frames = np.load(stem.with_suffix(".npy"), mmap_mode="r")
                    arrays["landmarks68"] = np.stack([marks.on_crop(np.asarray(f)) for f in frames]).astype(np.float32)
                    with atomic_path(stem.with_suffix(".npz"), ".npz") as tmp:
                        np.savez(tmp, **arrays)
                advance(1)
    manifest["version"] = CACHE_VERSION
    write_json(cache / "manifest.json", manifest)


def crop_clip(source: Path, out_stem: Path, spec: CropSpec, tracker, predictor68=None,
              allow_truncated: bool = False) -> dict:
    """Track one video, write NAME.npy/NAME.npz atomically; returns its manifest entry."""
    from facevid.io.video import iter_frames, probe

    info = probe(source)
    raw = temp_beside(out_stem, ".raw")
    kept = {"index": [], "time": [], "landmarks5": [], "landmarks68": [], "transform": []}
    total = 0
    try:
        with open(raw, "wb") as sink:
            for frame in iter_frames(source, allow_truncated=allow_truncated):
                total += 1
                face = tracker.update(frame.image, frame.index, frame.time)
                if not face.found:
                    continue
                crop = cut_crop(frame.image, face.transform, spec.size)
                sink.write(crop.tobytes())
                kept["index"].append(frame.index)
                kept["time"].append(frame.time)
                kept["transform"].append(face.transform)
                kept["landmarks5"].append(transform_points(face.transform, face.landmarks))
                if predictor68 is not None:
                    kept["landmarks68"].append(predictor68(frame.image, face, crop))
        if not kept["index"]:
            raise InputError(f"no face in any of the {total} frames")
        _finish_npy(raw, out_stem.with_suffix(".npy"), (len(kept["index"]), spec.size, spec.size, 3))
    finally:
        raw.unlink(missing_ok=True)
    arrays = {k: np.asarray(v, np.float32 if k != "index" else np.int64) for k, v in kept.items() if v}
    with atomic_path(out_stem.with_suffix(".npz"), ".npz") as tmp:
        np.savez(tmp, **arrays)
    return {"frames": len(kept["index"]), "frames_total": total, "faceless": total - len(kept["index"]),
            "fps": float(info.fps), "width": info.width, "height": info.height, "has_audio": info.has_audio,
            "is_image": info.is_image}


def _finish_npy(raw: Path, target: Path, shape: tuple) -> None:
    """Prefix raw uint8 bytes with an .npy header, atomically."""
    with atomic_open(target) as out, open(raw, "rb") as data:
        np.lib.format.write_array_header_1_0(out, {"descr": "|u1", "fortran_order": False, "shape": shape})
        shutil.copyfileobj(data, out, 1 << 22)


def _stamp(path: Path) -> list[int] | None:
    """(size, mtime in ns) of a file: a skipped file whose stamp changed is tried again."""
    try:
        info = path.stat()
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns]


def prepare(videos: str | Path, cache: str | Path, *, size: int = 256, margin: float = 0.5,
            labels: str | Path | None = None, images: bool = False, landmarks68: bool = True,
            aligner: str = "auto", progress: bool = True, retry_skipped: bool = False, allow_truncated: bool = False,
            warn=None) -> PrepareSummary:
    """Track and crop every video under `videos` into `cache` (resumable; files skipped before
    are tried again when they changed since, or all of them with `retry_skipped`)."""
    from facevid.face.track import FaceTracker, Landmarks68, make_backend
    from facevid.progress import progress_bar

    videos, cache = Path(videos), Path(cache)
    if not videos.is_dir():
        raise InputError(f"{videos} is not a folder of videos")
    spec = CropSpec(size=size, margin=margin)
    manifest = load_manifest(cache, upgradable=True) or {"format": "facevid-cache", "version": CACHE_VERSION,
                                         "crop": asdict(spec), "clips": [], "skipped": []}
    if manifest["crop"] != asdict(spec):
        raise ConfigError(f"{cache} holds crops made with {manifest['crop']}; use the same --size/--margin or a new cache")
    if manifest["version"] != CACHE_VERSION:
        upgrade_cache(cache, manifest, progress=progress)
    identity = read_labels(Path(labels) if labels else None)
    make_folder(cache / "clips", "cache folder")
    done = {c["source"] for c in manifest["clips"]}
    if not retry_skipped:   # a skipped file is tried again once it has changed
        done |= {s["source"] for s in manifest["skipped"] if s.get("stamp") == _stamp(videos / s["source"])}
    backend = make_backend(aligner)
    predictor68 = Landmarks68(spec) if landmarks68 else None
    summary = PrepareSummary(cache=str(cache))
    files = find_media(videos, images)
    warn = warn or (lambda msg: print(f"facevid: warning: {msg}", file=sys.stderr))
    with progress_bar("prepare", len(files), enabled=progress, unit="files/s") as advance:
        for path in files:
            relative = path.relative_to(videos)
            if str(relative) in done:
                summary.resumed += 1
                for entry in manifest["clips"]:   # labels given now update earlier clips
                    if entry["source"] == str(relative) and str(relative) in identity:
                        entry["identity"] = identity[str(relative)]
                advance(1)
                continue
            name = clip_name(relative)
            try:
                entry = crop_clip(path, cache / "clips" / name, spec, FaceTracker(backend, spec), predictor68,
                                  allow_truncated)
            except FacevidError as error:
                warn(f"skipped {relative}: {error}")
                manifest["skipped"] = [s for s in manifest["skipped"] if s["source"] != str(relative)]
                manifest["skipped"].append({"source": str(relative), "reason": str(error), "stamp": _stamp(path)})
            else:
                manifest["skipped"] = [s for s in manifest["skipped"] if s["source"] != str(relative)]
                label = identity.get(str(relative)) or identity.get(str(path)) or (relative.parent.name or name)
                manifest["clips"].append({"name": name, "source": str(relative), "identity": label, **entry})
                summary.added += 1
            write_json(cache / "manifest.json", manifest)
            advance(1)
    write_json(cache / "manifest.json", manifest)
    summary.clips = len(manifest["clips"])
    summary.frames = sum(c["frames"] for c in manifest["clips"])
    summary.skipped = manifest["skipped"]
    return summary


def write_synthetic_cache(cache: str | Path, *, clips: int = 32, frames: int = 48, size: int = 128,
                          seed: int = 0) -> PrepareSummary:
    """A cache of procedurally rendered talking heads (facevid.synthetic) with exact landmarks.

    The renders are already aligned crops, so no tracking is needed; each clip is one
    identity. Used by tests and as extra training data with known factors."""
    from facevid import synthetic

    cache = Path(cache)
    (cache / "clips").mkdir(parents=True, exist_ok=True)
    manifest = {"format": "facevid-cache", "version": CACHE_VERSION,
                "crop": {"size": size, "margin": None, "center_y": None, "synthetic": True},
                "clips": [], "skipped": []}
    rng = np.random.default_rng(seed)
    for i in range(clips):
        identity = synthetic.random_identity(rng)
        motions = synthetic.random_motion_sequence(rng, frames)
        video = synthetic.render_clip(identity, motions, size=size)
        marks = np.stack([synthetic.landmarks(identity, m, size=size) for m in motions]).astype(np.float32)
        name = f"synthetic_{seed}_{i:04d}"
        stem = cache / "clips" / name
        np.save(stem.with_suffix(".npy"), video)
        np.savez(stem.with_suffix(".npz"), index=np.arange(frames), landmarks68=marks,
                 motion=np.stack([synthetic.motion_vector(m) for m in motions]).astype(np.float32),
                 identity=synthetic.identity_vector(identity).astype(np.float32))
        manifest["clips"].append({"name": name, "source": f"synthetic:{seed}:{i}", "identity": name,
                                  "frames": frames, "frames_total": frames, "faceless": 0, "fps": 25.0,
                                  "width": size, "height": size, "has_audio": False, "is_image": False})
    write_json(cache / "manifest.json", manifest)
    return PrepareSummary(cache=str(cache), clips=clips, added=clips, frames=clips * frames)
