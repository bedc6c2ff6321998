"""The lock files: current with pyproject.toml, installed exactly, and honest about torch's metadata."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bullant_lock_script", ROOT / "scripts" / "lock.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins(path: Path) -> dict[str, list[tuple[str, str]]]:
    """name -> [(version, marker)] of a lock file (a package may be pinned per Python version)."""
    pins: dict[str, list[tuple[str, str]]] = {}
    for line in path.read_text().splitlines():
        found = re.match(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)(?: ; ([^\\]+))?", line)
        if found:
            name, version, marker = found.groups()
            pins.setdefault(canonicalize_name(name), []).append((version, (marker or "").strip()))
    return pins


def _applies(marker: str) -> bool:
    return not marker or Requirement(f"x ; {marker}").marker.evaluate()  # type: ignore[union-attr]


def test_every_lock_file_is_current_with_pyproject() -> None:
    assert _lock_module().stale_locks() == []


def test_a_dependency_changed_without_a_new_lock_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = _lock_module()
    for old, new in (
        ('"orjson>=3.10,<4",', '"orjson>=3.10,<4",\n    "left-pad>=1",'),  # a new dependency
        ('"torch==2.13.0"', '"torch==2.14.0"'),  # torch moved
        ('"ruff>=0.8,<1"', '"ruff>=0.9,<1"'),  # a dev range narrowed
    ):
        edited = tmp_path / "pyproject.toml"
        edited.write_text((ROOT / "pyproject.toml").read_text().replace(old, new))
        assert edited.read_text() != (ROOT / "pyproject.toml").read_text()
        monkeypatch.setattr(lock, "PYPROJECT", edited)
        assert lock.stale_locks(), "an edited dependency list must make the lock stale"


def test_the_environment_holds_exactly_the_locked_versions() -> None:
    """Every locked package that applies here is installed at its pinned version."""
    dev = _pins(ROOT / "requirements" / "dev.txt")
    installed: dict[str, str] = {
        canonicalize_name(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()
    }
    for name, entries in dev.items():
        wanted = [version for version, marker in entries if _applies(marker)]
        if wanted:
            assert installed.get(name) == wanted[0], f"{name}: installed {installed.get(name)}, locked {wanted[0]}"


def test_torch_is_the_locked_cpu_build_with_the_metadata_the_lock_was_resolved_from() -> None:
    declared = tomllib.loads((ROOT / "requirements" / "uv.toml").read_text())["dependency-metadata"]
    (torch,) = [entry for entry in declared if entry["name"] == "torch"]
    lock = _lock_module()
    assert torch["version"] == lock.torch_version()
    assert importlib.metadata.version("torch").split("+")[0] == lock.torch_version()
    # No CUDA: the CPU build is what the lock promises (and what pulls in no nvidia-* packages).
    names = [canonicalize_name(dist.metadata["Name"]) for dist in importlib.metadata.distributions()]
    assert [name for name in names if name.startswith(("nvidia-", "triton"))] == []
    actual = [str(Requirement(text)) for text in importlib.metadata.requires("torch") or [] if "extra ==" not in text]
    assert sorted(actual) == sorted(str(Requirement(text)) for text in torch["requires-dist"])
