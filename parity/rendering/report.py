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

The page is built by the rendering package: the view model
(:mod:`parity.rendering.report_view`), the verdict sentence
(:mod:`parity.rendering.divergence`), numbers and text
(:mod:`parity.rendering.formatting`), figures and the image helper
(:mod:`parity.rendering.figures`) and the one jinja environment
(:mod:`parity.rendering.templating`); their public names used elsewhere are
re-exported here. jinja2 and matplotlib (the ``reports`` extra) are imported
lazily, so importing this module never requires them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from parity.storage.outputs import write_text_atomic
from parity.contract.result_schema import check_result_shape, validate_result
from parity.contract.results import SCHEMA_VERSION
from parity.rendering.divergence import divergence_summary, first_divergence
# Re-exported: other modules and the tests import these names from here.
from parity.rendering.figures import png_data_uri, slice_figure as _slice_figure  # noqa: F401
from parity.rendering.report_view import PHASE_TITLES, report_context
from parity.rendering.templating import environment

__all__ = [
    "SCHEMA_VERSION",
    "PHASE_TITLES",
    "load_result",
    "render_report",
    "divergence_summary",
    "first_divergence",
    "png_data_uri",
]



_TEMPLATE_NAME = "report.html.j2"


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
# Rendering
# --------------------------------------------------------------------------- #
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
    html = environment().get_template(_TEMPLATE_NAME).render(**report_context(result))
    if result.get("locate"):  # parity locate's section (parity.rendering.locate_section)
        from parity.rendering.locate_section import section

        html = html.replace("</body>", section(result["locate"]) + "\n</body>", 1)
    if path is not None:
        write_text_atomic(Path(path), html)
    return html
