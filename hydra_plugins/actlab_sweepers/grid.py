"""Hydra's grid sweeper made resumable, with fail-fast.

The jobs are Hydra's BasicSweeper jobs (the cartesian product of the swept
overrides, numbered in that order). Before any job runs, the sweep definition
is recorded in `<sweep dir>/sweep.yaml`, or compared with the one recorded
there: a re-run of the same sweep keeps every job's number and directory (and
the engine skips the jobs already completed); a different one is refused.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from hydra_plugins.actlab_sweepers import common

log = logging.getLogger(__name__)


class GridSweeper(BasicSweeper):
    """BasicSweeper with a recorded definition, stable job numbers and `fail_fast`."""

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None,
                 fail_fast: bool = False) -> None:
        super().__init__(max_batch_size, params)
        self.fail_fast = bool(fail_fast)

    def _parallelism(self) -> int:
        """Jobs the launcher runs at once: joblib's n_jobs, submitit's array_parallelism, else 1."""
        launcher = self.config.hydra.launcher
        n = launcher.get("n_jobs", None) or launcher.get("array_parallelism", None) or 1
        if n < 0:  # joblib: -1 all CPUs, -2 all but one, ...
            n = max(1, (os.cpu_count() or 1) + 1 + n)
        return int(n)

    def _job_dir(self, num: int) -> str | None:
        subdir = OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir")
        return str(num) if subdir == "${hydra.job.num}" else None

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(self._parse_config() + list(arguments))
        jobs = self.split_arguments(overrides, None)[0]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        definition = {
            "sweeper": "grid",
            "overrides": {o.get_key_element(): common.value_text(o) for o in overrides},
            "jobs": [{"num": i, "dir": self._job_dir(i), "overrides": list(job)}
                     for i, job in enumerate(jobs)],
        }
        jobs = [list(j["overrides"]) for j in common.check_definition(sweep_dir, definition)
                ["jobs"]]
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        size = self.max_batch_size or (self._parallelism() if self.fail_fast else len(jobs))
        returns: list[list[JobReturn]] = []
        for start in range(0, len(jobs), max(1, size)):
            batch = jobs[start:start + size]
            self.validate_batch_is_legal(batch)
            results = list(self.launcher.launch(batch, initial_job_idx=start))
            returns.append(results)
            failed = [start + i for i, r in enumerate(results) if r.status == JobStatus.FAILED]
            if not failed:
                continue
            left = len(jobs) - start - len(batch)
            common.write_summary(sweep_dir)
            if self.fail_fast:
                print(f"actlab-train: fail_fast: job {failed[0]} failed; "
                      f"{left} of {len(jobs)} jobs not launched", file=sys.stderr, flush=True)
                raise SystemExit(1)
            _ = results[failed[0] - start].return_value  # raises the job's error, as Hydra does
        common.write_summary(sweep_dir)
        return returns
