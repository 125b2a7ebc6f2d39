"""Rendering: what a person reads: the terminal table, the HTML report, the dashboard."""
