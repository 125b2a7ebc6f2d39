"""Comparison: how two sides' values are judged against a tier.

``kinds`` is the registry of comparison kinds (a stage's ``kind`` names one): each kind is
a :class:`~parity.comparison.comparator.Comparator` that owns how its stages are compared,
diagnosed and cross-fed. ``engine`` is the facade of the comparison functions (``compare``,
``Comparison``); ``common`` holds what every kind shares (the relative-error figures,
tie-breaking, ULP text, the one failure-message layout); ``arrays`` (array, exact and
gradient kinds), ``eigenspaces`` and ``dtypes`` hold their kinds' comparisons and
comparators; ``checks`` the kinds whose stages carry their own check: ``invariants`` (no
reference needed) and ``oracles`` (outside implementations: gemmi).
"""
