"""Generate gen/ from protos/: message modules, gRPC stubs and mypy stubs (make proto)."""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GEN = ROOT / "gen"
OWN_PACKAGE = "bullant"


def main() -> int:
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / OWN_PACKAGE).rglob("*.proto"))
    if not sources:
        print("no .proto files under protos/bullant", file=sys.stderr)
        return 1
    # Regenerate from scratch so that a deleted proto leaves no stale module behind.
    shutil.rmtree(GEN / OWN_PACKAGE, ignore_errors=True)
    GEN.mkdir(exist_ok=True)
    bindir = Path(sys.executable).parent
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={GEN}",
        f"--grpc_python_out={GEN}",
        f"--mypy_out=quiet:{GEN}",
        f"--mypy_grpc_out=quiet:{GEN}",
        *sources,
    ]
    code = protoc.main(args)
    if code != 0:
        print(f"protoc failed with exit code {code}", file=sys.stderr)
        return int(code)
    for directory in [GEN / OWN_PACKAGE, *(p for p in (GEN / OWN_PACKAGE).rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    (GEN / OWN_PACKAGE / "py.typed").touch()
    print(f"generated {len(sources)} proto files into {GEN.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
