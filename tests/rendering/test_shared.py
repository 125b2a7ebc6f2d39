"""The pieces the HTML pages share (``parity.rendering``): one jinja environment, one image helper,
the number and text formatting."""
from __future__ import annotations

import base64
import math
import struct

import pytest

from parity.rendering import formatting as f

jinja2 = pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")

from parity.rendering.figures import png_data_uri  # noqa: E402
from parity.rendering.templating import environment  # noqa: E402


# ------------------------------------------------------------------ one environment, one image helper
def test_the_report_the_dashboard_and_locate_share_one_image_helper():
    from parity.rendering import locate_section as locate_report
    from parity.rendering import dashboard, report

    assert report.png_data_uri is png_data_uri
    assert dashboard.png_data_uri is png_data_uri
    assert locate_report.png_data_uri is png_data_uri


def test_one_environment_serves_both_templates_and_escapes_them():
    env = environment()
    assert environment() is env
    assert {"report.html.j2", "dashboard.html.j2"} <= set(env.list_templates())
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"
    with pytest.raises(jinja2.UndefinedError):  # a misspelt variable is an error, not an empty string
        env.from_string("{{ missing }}").render()


def test_ticks_filter_shows_quoted_parts_as_code_and_escapes_the_rest():
    ticks = environment().filters["ticks"]
    assert str(ticks("tier `tight<1>` & more")) == "tier <code>tight&lt;1&gt;</code> &amp; more"
    assert str(ticks("one ` tick <x>")) == "one ` tick &lt;x&gt;"  # unbalanced: escaped, no code span


def test_dashboard_filters_are_registered():
    env = environment()
    assert env.from_string("{{ v | sci }} {{ t | seconds }}").render(v=1.234e-7, t=12.34) == "1.23e-07 12.3 s"


def test_png_data_uri_is_a_png_of_the_figure_without_a_url():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.0, 1.0))
    fig.add_subplot().plot([0, 1], [1, 0])
    uri = png_data_uri(fig, dpi=50)
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    data = base64.b64decode(uri[len(prefix):])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (100, 50)  # 2 x 1 inches at 50 dpi
    assert b"matplotlib.org" not in data and b"Software" not in data


# ------------------------------------------------------------------ formatting
@pytest.mark.parametrize("value, expected", [
    (None, "\u2014"),
    (0.0, "0"),
    (0.0032, "0.0032"),
    (291.5047968601901, "292"),
    (3.2e-7, "3.2e-7"),
    (123456.0, "1.23e5"),
    (7, "7"),
    (True, "true"),
    (math.nan, "NaN"),
    (-math.inf, "-inf"),
    ({"re": 1.0, "im": -2.0}, "1-2i"),
    ("text", "text"),
])
def test_fmt(value, expected):
    assert f.fmt(value) == expected


def test_tolerances_relative_errors_and_durations():
    assert f.fmt_tol(1e-9) == "1e-9" and f.fmt_tol(0) == "0" and f.fmt_tol(None) == "\u2014"
    assert f.fmt_rel(0.0042) == "0.0042" and f.fmt_rel(0.09) == "9%" and f.fmt_rel(None) == "\u2014"
    assert f.fmt_duration(0.0005) == "500 \u00b5s"
    assert f.fmt_duration(0.25) == "250 ms"
    assert f.fmt_duration(3.21) == "3.21 s"
    assert f.fmt_duration(125.0) == "2 min 5 s"
    assert f.fmt_seconds(1234.4) == "1234 s" and f.fmt_seconds(None) == "\u2014"
    assert f.fmt_sci("n/a") == "n/a"


def test_values_indices_and_identity_text():
    assert f.fmt_value(None) == "NaN/inf"
    assert f.fmt_value(0.1 + 0.2) == "0.30000000000000004"  # full precision, not rounded
    assert f.fmt_value(1e-20) == "1e-20"
    assert f.fmt_index([1, 0, 2]) == "[1, 0, 2]" and f.fmt_index(None) == ""
    assert f.fmt_plain([1, 2]) == "[1, 2]" and f.fmt_plain(None) == "\u2014"
    assert f.fmt_mapping({"scale": 2.0, "stage": "K"}) == "scale=2, stage=K"


def test_headline_of_a_traceback_is_its_last_line():
    assert f.headline("\n first\nsecond") == "first"
    assert f.headline("Traceback (most recent call last):\n  File x\nValueError: bad\n") == "ValueError: bad"
    assert f.headline(None) == ""


def test_slug_is_a_valid_html_id():
    assert f.slug("construction:candidate", 3) == "stage-3-construction-candidate"
    assert f.slug("Id <x>", 0) == "stage-0-Id-x"
