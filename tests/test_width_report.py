"""actlab-report's width section against frames whose answers are known in closed form.

The coordinate check's slopes are those of power laws planted in the records; the
learning-rate transfer's optima are those of planted loss curves, a diverged member never
winning.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from actlab.analysis.plots import width as plots_width

WIDTHS = (64, 128, 256, 512)


def tidy(exponents, steps=(0, 1, 2), seeds=(0, 1)):
    """Records of an MLP (2 layers) at each width: q/l = (n^a_l (1 + t))^2 (its RMS a power
    law of slope a_l), logits_rms = n^a_out, seed-dependent noise that averages out."""
    rows = []
    for param, (a0, a1, a_out) in exponents.items():
        for n, t, seed in itertools.product(WIDTHS, steps, seeds):
            wobble = 1.1 if seed == 0 else 1 / 1.1  # geometric mean over the seeds: 1 ...
            for metric, layer, v in (("q", 0, (n ** a0 * (1 + t)) ** 2),
                                     ("q", 1, (n ** a1 * (1 + t)) ** 2),
                                     ("logits_rms", pd.NA, n ** a_out * (1 + t)),
                                     ("grad_norm", 0, 1.0)):
                rows.append({"run": f"{param}_{n}", "step": t, "seed": seed, "metric": metric,
                             "layer": layer, "value": v * wobble ** 2 if seed < 2 else v,
                             "width": n, "dim": None, "param": param, "model": "mlp",
                             "activation": "relu"})
    df = pd.DataFrame(rows)
    df["layer"] = df["layer"].astype("Int64")
    return df


def test_coordinate_check_slopes_are_the_planted_power_laws():
    # the mean over seeds of v * 1.21 and v / 1.21 is v (1.21 + 1/1.21) / 2: a constant
    # factor, which shifts log RMS and leaves each slope alone
    planted = {"sp": (0.0, 0.5, 1.0), "mup": (0.0, 0.0, -0.5)}
    values, slopes = plots_width.coord_table(tidy(planted))
    assert set(values["panel"]) == {"layer 0", "layer 1", "logits"}
    assert sorted(values["step"].unique()) == [0, 1, 2]
    for param, (a0, a1, a_out) in planted.items():
        for panel, a in (("layer 0", a0), ("layer 1", a1), ("logits", a_out)):
            got = slopes[(slopes["param"] == param) & (slopes["panel"] == panel)]
            assert len(got) == 3  # one per step
            np.testing.assert_allclose(got["slope"], a, atol=1e-9)
    # the values are RMS: sqrt of q (mean over seeds of the planted q)
    v = values[(values["param"] == "sp") & (values["panel"] == "layer 1")
               & (values["n"] == 256) & (values["step"] == 2)]["value"].iat[0]
    assert v == pytest.approx(np.mean([np.sqrt((256 ** 0.5 * 3) ** 2 * w)
                                       for w in (1.21, 1 / 1.21)]))


def test_coordinate_check_keeps_the_steps_every_width_logged():
    df = tidy({"sp": (0.0, 0.5, 1.0)}, steps=(0, 1, 2, 3))
    df = df[~((df["width"] == 512) & (df["step"] == 3))]  # the widest run stopped early
    values, _ = plots_width.coord_table(df)
    assert sorted(values["step"].unique()) == [0, 1, 2]


def test_coordinate_check_figure_has_a_panel_per_layer_and_the_logits():
    fig = plots_width.coord_check(tidy({"sp": (0.0, 0.5, 1.0), "mup": (0.0, 0.0, -0.5)}))
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(titles) == 6
    assert "logits, slope +1.00" in titles and "logits, slope -0.50" in titles


def summaries(best, diverge_above=None, seeds=(0, 1, 2)):
    """Members of an lr grid at each width: loss = 2 + (log10 lr - log10 best[n])^2 (+ seed
    noise that averages to 0); members above `diverge_above` diverged (NaN loss)."""
    lrs = 10.0 ** np.arange(-4, -0.5, 0.25)
    rows = []
    for (param, n), b in best.items():
        for lr, seed in itertools.product(lrs, seeds):
            loss = 2 + (np.log10(lr) - np.log10(b)) ** 2 + 0.01 * (seed - 1)
            if diverge_above is not None and lr > diverge_above:
                loss = np.nan
            rows.append({"run": f"{param}_{n}", "model": "mlp", "param": param,
                         "activation": "gelu", "width": n, "dim": None, "lr": lr,
                         "seed": seed, "final_train_loss": loss})
    return pd.DataFrame(rows)


def test_learning_rate_transfer_finds_each_widths_optimum():
    # sp: the optimum halves per doubling of width (quarter-decade grid: 10^-0.25 steps);
    # mup: it stays
    best = {("sp", n): 10.0 ** (-2 - 0.25 * i) for i, n in enumerate(WIDTHS)}
    best |= {("mup", n): 10.0 ** -2 for n in WIDTHS}
    table = plots_width.transfer_table(summaries(best))
    assert len(table) == 8
    for row in table.itertuples():
        assert row.best_lr == pytest.approx(best[row.param, row.width])
        assert row.best_loss == pytest.approx(2.0)
        assert row.lr_ratio == pytest.approx(best[row.param, row.width] / best[row.param, 64])
        assert row.lrs == 14


def test_a_diverged_learning_rate_never_wins():
    best = {("sp", n): 10.0 ** -1 for n in WIDTHS}  # the optimum sits in the diverged part
    table = plots_width.transfer_table(summaries(best, diverge_above=10.0 ** -1.5))
    # the largest finite lr of the grid, 10^-1.5, is then the best that did not diverge
    np.testing.assert_allclose(table["best_lr"], 10.0 ** -1.5)
    fig = plots_width.lr_transfer(summaries(best, diverge_above=10.0 ** -1.5))
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 1


def test_no_width_section_for_a_single_width():
    summ = summaries({("sp", 64): 1e-2})
    assert not plots_width.has_widths(summ)
    assert plots_width.report_items(tidy({"sp": (0, 0, 0)}), summ) == []
