"""matplotlib figures of runs, sweeps, theory and probes (one colour per activation)."""

from actlab.analysis.plots.figures import (  # noqa: F401
    PALETTE,
    STYLE,
    StyledFigure,
    activation_curves,
    activation_grid,
    color_for,
    convergence,
    dead_saturated,
    decision_boundary,
    distributions,
    layer_heatmap,
    layer_profile,
    learning_curves,
    offscreen,
    savefig,
    style,
)
