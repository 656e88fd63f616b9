"""Runs: the driver `run(config, run_dir)`, records and trackers, the run directory,
checkpoints and retraining."""

from actlab.runs.driver import run  # noqa: F401
