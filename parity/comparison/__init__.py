"""Comparison: how two sides' values are judged against a tier.

``engine`` is the facade (``compare``, ``Comparison``); ``common`` holds what every kind
shares (the relative-error figures, tie-breaking, ULP text); ``arrays``, ``eigenspaces``
and ``dtypes`` hold one comparison kind each; ``invariants`` are checks that need no
reference and ``oracles`` compare against outside implementations (gemmi).
"""
