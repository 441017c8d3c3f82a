"""Generate Python code (with .pyi stubs) from protos/ into gen/python/, apart from hand-written code."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "gen" / "python"


def main() -> int:
    # Generate beside the old tree and swap, so a process importing the code meanwhile never sees it half-made.
    new = OUT.with_name("python.new")
    if new.exists():
        shutil.rmtree(new)
    new.mkdir(parents=True)
    rc = generate(new)
    if rc != 0:
        return rc
    old = OUT.with_name("python.old")
    if OUT.exists():
        OUT.rename(old)
    new.rename(OUT)
    if old.exists():
        shutil.rmtree(old)
    return 0


def generate(out: Path) -> int:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    rc: int = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            # Typed stubs for the *_pb2_grpc modules, so servicers and stubs are checked by mypy --strict.
            f"--plugin=protoc-gen-mypy_grpc={Path(sys.executable).parent / 'protoc-gen-mypy_grpc'}",
            f"--mypy_grpc_out={out}",
            *sources,
        ]
    )
    if rc != 0:
        return rc
    for folder in [p for p in out.rglob("*") if p.is_dir()]:
        (folder / "__init__.py").touch()
    (out / "cml" / "py.typed").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
