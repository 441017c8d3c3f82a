"""What ships: GPL-licensed test servers stay out of the runtime dependencies (and so out of the image)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
DEV_ONLY = {"secantusdb"}  # GPL-2.0: the MongoDB-wire server of tests and `make run`


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements}


def test_gpl_test_servers_are_dev_dependencies_only() -> None:
    assert not names(PYPROJECT["project"]["dependencies"]) & DEV_ONLY
    assert names(PYPROJECT["project"]["optional-dependencies"]["dev"]) >= DEV_ONLY
