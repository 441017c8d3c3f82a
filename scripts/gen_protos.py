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
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"--python_out={OUT}",
            f"--pyi_out={OUT}",
            f"--grpc_python_out={OUT}",
            *sources,
        ]
    )
    if rc != 0:
        return rc
    for folder in [p for p in OUT.rglob("*") if p.is_dir()]:
        (folder / "__init__.py").touch()
    (OUT / "cml" / "py.typed").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
