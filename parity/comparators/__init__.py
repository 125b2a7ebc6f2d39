"""The comparison engine, split by comparison kind.

``common`` holds the result object and the definitions every kind shares (the
relative-error figures, tie-breaking, ULP text); ``arrays``, ``eigenspaces`` and
``dtypes`` hold one comparison kind each. Import from :mod:`parity.compare`, the
facade that re-exports the public names.
"""
