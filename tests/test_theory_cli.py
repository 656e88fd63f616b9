"""actlab-theory and the theory figures against closed forms and independent numpy integrals."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.colors
import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from actlab import analysis, data, theory
from actlab.analysis import report
from actlab.analysis.plots import theory as plots_theory
from actlab.analysis.plots.style import color_for, offscreen
from actlab.cli.theory import theory_main
from actlab.runs import driver as train
from conftest import make_config

ROOT = Path(__file__).resolve().parent.parent
Z, WZ = np.polynomial.hermite_e.hermegauss(201)
WZ = WZ / WZ.sum()  # E[f(z)] ~ sum(WZ * f(Z)), z standard normal, f smooth


def mean_field(phi, dphi, w: float, b: float, iters: int = 2000) -> tuple[float, float]:
    """(q*, chi1) by iterating the length map from q = 1, with Gauss-Hermite expectations."""
    q = 1.0
    for _ in range(iters):
        q = w * np.sum(WZ * phi(math.sqrt(q) * Z) ** 2) + b
    return q, w * np.sum(WZ * dphi(math.sqrt(q) * Z) ** 2)


def strict_json(text: str) -> dict:
    """json.loads that refuses the NaN / Infinity tokens Python's json writes by default."""
    def refuse(token):
        raise AssertionError(f"non-JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def run_json(capsys, *args) -> dict:
    theory_main([*args, "--json"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one object, nothing else on stdout
    return strict_json(out)


def test_relu_at_zero_bias_defaults_to_the_critical_point(capsys):
    d = run_json(capsys, "activation=relu")
    assert abs(d["critical_sigma_w2"] - 2.0) < 1e-6  # He et al. 2015: chi1 = sigma_w2 / 2
    assert d["sigma_w2"] == d["critical_sigma_w2"] and d["sigma_w2_from"] == "critical"
    assert abs(d["chi1"] - 1.0) < 1e-6 and d["phase"] == "critical"
    assert d["xi_c"] == "inf" and d["trainable_depth"] == "inf"  # infinite: the string "inf"
    assert d["sigma_b2"] == 0.0 and d["activation"] == "relu"


def test_relu_ordered_phase_matches_closed_forms(capsys):
    # relu: q* = sigma_b2 / (1 - sigma_w2 / 2), chi1 = chi_c = sigma_w2 / 2, c* = 1
    d = run_json(capsys, "activation=relu", "init.sigma_w2=1.5", "init.sigma_b2=0.1")
    assert d["q_star"] == pytest.approx(0.4, rel=1e-9)
    assert d["chi1"] == pytest.approx(0.75, rel=1e-9) and d["chi_c"] == pytest.approx(0.75)
    assert d["c_star"] == pytest.approx(1.0) and d["phase"] == "ordered"
    assert d["xi_c"] == pytest.approx(-1 / math.log(0.75), rel=1e-9)
    assert d["trainable_depth"] == pytest.approx(6 * d["xi_c"])
    assert d["critical_sigma_w2"] is None and "no critical sigma_w2" in d["no_critical_point"]
    assert d["sigma_w2_from"] == "init.sigma_w2"


def test_tanh_critical_point_through_the_module_entry():
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    p = subprocess.run([sys.executable, "-m", "actlab.cli.theory", "activation=tanh",
                        "init.sigma_b2=0.05", "--json"], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    d = strict_json(p.stdout)
    w = d["critical_sigma_w2"]
    assert abs(w - 1.76) < 0.01  # Schoenholz et al. 2017, Fig. 1 (sigma_b2 = 0.05)
    q, chi = mean_field(np.tanh, lambda x: 1 / np.cosh(x) ** 2, w, 0.05)
    assert abs(chi - 1) < 1e-6 and d["q_star"] == pytest.approx(q, rel=1e-6)
    assert d["sigma_w2"] == w and d["phase"] == "critical" and d["xi_c"] == "inf"
    assert {"q_star", "c_star", "chi1", "chi_c", "xi_q", "xi_c", "critical_sigma_w2",
            "trainable_depth", "phase"} <= set(d)


def test_import_path_activation_and_parameter_overrides(capsys):
    d = run_json(capsys, "activation.name=custom_acts:bent_identity", "init.sigma_w2=0.5",
                 "init.sigma_b2=0.1")
    q, chi = mean_field(lambda x: (np.sqrt(x * x + 1) - 1) / 2 + x,
                        lambda x: x / (2 * np.sqrt(x * x + 1)) + 1, 0.5, 0.1)
    assert d["activation"] == "custom_acts:bent_identity"
    assert d["q_star"] == pytest.approx(q, rel=1e-6) and d["chi1"] == pytest.approx(chi, rel=1e-6)
    # leaky relu, b = 0: chi1 = sigma_w2 (1 + alpha^2) / 2, critical at 2 / (1 + alpha^2)
    d = run_json(capsys, "activation=leaky_relu", "activation.alpha=0.5")
    assert d["params"] == {"alpha": 0.5}
    assert d["critical_sigma_w2"] == pytest.approx(2 / 1.25, rel=1e-6)


def test_init_schemes_give_their_variances(capsys):
    # Var w * fan_in: he 2 gain^2, lecun gain^2, glorot gain^2 for equal widths
    d = run_json(capsys, "activation=relu", "init=he")
    assert d["sigma_w2"] == 2.0 and d["phase"] == "critical" and d["sigma_w2_from"] == "init=he"
    d = run_json(capsys, "activation=relu", "init=lecun", "init.gain=1.2")
    assert d["sigma_w2"] == pytest.approx(1.44) and d["chi1"] == pytest.approx(0.72)
    d = run_json(capsys, "activation=tanh", "init=auto")  # glorot; tanh is critical there
    assert d["sigma_w2"] == 1.0 and d["critical_sigma_w2"] == pytest.approx(1.0, abs=1e-6)
    assert "glorot" in d["sigma_w2_from"]
    d = run_json(capsys, "activation=tanh", "init=critical", "init.sigma_b2=0.05",
                 "init.gain=1.1")
    assert d["sigma_w2"] == pytest.approx(1.21 * d["critical_sigma_w2"], rel=1e-12)
    assert d["phase"] == "chaotic" and d["c_star"] < 1


def test_relu_with_bias_prints_a_table_and_says_there_is_no_critical_point(capsys):
    theory_main(["activation=relu", "init.sigma_b2=0.1"])
    out = capsys.readouterr().out
    for row in ("q*", "c*", "chi_1", "chi_c", "xi_q", "xi_c", "critical sigma_w^2", "phase",
                "trainable depth"):
        assert row in out, row
    assert "no critical point" in out and "the default" in out
    assert "ordered" in out and "0.2 " in out  # q* = sigma_b2 / (1 - sigma_w2 / 2), sigma_w2 = 1


@pytest.mark.parametrize("args, words", [
    (["activation=nope"], ["unknown activation 'nope'", "relu", "tanh", "gelu"]),
    (["activation=leaky_relu", "activation.alhpa=0.1"], ["did you mean activation.alpha?"]),
    (["model.depth=3"], ["unknown key model.depth", "activation, init"]),
    (["init=bogus"], ["unknown init 'bogus'", "he", "lecun"]),
    (["init.gain=2"], ["unknown key init.gain", "sigma_b2, sigma_w2"]),
    (["init=critical", "init.sigma_w2=2"], ["leave init.sigma_w2 out"]),
    (["activation=relu", "init=critical", "init.sigma_b2=0.1"], ["no critical sigma_w2"]),
    (["init.sigma_w2=-1"], ["init.sigma_w2 must be a number > 0"]),
    (["init.sigma_b2=abc"], ["init.sigma_b2 must be a number >= 0"]),
    (["activation.name=nope"], ["unknown activation 'nope'", "relu"]),
    (["activation=relu,tanh"], ["one value per key"]),
    (["activation=relu", "init.sigma_w2=3"], ["no fixed point", "q grows without bound"]),
])
def test_user_errors_are_one_line_with_exit_code_2(capsys, args, words):
    with pytest.raises(SystemExit) as e:
        theory_main(args)
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("actlab-theory: error: ") and captured.err.count("\n") == 1
    for w in words:
        assert w in captured.err, (w, captured.err)


def test_unknown_activation_exits_2_from_the_command_line():
    p = subprocess.run([sys.executable, "-m", "actlab.cli.theory", "activation=nope"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and "choose from:" in p.stderr and "tanh" in p.stderr


def test_help_says_what_it_does_with_examples(capsys):
    with pytest.raises(SystemExit) as e:
        theory_main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for words in ("edge of chaos", "examples:", "actlab-theory activation=tanh", "--plot",
                  "--json", "init.sigma_b2", '"inf"'):
        assert words in out, words


def test_plot_writes_a_png_of_the_phase_diagram(tmp_path, capsys):
    png = tmp_path / "phase.png"
    theory_main(["activation=tanh", "init.sigma_b2=0.05", "--plot", str(png), "--grid", "12"])
    assert f"wrote {png}" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    img = matplotlib.image.imread(png)[..., :3]
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # a heatmap, not a blank canvas
    star = np.asarray(matplotlib.colors.to_rgb(color_for("tanh")))
    assert (np.abs(img - star).max(-1) < 0.04).sum() > 20  # the chosen point
    # --json keeps stdout one JSON object: the note goes to stderr
    theory_main(["activation=tanh", "--json", "--plot", str(tmp_path / "b.png"), "--grid", "6"])
    captured = capsys.readouterr()
    assert strict_json(captured.out)["activation"] == "tanh" and "wrote" in captured.err


def test_phase_diagram_draws_the_edge_of_chaos_where_theory_puts_it(tmp_path):
    with offscreen():
        fig = plots_theory.phase_diagram("tanh", 2.5, 0.1, resolution=10, sigma_w2_max=4.0,
                                         sigma_b2_max=0.3)
    ax = fig.axes[0]
    edge = ax.lines[0]
    b = np.asarray(edge.get_ydata())
    np.testing.assert_allclose(edge.get_xdata(), theory.edge_of_chaos("tanh", b), rtol=1e-9)
    assert b[0] == 0 and b[-1] == pytest.approx(0.3)
    star = ax.lines[-1]
    assert list(star.get_xdata()) == [2.5] and list(star.get_ydata()) == [0.1]
    assert {t.get_text().split("\n")[0] for t in ax.texts} == {"ordered", "chaotic"}
    fig.savefig(tmp_path / "p.png", dpi=fig.dpi)  # pixels = display coordinates
    img = matplotlib.image.imread(tmp_path / "p.png")[..., :3]
    h = img.shape[0]
    white = off = 0
    inner = (b > 0.05) & (b < 0.3)  # cell centres, away from the axes' edges
    for w_c, b_c in zip(edge.get_xdata()[inner], b[inner], strict=True):
        x, y = ax.transData.transform((w_c, b_c))
        white += img[int(round(h - y)), int(round(x))].min() > 0.9  # the curve is white
        off += img[int(round(h - y)), int(round(x)) + 15].min() < 0.9  # the heatmap beside it
    n = inner.sum()
    assert white >= 0.8 * n and off >= 0.8 * n, (white, off, n)


def test_signal_propagation_draws_prediction_lines_and_measured_markers():
    pred = theory.predict_layers("tanh", 1.76, 0.05, q0=1.0, depth=5, c0=0.3)
    meas = {f"q/{l}": v for l, v in zip((3, 0, 4, 1, 2), (0.6, 1.7, 0.58, 0.9, 0.65),
                                        strict=True)}
    meas |= {f"c/{l}": 0.3 + 0.1 * l for l in range(5)}
    meas |= {f"grad_norm/{l}": 2.0 ** (-l) for l in range(5)} | {"grad_norm/out": 9.0,
                                                                  "step": 0}
    meas |= {f"delta_norm/{l}": 3.0 ** (-l) for l in range(5)}  # preferred over grad_norm
    with offscreen():
        fig = plots_theory.signal_propagation(pred, meas, label="tanh")
    assert len(fig.axes) == 3
    (q_line, q_pts), (c_line, c_pts), (g_line, g_pts) = (ax.lines for ax in fig.axes)
    np.testing.assert_array_equal(q_line.get_ydata(), pred["q"])
    np.testing.assert_array_equal(q_line.get_xdata(), np.arange(5))
    np.testing.assert_array_equal(q_pts.get_ydata(), [1.7, 0.9, 0.65, 0.6, 0.58])  # by layer
    np.testing.assert_array_equal(c_line.get_ydata(), pred["c"])
    np.testing.assert_allclose(c_pts.get_ydata(), 0.3 + 0.1 * np.arange(5))
    np.testing.assert_allclose(g_line.get_ydata(), np.sqrt(pred["grad_ratio"]))
    np.testing.assert_allclose(g_pts.get_ydata(), 3.0 ** (4 - np.arange(5)))  # / last layer
    assert "delta_norm" in fig.axes[2].get_ylabel()
    assert q_pts.get_linestyle() == "None" and q_line.get_linestyle() == "-"
    for line in (q_line, q_pts, g_pts):
        assert matplotlib.colors.to_hex(line.get_color()) == color_for("tanh").lower()
    assert fig.axes[2].get_yscale() == "log"
    # without delta_norm: grad_norm / grad_scale, or unscaled without layer 0 (its fan-in)
    grads = {k: v for k, v in meas.items() if not k.startswith("delta_norm")}
    scale = np.array([0.5, 4.0, 4.0, 2.0, 1.0])
    scaled = plots_theory.profile(grads, grad_scale=scale)
    assert scaled["grad_from"] == "grad_norm_scaled"
    np.testing.assert_allclose(scaled["grad"], 2.0 ** (4 - np.arange(5)) / scale)
    raw = plots_theory.profile(grads)
    assert raw["grad_from"] == "grad_norm" and np.isnan(raw["grad"][0])
    np.testing.assert_allclose(raw["grad"][1:], 2.0 ** (4 - np.arange(1, 5)))
    assert plots_theory.profile(scaled)["grad_from"] == "grad_norm_scaled"  # passed through


def test_signal_propagation_takes_a_tidy_frame_with_one_colour_per_activation():
    rows = [{"run": a, "activation": a, "seed": s, "step": step, "metric": m, "layer": l,
             "value": (1 + l) * (2 if a == "relu" else 1) + s + step}
            for a in ("relu", "tanh") for s in (0, 1) for step in (0, 50)
            for m in ("q", "grad_norm") for l in range(3)]
    df = pd.DataFrame(rows)
    pred = {a: {"layer": np.arange(1, 4), "q": np.ones(3), "grad_ratio": np.ones(3)}
            for a in ("relu", "tanh")}
    with offscreen():
        fig = plots_theory.signal_propagation(pred, df)
    q_ax = fig.axes[0]
    colours = {matplotlib.colors.to_hex(line.get_color()) for line in q_ax.lines}
    assert colours == {color_for("relu").lower(), color_for("tanh").lower()}
    pts = [line for line in q_ax.lines if line.get_linestyle() == "None"]
    got = {matplotlib.colors.to_hex(p.get_color()): list(p.get_ydata()) for p in pts}
    # step 0 only, mean over seeds 0 and 1
    assert got[color_for("relu").lower()] == [2.5, 4.5, 6.5]
    assert got[color_for("tanh").lower()] == [1.5, 2.5, 3.5]
    assert not fig.axes[1].lines  # no correlation measured or predicted: an empty panel


def test_report_backward_signal_of_layer_0_follows_chi1_despite_the_input_fan_in(tmp_path):
    # relu on 2-D inputs: layer 0's kernel has fan-in 2, the hidden ones the width. chi_1 =
    # sigma_w2 E[phi'(z)^2] = sigma_w2 / 2 for any input distribution (z is symmetric), so
    # layer 0's backward signal over the last hidden layer's is (sigma_w2 / 2)^((L - 1) / 2).
    depth, width, seeds, w, b, gains = 4, 256, 2, 1.5, 0.1, (1.0, 1.2)
    cfg = make_config(activation={"name": "relu"}, dataset={"name": "moons"},
                      model={"depth": depth, "width": width},
                      init={"sigma_w2": w, "sigma_b2": b},
                      train={"steps": 1, "log_every": 1, "seeds": seeds, "probe_size": 256,
                             "batch_size": 64, "metrics": ["grad_norm", "delta_norm", "q", "c"],
                             "vmap": {"init": {"gain": list(gains)}}})
    train.run(cfg, tmp_path)
    df = analysis.load_run(tmp_path)
    # Finite width: per example, going back one layer |delta_l|^2 / |delta_{l+1}|^2 =
    # (sigma_w2 / W) sum_i phi'_i g_i^2 (g_i iid N(0, 1), phi'_i in {0, 1} with p = 1/2), whose
    # relative variance is (3 E[phi'^4] / E[phi'^2]^2 - 1) / W = 5 / W; the RMS over the batch is
    # a weighted mean of such ratios (variance no larger) and the report averages the seeds. So
    # sd(log of the norm ratio over L - 1 layers) <= sqrt(5 (L - 1) / (4 W S)); allow 4 sd.
    tol = 4 * math.sqrt(5 * (depth - 1) / (4 * width * seeds))
    table = report.signal_table(report.signal_rows(df)[0])
    x = np.asarray(data.load("moons").x_train[:256], np.float64)
    q0 = float(np.mean(x * x))
    s0 = df[(df["step"] == 0) & df["layer"].notna()]
    for gain in gains:
        wg = gain**2 * w
        row = table[np.isclose(table["sigma_w2"], wg) & (table["layer"] == 0)].iloc[0]
        expected = (wg / 2) ** ((depth - 1) / 2)
        assert row["grad_predicted"] == pytest.approx(expected, rel=1e-6)
        assert row["grad_measured_from"] == "delta_norm"
        assert abs(math.log(row["grad_measured"] / expected)) < tol, (gain, row["grad_measured"])
        # the old comparison, grad_norm/0 over grad_norm/last, is off by about
        # sqrt((2 q0 + 1) / (W <h^2> + 1)): the input's fan-in against the width
        member = s0[np.isclose(s0["init.gain"], gain)]
        grad = member[member["metric"] == "grad_norm"].groupby("layer")["value"].mean()
        assert abs(math.log(grad.iloc[0] / grad.iloc[-1] / expected)) > tol
        # without delta_norm: grad_norm / sqrt(fan_in <x_in^2> + 1), layer 0's input the data
        q = member[member["metric"] == "q"].groupby("layer")["value"].mean().to_numpy()
        g0 = grad.iloc[0] / math.sqrt(2 * q0 + 1)
        g_last = grad.iloc[-1] / math.sqrt(width * (q[-1] - b) / wg + 1)
        fallback = report.signal_table(report.signal_rows(df[df["metric"] != "delta_norm"])[0])
        row = fallback[np.isclose(fallback["sigma_w2"], wg) & (fallback["layer"] == 0)].iloc[0]
        assert row["grad_measured_from"] == "grad_norm_scaled"
        assert row["grad_measured"] == pytest.approx(g0 / g_last, rel=1e-6)


def test_import_and_figures_leave_matplotlib_alone():
    code = (
        "import io, sys, matplotlib\n"
        "before = dict(matplotlib.rcParams.copy())\n"
        "import actlab.cli.theory, actlab.analysis.plots.theory as pt\n"
        "fig = pt.signal_propagation({'q': [1.0, 0.8], 'grad_ratio': [2.0, 1.0]},\n"
        "                            {'q/0': 1.1, 'q/1': 0.7})\n"
        "fig.savefig(io.BytesIO(), format='png')\n"
        "after = dict(matplotlib.rcParams.copy())\n"
        "assert before == after, {k for k in after if before[k] != after[k]}\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "print('ok')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr[-2000:]
