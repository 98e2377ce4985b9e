"""Weights registry: `weights.toml` names → local files, with size and SHA-256 checks.

A local path works anywhere a name does. Files are read with safetensors only (no pickle);
a listed file that is missing or fails its hash is an error, never silently used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import tomllib

from facevid.errors import ConfigError, InputError

REGISTRY = Path(__file__).resolve().parent / "assets" / "weights.toml"   # package data, installed with facevid
DEFAULT = "small"


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    path: Path
    sha256: str
    size: int
    info: dict


def registry(path: Path = REGISTRY, table: str = "weights") -> dict[str, WeightsEntry]:
    """Every entry of one table of weights.toml (an empty registry if the file is absent):
    `weights` (models), or `directions` (the edit's attribute directions, facevid.face.directions)."""
    if not path.exists():
        return {}
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from error
    entries = {}
    for name, entry in doc.get(table, {}).items():
        entries[name] = WeightsEntry(name, (path.parent / entry["path"]).resolve(), entry["sha256"],
                                     int(entry["size"]), entry)
    return entries


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(entry: WeightsEntry) -> None:
    """Raise InputError unless the file exists with the listed size and hash."""
    if not entry.path.exists():
        raise InputError(f"weights '{entry.name}' are missing: {entry.path} does not exist")
    if entry.path.stat().st_size != entry.size:
        raise InputError(f"weights '{entry.name}' have the wrong size ({entry.path})")
    if sha256_of(entry.path) != entry.sha256:
        raise InputError(f"weights '{entry.name}' fail their sha256 check ({entry.path})")


def weights_state(entry: WeightsEntry) -> str:
    """'ok', 'MISSING', 'WRONG SIZE' or 'CORRUPT (sha256 mismatch)': the file checked as `verify` checks it."""
    if not entry.path.exists():
        return "MISSING"
    if entry.path.stat().st_size != entry.size:
        return "WRONG SIZE"
    return "ok" if sha256_of(entry.path) == entry.sha256 else "CORRUPT (sha256 mismatch)"


def resolve(name_or_path: str | Path | None) -> Path:
    """A weights file: a verified registry entry by name, or a local path as given (verified
    too when it is a listed file)."""
    name = str(name_or_path or DEFAULT)
    entries = registry()
    if name in entries:
        verify(entries[name])
        return entries[name].path
    path = Path(name).expanduser()
    if path.is_file():
        for entry in entries.values():
            if entry.path.exists() and path.resolve() == entry.path:
                verify(entry)
        return path
    if path.exists():
        raise InputError(f"weights {path} is not a file")
    known = ", ".join(entries) or "none bundled yet"
    raise InputError(f"no weights '{name}': not a file and not a name in weights.toml ({known})")


def bundled_directions(name: str = DEFAULT):
    """The edit's attribute directions weights.toml lists under [directions.NAME]
    (facevid.face.directions.Directions), size and sha256 checked."""
    from facevid.face.directions import load_directions

    entries = registry(table="directions")
    if name not in entries:
        raise InputError(f"no bundled directions '{name}' (known: {', '.join(entries) or 'none'})")
    verify(entries[name])
    return load_directions(entries[name].path)


def check_device(device: str) -> str:
    """`cpu`, `cuda` or `cuda:N`, and only where it exists."""
    import torch

    from facevid.errors import BackendUnavailableError

    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"unknown device '{device}' (choose cpu or cuda)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device '{device}' was asked for but no CUDA GPU is available here")
    return device


def load_model(name_or_path: str | Path | None = None, device: str = "cpu"):
    """The FaceVid model for a registry name (default: the bundled `small`) or a safetensors path.

    The model remembers where it came from (`weights_path`, and `weights_name`: the registry
    name or the file's stem), which `encode` writes into an .fvl file."""
    name = str(name_or_path or DEFAULT)
    model = load_weights(resolve(name), device=check_device(device))
    model.weights_name = name if name in registry() else Path(name).stem
    return model


def as_model(model, device: str = "cpu"):
    """A loaded FaceVid: `model` itself when it is one, else the weights it names, loaded on `device`."""
    from facevid.model.facevid import FaceVid

    return model if isinstance(model, FaceVid) else load_model(model, device)


# ---------------------------------------------------------------------------- safetensors files

def export_weights(model, path: Path, extra: dict | None = None, *, half: bool = False) -> Path:
    """Inference weights as safetensors; the ModelConfig lives in the file's metadata.
    `half` stores floating-point tensors as float16 (half the size; loaded back as float32)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    metadata = {"format": "facevid", "config": json.dumps(asdict(model.cfg))}
    metadata.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    from facevid.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_weights(path: str | Path, device: str = "cpu") -> tuple:
    """The model config and tensors of a safetensors file written by export_weights (no pickle)."""
    from safetensors import SafetensorError, safe_open

    from facevid.config import ModelConfig, from_dict
    from facevid.model.flow_code import renamed

    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            meta = f.metadata() or {}
            if meta.get("format") != "facevid" or "config" not in meta:
                raise InputError(f"{path} is not a facevid weights file")
            cfg = from_dict(ModelConfig, json.loads(meta["config"]), "model config")
            state = renamed({k: f.get_tensor(k) for k in f.keys()})
    except (SafetensorError, OSError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read weights {path}: {error}") from error
    return cfg, state


def weights_metadata(path: str | Path) -> dict:
    """The training metadata export_weights stored in a weights file (steps, minutes, ...)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items() if k not in ("format", "config")}


def load_weights(path: str | Path, device: str = "cpu"):
    """A FaceVid from a safetensors file written by export_weights."""
    from facevid.model.facevid import FaceVid

    cfg, state = read_weights(path, device)
    model = FaceVid(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"{path} does not match the model (missing {len(missing)}, unexpected {len(unexpected)})")
    model.weights_path, model.weights_name = Path(path), Path(path).stem
    return model.to(device).eval()

