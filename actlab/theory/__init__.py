"""Mean-field signal propagation (q*, c*, chi_1, depth scales) for any activation, by Gaussian
quadrature."""

from actlab.theory.meanfield import (  # noqa: F401
    Act,
    Params,
    TheoryError,
    chi1,
    corr_map,
    critical_sigma_w2,
    depth_scales,
    edge_of_chaos,
    kernel,
    length_map,
    phase_diagram,
    predict_layers,
    q_star,
    summary,
)
