"""Figures drawn without pyplot: a bare :class:`matplotlib.figure.Figure` per figure, so that
importing or calling the toolkit never switches a notebook's backend or keeps figures alive
in pyplot's global list."""

from __future__ import annotations


def subplots(*args, figsize=None, dpi=None, layout=None, **kwargs):
    """``pyplot.subplots`` on a new bare Figure: returns (figure, axes).

    ``figure.savefig`` writes PNG/PDF/SVG without a pyplot backend; nothing needs closing.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, layout=layout)
    return fig, fig.subplots(*args, **kwargs)
