"""Shared fixtures: small configs, a helper to run the engine in-process, run-directory records."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ.get(
    "ACTLAB_TEST_JAX_CACHE", os.path.expanduser("~/.cache/actlab/jax-tests")))
# the references are float64; the tests' own float32 products (outside actlab's models and
# program, which follow train.matmul_precision) must not use TF32 on a GPU either
jax.config.update("jax_default_matmul_precision", "highest")

from actlab.config import Config  # noqa: E402
from actlab.engine import step  # noqa: E402
from actlab.engine.resolve import resolve  # noqa: E402
from actlab.files import METRICS_FILE, read_metrics  # noqa: E402

TINY = {
    "model": {"depth": 2, "width": 8},
    "train": {"steps": 20, "log_every": 5, "eval_every": 10, "probe_size": 64, "batch_size": 32},
    "logger": {"progress": False},
}


def make_config(**sections) -> Config:
    """A Config from TINY updated section by section (dicts merged one level deep)."""
    d = {k: dict(v) for k, v in TINY.items()}
    if sections.get("model", {}).get("name", "mlp") != "mlp":
        d["model"] = {}  # TINY's depth/width are MLP parameters
    for k, v in sections.items():
        d.setdefault(k, {}).update(v)
    return resolve(Config.from_dict(d))


@pytest.fixture
def tiny_config():
    return make_config


def read_records(run_dir) -> list[dict]:
    """The records of a run directory's metrics.jsonl, in file order; no line may be torn."""
    records, torn = read_metrics(Path(run_dir) / METRICS_FILE)
    assert torn == 0, f"{torn} unreadable line(s) in {run_dir}/{METRICS_FILE}"
    return records


def measured_step(exp, state, batch, probe):
    """One member's instrumented step (the engine's train_step with a zero perturbation,
    then measure on `probe`), jitted: the measurement of theta_t."""
    @jax.jit
    def run(state):
        eps = step.zero_perturbation(exp.model, state.params, state.model_state, batch[0])
        _, out = step.train_step(state, batch, None, model=exp.model, tx=exp.tx,
                                 loss_fn=step.loss_fn(exp.model, exp.head), eps=eps)
        return step.measure(state, out, *probe, model=exp.model, head=exp.head)

    return run(state)

