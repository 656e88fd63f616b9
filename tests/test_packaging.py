"""The wheel holds every package: pyproject's explicit list matches actlab's folders."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_for_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "actlab").rglob("__init__.py")}
    assert found - listed == set()
    assert listed - found == {"actlab.configs", "hydra_plugins.actlab_sweepers"}
