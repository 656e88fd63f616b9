"""The wheel holds every package: pyproject's explicit list matches actlab's folders."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_for_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "actlab").rglob("__init__.py")}
    assert found - listed == set()
    assert listed - found == {"actlab.configs", "hydra_plugins.actlab_sweepers"}


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
def test_old_flat_module_names_still_import_with_a_warning():
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-W", "ignore", "-c",
                         "import actlab.train, actlab.runs.driver as d\n"
                         "from actlab.step import train_step\n"
                         "from actlab import plots\n"
                         "assert actlab.train is d and d.__spec__.name == 'actlab.runs.driver'\n"
                         "assert plots.layer_profile and train_step"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    warned = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c",
                             "import actlab.train"], capture_output=True, text=True)
    assert "actlab.train is now actlab.runs.driver" in warned.stderr
