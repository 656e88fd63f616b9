"""Sweep definitions recorded in the sweep directory, so a re-run is a resume.

The first launch of a multirun writes `<sweep dir>/sweep.yaml`: which sweeper,
the overrides that define the jobs (the command line's and the sweeper's
`params`, key -> value as written), and for a grid the job list (number,
directory, overrides). A later launch in the same directory must define the
same jobs: a grid whose job set is unchanged (the same overrides, perhaps in
another order or spelling) runs under the recorded numbering; anything else is
refused with one line naming the difference. Only files are read and written
here (no Hydra), so analysis can use the recorded job list too.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from actlab.errors import UserError
from actlab.files import atomic_write

SWEEP_FILE = "sweep.yaml"
HEADER = ("# actlab sweep definition, written on the first launch in this directory.\n"
          "# A re-run here must define the same jobs; remove this file to redefine the sweep.\n")


class SweepMismatch(UserError):
    """A re-run whose sweep definition differs from the one recorded (one line)."""


def read_definition(sweep_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The recorded definition of a sweep directory, or None when there is none."""
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        return None
    try:
        d = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return d if isinstance(d, dict) else None


def write_definition(sweep_dir: str | os.PathLike, definition: dict[str, Any]) -> Path:
    path = Path(sweep_dir) / SWEEP_FILE
    text = HEADER + yaml.safe_dump(definition, sort_keys=False, default_flow_style=None,
                                   width=1000)
    atomic_write(path, lambda f: f.write(text))
    return path


def _job_set(jobs: list[dict[str, Any]] | None) -> Counter:
    return Counter(tuple(sorted(j["overrides"])) for j in jobs or [])


def _differences(old: dict[str, str], new: dict[str, str]) -> tuple[list[str], list[str]]:
    was, now = [], []
    for key in list(old) + [k for k in new if k not in old]:
        if old.get(key) != new.get(key):
            was.append(f"{key}={old[key]}" if key in old else f"no {key}")
            now.append(f"{key}={new[key]}" if key in new else f"no {key}")
    return was, now


def check_definition(sweep_dir: str | os.PathLike, definition: dict[str, Any]) -> dict[str, Any]:
    """Record `definition` on the first launch, else compare it with the recorded one.

    `definition`: `sweeper` (its name), `overrides` (key -> value text, in command
    order) and, for a grid, `jobs` ([{num, dir, overrides}]). Returns the definition
    to run: the recorded one when they agree (so job numbers never change). Raises
    SweepMismatch naming the difference otherwise.
    """
    old = read_definition(sweep_dir)
    if old is None:
        write_definition(sweep_dir, definition)
        return definition
    where = f"sweep dir {sweep_dir}"
    if old.get("sweeper") != definition["sweeper"]:
        raise SweepMismatch(f"{where} was launched by the {old.get('sweeper')} sweeper; this "
                            f"command uses the {definition['sweeper']} sweeper")
    if "jobs" in definition:
        if _job_set(old.get("jobs")) == _job_set(definition["jobs"]):
            return old
    elif (old.get("overrides") or {}) == definition["overrides"]:
        return old
    was, now = _differences(old.get("overrides") or {}, definition["overrides"])
    if not was:  # the same text, other jobs: a config file's sweeper params changed
        n_old, n_new = len(old.get("jobs") or []), len(definition.get("jobs") or [])
        raise SweepMismatch(f"{where} was launched with {n_old} other jobs; this command "
                            f"defines {n_new}")
    raise SweepMismatch(f"{where} was launched with {' '.join(was)}; this command has "
                        f"{' '.join(now)}")


def recorded_jobs(sweep_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The jobs of the recorded grid definition ([] for none, or for an Optuna study)."""
    d = read_definition(sweep_dir) or {}
    return [j for j in d.get("jobs") or [] if isinstance(j, dict) and "overrides" in j]
