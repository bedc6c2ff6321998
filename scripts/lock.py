"""Lock files of the Python environment: `make lock` writes them, `make setup` and CI check them (stdlib only).

requirements/bench.txt is one universal resolution (every platform and Python the project supports) of the runtime,
dev and bench dependencies with the hash of every file; dev.txt (what `make setup` installs) and runtime.txt (what a
deployment installs) are the same resolution cut down, so every file pins the same versions. torch is resolved from
the metadata of its CPU build declared in requirements/uv.toml and installed on its own
from requirements/torch.txt, because its CPU build lives on a different index per machine (README: Dependencies).

Each lock file carries a digest of what it was compiled from; `check` fails when pyproject.toml's dependencies moved
without a new lock, so CI never installs a lock that no longer describes the project.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
REQUIREMENTS = ROOT / "requirements"
BUILD_INPUT = REQUIREMENTS / "build.in"
UV_CONFIG = REQUIREMENTS / "uv.toml"
TORCH_LOCK = REQUIREMENTS / "torch.txt"
DIGEST_PREFIX = "# bullant-lock-input: "
LOWEST_PYTHON = "3.11"
# (file, extras): bench.txt is compiled first, the others are constrained to it.
LOCKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bench.txt", ("dev", "bench")),
    ("dev.txt", ("dev",)),
    ("runtime.txt", ()),
)
COMMON_OPTIONS = (
    "--universal",
    "--generate-hashes",
    f"--python-version={LOWEST_PYTHON}",
    "--no-emit-package=torch",
    "--index-url=https://pypi.org/simple",
    "--custom-compile-command=make lock",
    "--quiet",
    # Only this file configures the resolver: no user or system uv.toml changes what a lock holds.
    f"--config-file={UV_CONFIG.relative_to(ROOT)}",
)


def _project() -> dict[str, object]:
    with PYPROJECT.open("rb") as file:
        return tomllib.load(file)


def input_digest() -> str:
    """Digest of everything a lock is compiled from: dependencies, torch's declared metadata, options."""
    project = _project()
    spec = project["project"]
    assert isinstance(spec, dict)
    relevant = {
        "requires-python": spec.get("requires-python"),
        "dependencies": spec.get("dependencies"),
        "optional-dependencies": spec.get("optional-dependencies"),
        "build-system": project.get("build-system"),
        "build.in": BUILD_INPUT.read_text(),
        "uv.toml": UV_CONFIG.read_text(),
        "options": [COMMON_OPTIONS, LOCKS],
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def torch_version() -> str:
    """The exact torch version pyproject.toml pins (torch==X)."""
    spec = _project()["project"]
    assert isinstance(spec, dict)
    for requirement in spec["dependencies"]:
        found = re.fullmatch(r"torch==([0-9][0-9.]*)", requirement.replace(" ", ""))
        if found:
            return found.group(1)
    raise SystemExit("pyproject.toml must pin torch exactly (torch==X.Y.Z)")


def torch_lock_text() -> str:
    version = torch_version()
    return (
        "# torch is locked by version and build, not by file hash: the CPU build's file comes from whichever index or\n"
        "# wheel directory the machine is set up with (README: Dependencies). Written by `make lock`.\n"
        f"torch=={version}+cpu ; sys_platform != 'darwin'\n"
        f"torch=={version} ; sys_platform == 'darwin'\n"
    )


def _uv() -> str:
    beside = Path(sys.executable).with_name("uv")
    if beside.exists():
        return str(beside)
    raise SystemExit(f"uv is not installed beside {sys.executable}: run `make setup` first")


def compile_locks(upgrade: bool) -> None:
    digest = input_digest()
    with tempfile.TemporaryDirectory() as scratch:
        for name, extras in LOCKS:
            target = REQUIREMENTS / name
            staged = Path(scratch) / name
            if target.exists() and not upgrade:
                # Existing pins are the resolver's preferences: a lock moves only where it must.
                staged.write_text(target.read_text())
            command = [_uv(), "pip", "compile", str(PYPROJECT), str(BUILD_INPUT), *COMMON_OPTIONS, "-o", str(staged)]
            command += [f"--extra={extra}" for extra in extras]
            if name != LOCKS[0][0]:
                command.append(f"--constraint={REQUIREMENTS / LOCKS[0][0]}")
            if upgrade:
                command.append("--upgrade")
            # Paths in the header must not depend on the scratch directory or the checkout.
            subprocess.run(command, check=True, cwd=ROOT)
            body = staged.read_text().replace(str(ROOT) + "/", "").replace(scratch + "/", "requirements/")
            target.write_text(f"{DIGEST_PREFIX}{digest}\n{body}")
            print(f"wrote {target.relative_to(ROOT)}")
    TORCH_LOCK.write_text(torch_lock_text())
    print(f"wrote {TORCH_LOCK.relative_to(ROOT)}")


def stale_locks() -> list[str]:
    """What is out of date with pyproject.toml, as messages (empty when every lock is current)."""
    digest = input_digest()
    problems = []
    for name, _ in LOCKS:
        path = REQUIREMENTS / name
        if not path.exists():
            problems.append(f"requirements/{name} is missing")
            continue
        first = path.read_text().split("\n", 1)[0]
        if first != f"{DIGEST_PREFIX}{digest}":
            problems.append(f"requirements/{name} was compiled from other dependencies than pyproject.toml's")
    if not TORCH_LOCK.exists() or TORCH_LOCK.read_text() != torch_lock_text():
        problems.append("requirements/torch.txt does not pin pyproject.toml's torch")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="fail when a lock file is out of date with pyproject.toml")
    compile_parser = sub.add_parser("compile", help="write the lock files (keeps current pins where they still fit)")
    compile_parser.add_argument("--upgrade", action="store_true", help="move every pin to the newest allowed release")
    args = parser.parse_args()
    if args.command == "compile":
        compile_locks(args.upgrade)
        return 0
    problems = stale_locks()
    for problem in problems:
        print(f"lock: {problem}: run `make lock` and commit requirements/", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
