"""Runs: the driver, records and trackers, the run directory, checkpoints and retraining."""
