"""The report's figures (matplotlib) and the one image helper of the HTML pages.

Every figure is drawn on a bare :class:`matplotlib.figure.Figure` (the object API:
never the global pyplot state or backend) and embedded as a PNG ``data:`` URI by
:func:`png_data_uri`, which the report, the dashboard, the diagnosis figures and
``parity locate``'s section all use. matplotlib is imported when a figure is drawn,
not when this module is imported.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from parity.diagnosis.figures import png_data_uri  # noqa: F401  (the one image helper; defined where the lowest user draws)
from parity.rendering.formatting import fmt_tol, is_num

__all__ = ["png_data_uri", "hist_figure", "slice_figure", "NAN_GREY", "MARKER_COLOUR"]

#: Colour of NaN pixels in the slice panels.
NAN_GREY = "#a0a0a0"
#: Colour of the worst-point marker.
MARKER_COLOUR = "#ff00ff"


def hist_figure(hist: Mapping[str, Any], rtol: Any, tier: str) -> str | None:
    """Histogram of log10 relative error with the tier's rtol as a line.

    Parameters
    ----------
    hist : mapping
        ``{"edges": [...], "counts": [...]}`` with ``len(edges) == len(counts) + 1``.
    rtol : float or None
        Tier rtol; drawn as a vertical dashed line when positive.
    tier : str
        Tier name for the line's label.

    Returns
    -------
    str or None
        PNG data URI, or ``None`` when the histogram is unusable.
    """
    import numpy as np
    from matplotlib.figure import Figure

    edges = np.array([np.nan if e is None else e for e in hist.get("edges", [])], dtype=float)
    counts = np.array([0 if c is None else c for c in hist.get("counts", [])], dtype=float)
    if counts.size == 0 or edges.size != counts.size + 1 or not np.isfinite(edges).any():
        return None
    # Non-finite end edges (e.g. -inf for exact zeros) become one unit wide.
    if edges.size >= 3:
        if not np.isfinite(edges[0]):
            edges[0] = edges[1] - 1.0
        if not np.isfinite(edges[-1]):
            edges[-1] = edges[-2] + 1.0
    if not np.isfinite(edges).all():
        return None
    fig = Figure(figsize=(7.0, 2.7), layout="constrained")
    ax = fig.add_subplot()
    ax.stairs(counts, edges, fill=True, color="#4c72b0", alpha=0.85, label="elements")
    if is_num(rtol) and rtol > 0:
        x = math.log10(rtol)
        ax.axvline(x, color="#c0392b", linestyle="--", linewidth=1.8,
                   label=f"tier {tier} rtol = {fmt_tol(rtol)}")
        lo, hi = ax.get_xlim()
        ax.set_xlim(min(lo, x - 0.5), max(hi, x + 0.5))
    positive = counts[counts > 0]
    if positive.size and positive.max() / positive.min() > 100:
        ax.set_yscale("log")
    ax.set_xlabel("log10( |actual \u2212 expected| / |expected| )")
    ax.set_ylabel("number of elements")
    ax.set_title("Distribution of relative error (right of the red line = looser than rtol)",
                 fontsize=10)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    ax.grid(axis="y", alpha=0.3)
    return png_data_uri(fig)


def _pixel_edges(extent: Sequence[float] | None, nx: int, ny: int) -> tuple[list[float], bool]:
    """imshow extent (pixel edges) from a sample-centre extent.

    ``slice.extent`` gives the coordinates of the first and last sample
    along each axis (``[xmin, xmax, ymin, ymax]``); imshow wants pixel
    edges, so half a step is added on each side.
    """
    if not extent or len(extent) != 4 or not all(is_num(v) for v in extent):
        return [-0.5, nx - 0.5, -0.5, ny - 0.5], False
    x0, x1, y0, y1 = (float(v) for v in extent)
    dx = (x1 - x0) / (nx - 1) if nx > 1 else 1.0
    dy = (y1 - y0) / (ny - 1) if ny > 1 else 1.0
    return [x0 - dx / 2, x1 + dx / 2, y0 - dy / 2, y1 + dy / 2], True


def slice_figure(sl: Mapping[str, Any]) -> str | None:
    """Three panels: expected, actual (shared colour scale), and their difference.

    Parameters
    ----------
    sl : mapping
        ``details.slice``: ``expected``/``actual`` 2-D lists (rows along
        ``ylabel``, columns along ``xlabel``; ``null`` = NaN), ``extent``
        ``[xmin, xmax, ymin, ymax]`` (first/last sample coordinates),
        ``xlabel``, ``ylabel``, ``title``; optional ``worst_xy`` ``[x, y]``
        to place the worst-point marker (default: largest |difference|, or
        the first NaN-pattern mismatch). The title is shown by the page,
        not drawn in the figure.

    Returns
    -------
    str or None
        PNG data URI, or ``None`` when the arrays are unusable.
    """
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    try:
        expected = np.array(sl.get("expected"), dtype=float)
        actual = np.array(sl.get("actual"), dtype=float)
    except (TypeError, ValueError):
        return None
    if expected.ndim != 2 or expected.shape != actual.shape or expected.size == 0:
        return None
    ny, nx = expected.shape
    edges, has_coords = _pixel_edges(sl.get("extent"), nx, ny)
    x0, x1, y0, y1 = edges

    both = np.concatenate([expected[np.isfinite(expected)], actual[np.isfinite(actual)]])
    vmin, vmax = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    diff = actual - expected
    finite_diff = diff[np.isfinite(diff)]
    dlim = float(np.abs(finite_diff).max()) if finite_diff.size else 0.0
    if dlim == 0.0:
        dlim = 1.0 if not finite_diff.size else max(abs(vmax), abs(vmin), 1.0) * 1e-16
    nan_mismatch = np.isnan(expected) != np.isnan(actual)

    # Worst point, in pixel indices (row, col).
    worst_rc: tuple[float, float] | None = None
    wxy = sl.get("worst_xy")
    if isinstance(wxy, (list, tuple)) and len(wxy) == 2 and all(is_num(v) for v in wxy):
        wx, wy = float(wxy[0]), float(wxy[1])
    else:
        if finite_diff.size and np.abs(finite_diff).max() > 0:
            r, c = np.unravel_index(np.nanargmax(np.abs(diff)), diff.shape)
        elif nan_mismatch.any():
            r, c = np.argwhere(nan_mismatch)[0]
        else:
            r = c = None
        if r is not None:
            worst_rc = (float(r), float(c))
        if worst_rc is None:
            wx = wy = None
        else:
            wx = x0 + (worst_rc[1] + 0.5) * (x1 - x0) / nx
            wy = y0 + (worst_rc[0] + 0.5) * (y1 - y0) / ny

    seq = colormaps["viridis"].with_extremes(bad=NAN_GREY)
    div = colormaps["RdBu_r"].with_extremes(bad=NAN_GREY)
    common = dict(origin="lower", extent=edges, aspect="auto", interpolation="nearest")

    fig = Figure(figsize=(13.5, 4.3), layout="constrained")
    axes = fig.subplots(1, 3)
    im0 = axes[0].imshow(np.ma.masked_invalid(expected), cmap=seq, vmin=vmin, vmax=vmax, **common)
    axes[1].imshow(np.ma.masked_invalid(actual), cmap=seq, vmin=vmin, vmax=vmax, **common)
    im2 = axes[2].imshow(np.ma.masked_invalid(diff), cmap=div, vmin=-dlim, vmax=dlim, **common)
    if nan_mismatch.any():
        overlay = np.zeros((ny, nx, 4))
        overlay[nan_mismatch] = (0.0, 0.0, 0.0, 1.0)
        for ax in axes:
            ax.imshow(overlay, **common)
    titles = ("reference (NumPy) = expected", "torch = actual", "difference: actual \u2212 expected")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(str(sl.get("xlabel") or ("x" if has_coords else "column")))
        ylabel = str(sl.get("ylabel") or ("y" if has_coords else "row"))
        # A one-letter axis name ("l") turned on its side reads as a dash: keep it upright.
        ax.set_ylabel(ylabel, rotation=0 if len(ylabel) <= 2 else 90, labelpad=8 if len(ylabel) <= 2 else 4,
                      va="center")
        if wx is not None:
            ax.plot([wx], [wy], marker="o", markersize=13, markerfacecolor="none",
                    markeredgecolor=MARKER_COLOUR, markeredgewidth=2.2, linestyle="none")
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    fig.colorbar(im0, ax=list(axes[:2]), shrink=0.9, label="value (same scale, both panels)")
    fig.colorbar(im2, ax=axes[2], shrink=0.9, label="actual \u2212 expected")
    handles = [Patch(facecolor=NAN_GREY, label="NaN")]
    if nan_mismatch.any():
        handles.append(Patch(facecolor="black", label="NaN in one backend only"))
    if wx is not None:
        handles.append(Line2D([], [], marker="o", markersize=9, markerfacecolor="none",
                              markeredgecolor=MARKER_COLOUR, markeredgewidth=2,
                              linestyle="none", label="worst point"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles),
               fontsize=9, frameon=False)
    return png_data_uri(fig)
