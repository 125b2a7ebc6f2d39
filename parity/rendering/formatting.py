"""Numbers and text as the HTML pages show them (the report and the dashboard).

Pure functions of one value: no jinja2, no matplotlib. A missing value (JSON
``null``, which a result also writes for NaN and infinities) is shown as an em
dash unless a function says otherwise.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from typing import Any, Mapping

__all__ = [
    "DASH",
    "is_bool",
    "is_num",
    "clean_exp",
    "fmt",
    "fmt_value",
    "fmt_tol",
    "fmt_rel",
    "fmt_duration",
    "fmt_index",
    "fmt_mapping",
    "fmt_plain",
    "fmt_sci",
    "fmt_seconds",
    "headline",
    "slug",
]

#: What a page shows for a value that is absent.
DASH = "\u2014"


def is_bool(x: Any) -> bool:
    """True for ``bool`` and NumPy's boolean scalar."""
    return isinstance(x, bool) or type(x).__name__ in ("bool", "bool_")


def is_num(x: Any) -> bool:
    """True for a real number, NumPy scalars included (booleans excluded)."""
    return isinstance(x, numbers.Real) and not is_bool(x)


def clean_exp(text: str) -> str:
    """``"3.2e-02"`` -> ``"3.2e-2"``, ``"1e+06"`` -> ``"1e6"``."""
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), text)


def fmt(x: Any, digits: int = 3, none: str = DASH) -> str:
    """Format a number compactly; ``None`` (JSON for NaN/inf/absent) -> ``none``.

    Parameters
    ----------
    x : Any
        Value to format; a ``{"re", "im"}`` object (a complex value in the JSON)
        is shown as ``a+bi``; non-numbers are returned as ``str(x)``.
    digits : int
        Significant digits.
    none : str
        Text for ``None``.

    Returns
    -------
    str
        Plain decimals for magnitudes in [1e-3, 1e5), scientific notation
        without padded exponents (``3.2e-7``) outside it.
    """
    if x is None:
        return none
    if isinstance(x, dict) and set(x) == {"re", "im"}:  # complex values from the JSON
        re_, im_ = x["re"], x["im"]
        sign = "-" if (im_ is not None and im_ < 0) else "+"
        return f"{fmt(re_, digits, none)}{sign}{fmt(abs(im_) if im_ is not None else None, digits, none)}i"
    if is_bool(x):
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
        return clean_exp(f"{x:.{digits}g}")
    return str(x)


def fmt_value(x: Any) -> str:
    """Format an element value at full precision (shortest round-trip repr).

    JSON ``null`` stands for a non-finite float and is shown as ``NaN/inf``.
    """
    if x is None:
        return "NaN/inf"
    if is_num(x) and not isinstance(x, numbers.Integral):
        return clean_exp(repr(float(x)))
    return fmt(x)


def fmt_tol(x: Any) -> str:
    """Format a tolerance: ``1e-09`` -> ``1e-9``, ``0`` -> ``0``."""
    if not is_num(x):
        return DASH
    if x == 0:
        return "0"
    return clean_exp(f"{float(x):.3g}")


def fmt_rel(x: Any) -> str:
    """Relative error (a fraction): percent when >= 1 %, scientific below."""
    if not is_num(x):
        return DASH
    if math.isfinite(x) and abs(x) >= 0.01:
        return f"{x * 100:.3g}%"
    return fmt(float(x), digits=2)


def fmt_duration(seconds: Any) -> str:
    """Human duration of ``seconds``: ``µs`` / ``ms`` / ``s`` / ``min``."""
    if not is_num(seconds):
        return DASH
    s = float(seconds)
    if s < 1e-3:
        return f"{s * 1e6:.0f} \u00b5s"
    if s < 1.0:
        return f"{s * 1e3:.3g} ms"
    if s < 60.0:
        return f"{s:.3g} s"
    minutes, rest = divmod(s, 60.0)
    return f"{int(minutes)} min {rest:.0f} s"


def fmt_index(index: Any) -> str:
    """``[1, 0, 2]`` -> ``"[1, 0, 2]"``; ``None`` -> ``""``."""
    if isinstance(index, (list, tuple)):
        return "[" + ", ".join(str(i) for i in index) + "]"
    return "" if index is None else str(index)


def fmt_mapping(value: Any) -> str:
    """``{"a": 1}`` -> ``"a=1"``; anything else -> compact JSON or str."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={fmt_plain(v)}" for k, v in value.items())
    return fmt_plain(value)


def fmt_plain(value: Any) -> str:
    """Identity-table text: ``None`` -> dash, containers -> JSON, floats compact."""
    if value is None:
        return DASH
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    if isinstance(value, float):
        return fmt(value, digits=6)
    return str(value)


def fmt_sci(value: Any) -> str:
    """The dashboard's numbers: ``1.23e-07``; ``None`` -> dash; text as it is."""
    if value is None:
        return DASH
    if isinstance(value, str):
        return value
    return f"{float(value):.2e}"


def fmt_seconds(value: Any) -> str:
    """The dashboard's durations in seconds: 3 significant digits below 100 s, whole seconds above."""
    if value is None:
        return DASH
    seconds = float(value)
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


def headline(message: Any) -> str:
    """The informative line of a message.

    The first non-blank line, except for a Python traceback, whose last
    non-blank line (``SomeError: ...``) is the one that says what happened.
    """
    lines = [line.strip() for line in str(message or "").splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1] if lines[0].startswith("Traceback (most recent call last)") else lines[0]


def slug(name: str, i: int) -> str:
    """HTML id for stage ``i`` named ``name``."""
    return f"stage-{i}-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(name)).strip("-")


def cause_text(record: Mapping) -> str | None:
    """"root cause" or "inherited from STAGE" for a failing record (None when it has no cause)."""
    cause = record.get("cause")
    if isinstance(cause, Mapping) and isinstance(cause.get("text"), str):
        return cause["text"]
    return None
