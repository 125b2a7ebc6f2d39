"""Figures of signatures: a small picture where one helps (PNG ``data:`` URI).

The registry names the drawer of each signature kind (:func:`parity.diagnosis.registry.drawer`);
the drawers are in :mod:`parity.diagnosis.drawings`. matplotlib is imported on the first
figure only, so that importing the diagnosis stays light.

Public API
----------
figure(signature, expected, actual) -> str | None
"""
from __future__ import annotations

import base64
import io

from typing import Any

from parity.diagnosis.registry import drawer
from parity.diagnosis.result import Signature


def figure(signature: Signature, expected: Any, actual: Any) -> str | None:
    """A small picture of the signature, where one helps: PNG ``data:`` URI or None.

    Parameters
    ----------
    signature : Signature
        From :func:`diagnose_arrays` / :func:`diagnose_eigenspaces`.
    expected, actual : array_like
        The pair it was diagnosed on (for eigenspaces the figure uses only
        ``signature.params``, pass anything).

    Returns
    -------
    str or None
        ``data:image/png;base64,...`` (matplotlib, Agg, no pyplot state), or None
        when no figure helps or matplotlib is missing. Never raises.
    """
    try:
        draw = drawer(signature.name)
        if draw is None:
            return None
        # A function-local import keeps start-up light: matplotlib loads only when a
        # figure is drawn.
        from matplotlib.figure import Figure

        size = (4.2, 3.2) if signature.name == "eigen_rotation" else (6.0, 2.6)
        fig = Figure(figsize=size, layout="constrained")
        if not draw(fig, signature, expected, actual):
            return None
        return png_data_uri(fig)
    except Exception:  # a figure is optional: never fail the report for one
        return None


def png_data_uri(fig: Any, dpi: int = 100) -> str:
    """Render a matplotlib figure to a ``data:image/png;base64,`` URI.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure; an Agg canvas is attached, so a bare ``Figure`` needs no backend.
    dpi : int
        Pixels per inch of the PNG.

    Returns
    -------
    str
        The URI. ``Software=None`` drops matplotlib's PNG text chunk (it carries a
        URL, and the pages must name none).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib is an extra

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
