"""Rendering: what a person reads: the terminal table, the HTML report, the dashboard.

``terminal`` (the phase table and summary), ``report`` (the HTML report: validation,
loading, ``render_report``) built from ``report_view`` (its view model) and ``divergence``
(the verdict sentence), ``dashboard`` (the history page), and what the pages share:
``formatting`` (numbers and text), ``figures`` (matplotlib figures and the one
``png_data_uri``), ``templating`` (the one jinja environment), ``provenance_table``.
"""
