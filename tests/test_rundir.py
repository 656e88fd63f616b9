"""Run directories written before a setting existed still resume and are still skipped."""

from __future__ import annotations

import json

import pytest

from actlab.runs import driver as train
from actlab.runs.rundir import RunDirError
from conftest import make_config


def test_settings_added_later_take_their_defaults_when_comparing(tmp_path):
    cfg = make_config(train={"steps": 10, "log_every": 5})
    train.run(cfg, tmp_path)
    path = tmp_path / "summary.json"
    summary = json.loads(path.read_text())
    # as an earlier version wrote it: without the settings added since
    for section, key in (("train", "dtype"), ("train", "shard"), ("model", "glu_width")):
        del summary["config"][section][key]
    path.write_text(json.dumps(summary))
    again = train.run(cfg, tmp_path)
    assert again["status"] == "completed" and "resumed_from" not in again
    assert json.loads(path.read_text()) == summary  # skipped, not retrained
    # a setting that differs from the stored run is still a different configuration
    with pytest.raises(RunDirError, match="different configuration"):
        train.run(make_config(train={"steps": 10, "log_every": 5, "dtype": "bfloat16"}), tmp_path)
