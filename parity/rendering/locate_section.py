"""The HTML section of ``parity locate``: the aligned stream around the root, and the error
along the stream (a matplotlib figure as a data URI), appended to the run's report."""
from __future__ import annotations

import html
import math
from typing import Any, Mapping

from parity.rendering.figures import png_data_uri

#: Rows of the aligned stream shown on each side of the root.
CONTEXT = 8


def error_figure(stream: list[Mapping[str, Any]], root_index: int | None, amplifiers: list) -> str | None:
    """log10 of each aligned output's error (and tolerance) along the stream, as a PNG data URI."""
    if not stream:
        return None
    from matplotlib.figure import Figure  # lazy: matplotlib is an extra

    def lg(x):
        return math.log10(x) if x and x > 0 and math.isfinite(x) else (-17.0 if not x else 1.0)

    fig = Figure(figsize=(8, 3))
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(stream)))
    ax.plot(xs, [lg(r["error"]) for r in stream], ".", ms=3, label="output error")
    ax.plot(xs, [lg(r["tolerance"]) for r in stream], "-", lw=0.6, color="grey", label="tolerance")
    amp = {a["ref"] for a in amplifiers}
    pts = [(i, lg(r["error"])) for i, r in enumerate(stream) if r["ref"] in amp]
    if pts:
        ax.plot(*zip(*pts), "o", mfc="none", color="tab:orange", label="amplifier")
    if root_index is not None:
        ax.axvline(root_index, color="tab:red", lw=0.8, label="root")
    ax.set_xlabel("aligned operation")
    ax.set_ylabel("log10 normwise rel. error")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return png_data_uri(fig)


def _rows(rows: list[Mapping[str, Any]], root_ref: int | None) -> str:
    out = []
    for r in rows:
        style = ' style="background:#fdd"' if r.get("ref") == root_ref else ""
        out.append(f"<tr{style}><td>{r['ref']}</td><td><code>{html.escape(r['label'])}</code></td>"
                   f"<td>{r['input_error']:.3g}</td><td>{r['error']:.3g}</td><td>{r['tolerance']:.3g}</td></tr>")
    return "".join(out)


def section(loc: Mapping[str, Any]) -> str:
    """The locate section (self-contained HTML fragment) of a ``locate`` result dict."""
    parts = [f'<section id="locate"><h2>From the stage to the line: {html.escape(str(loc.get("stage")))}</h2>',
             f"<p>{html.escape(str(loc.get('why', '')))}</p>"]
    probes = loc.get("probes")
    if probes:
        root = probes.get("root")
        parts.append("<h3>Named probes</h3>")
        if root:
            parts.append(f"<p><b>root probe</b> <code>{html.escape(str(root.get('first_bad') or root['key']))}"
                         f"</code> at <code>{html.escape(root.get('where_candidate', ''))}</code></p>")
        parts.append(f"<p>{html.escape(probes.get('evidence', ''))}</p>")
        parts.append("<table><tr><th>probe</th><th>status</th><th>normwise error</th><th>tier</th><th>first "
                     "diverging iteration</th></tr>")
        for r in probes.get("probes", []):
            err = "" if r.get("max_rel") is None else f"{r['max_rel']:.3g}"
            parts.append(f"<tr><td>{html.escape(r['key'])}</td><td>{r['status']}</td><td>{err}</td>"
                         f"<td>{html.escape(r.get('tier', ''))}</td><td>{html.escape(r.get('first_bad') or '')}</td></tr>")
        parts.append("</table>")
    trace = loc.get("trace")
    if trace:
        stream = trace.get("stream", [])
        root = trace.get("root")
        parts.append("<h3>Operation trace</h3>")
        parts.append(f"<p>{html.escape(trace.get('alignment', ''))}</p>")
        if root:
            parts.append(f"<p><b>root operation</b> <code>{html.escape(root['label'])}</code>: inputs' error "
                         f"{root['input_error']:.3g}, output error {root['error']:.3g} &gt; tolerance "
                         f"{root['tolerance']:.3g}</p>")
        elif trace.get("unaligned_root"):
            parts.append(f"<p><b>root operation</b> <code>{html.escape(trace['unaligned_root'])}</code></p>")
        else:
            parts.append("<p>no root claimed: no aligned operation diverges while its inputs agree</p>")
        pos = next((i for i, r in enumerate(stream) if root and r["ref"] == root["ref"]), None)
        first_bad = next((i for i, r in enumerate(stream) if r["error"] > r["tolerance"]), None)
        centre = pos if pos is not None else (first_bad or 0)
        window = stream[max(0, centre - CONTEXT):centre + CONTEXT + 1]
        parts.append("<table><tr><th>op</th><th>source line, operation</th><th>inputs' error</th><th>error</th>"
                     f"<th>tolerance</th></tr>{_rows(window, root['ref'] if root else None)}</table>")
        uri = error_figure(stream, pos, trace.get("amplifiers", []))
        if uri:
            parts.append(f'<img alt="error along the operation stream" src="{uri}">')
        if trace.get("amplifiers"):
            parts.append("<h4>Amplifiers</h4><table><tr><th>op</th><th>source line, operation</th><th>inputs' "
                         f"error</th><th>error</th><th>tolerance</th></tr>{_rows(trace['amplifiers'][:15], None)}</table>")
    for n in loc.get("notes", []):
        parts.append(f"<p><i>note: {html.escape(n)}</i></p>")
    parts.append("</section>")
    return "\n".join(parts)
