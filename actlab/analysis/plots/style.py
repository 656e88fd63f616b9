"""actlab's figure style and figure objects, kept off matplotlib's global state.

Importing this module leaves matplotlib alone: no backend is selected and the
global rcParams are never changed. Figures are built and drawn inside a style
context (`style()`, actlab's STYLE dict), as `StyledFigure`s: Figure objects that
need no backend and save on any machine, with or without a display. In
IPython/Jupyter, or once the program has imported pyplot itself, figures are also
registered with pyplot, so that the notebook's own backend shows them and
`plt.show()` finds them. Inside `offscreen()` they never are.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import matplotlib as mpl
from matplotlib.colors import ListedColormap, to_hex
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

# Okabe-Ito: a colour-blind-safe qualitative palette.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
           "#000000")
_FIXED = {"relu": 0, "tanh": 1, "sigmoid": 2, "gelu": 3, "leaky_relu": 4, "selu": 5,
          "swish": 6, "elu": 7}
_EXTRA = cast(Sequence[tuple[float, float, float]],  # tab20: a ListedColormap of RGB tuples
              cast(ListedColormap, mpl.colormaps["tab20"]).colors)

# actlab's look, applied per figure (never to the global rcParams).
STYLE: dict[RcKeyType, Any]
STYLE = {"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False,
         "axes.grid": True, "grid.alpha": 0.3, "font.size": 9, "legend.frameon": False}

_OFFSCREEN = contextvars.ContextVar("actlab_plots_offscreen", default=False)


@contextlib.contextmanager
def style() -> Iterator[None]:
    """actlab's figure style for the duration of a block (also usable as a decorator).

    Like `matplotlib.rc_context(STYLE)`, except that on exit it restores only the
    keys of STYLE: settings that something else changes meanwhile are kept (a
    notebook backend loaded by the first figure switches on interactive mode, which
    must outlive the block for the notebook to show later figures).
    """
    saved = {key: mpl.rcParams[key] for key in STYLE}
    mpl.rcParams.update(STYLE)
    try:
        yield
    finally:
        mpl.rcParams.update(saved)


@contextlib.contextmanager
def offscreen() -> Iterator[None]:
    """Figures made inside are never registered with pyplot (for figures that are only saved)."""
    token = _OFFSCREEN.set(True)
    try:
        yield
    finally:
        _OFFSCREEN.reset(token)


def _pyplot():
    """pyplot, where new figures should be registered with it; None for detached figures."""
    if _OFFSCREEN.get():
        return None
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        return plt
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    if get_ipython is None or get_ipython() is None:
        return None
    import matplotlib.pyplot as plt

    return plt


class StyledFigure(Figure):
    """A Figure laid out and drawn in actlab's style wherever it is rendered.

    Some settings are read when the figure is drawn rather than when it is built
    (how many ticks fit an axis, for one), so drawing applies the style again; a
    notebook's display, `fig.savefig` and `savefig` below all give the same picture.
    """

    def draw(self, renderer):
        with style():
            return super().draw(renderer)

    def get_tightbbox(self, *args, **kwargs):
        with style():
            return super().get_tightbbox(*args, **kwargs)

    def tight_layout(self, *args, **kwargs):
        with style():
            return super().tight_layout(*args, **kwargs)


def _figure(**kwargs) -> Figure:
    plt = _pyplot()
    if plt is None:
        return StyledFigure(**kwargs)
    return plt.figure(FigureClass=StyledFigure, **kwargs)


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kwargs):
    fig = _figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _styled(fn: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw `fn`'s figure in actlab's style, restoring the caller's rcParams afterwards."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> Figure:
        with style():
            return fn(*args, **kwargs)

    return wrapper


def color_for(label: str) -> str:
    """The colour of an activation (labels like 'gelu(approximate=True)' share gelu's hue)."""
    base = str(label).split("(")[0]
    if base in _FIXED:
        return PALETTE[_FIXED[base]]
    return to_hex(_EXTRA[sum(map(ord, base)) % len(_EXTRA)])


def _style(label: str) -> dict:
    approx = "approximate=True" in str(label) or "learnable=True" in str(label)
    return {"color": color_for(label), "ls": "--" if approx else "-"}


def savefig(fig: Figure, path) -> None:
    """Save at report resolution and release the figure."""
    with style():
        fig.savefig(path, dpi=130, bbox_inches="tight")
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)
