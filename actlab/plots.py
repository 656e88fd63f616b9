"""Matplotlib figures used by the CLI, notebooks and reports."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Okabe-Ito: a colour-blind-safe qualitative palette.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
           "#000000")


def activation_grid(names: Sequence[str], xlim: float = 5.0, cols: int = 6) -> plt.Figure:
    """One small panel per activation: phi (solid) and phi' (dashed) on [-xlim, xlim]."""
    import jax.numpy as jnp

    from actlab import activations

    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.0 * rows), squeeze=False,
                             sharex=True)
    x = jnp.linspace(-xlim, xlim, 801)
    for ax, name in zip(axes.flat, names, strict=False):
        sp = activations.spec(name)
        learned = {k: jnp.float32(v) for k, v in sp.learned.items()}
        ax.axhline(0, color="0.85", lw=0.8)
        ax.axvline(0, color="0.85", lw=0.8)
        ax.plot(x, np.asarray(sp(x, **learned)), color=PALETTE[0], lw=1.6, label=r"$\phi$")
        ax.plot(x, np.asarray(sp.derivative(x, **learned)), color=PALETTE[1], lw=1.3, ls="--",
                label=r"$\phi'$")
        ax.set_title(name, fontsize=9)
        ax.set_ylim(-1.6, 3.2)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="upper left", frameon=False)
    fig.tight_layout()
    return fig
