"""Loaders, plots, the report and the notebooks, on a real small sweep made by the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from actlab import analysis, data
from actlab.analysis import plots, report
from actlab.config import Config
from actlab.runs import driver as train
from actlab.runs import records as summary
from actlab.runs import retrain

ROOT = Path(__file__).resolve().parent.parent
EXE = str(Path(sys.executable).parent / "actlab-train")
ACTS, DEPTHS, SEEDS = ("relu", "tanh"), (2, 3), 2


@pytest.fixture(scope="session")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    p = subprocess.run(
        [EXE, "-m", f"activation={','.join(ACTS)}", f"model.depth={','.join(map(str, DEPTHS))}",
         "+experiment=debug", f"train.seeds={SEEDS}", "train.steps=40", "train.log_every=10",
         "train.eval_every=20", "train.target=train/loss<=0.66", f"hydra.sweep.dir={root}"],
        capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return root


def jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_load_sweep_rows_columns_and_axes(sweep):
    df = analysis.load_sweep(sweep, cache=False)
    dirs = analysis.run_dirs(sweep)
    assert len(dirs) == len(ACTS) * len(DEPTHS)
    expected_rows = sum(
        sum(1 for k, v in r.items() if k not in ("step", "seed", "wall_time") and v is not None)
        for d in dirs for r in jsonl(d / "metrics.jsonl"))
    assert len(df) == expected_rows
    for col in ("run", "step", "seed", "metric", "layer", "value", "activation", "depth", "width",
                "dataset", "optimizer", "lr", "init"):
        assert col in df.columns
    for d in dirs:
        cfg = json.loads((d / "summary.json").read_text())["config"]
        part = df[df["run"] == str(d)]
        assert set(part["activation"]) == {cfg["activation"]["name"]}
        assert set(part["depth"]) == {cfg["model"]["depth"]}
        assert sorted(part.loc[part["metric"] == "grad_norm", "layer"].unique()) == list(
            range(cfg["model"]["depth"]))
    # one row per step x seed x layer x metric
    assert not df.duplicated(["run", "step", "seed", "layer", "metric"]).any()
    assert df.loc[df["metric"] == "train/loss", "layer"].isna().all()
    assert set(df["seed"]) == set(range(SEEDS))


def test_second_load_uses_the_cache(sweep, monkeypatch):
    first = analysis.load_sweep(sweep)
    assert all((d / analysis.CACHE).is_file() for d in analysis.run_dirs(sweep))

    def boom(run_dir):
        raise AssertionError("metrics.jsonl parsed again despite a valid cache")

    monkeypatch.setattr(analysis.load, "_tidy_uncached", boom)
    second = analysis.load_sweep(sweep)
    pd.testing.assert_frame_equal(first, second)


def test_list_of_dirs_and_single_run(sweep):
    dirs = analysis.run_dirs(sweep)
    one = analysis.load_run(dirs[0])
    two = analysis.load_sweep(dirs[:2])
    assert set(two["run"]) == {str(dirs[0]), str(dirs[1])}
    assert len(one) < len(two)


def test_summaries_one_row_per_member(sweep):
    s = analysis.summaries(sweep)
    assert len(s) == len(ACTS) * len(DEPTHS) * SEEDS
    assert set(s["status"]) == {"completed"}
    for col in ("activation", "depth", "seed", "final_eval_acc", "steps_to_target", "loss_auc"):
        assert col in s.columns


def test_bootstrap_ci_brackets_the_mean():
    v = np.random.default_rng(0).normal(5, 1, 200)
    lo, hi = summary.bootstrap_ci(v)
    assert lo < v.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 / np.sqrt(200), rel=0.2)


def test_plots_draw_what_the_data_holds(sweep):
    df = analysis.load_sweep(sweep)
    summ = analysis.summaries(sweep)
    fig = plots.layer_profile(df, "grad_norm")
    assert len(fig.axes) == len(DEPTHS)
    for ax, depth in zip(fig.axes, DEPTHS, strict=True):
        assert len(ax.lines) == len(ACTS)
        assert all(len(line.get_xdata()) == depth for line in ax.lines)
        assert ax.get_yscale() == "log"
    fig = plots.layer_heatmap(df)
    assert sum(ax.get_visible() and bool(ax.images) for ax in fig.axes) == len(ACTS) * len(DEPTHS)
    fig = plots.dead_saturated(df)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 2 * len(ACTS)
    assert all(len(ax.lines) == max(DEPTHS) for ax in panels)  # one line per layer
    fig = plots.learning_curves(df, band="ci")
    assert [len(ax.lines) for ax in fig.axes] == [len(ACTS)] * 2
    fig = plots.convergence(summ)
    assert len(fig.axes[0].get_yticklabels()) == len(ACTS)
    fig = plots.activation_curves(list(ACTS))
    assert [len(ax.lines) for ax in fig.axes] == [len(ACTS)] * 2
    assert fig.axes[0].lines[0].get_color() == plots.color_for("relu")
    plt.close("all")


def test_convergence_marks_targets_never_reached():
    summ = pd.DataFrame({"activation": ["relu", "relu", "sigmoid", "sigmoid"],
                         "depth": [2, 2, 2, 2], "steps_to_target": [100, 140, None, None],
                         "target": ["eval/acc>=0.9"] * 4})
    fig = plots.convergence(summ)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts.count("not reached") == 1
    plt.close(fig)


def test_distributions_and_decision_boundary_from_replay():
    cfg = Config.from_dict({"model": {"depth": 3, "width": 8}, "dataset": {"name": "gauss"},
                            "train": {"steps": 60, "log_every": 20, "eval_every": 20}})
    exp, snaps = retrain.retrain(cfg, [0, 30, 60])
    zs = {s: retrain.forward(exp, p, exp.dataset.x_train[:64])["z"] for s, p in snaps.items()}
    assert all(z.shape == (3, 64, 8) for z in zs.values())
    fig = plots.distributions(zs)
    assert [ax.get_title() for ax in fig.axes] == ["step 0", "step 30", "step 60"]
    assert all(len(ax.collections) == 3 for ax in fig.axes)  # one violin per layer
    ds = exp.dataset
    x_raw = ds.x_test * ds.std + ds.mean
    fig = plots.decision_boundary(lambda x: retrain.forward(exp, snaps[60], x)["probs"][:, 1],
                                  x_raw, ds.y_test, ds.mean, ds.std)
    ax = fig.axes[0]
    assert len(ax.collections) >= 3  # filled contours, the 0.5 contour, the test points
    plt.close("all")


def test_replay_reproduces_the_logged_run(tmp_path):
    cfg = Config.from_dict({"model": {"depth": 2, "width": 8}, "logger": {"progress": False},
                            "train": {"steps": 40, "log_every": 10, "eval_every": 20}})
    s = train.run(cfg, tmp_path)
    exp, snaps = retrain.retrain(cfg, [40])
    probs = retrain.forward(exp, snaps[40], exp.dataset.x_test)["probs"]
    acc = float(np.mean(probs.argmax(1) == exp.dataset.y_test))
    assert acc == pytest.approx(s["seeds"][0]["final_eval_acc"], abs=1e-6)


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
def test_report_references_every_figure_and_one_row_per_configuration(sweep):
    page = report.build(sweep, max_replays=2)
    html = page.read_text()
    pngs = sorted(p.name for p in page.parent.glob("*.png"))
    assert {"grad_norm_init.png", "dead_saturated.png", "learning_curves.png",
            "convergence.png", "decision_boundary.png", "activations.png"} <= set(pngs)
    for name in pngs:
        assert f"data-file='{name}'" in html
    first_table = html.split("<table")[1].split("</table>")[0]
    rows = re.findall(r"<tr>\s*<td>", first_table)
    assert len(rows) == len(ACTS) * len(DEPTHS)


SLOW_NOTEBOOKS = ("01_activation_zoo.ipynb", "03_playground.ipynb",
                  "04_signal_propagation.ipynb")  # tens of seconds each: -m slow


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in SLOW_NOTEBOOKS else n
    for n in sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))])
def test_notebooks_execute(name, sweep, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("ACTLAB_SWEEP", str(sweep))
    monkeypatch.setenv("ACTLAB_NB_STEPS", "60")
    monkeypatch.setenv("ACTLAB_NB_DATASETS", "xor,spiral")  # playground: two of the four
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # committed clean
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors


def test_playground_datasets_are_two_dimensional():
    assert all(data.load(n).input_shape == (2,) for n in ("circle", "xor", "gauss", "spiral"))
    assert os.path.isdir(ROOT / "notebooks")


def test_expected_calibration_error_by_hand():
    from actlab.analysis import expected_calibration_error

    # two bins used (of 10): confidences 0.95 (2 examples, 1 right) and 0.65 (2, both right)
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.35, 0.65], [0.35, 0.65]])
    labels = np.array([0, 1, 1, 1])
    want = 0.5 * abs(0.5 - 0.95) + 0.5 * abs(1.0 - 0.65)
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(want)
    perfect = np.eye(3)[[0, 1, 2]]
    assert expected_calibration_error(perfect, np.array([0, 1, 2])) == 0.0
