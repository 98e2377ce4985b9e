"""weights.toml registry: resolve by name or path, hash checks, `facevid weights` commands."""

from __future__ import annotations

import pytest
from test_cli_track import assert_one_line_error, run_cli

from facevid import weights as W
from facevid.errors import InputError


def _registry(tmp_path, content=b"weights-bytes", sha=None, size=None):
    blob = tmp_path / "w.safetensors"
    blob.write_bytes(content)
    toml = tmp_path / "weights.toml"
    toml.write_text(f'[weights.demo]\npath = "w.safetensors"\nsha256 = "{sha or W.sha256_of(blob)}"\n'
                    f'size = {size if size is not None else len(content)}\npreset = "tiny"\nsteps = 3\n')
    return toml, blob


def test_registry_resolve_and_verify(tmp_path, monkeypatch):
    toml, blob = _registry(tmp_path)
    monkeypatch.setattr(W, "REGISTRY", toml)
    monkeypatch.setattr(W.registry, "__defaults__", (toml, "weights"))
    assert W.resolve("demo") == blob.resolve()
    assert W.resolve(str(blob)) == blob
    with pytest.raises(InputError, match="no weights 'other'"):
        W.resolve("other")
    blob.write_bytes(b"weights-bytez")           # same size, other bytes
    with pytest.raises(InputError, match="sha256"):
        W.resolve("demo")
    with pytest.raises(InputError, match="sha256"):   # a listed file given by its path is checked too
        W.resolve(str(blob))
    blob.unlink()
    with pytest.raises(InputError, match="missing"):
        W.resolve("demo")


def test_weights_commands(capsys, tmp_path, monkeypatch):
    toml, blob = _registry(tmp_path)
    monkeypatch.setattr(W.registry, "__defaults__", (toml, "weights"))
    code, out, _ = run_cli(capsys, "weights", "list")
    assert code == 0 and "demo" in out and ", ok)" in out
    code, out, _ = run_cli(capsys, "weights", "verify")
    assert code == 0 and "demo: ok" in out
    blob.write_bytes(b"tampered!!!!!")
    code, _, err = run_cli(capsys, "weights", "verify")
    assert_one_line_error(code, err)
    code, out, _ = run_cli(capsys, "weights", "list")   # a corrupt file is not "present"
    assert code == 0 and "CORRUPT" in out and ", ok)" not in out
    blob.unlink()
    assert "MISSING" in run_cli(capsys, "weights", "list")[1]


def test_bundled_registry_is_consistent():
    for entry in W.registry().values():
        W.verify(entry)
    for entry in W.registry(table="directions").values():
        W.verify(entry)


def test_weights_verify_checks_the_directions_too(capsys, tmp_path, monkeypatch):
    toml, blob = _registry(tmp_path)
    other = tmp_path / "d.safetensors"
    other.write_bytes(b"directions")
    toml.write_text(toml.read_text() + f'[directions.demo]\npath = "d.safetensors"\nsha256 = "{W.sha256_of(other)}"\n'
                    f'size = {len(b"directions")}\n')
    monkeypatch.setattr(W.registry, "__defaults__", (toml, "weights"))
    code, out, _ = run_cli(capsys, "weights", "verify")
    assert code == 0 and "demo: ok" in out and "directions demo: ok" in out
    other.write_bytes(b"Directions")
    code, _, err = run_cli(capsys, "weights", "verify")
    assert_one_line_error(code, err)
    assert "weights 'demo' fail their sha256 check" in err
