"""README's notebook snippet runs as written, and the bound step keeps its contract."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def snippet() -> str:
    """The first python block under README's "The step in a notebook" heading."""
    text = README.read_text()
    section = text[text.index("### The step in a notebook"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_snippet_runs_and_measures_theta_t():
    ns: dict = {}
    exec(compile(snippet(), "README.md", "exec"), ns)  # noqa: S102 - README's own code
    m, state, new_state, exp = ns["m"], ns["state"], ns["new_state"], ns["exp"]
    assert set(k.split("/")[0] for k in m) >= {"grad_norm", "dead_frac", "train"}
    assert "act_std/0" not in m  # only the families asked for are computed
    # the record describes theta_t: its weight norms are the state's before the update
    x, y = ns["x"], ns["y"]
    full = ns["step"].measure(state, ns["out"], x, y, model=exp.model, head=exp.head,
                              selected=("weight_norm",))
    kernel = np.asarray(state.params["in_kernel"], np.float64)  # layer 0: the input layer
    bias = np.asarray(state.params["in_bias"], np.float64)
    np.testing.assert_allclose(full["weight_norm"][0],
                               np.sqrt((kernel ** 2).sum() + (bias ** 2).sum()), rtol=1e-5)
    assert int(new_state.step) == int(state.step) + 1


def test_measure_refuses_the_state_the_step_returned():
    ns: dict = {}
    exec(compile(snippet(), "README.md", "exec"), ns)  # noqa: S102
    step, exp, x, y = ns["step"], ns["exp"], ns["x"], ns["y"]
    with pytest.raises(ValueError, match="pass the state train_step was given"):
        step.measure(ns["new_state"], ns["out"], x, y, model=exp.model, head=exp.head)


def test_member_takes_one_member_out_of_a_stack():
    from actlab.engine import step

    stacked = {"a": jax.numpy.arange(6.0).reshape(3, 2)}
    np.testing.assert_array_equal(step.member(stacked, 2)["a"], [4.0, 5.0])
