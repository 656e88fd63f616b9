"""The criticality study reduced, and the report's predicted-vs-measured signal propagation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from actlab import activations, data, theory
from actlab.analysis import report
from actlab.analysis.plots import theory as plots_theory
from actlab.cli import config_dir
from actlab.config import Config
from actlab.engine.resolve import resolve
from actlab.runs import driver as train
from conftest import make_config, read_records

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "experiments" / "criticality"


def study(*overrides: str) -> Config:
    """experiments/criticality/study.yaml composed as actlab-train composes it."""
    with initialize_config_dir(config_dir=str(STUDY), version_base="1.3"):
        cfg = compose("study", overrides=[f"hydra.searchpath=[file://{config_dir()}]",
                                          "logger.progress=false", *overrides])
    return resolve(Config.from_dict(OmegaConf.to_container(cfg, resolve=True)))


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
def test_critical_tanh_trains_at_depth_30_where_the_ordered_phase_does_not(tmp_path):
    # sigma_w2 = gain^2 = 0.49 (ordered: 6 xi_c = 7 layers), 1.69 (6 xi_c = 384: next to the
    # critical 1.76) and 4.0 (chaotic: 6 xi_c = 42), at depth 4 and 30
    acc = {}
    for depth in (4, 30):
        cfg = study("activation=tanh", f"model.depth={depth}", "train.steps=200",
                    "train.log_every=200", "train.eval_every=200",
                    "train.vmap.init.gain=[0.7,1.3,2.0]")
        s = train.run(cfg, tmp_path / str(depth))
        acc |= {(depth, round(m["init.gain"] ** 2, 2)): m["final_eval_acc"] for m in s["seeds"]}
    assert min(acc[4, w] for w in (0.49, 1.69, 4.0)) > 0.6  # shallow: every sigma_w2 trains
    assert acc[30, 1.69] > 0.8  # near the edge of chaos depth 30 still trains
    assert acc[30, 0.49] < 0.2  # deep in the ordered phase it stays at chance (0.1)
    assert acc[30, 1.69] > acc[30, 4.0] > acc[30, 0.49]


def relu_q(q0: float, sigma_w2: float, sigma_b2: float, depth: int) -> np.ndarray:
    """relu's length map in closed form: q_1 = w q0 + b, q_{l+1} = w q_l / 2 + b."""
    q = [sigma_w2 * q0 + sigma_b2]
    for _ in range(depth - 1):
        q.append(sigma_w2 * q[-1] / 2 + sigma_b2)
    return np.array(q)


@pytest.fixture
def captured(monkeypatch):
    """The figures report.build draws with signal_propagation_rows, with their inputs."""
    got = []
    draw = plots_theory.signal_propagation_rows

    def spy(rows, **kwargs):
        fig = draw(rows, **kwargs)
        got.append((rows, fig))
        return fig

    monkeypatch.setattr(plots_theory, "signal_propagation_rows", spy)
    return got


def test_report_draws_the_mean_field_prediction_against_step_0(tmp_path, captured):
    depth, w, b, gains = 6, 1.5, 0.1, (1.0, 1.2)
    cfg = make_config(activation={"name": "relu"}, dataset={"name": "moons"},
                      model={"depth": depth, "width": 256},
                      init={"sigma_w2": w, "sigma_b2": b},
                      train={"steps": 1, "log_every": 1, "seeds": 2, "probe_size": 256,
                             "metrics": ["grad_norm", "q", "c"],
                             "vmap": {"init": {"gain": list(gains)}}})
    train.run(cfg, tmp_path)
    page = report.build(tmp_path, replay=False)
    assert "data-file='signal_propagation.png'" in page.read_text()
    assert (page.parent / "signal_propagation.png").is_file()

    x = data.load("moons").x_train[:256].astype(np.float64)
    q0 = float(np.mean(x * x))
    (rows, fig), = captured
    (act, settings), = rows.items()
    assert act == "relu" and len(settings) == 2
    recs = [r for r in read_records(tmp_path) if r["step"] == 0]
    for i, (gain, (label, pred, _)) in enumerate(zip(gains, settings, strict=True)):
        wg = gain**2 * w
        assert f"{wg:.3g}" in label
        expected = relu_q(q0, wg, b, depth)
        np.testing.assert_allclose(pred["q"], expected, rtol=1e-6)
        q_line = [ln for ln in fig.axes[0].lines if ln.get_linestyle() == "-"][i]
        np.testing.assert_allclose(q_line.get_ydata(), expected, rtol=1e-6)
        measured = np.mean([[r[f"q/{l}"] for l in range(depth)] for r in recs
                            if r["init.gain"] == gain], axis=0)
        q_pts = [ln for ln in fig.axes[0].lines if ln.get_linestyle() == "None"][i]
        np.testing.assert_allclose(q_pts.get_ydata(), measured, rtol=1e-5)
        np.testing.assert_allclose(measured, expected, rtol=0.2)  # width 256: within 20%
        # chi1 = w / 2 per layer: the backward squared norm changes by that factor
        np.testing.assert_allclose(pred["grad_ratio"], (wg / 2) ** np.arange(depth - 1, -1, -1),
                                   rtol=1e-6)
    table = pd.read_csv(page.parent / "signal_propagation.csv")
    assert len(table) == 2 * depth
    np.testing.assert_allclose(table["q_predicted"].to_numpy()[:depth],
                               relu_q(q0, w, b, depth), rtol=1e-6)


def test_report_without_signal_records_has_no_signal_figure(tmp_path, captured):
    cfg = make_config(train={"steps": 2, "log_every": 1, "metrics": ["grad_norm"]})
    train.run(cfg, tmp_path)
    page = report.build(tmp_path, replay=False)
    assert not captured and "signal_propagation" not in page.read_text()
    assert not (page.parent / "signal_propagation.png").exists()


def test_layer_variances_follow_each_scheme():
    cfg = {"init": {"name": "glorot", "gain": 1.0, "sigma_w2": None, "sigma_b2": 0.0},
           "model": {"width": 64}}
    sp = activations.spec("tanh")
    assert report.layer_variances(cfg, sp, n_in=40) == pytest.approx((2 * 40 / 104, 1.0, 0.0))
    cfg["init"] |= {"name": "he", "gain": 0.5}
    assert report.layer_variances(cfg, sp, n_in=40) == pytest.approx((0.5, 0.5, 0.0))
    cfg["init"] |= {"name": "orthogonal", "gain": 1.0}
    assert report.layer_variances(cfg, sp, n_in=40) == pytest.approx((40 / 64, 1.0, 0.0))
    cfg["init"] |= {"name": "critical", "sigma_b2": 0.05}
    crit = theory.critical_sigma_w2("tanh", 0.05)
    assert report.layer_variances(cfg, sp, n_in=40, gain=1.1) == pytest.approx(
        (1.21 * crit, 1.21 * crit, 0.05))


def test_notebook_is_committed_clean_and_trains_offline():
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "04_signal_propagation.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert "ACTLAB_NB_STEPS" in code and "signal_rows" in code and "phase_diagram" in code
