"""Self-contained HTML divergence report for one parity run.

The report is a single HTML file that opens offline: inline CSS, figures
embedded as PNG ``data:`` URIs drawn with matplotlib, no ``<script>``, and no
reference to any external URL. All text that comes from the run (fixture
name, paths, messages, environment) is HTML-escaped by Jinja2's autoescape.

Public API
----------
load_result(path) -> dict
    Read and sanity-check a result JSON written by ``parity run --json``.
render_report(result, path=None) -> str
    Render the HTML (and write it atomically when ``path`` is given).
divergence_summary(result) -> str | None
    One plain-text sentence naming the first divergence (``None`` if passed).

jinja2 and matplotlib (the ``reports`` extra) are imported lazily, so
importing this module never requires them.
"""

from __future__ import annotations

import base64
import io
import json
import math
import numbers
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from parity.diagnosis.causes import cause_text
from parity.comparison.engine import ELEMENTWISE, NORMWISE, format_ulp
from parity.storage.outputs import write_text_atomic
from parity.rendering.provenance_table import provenance_rows
from parity.contract.results import DIVERGING, SCHEMA_VERSION, Status
from parity.contract.result_schema import check_result_shape, validate_result

__all__ = [
    "SCHEMA_VERSION",
    "PHASE_TITLES",
    "load_result",
    "render_report",
    "divergence_summary",
    "first_divergence",
]


#: Human titles of the four parity phases.
PHASE_TITLES: dict[int, str] = {
    1: "Grid and precision",
    2: "A/M matrices and structure factors",
    3: "Phonons and covariance",
    4: "End-to-end intensity",
}

#: Statuses that count as a divergence, in the order of preference for "first".
_DIVERGING = DIVERGING

_STATUS_LABELS = {
    Status.PASS: ("\u2713 pass", "st-pass"),
    Status.FAIL: ("\u2717 FAIL", "st-fail"),
    Status.NOT_COMPARABLE: ("\u2013 not comparable", "st-nc"),
    Status.ERROR: ("! ERROR", "st-error"),
}

_TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
_TEMPLATE_NAME = "report.html.j2"

#: Rows shown at most in the per-stage tables (the rest are counted).
_MAX_WORST_ROWS = 20
_MAX_EIGEN_ROWS = 40

_NAN_GREY = "#a0a0a0"
_MARKER_COLOUR = "#ff00ff"


# --------------------------------------------------------------------------- #
# Loading and validation
# --------------------------------------------------------------------------- #
def _validate(result: Any, source: str) -> dict:
    """Check that ``result`` looks like a parity result (:func:`parity.contract.result_schema.check_result_shape`).

    Raises
    ------
    ValueError
        Not an object, missing keys, unsupported ``schema_version``, or malformed
        ``stages``; the message says which and where.
    """
    return check_result_shape(result, source)


def load_result(path: str | os.PathLike[str]) -> dict:
    """Read a parity result JSON file.

    Parameters
    ----------
    path : str or PathLike
        File written by ``parity run --json FILE``.

    Returns
    -------
    dict
        The decoded result.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is not JSON, or is JSON but not a schema-1 parity result
        (missing keys, wrong ``schema_version``, malformed ``stages``).
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO would block, a device never end
        raise ValueError(f"{path}: not a regular file (a folder, device or FIFO): give a result JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a parity result: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a parity result: invalid JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: not a parity result: JSON nested too deeply") from None
    return validate_result(data, str(path))


# --------------------------------------------------------------------------- #
# Formatting helpers
# --------------------------------------------------------------------------- #
def _is_bool(x: Any) -> bool:
    """True for ``bool`` and NumPy's boolean scalar."""
    return isinstance(x, bool) or type(x).__name__ in ("bool", "bool_")


def _is_num(x: Any) -> bool:
    """True for a real number, NumPy scalars included (booleans excluded)."""
    return isinstance(x, numbers.Real) and not _is_bool(x)


def _clean_exp(text: str) -> str:
    """``"3.2e-02"`` -> ``"3.2e-2"``, ``"1e+06"`` -> ``"1e6"``."""
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), text)


def _fmt(x: Any, digits: int = 3, none: str = "\u2014") -> str:
    """Format a number compactly; ``None`` (JSON for NaN/inf/absent) -> ``none``.

    Parameters
    ----------
    x : Any
        Value to format; non-numbers are returned as ``str(x)``.
    digits : int
        Significant digits.
    none : str
        Text for ``None``.
    """
    if x is None:
        return none
    if isinstance(x, dict) and set(x) == {"re", "im"}:  # complex values from the JSON
        re_, im_ = x["re"], x["im"]
        sign = "-" if (im_ is not None and im_ < 0) else "+"
        return f"{_fmt(re_, digits, none)}{sign}{_fmt(abs(im_) if im_ is not None else None, digits, none)}i"
    if _is_bool(x):
        return str(bool(x)).lower()
    if isinstance(x, numbers.Integral):
        return str(int(x))
    if isinstance(x, numbers.Real):
        x = float(x)
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if x == 0.0:
            return "0"
        if 1e-3 <= abs(x) < 1e5:  # plain decimal notation, `digits` significant
            text = f"{x:.{max(digits - 1 - math.floor(math.log10(abs(x))), 0)}f}"
            return text.rstrip("0").rstrip(".") if "." in text else text
        return _clean_exp(f"{x:.{digits}g}")
    return str(x)


def _fmt_value(x: Any) -> str:
    """Format an element value at full precision (shortest round-trip repr).

    JSON ``null`` stands for a non-finite float and is shown as ``NaN/inf``.
    """
    if x is None:
        return "NaN/inf"
    if _is_num(x) and not isinstance(x, numbers.Integral):
        return _clean_exp(repr(float(x)))
    return _fmt(x)


def _fmt_tol(x: Any) -> str:
    """Format a tolerance: ``1e-09`` -> ``1e-9``, ``0`` -> ``0``."""
    if not _is_num(x):
        return "\u2014"
    if x == 0:
        return "0"
    return _clean_exp(f"{float(x):.3g}")


def _fmt_rel(x: Any) -> str:
    """Relative error: percent when >= 1 %, scientific below."""
    if not _is_num(x):
        return "\u2014"
    if math.isfinite(x) and abs(x) >= 0.01:
        return f"{x * 100:.3g}%"
    return _fmt(float(x), digits=2)


def _fmt_duration(seconds: Any) -> str:
    """Human duration: ``µs`` / ``ms`` / ``s`` / ``min``."""
    if not _is_num(seconds):
        return "\u2014"
    s = float(seconds)
    if s < 1e-3:
        return f"{s * 1e6:.0f} \u00b5s"
    if s < 1.0:
        return f"{s * 1e3:.3g} ms"
    if s < 60.0:
        return f"{s:.3g} s"
    minutes, rest = divmod(s, 60.0)
    return f"{int(minutes)} min {rest:.0f} s"


def _fmt_index(index: Any) -> str:
    """``[1, 0, 2]`` -> ``"[1, 0, 2]"``; ``None`` -> ``""``."""
    if isinstance(index, (list, tuple)):
        return "[" + ", ".join(str(i) for i in index) + "]"
    return "" if index is None else str(index)


def _slug(name: str, i: int) -> str:
    """HTML id for stage ``i`` named ``name``."""
    return f"stage-{i}-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(name)).strip("-")


def _fmt_mapping(value: Any) -> str:
    """``{"a": 1}`` -> ``"a=1"``; anything else -> compact JSON or str."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_fmt_plain(v)}" for k, v in value.items())
    return _fmt_plain(value)


def _fmt_plain(value: Any) -> str:
    """Identity-table text: ``None`` -> dash, containers -> JSON, floats compact."""
    if value is None:
        return "\u2014"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    if isinstance(value, float):
        return _fmt(value, digits=6)
    return str(value)


# --------------------------------------------------------------------------- #
# Verdict
# --------------------------------------------------------------------------- #
def first_divergence(result: Mapping[str, Any]) -> tuple[int, dict] | None:
    """Locate the first diverging stage of a result.

    Uses ``result["first_failure"]`` when it names a stage (a string, or an
    object with ``name``/``stage``); otherwise the first stage, in registry
    order, whose status is ``fail`` or ``error``; otherwise (a run marked not
    passed with no such stage) the first stage that did not pass.

    Parameters
    ----------
    result : mapping
        A parity result.

    Returns
    -------
    (int, dict) or None
        Position in ``result["stages"]`` and the stage, or ``None`` when the
        run passed and no stage diverged.
    """
    stages = list(result.get("stages") or [])
    ref = result.get("first_failure")
    if isinstance(ref, Mapping):
        ref = ref.get("name", ref.get("stage"))
    if isinstance(ref, str):
        for i, stage in enumerate(stages):
            if stage.get("name") == ref:
                return i, stage
    for i, stage in enumerate(stages):
        if stage.get("status") in _DIVERGING:
            return i, stage
    if not result.get("passed", True):
        for i, stage in enumerate(stages):
            if stage.get("status") != Status.PASS:
                return i, stage
    return None


def _rel_errors(stage: Mapping[str, Any]) -> tuple[Any, Any]:
    """(normwise, element-wise) relative error of a stage record, as :mod:`parity.comparison.engine` defines them.

    ``max_rel`` is normwise (``max|a-e|/max|e|``); ``max_rel_elementwise``
    (``max |a-e|/|e|``) is a top-level field, or under ``details`` in results
    written before it was one.
    """
    details = stage.get("details") if isinstance(stage.get("details"), Mapping) else {}
    elementwise = stage.get("max_rel_elementwise", details.get("max_rel_elementwise"))
    return stage.get("max_rel"), elementwise


def _effective_tier(stage: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """(rtol, atol, n_terms) the stage was judged by: the comparison's own (size-scaled) tier if recorded."""
    details = stage.get("details") if isinstance(stage.get("details"), Mapping) else {}
    tier = details.get("tier") if isinstance(details.get("tier"), Mapping) else {}
    return (tier.get("rtol", stage.get("rtol")), tier.get("atol", stage.get("atol")),
            tier.get("n_terms") if _is_num(tier.get("n_terms")) and tier.get("n_terms") > 1 else None)


def _headline(message: Any) -> str:
    """The informative line of a message.

    The first non-blank line, except for a Python traceback, whose last
    non-blank line (``SomeError: ...``) is the one that says what happened.
    """
    lines = [line.strip() for line in str(message or "").splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1] if lines[0].startswith("Traceback (most recent call last)") else lines[0]


def _divergence_clause(stage: Mapping[str, Any]) -> str:
    """The part of the verdict sentence after the stage name."""
    status = stage.get("status")
    first_line = _headline(stage.get("message"))
    if status == Status.ERROR:
        return f"error: {first_line or 'the stage raised'}"
    if status == Status.NOT_COMPARABLE:
        return f"not comparable: {stage.get('reason') or first_line or 'no reason given'}"
    n_mis, n_tot = stage.get("n_mismatch"), stage.get("n_total")
    if not _is_num(n_mis) or not _is_num(n_tot):
        return first_line or "comparison failed"
    text = f"{n_mis} of {n_tot} elements outside tier `{stage.get('tier', '?')}`"
    rtol = stage.get("rtol")
    if _is_num(rtol):
        text += f" (rtol {_fmt_tol(rtol)})"
    worst = stage.get("worst") or {}
    if worst:
        where = worst.get("location") or _fmt_index(worst.get("index")) or "?"
        text += (f"; worst at {where}: expected {_fmt(worst.get('expected'), 2, 'NaN')}, "
                 f"got {_fmt(worst.get('actual'), 2, 'NaN')}")
    normwise, _ = _rel_errors(stage)
    if _is_num(normwise):
        text += f"; {NORMWISE} {_fmt_rel(normwise)}"
    return text


def divergence_summary(result: Mapping[str, Any]) -> str | None:
    """One plain-text sentence naming the first divergence.

    Example: ``First divergence: phase 3, stage `Winv` — 12 of 192 elements
    outside tier `decomposition` (rtol 1e-9); worst at BZ (dh,dk,dl)=(1,0,1):
    expected 0.032, got 0.035; normwise rel err (max|a-e|/max|e|) 0.42%``.

    Parameters
    ----------
    result : mapping
        A parity result.

    Returns
    -------
    str or None
        ``None`` when nothing diverged.
    """
    found = first_divergence(result)
    if found is None:
        return None
    _, stage = found
    return (f"First divergence: phase {stage.get('phase')}, stage `{stage.get('name')}` \u2014 "
            f"{_divergence_clause(stage)}")


# --------------------------------------------------------------------------- #
# Figures (matplotlib, object API: never touches the global pyplot backend)
# --------------------------------------------------------------------------- #
def png_data_uri(fig: Any, dpi: int = 100) -> str:
    """Render a matplotlib figure to a ``data:image/png;base64,`` URI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _hist_figure(hist: Mapping[str, Any], rtol: Any, tier: str) -> str | None:
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
    if _is_num(rtol) and rtol > 0:
        x = math.log10(rtol)
        ax.axvline(x, color="#c0392b", linestyle="--", linewidth=1.8,
                   label=f"tier {tier} rtol = {_fmt_tol(rtol)}")
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
    if not extent or len(extent) != 4 or not all(_is_num(v) for v in extent):
        return [-0.5, nx - 0.5, -0.5, ny - 0.5], False
    x0, x1, y0, y1 = (float(v) for v in extent)
    dx = (x1 - x0) / (nx - 1) if nx > 1 else 1.0
    dy = (y1 - y0) / (ny - 1) if ny > 1 else 1.0
    return [x0 - dx / 2, x1 + dx / 2, y0 - dy / 2, y1 + dy / 2], True


def _slice_figure(sl: Mapping[str, Any]) -> str | None:
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
    if isinstance(wxy, (list, tuple)) and len(wxy) == 2 and all(_is_num(v) for v in wxy):
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

    seq = colormaps["viridis"].with_extremes(bad=_NAN_GREY)
    div = colormaps["RdBu_r"].with_extremes(bad=_NAN_GREY)
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
                    markeredgecolor=_MARKER_COLOUR, markeredgewidth=2.2, linestyle="none")
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    fig.colorbar(im0, ax=list(axes[:2]), shrink=0.9, label="value (same scale, both panels)")
    fig.colorbar(im2, ax=axes[2], shrink=0.9, label="actual \u2212 expected")
    handles = [Patch(facecolor=_NAN_GREY, label="NaN")]
    if nan_mismatch.any():
        handles.append(Patch(facecolor="black", label="NaN in one backend only"))
    if wx is not None:
        handles.append(Line2D([], [], marker="o", markersize=9, markerfacecolor="none",
                              markeredgecolor=_MARKER_COLOUR, markeredgewidth=2,
                              linestyle="none", label="worst point"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles),
               fontsize=9, frameon=False)
    return png_data_uri(fig)


# --------------------------------------------------------------------------- #
# View model
# --------------------------------------------------------------------------- #
def _status(stage: Mapping[str, Any]) -> tuple[str, str]:
    """(label, css class) for a stage's status; unknown statuses shown as-is."""
    status = str(stage.get("status"))
    return _STATUS_LABELS.get(status, (status, "st-other"))


def _grid_text(grid: Any) -> list[tuple[str, str]]:
    """``[("h", "-2 … 2, 2 samples per unit"), ...]`` for the sampling grid."""
    rows: list[tuple[str, str]] = []
    if not isinstance(grid, Mapping):
        return [("grid", _fmt_plain(grid))]
    for axis in ("h", "k", "l"):
        value = grid.get(f"{axis}sampling")
        if isinstance(value, (list, tuple)) and len(value) == 3:
            lo, hi, n = value
            rows.append((axis, f"{_fmt_plain(lo)} \u2026 {_fmt_plain(hi)}, "
                               f"{_fmt_plain(n)} sample(s) per Miller unit"))
        elif value is not None:
            rows.append((axis, _fmt_plain(value)))
    for key, value in grid.items():
        if key not in ("hsampling", "ksampling", "lsampling"):
            rows.append((key, _fmt_plain(value)))
    return rows


def _identity(result: Mapping[str, Any]) -> dict[str, Any]:
    """Run-identity rows: run facts, grid, model parameters, environment."""
    device = result.get("device")
    if result.get("device_name"):
        device = f"{device or '?'} \u2014 {result['device_name']}"
    started = result.get("started_at")
    rows = [
        ("Reference", _backend_text(result.get("reference"))),
        ("Candidate", _backend_text(result.get("candidate"))),
        ("Fixture", _fmt_plain(result.get("fixture"))),
        ("PDB file", _fmt_plain(result.get("pdb_path"))),
        ("Device", _fmt_plain(device)),
        ("Precision (dtype)", _fmt_plain(result.get("dtype"))),
        ("Started", str(started).replace("T", " ") if started else "\u2014"),
        ("Duration", _duration_text(result)),
    ]
    params = result.get("params")
    env = result.get("environment")
    return {
        "rows": rows,
        "grid": _grid_text(result.get("grid")),
        "params": [(str(k), _fmt_plain(v)) for k, v in params.items()]
        if isinstance(params, Mapping) else [],
        "environment": [(str(k), _fmt_plain(v)) for k, v in env.items()]
        if isinstance(env, Mapping) else [],
    }


def _duration_text(result: Mapping[str, Any]) -> str:
    """The run's ``duration_s`` and what it covers (the stages; not start-up, set-up or writing)."""
    text = _fmt_duration(result.get("duration_s"))
    if not _is_num(result.get("duration_s")):
        return text
    timings = result.get("phase_timings") if isinstance(result.get("phase_timings"), Mapping) else {}
    setup = sum(float(v) for k, v in timings.items() if str(k).startswith("setup_") and _is_num(v))
    covers = "computing and comparing the stages"
    if setup:
        covers += f"; building both sides took {_fmt_duration(setup)} more"
    return f"{text} ({covers}; start-up, imports and writing the outputs not included)"


def _backend_text(info: Any) -> str:
    """``torch 0.1.0 (commit abc123) from eryx.models_torch (...)`` for the identity table."""
    if not isinstance(info, Mapping) or not info.get("name"):
        return "\u2014"
    parts = [str(info["name"])]
    if info.get("version"):
        parts.append(str(info["version"]))
    if info.get("commit"):
        parts.append(f"(commit {str(info['commit'])[:12]})")
    if info.get("origin"):
        parts.append(f"from {info['origin']}")
    return " ".join(parts)


def _side_name(result: Mapping[str, Any], side: str, default: str) -> str:
    info = result.get(side)
    return str(info.get("name")) if isinstance(info, Mapping) and info.get("name") else default


def _diagnosis_rows(stage: Mapping[str, Any]) -> list[dict[str, str]]:
    """The stage's divergence signatures for the report: explaining ones first, at most three."""
    rows = []
    for sig in stage.get("diagnosis") or []:
        if not isinstance(sig, Mapping):
            continue
        rows.append({"phrase": str(sig.get("phrase") or sig.get("signature") or ""),
                     "sentence": str(sig.get("sentence") or ""),
                     # the sentence usually states the residual itself: never say it twice
                     "residual": None if "residual" in str(sig.get("sentence") or "") else _fmt(sig.get("residual")),
                     "explains": bool(sig.get("explains"))})
    rows.sort(key=lambda r: not r["explains"])
    return rows[:3]


def _fault_text(fault: Any) -> str | None:
    """Injected fault as text (``str`` or ``{"name": ..., ...}``); ``None`` when absent."""
    if fault in (None, "", {}):
        return None
    if isinstance(fault, Mapping):
        name = fault.get("name")
        rest = {k: v for k, v in fault.items() if k != "name"}
        return f"{name} ({_fmt_mapping(rest)})" if name and rest else str(name or _fmt_mapping(fault))
    return str(fault)


def _why(stage: Mapping[str, Any]) -> str | None:
    """"diagnosis: PHRASE · root cause" (or "inherited from STAGE") for a diverging stage."""
    if stage.get("status") not in _DIVERGING:
        return None
    details = stage.get("details") if isinstance(stage.get("details"), Mapping) else {}
    phrase = details.get("diagnosis_phrase")
    parts = [f"diagnosis: {phrase}"] if isinstance(phrase, str) and phrase else []
    cause = cause_text(stage)
    if cause:
        parts.append(cause)
    return " \u00b7 ".join(parts) or None


def _cause_sentence(stage: Mapping[str, Any]) -> str | None:
    """The detail section's line on where a diverging stage's error comes from."""
    cause = stage.get("cause")
    if not isinstance(cause, Mapping) or not cause.get("text"):
        return None
    basis = f" (by {cause['basis']})" if cause.get("basis") else ""
    if cause.get("verdict") == "root_cause":
        return f"Root cause{basis}: nothing upstream that diverged explains this stage; fix it here."
    return f"{str(cause['text']).capitalize()}{basis}: fix that stage first; this one may only follow it."


def _row(i: int, stage: Mapping[str, Any], first_index: int | None) -> dict[str, Any]:
    """Phase-table row for stage ``i`` (``first_index``: the first divergence)."""
    label, css = _status(stage)
    status = stage.get("status")
    worst = stage.get("worst") or {}
    n_mis, n_tot = stage.get("n_mismatch"), stage.get("n_total")
    note = None
    if status == Status.NOT_COMPARABLE:
        note = "Reason: " + (stage.get("reason") or _headline(stage.get("message")) or "no message")
    elif status == Status.ERROR:
        note = "Error: " + (_headline(stage.get("message")) or "no message")
    why = _why(stage)
    if why:
        note = f"{why} \u00b7 {note}" if note else why
    rtol, atol, n_terms = _effective_tier(stage)
    normwise, elementwise = _rel_errors(stage)
    return {
        "anchor": _slug(stage.get("name", ""), i),
        "name": str(stage.get("name")),
        "tier": str(stage.get("tier") or "\u2014"),
        "rtol": _fmt_tol(rtol),
        "atol": _fmt_tol(atol),
        "n_terms": n_terms,
        "status_label": label,
        "status_class": css,
        "max_abs": _fmt(stage.get("max_abs")),
        "max_rel": _fmt(normwise),
        "max_rel_elementwise": _fmt(elementwise),
        "mismatch": (f"{n_mis} / {n_tot}" if _is_num(n_mis) and _is_num(n_tot) else "\u2014"),
        "location": str(worst.get("location") or _fmt_index(worst.get("index")) or "\u2014"),
        "time": _fmt_duration(stage.get("duration_s")),
        "first": i == first_index,
        "has_detail": status in _DIVERGING,
        "note": note,
    }


def _phase_key(phase: Any) -> tuple[int, str]:
    """Sort key: numbered phases in order, anything else after them."""
    return (int(phase), "") if _is_num(phase) else (10**6, str(phase))


def _phase_time(timings: Any, phase: Any) -> str | None:
    """Formatted duration of a phase, ``None`` when not recorded."""
    if not isinstance(timings, Mapping):
        return None
    value = timings.get(str(phase), timings.get(phase))
    return _fmt_duration(value) if _is_num(value) else None


def _phases(result: Mapping[str, Any], first_index: int | None) -> list[dict[str, Any]]:
    """Stages grouped by phase, in phase order, each with its summary line."""
    timings = result.get("phase_timings") or {}
    groups: dict[Any, list[dict[str, Any]]] = {}
    for i, stage in enumerate(result["stages"]):
        groups.setdefault(stage.get("phase"), []).append(_row(i, stage, first_index))
    phases = []
    for phase in sorted(groups, key=_phase_key):
        rows = groups[phase]
        counts: dict[str, int] = {}
        for stage in result["stages"]:
            if stage.get("phase") == phase:
                counts[str(stage.get("status"))] = counts.get(str(stage.get("status")), 0) + 1
        summary = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items())
        diverged = any(counts.get(s) for s in _DIVERGING)
        phases.append({
            "number": phase,
            "title": PHASE_TITLES.get(phase, f"Phase {phase}") if _is_num(phase) else str(phase),
            "time": _phase_time(timings, phase),
            "summary": summary,
            "diverged": diverged,
            "rows": rows,
        })
    return phases


def _eigen_rows(table: Iterable[Mapping[str, Any]], rtol: Any) -> tuple[list[dict], int]:
    """Eigen table rows sorted worst first (``null`` = NaN counts as worst)."""
    def key(row: Mapping[str, Any]) -> tuple[float, float, float]:
        def val(name: str) -> float:
            v = row.get(name)
            return math.inf if not _is_num(v) or math.isnan(v) else float(v)
        return (val("max_projector_err"), val("residual"), val("orthonormality"))

    rows = sorted(table, key=key, reverse=True)
    out = []
    for row in rows[:_MAX_EIGEN_ROWS]:
        err = row.get("max_projector_err")
        sizes = row.get("cluster_sizes") or []
        out.append({
            "bz": "(" + ",".join(str(v) for v in row.get("bz", [])) + ")",
            "clusters": ", ".join(str(s) for s in sizes),
            "degenerate": any(_is_num(s) and s > 1 for s in sizes),
            "projector": _fmt(err, none="NaN"),
            "residual": _fmt(row.get("residual"), none="NaN"),
            "orthonormality": _fmt(row.get("orthonormality"), none="NaN"),
            "bad": (not row["passed"]) if isinstance(row.get("passed"), bool)
            else ((not _is_num(err)) or (_is_num(rtol) and err > rtol)),
        })
    return out, len(rows)


def _detail(i: int, stage: Mapping[str, Any], first_index: int | None) -> dict[str, Any]:
    """Detail section of a diverging stage, figures included."""
    details = stage.get("details") or {}
    label, css = _status(stage)
    worst_rows = []
    worst_elements = details.get("worst_elements") or []
    for el in worst_elements[:_MAX_WORST_ROWS]:
        worst_rows.append({
            "location": str(el.get("location") or _fmt_index(el.get("index"))),
            "index": _fmt_index(el.get("index")),
            "expected": _fmt_value(el.get("expected")),
            "actual": _fmt_value(el.get("actual")),
            "abs": _fmt(el.get("abs"), none="NaN/inf"),
            "rel": _fmt(el.get("rel"), none="NaN/inf"),
        })
    hist = details.get("log10_rel_hist")
    hist_png = _hist_figure(hist, stage.get("rtol"), str(stage.get("tier"))) \
        if isinstance(hist, Mapping) else None
    sl = details.get("slice")
    slice_png = _slice_figure(sl) if isinstance(sl, Mapping) else None
    nan = details.get("nan_pattern")
    ulp = details.get("ulp")
    eigen = details.get("eigen_table")
    eigen_rows, eigen_total = (_eigen_rows(eigen, stage.get("rtol"))
                               if isinstance(eigen, list) and eigen else ([], 0))
    rtol, atol, n_terms = _effective_tier(stage)
    normwise, elementwise = _rel_errors(stage)
    n_compared = stage.get("n_compared", details.get("n_compared"))
    return {
        "anchor": _slug(stage.get("name", ""), i),
        "name": str(stage.get("name")),
        "phase": stage.get("phase"),
        "status_label": label,
        "status_class": css,
        "tier": str(stage.get("tier") or "\u2014"),
        "rtol": _fmt_tol(rtol),
        "atol": _fmt_tol(atol),
        "n_terms": n_terms,
        "counts": _count_phrases(stage, n_compared),
        "max_abs": _fmt(stage.get("max_abs")),
        "max_rel": _fmt(normwise),
        "max_rel_elementwise": _fmt(elementwise),
        "first": i == first_index,
        "downstream": first_index is not None and i > first_index,
        "cause": _cause_sentence(stage),
        "message": str(stage.get("message") or "").strip(),
        "worst_rows": worst_rows,
        "worst_total": len(worst_elements),
        "hist_png": hist_png,
        "slice_png": slice_png,
        "slice_title": str(sl.get("title") or "") if isinstance(sl, Mapping) else "",
        "nan": ({"expected": _fmt(nan.get("expected_nan")), "actual": _fmt(nan.get("actual_nan")),
                 "mismatched": _fmt(nan.get("mismatched")),
                 "bad": bool(nan.get("mismatched"))}
                if isinstance(nan, Mapping) else None),
        # complex data nest per-part stats: {"median", "p99", "max", "parts": {"re": {...}, "im": {...}}}
        "ulp": _ulp_rows(ulp) if isinstance(ulp, Mapping) else None,
        "eigen_rows": eigen_rows,
        "eigen_total": eigen_total,
        "diagnosis": _diagnosis_rows(stage),
        "diagnosed": "diagnosis" in stage and stage.get("status") == Status.FAIL,
        "diagnosis_png": details.get("diagnosis_figure") if str(details.get("diagnosis_figure", "")).startswith(
            "data:image/png;base64,") else None,
    }


def _count_units(stage: Mapping[str, Any]) -> tuple[str, str]:
    """What ``n_total``/``n_mismatch`` and ``n_compared`` count (see
    :class:`parity.comparison.common.Comparison`): elements, except an eigenspace
    comparison (BZ points; eigenvalue clusters), a dtype audit (tensors) and a single
    check over many elements (an invariant or oracle with ``n_total`` 1)."""
    kind, n_tot = str(stage.get("kind")), stage.get("n_total")
    if kind == "eigenspace":
        return "BZ points", "eigenvalue clusters"
    if kind == "dtype":
        return "tensors", "tensors"
    if kind in ("invariant", "oracle") and n_tot == 1:
        return "checks", "elements"
    return "elements", "elements"


def _count_phrases(stage: Mapping[str, Any], n_compared: Any) -> list[str]:
    """``["1104 of 6912 elements outside tolerance", "6912 of 6912 elements compared numerically"]``.

    The two counts can count different things (an eigenspace comparison fails BZ points
    but compares eigenvalue clusters), so each names its unit and "N of TOTAL" is only
    written when both count the same unit.
    """
    total_unit, compared_unit = _count_units(stage)
    n_mis, n_tot = stage.get("n_mismatch"), stage.get("n_total")
    out = []
    if _is_num(n_mis) and _is_num(n_tot) and n_mis:
        out.append(f"{n_mis} of {n_tot} {total_unit} outside tolerance")
    if _is_num(n_compared):
        if compared_unit == total_unit and _is_num(n_tot):
            out.append(f"{n_compared} of {n_tot} {compared_unit} compared numerically")
        else:
            out.append(f"{n_compared} {compared_unit} compared numerically")
    return out


def _ulp_rows(ulp: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """``[("ULP distance", "median 1 ulp, ..."), ("real part", ...), ...]`` (complex data has parts)."""
    rows = [("ULP distance", format_ulp(ulp))]
    names = {"re": "real part", "im": "imaginary part"}
    for part, stats in (ulp.get("parts") or {}).items():
        if isinstance(stats, Mapping):
            rows.append((f"ULP distance, {names.get(part, part)}", format_ulp(stats)))
    rows = [(k, v) for k, v in rows if v]
    return rows or None


def _overrides(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run's tier overrides (rows of ``result["tier_overrides"]``); None when not recorded."""
    rows = result.get("tier_overrides")
    if not isinstance(rows, list):
        return None
    out = []
    for row in rows:
        if isinstance(row, Mapping):
            out.append({"tier": str(row.get("tier")), "key": str(row.get("key")),
                        "value": _fmt_tol(row.get("value")), "table": _fmt_tol(row.get("table_value")),
                        "source": str(row.get("source") or "not recorded")})
    return {"rows": out}


def _tiers_used(stages: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Each tier of a run once, in first-use order: ``{"name", "rtol", "atol", "scaled"}``.

    A stage records the numbers it was judged by, which a tier scales per stage (sums of
    many terms, single-precision stage tiers): such a tier shows the range of its values
    and ``scaled`` is true, rather than being listed once per value.
    """
    values: dict[str, dict[str, set]] = {}
    for stage in stages:
        if stage.get("tier"):
            seen = values.setdefault(str(stage["tier"]), {"rtol": set(), "atol": set()})
            for key in ("rtol", "atol"):
                if _is_num(stage.get(key)):
                    seen[key].add(float(stage[key]))

    def span(numbers: set) -> str:
        if not numbers:
            return "\u2014"
        lo, hi = min(numbers), max(numbers)
        return _fmt_tol(lo) if lo == hi else f"{_fmt_tol(lo)} \u2026 {_fmt_tol(hi)}"

    return [{"name": name, "rtol": span(v["rtol"]), "atol": span(v["atol"]),
             "scaled": len(v["rtol"]) > 1 or len(v["atol"]) > 1} for name, v in values.items()]


def _context(result: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the template shows, preformatted (the template only lays out)."""
    stages = result["stages"]
    found = first_divergence(result)
    first_index = found[0] if found else None
    counts: dict[str, int] = {}
    for stage in stages:
        counts[str(stage.get("status"))] = counts.get(str(stage.get("status")), 0) + 1
    passed = bool(result.get("passed"))
    diverged = any(stage.get("status") in _DIVERGING for stage in stages)
    verdict: dict[str, Any] = {
        "passed": passed,
        # A run that failed only because something could not be compared did not diverge.
        "label": "PASSED" if passed else ("DIVERGED" if diverged or not counts.get(Status.NOT_COMPARABLE)
                                          else "NOT COMPARABLE"),
        "counts": f"{len(stages)} stage(s): " + ", ".join(
            f"{n} {s.replace('_', ' ')}" for s, n in counts.items()),
        "first": None,
        "roots": None,
    }
    if found is not None:
        _, stage = found
        verdict["first"] = {
            "phase": stage.get("phase"),
            "name": str(stage.get("name")),
            "clause": _divergence_clause(stage),
            "anchor": _slug(stage.get("name", ""), found[0]),
            "why": _why(stage),
        }
        roots = [str(s.get("name")) for s in stages if isinstance(s, Mapping) and isinstance(s.get("cause"), Mapping)
                 and s["cause"].get("verdict") == "root_cause"]
        verdict["roots"] = roots if len(roots) > 1 else None
    details = ([] if first_index is None else
               [_detail(i, s, first_index) for i, s in enumerate(stages)
                if s.get("status") in _DIVERGING])
    fixture = _fmt_plain(result.get("fixture"))
    bisect = result.get("bisect") if isinstance(result.get("bisect"), Mapping) else None
    return {
        "bisect": bisect,
        "title": f"Parity report \u2014 {fixture} \u2014 {verdict['label']}",
        "fixture": fixture,
        "identity": _identity(result),
        "provenance": provenance_rows(result),
        "fault": _fault_text(result.get("fault")),
        "verdict": verdict,
        "summary_text": divergence_summary(result),
        "tiers": _tiers_used(stages),
        "overrides": _overrides(result),
        "labels": {"normwise": NORMWISE, "elementwise": ELEMENTWISE},
        "reference_name": _side_name(result, "reference", "reference"),
        "candidate_name": _side_name(result, "candidate", "candidate"),
        "phases": _phases(result, first_index),
        "details": details,
    }


# --------------------------------------------------------------------------- #
# Rendering
# --------------------------------------------------------------------------- #
def _ticks_to_code(text: str) -> Any:
    """Jinja filter: escape ``text`` and render `` `quoted` `` parts as ``<code>``."""
    from markupsafe import Markup, escape

    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # unbalanced backticks: leave the text as it is
        return escape(text)
    return Markup("").join(escape(part) if i % 2 == 0 else Markup("<code>%s</code>") % part
                           for i, part in enumerate(parts))


def _environment() -> Any:
    try:
        import jinja2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("parity.rendering.report needs jinja2 and matplotlib: "
                          "pip install 'eryx-parity[reports]'") from exc
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATE_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ticks"] = _ticks_to_code
    return env


def render_report(result: dict, path: str | os.PathLike[str] | None = None) -> str:
    """Render a parity result as one self-contained HTML page.

    A passing run gives a short page (identity, verdict, phase tables); a
    diverging run adds one detail section per failing or erroring stage
    (message, worst elements, log10 relative-error histogram, slice figure,
    NaN pattern, eigenspace table).

    Parameters
    ----------
    result : dict
        A schema-1 parity result (see ``docs/architecture.md``).
    path : str or PathLike, optional
        When given, the HTML is also written there atomically (temporary
        file in the same directory, then ``os.replace``); parent
        directories are created.

    Returns
    -------
    str
        The HTML document.

    Raises
    ------
    ValueError
        ``result`` is not a schema-1 parity result.
    ImportError
        jinja2 or matplotlib is not installed.
    """
    _validate(result, "result")
    html = _environment().get_template(_TEMPLATE_NAME).render(**_context(result))
    if result.get("locate"):  # parity locate's section (parity.locate.report)
        from parity.locate.report import section

        html = html.replace("</body>", section(result["locate"]) + "\n</body>", 1)
    if path is not None:
        write_text_atomic(Path(path), html)
    return html
