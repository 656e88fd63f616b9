"""The edge_of_stability study reduced: relu and gelu MLPs on 240 MNIST-1D signals.

experiments/edge_of_stability/study.yaml composed as actlab-train composes it, with a
smaller training set, two learning rates and fewer steps. Full-batch gradient descent with
the squared loss: the sharpness falls in the first steps, then rises (progressive
sharpening) to 2/lr and stays near it, while the loss, monotone until then, goes up at
some logged steps and still falls overall (Cohen et al. 2021).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from actlab.cli import config_dir
from actlab.config import Config
from actlab.engine.resolve import resolve
from actlab.runs import driver as train
from conftest import read_records

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "experiments" / "edge_of_stability"
LRS = (0.16, 0.2)  # 2/lr = 12.5 and 10; both activations start below either limit
STEPS, EVERY = 700, 20
ACTS = ("relu", "gelu")


def study(*overrides: str) -> Config:
    """experiments/edge_of_stability/study.yaml composed as actlab-train composes it."""
    with initialize_config_dir(config_dir=str(STUDY), version_base="1.3"):
        cfg = compose("study", overrides=[f"hydra.searchpath=[file://{config_dir()}]",
                                          "logger.progress=false", *overrides])
    return resolve(Config.from_dict(OmegaConf.to_container(cfg, resolve=True)))


# the first logged step with sharpness >= 2/lr lies in these ranges (relu sharpens sooner)
EOS_RANGE = {"relu": {0.16: (300, 500), 0.2: (200, 340)},
             "gelu": {0.16: (560, STEPS - 20), 0.2: (380, 500)}}


def run(act, tmp_path):
    """records and summary of the reduced study (300 signals: 240 for training)."""
    cfg = study(f"activation={act}", "dataset.num_samples=300", f"train.steps={STEPS}",
                f"train.log_every={EVERY}", f"probes.hessian.every={EVERY}",
                "probes.hessian.iters=10", f"train.vmap.optimizer.lr=[{LRS[0]},{LRS[1]}]")
    assert cfg.train.batch_size >= 240 and cfg.optimizer.name == "sgd"
    summary = train.run(cfg, tmp_path)
    assert summary["status"] == "completed"
    return read_records(tmp_path), summary


def member(records, summary, lr):
    mine = [r for r in records if r["optimizer.lr"] == lr]
    steps = np.array([r["step"] for r in mine])
    sharp = np.array([r["hessian/top_eig"] for r in mine])
    loss = np.array([r["train/loss"] for r in mine])
    eos = next(m["eos_step"] for m in summary["seeds"] if m["optimizer.lr"] == lr)
    return steps, sharp, loss, eos


@pytest.mark.parametrize("act", ACTS)
def test_sharpness_rises_to_two_over_lr_and_the_loss_turns_non_monotone(act, tmp_path):
    # one test per activation: each trains once, so parallel workers never repeat a run
    records, summary = run(act, tmp_path)
    for lr in LRS:
        steps, sharp, loss, eos = member(records, summary, lr)
        limit = 2 / lr
        assert steps[-1] == STEPS
        assert sharp[0] < limit  # training starts stable
        assert sharp[steps <= 100].min() < 0.7 * limit  # its low point in the first steps
        lo, hi = EOS_RANGE[act][lr]
        assert eos is not None and lo <= eos <= hi
        assert eos == steps[np.argmax(sharp >= limit)]  # the first logged crossing
        after = sharp[steps >= eos]
        assert after.min() > 0.9 * limit and after.max() < 1.25 * limit  # no blow-up
        assert sharp[-1] == pytest.approx(limit, rel=0.2)
        # progressive sharpening: the loss only falls; past the edge it still falls overall
        assert np.all(np.diff(loss[steps <= eos]) < 0)
        assert loss[-1] < loss[steps == eos][0]
    eos = {lr: member(records, summary, lr)[3] for lr in LRS}
    assert eos[LRS[1]] + 100 < eos[LRS[0]]  # the larger rate reaches its lower limit sooner
    steps, _, loss, eos = member(records, summary, LRS[1])
    assert loss[-1] < 0.7 * loss[steps == eos][0]
    assert np.sum(np.diff(loss[steps >= eos]) > 0) >= 2  # at the edge it goes up at times
