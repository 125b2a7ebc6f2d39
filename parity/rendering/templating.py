"""The one jinja2 environment of the HTML pages (the report and the dashboard).

Templates live in ``parity/rendering/templates``. Autoescaping is on for every
template (``autoescape=True``, not ``select_autoescape()``, whose extension list
would not escape a ``.j2`` file), an undefined name is an error, and the filters
the templates use are registered here:

``ticks``
    escape a text and show its `` `quoted` `` parts as ``<code>`` (the report);
``sci``, ``seconds``
    :func:`parity.rendering.formatting.fmt_sci` / ``fmt_seconds`` (the dashboard).

jinja2 is imported when the environment is first built, not when this module is.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from parity.rendering.formatting import fmt_sci, fmt_seconds

__all__ = ["TEMPLATE_DIR", "environment", "ticks_to_code"]

#: Folder of the page templates.
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


def ticks_to_code(text: str) -> Any:
    """Jinja filter: escape ``text`` and render `` `quoted` `` parts as ``<code>``.

    Parameters
    ----------
    text : str
        Plain text, possibly with backtick-quoted parts.

    Returns
    -------
    markupsafe.Markup
        Safe HTML; with unbalanced backticks the whole text is only escaped.
    """
    from markupsafe import Markup, escape  # lazy, with jinja2 (an extra)

    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # unbalanced backticks: leave the text as it is
        return escape(text)
    return Markup("").join(escape(part) if i % 2 == 0 else Markup("<code>%s</code>") % part
                           for i, part in enumerate(parts))


@lru_cache(maxsize=1)
def environment() -> Any:
    """The jinja2 environment every page renders with (built once).

    Returns
    -------
    jinja2.Environment

    Raises
    ------
    ImportError
        jinja2 is not installed (the ``reports`` extra).
    """
    try:
        import jinja2  # lazy: importing the rendering package must not need the extra
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("parity.rendering needs jinja2 and matplotlib: "
                          "pip install 'eryx-parity[reports]'") from exc
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ticks"] = ticks_to_code
    env.filters["sci"] = fmt_sci
    env.filters["seconds"] = fmt_seconds
    return env
