"""Figures leave the caller's matplotlib alone, save headless and display in Jupyter."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib.colors
import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from actlab.analysis import plots

ROOT = Path(__file__).resolve().parent.parent
INLINE = "module://matplotlib_inline.backend_inline"

# A tiny tidy frame and summary table, shaped like actlab.analysis output.
FRAMES = """
import pandas as pd

df = pd.DataFrame([
    {"run": f"r{a}", "step": step, "seed": seed, "metric": "grad_norm", "layer": layer,
     "value": (1 + layer) * (1 + step) * (2 if a == "tanh" else 1) + seed,
     "activation": a, "depth": 2}
    for a in ("relu", "tanh") for step in (0, 10) for seed in (0, 1) for layer in (0, 1)])
summ = pd.DataFrame({"activation": ["relu", "relu", "tanh", "tanh"], "depth": [2] * 4,
                     "steps_to_target": [100, 140, None, 90], "target": ["eval/acc>=0.9"] * 4})
"""


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    scope: dict = {}
    exec(FRAMES, scope)
    return scope["df"], scope["summ"]


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


STATE_CHECK = FRAMES + """
import io
import sys

import matplotlib

def forbidden(*args, **kwargs):
    raise AssertionError(f"matplotlib.use{args} called")

matplotlib.use = forbidden
backend = matplotlib.get_backend()
SAMPLE = ("figure.dpi", "font.size", "axes.grid", "axes.spines.top", "grid.alpha",
          "legend.frameon", "interactive", "lines.linewidth")
sample = {k: matplotlib.rcParams[k] for k in SAMPLE}
everything = dict(matplotlib.rcParams.copy())

def unchanged(when):
    assert matplotlib.get_backend() == backend, (when, matplotlib.get_backend(), backend)
    now = {k: matplotlib.rcParams[k] for k in SAMPLE}
    assert now == sample, (when, now, sample)
    changed = {k for k, v in matplotlib.rcParams.copy().items() if everything[k] != v}
    assert not changed, (when, changed)

import actlab.analysis
import actlab.analysis.plots
import actlab.analysis.report
from actlab import plots

unchanged("after import")
figs = [plots.layer_profile(df), plots.layer_heatmap(df), plots.convergence(summ),
        plots.activation_curves(["relu", "tanh"])]
for fig in figs:
    fig.savefig(io.BytesIO(), format="png")
plots.savefig(figs[0], io.BytesIO())
unchanged("after figures")
assert "matplotlib.pyplot" not in sys.modules, "pyplot loaded by figures alone"

# a program that uses pyplot itself gets its figures registered with pyplot
import matplotlib.pyplot as plt

everything = dict(matplotlib.rcParams.copy())
fig = plots.layer_profile(df)
assert plt.fignum_exists(fig.number)
fig.savefig(io.BytesIO(), format="png")
unchanged("after a pyplot figure")
with plots.offscreen():
    detached = plots.learning_curves(df, metrics=("grad_norm",))
assert detached.canvas.manager is None
plots.savefig(fig, io.BytesIO())
assert not plt.get_fignums(), plt.get_fignums()
unchanged("after saving")
print("state ok")
"""


BACKENDS = ["svg", "pdf"]
if importlib.util.find_spec("matplotlib_inline") is not None:
    BACKENDS.append(INLINE)


@pytest.mark.parametrize("backend", BACKENDS)
def test_import_and_figures_leave_backend_and_rcparams_alone(backend):
    env = {**os.environ, "MPLBACKEND": backend}
    p = run_python(STATE_CHECK, env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "state ok" in p.stdout


def test_headless_script_saves_without_choosing_a_backend(tmp_path):
    """What actlab-activations does (Figure.savefig), with no display and no backend set."""
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "DISPLAY",
                                                            "WAYLAND_DISPLAY")}
    out = tmp_path / "activations.png"
    code = textwrap.dedent(f"""
        import sys

        from actlab import activations, plots

        names = activations.names(include_output=False)[:6]
        plots.activation_grid(names).savefig({str(out)!r}, dpi=60, bbox_inches="tight")
        assert "matplotlib.pyplot" not in sys.modules
        print("saved")
    """)
    p = run_python(code, env)
    assert p.returncode == 0, p.stderr[-3000:]
    img = matplotlib.image.imread(out)
    assert img.shape[0] > 100 and img.shape[1] > 600
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 50


def has_colour(img: np.ndarray, hex_colour: str, tol: float = 0.04) -> bool:
    rgb = np.asarray(matplotlib.colors.to_rgb(hex_colour))
    return bool((np.abs(img[..., :3] - rgb).max(-1) < tol).sum() > 50)


def test_figures_save_to_png_with_content(tmp_path):
    df, summ = frames()
    with plots.offscreen():
        curves = plots.activation_curves(["relu", "tanh", "sigmoid"])
        profile = plots.layer_profile(df)
        convergence = plots.convergence(summ)
    assert curves.canvas.manager is None
    assert curves.dpi == plots.STYLE["figure.dpi"]
    ax = profile.axes[0]
    assert not ax.spines["top"].get_visible() and not ax.spines["right"].get_visible()
    assert ax.get_legend() is not None and not ax.get_legend().get_frame_on()
    assert convergence.axes[0].texts  # partial success annotated
    for name, fig in (("curves", curves), ("profile", profile), ("convergence", convergence)):
        plots.savefig(fig, tmp_path / f"{name}.png")
    img = matplotlib.image.imread(tmp_path / "curves.png")
    assert img.shape[0] > 300 and img.shape[1] > 800
    for act in ("relu", "tanh", "sigmoid"):
        assert has_colour(img, plots.color_for(act)), act
    img = matplotlib.image.imread(tmp_path / "profile.png")
    assert has_colour(img, plots.color_for("relu")) and has_colour(img, plots.color_for("tanh"))
    # a figure saved directly looks like one saved through plots.savefig (same style)
    with plots.offscreen():
        again = plots.layer_profile(df)
    again.savefig(tmp_path / "direct.png", dpi=130, bbox_inches="tight")
    assert np.array_equal(matplotlib.image.imread(tmp_path / "direct.png"),
                          matplotlib.image.imread(tmp_path / "profile.png"))


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
def test_figures_display_in_jupyter(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    cells = [
        "import matplotlib\n" + FRAMES + "\nfrom actlab import plots\n"
        "before = {k: matplotlib.rcParams[k] for k in ('font.size', 'axes.grid', 'figure.dpi')}",
        "plots.layer_profile(df);",
        "plots.convergence(summ);",
        "fig = plots.layer_heatmap(df)",
        "after = {k: matplotlib.rcParams[k] for k in before}\n"
        "assert after == before, (after, before)\n"
        "print(matplotlib.get_backend())",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel picks its inline backend
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    images = [sum("image/png" in o.get("data", {}) for o in c.outputs) for c in nb.cells]
    assert images == [0, 1, 1, 1, 0]  # each figure shown once, from every cell, `;` or not
    assert "inline" in "".join(o.get("text", "") for o in nb.cells[-1].outputs)
