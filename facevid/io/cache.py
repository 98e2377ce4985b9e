"""The training cache's format: manifest.json (checked: every clip stays inside the cache) and
the clips' crops and landmarks (made by `facevid prepare`, facevid.train.prepare)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facevid.errors import InputError
from facevid.io.arrays import points_to_unit

CACHE_VERSION = 2
OLD_VERSIONS = (1,)   # prepare upgrades these


_NAME = re.compile(r"[A-Za-z0-9._-]{1,150}")


def _check_manifest(manifest: dict, path: Path) -> None:
    """Every clip entry is well formed and names a file inside the cache's clips/ folder."""
    clips = manifest.get("clips")
    if not isinstance(clips, list) or not isinstance(manifest.get("skipped", []), list) \
            or not isinstance(manifest.get("crop"), dict):
        raise InputError(f"{path} is not a facevid cache manifest (no clip list)")
    for entry in clips:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
            raise InputError(f"{path} names a clip outside the cache ({str(name)[:80]!r}); the manifest is damaged")
        if not isinstance(entry.get("frames"), int) or not isinstance(entry.get("identity"), str):
            raise InputError(f"{path} has a damaged entry for clip {name}")


def load_manifest(cache: Path, *, upgradable: bool = False) -> dict:
    """The cache's manifest ({} if there is none); one of an older version only if `upgradable`
    (or synthetic, whose exact landmarks never change)."""
    path = cache / "manifest.json"
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not a facevid cache manifest ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != "facevid-cache":
        raise InputError(f"{path} is not a facevid cache manifest")
    _check_manifest(manifest, path)
    version = manifest.get("version")
    if version in OLD_VERSIONS and (upgradable or manifest.get("crop", {}).get("synthetic")):
        return manifest
    if version in OLD_VERSIONS:
        raise InputError(f"{cache} is a version-{version} cache: run `facevid prepare VIDEOS -o {cache}` "
                         f"again to bring it to version {CACHE_VERSION} (it re-measures the landmarks)")
    if version != CACHE_VERSION:
        raise InputError(f"{path} is not a facevid cache of version {CACHE_VERSION}")
    return manifest


@dataclass
class Clip:
    name: str
    identity: str
    frames: np.ndarray       # (T, C, C, 3) uint8 (memory-mapped)
    landmarks: np.ndarray    # (T, 68, 2) float32 in [-1, 1]


def read_identities(path: str | Path | None) -> tuple[str, ...] | None:
    """Identities listed one per line in a hold-out file (text after # is a comment)."""
    if path is None:
        return None
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise InputError(f"cannot read identity list {path}: {error.strerror}") from error
    return tuple(line.split("#")[0].strip() for line in lines if line.split("#")[0].strip())


def load_cache(cache: str | Path, *, include: set[str] | None = None, exclude: set[str] = frozenset(),
               min_frames: int = 2) -> list[Clip]:
    """The clips of a prepared cache (see facevid.train.prepare), filtered by identity."""
    cache = Path(cache)
    manifest = load_manifest(cache)
    if not manifest:
        raise InputError(f"{cache} is not a prepared cache (no manifest.json; run facevid prepare)")
    size = manifest["crop"]["size"]
    clips = []
    for entry in manifest["clips"]:
        if entry["frames"] < min_frames or entry["identity"] in exclude:
            continue
        if include is not None and entry["identity"] not in include:
            continue
        stem = cache / "clips" / entry["name"]
        extra = np.load(stem.with_suffix(".npz"))
        if "landmarks68" not in extra:
            raise InputError(f"{stem}.npz has no 68-point landmarks (prepare without --no-landmarks68)")
        landmarks = points_to_unit(extra["landmarks68"], size)
        clips.append(Clip(entry["name"], entry["identity"], np.load(stem.with_suffix(".npy"), mmap_mode="r"),
                          landmarks.astype(np.float32)))
    return clips
