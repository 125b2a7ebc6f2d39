"""The contract: what an implementation must produce and how it is judged.

``spec`` (a run's inputs), ``quantities`` (every quantity's shape, dtype, units),
``stages`` (THE phase-ordered stage registry, the spine every other part reads),
``tiers`` and ``conditioning`` (tolerances), ``devices`` and ``options`` (what every
entry point shares). Nothing here imports the rest of the harness.
"""
