"""Atomic outputs: a temp file created exclusively beside the target, moved onto it at the end.

The temp file is made by `tempfile.mkstemp` (O_CREAT | O_EXCL, a random name): a link planted
beside the target is never followed, and `os.replace` swaps the target's directory entry, so
a link at the target itself is replaced, not written through. The file gets the permissions a
plain `open()` would give (0666 less the umask), not mkstemp's 0600. An error, Ctrl-C or
SIGTERM (which the CLI turns into an exception) deletes the temp file and leaves the target
as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

_UMASK: int | None = None


def make_folder(path: str | Path, what: str = "output folder") -> Path:
    """mkdir -p, with a one-line InputError when the place is not writable."""
    from facevid.errors import InputError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the {what} {path}: {error.strerror or error}") from error
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"cannot write into the {what} {path}: permission denied")
    return path


def _mode() -> int:
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


def temp_beside(target: str | Path, suffix: str | None = None) -> Path:
    """A new, empty file in the target's folder (ending in `.tmp` + the target's suffix, so
    writers that go by the extension still pick the right format). The caller moves or deletes it."""
    target = Path(target)
    suffix = target.suffix if suffix is None else suffix
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    except OSError as error:
        raise _unwritable(target, error) from error
    try:
        os.fchmod(fd, _mode())
    finally:
        os.close(fd)
    return Path(name)


def temp_dir_beside(target: str | Path) -> Path:
    """A new folder beside `target`, created exclusively (mkdtemp)."""
    target = Path(target)
    try:
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as error:
        raise _unwritable(target, error) from error


def _unwritable(target: Path, error: OSError):
    from facevid.errors import InputError

    return InputError(f"cannot write {target}: {error.strerror or error}")


@contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces `target`, on any exception it is deleted."""
    target = Path(target)
    tmp = temp_beside(target, suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(target: str | Path, mode: str = "wb") -> Iterator[IO]:
    """An open file (`"wb"` or `"w"`) that becomes `target` when the block ends without error."""
    with atomic_path(target) as tmp, open(tmp, mode) as f:
        yield f


def write_bytes(target: str | Path, data: bytes) -> Path:
    with atomic_open(target, "wb") as f:
        f.write(data)
    return Path(target)


def write_text(target: str | Path, text: str) -> Path:
    with atomic_open(target, "w") as f:
        f.write(text)
    return Path(target)


def write_json(target: str | Path, obj, indent: int | None = 1) -> Path:
    return write_text(target, json.dumps(obj, indent=indent))


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temp folder; on success it replaces the folder `target` (removed first if it
    exists), on any exception it is removed."""
    target = Path(target)
    tmp = temp_dir_beside(target)
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class AtomicOutput:
    """A writer used as a context manager: leaving the block normally calls `close()` (the output
    moves into place), an exception, Ctrl-C or SIGTERM included, calls `abort()` (nothing is left)."""

    def close(self):
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
