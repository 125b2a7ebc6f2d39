"""Model construction as an ordered sequence of named steps (crash attribution).

Both backends list their construction as ``BUILD_STEPS``, a tuple of
``(name, phase, method name)``; :func:`run_build_steps` calls the methods in order.
When a step raises, the same exception is re-raised with three attributes, so a
harness can say which step of which phase failed and inspect what was built:

- ``build_step`` (str): the step's name;
- ``build_phase`` (int): its phase (1 grid, 2 matrices and structure factors,
  3 phonons and covariance, 4 intensity);
- ``partial_model``: the model object holding exactly the attributes set by the steps
  that completed (what the failed step had set is removed); its ``completed_steps``
  lists their names.

Argument validation runs before the first step: its errors carry no ``build_step``.
"""
from __future__ import annotations

from typing import Sequence


def run_build_steps(model: object, steps: Sequence[tuple[str, int, str]]) -> None:
    """Run ``getattr(model, method)()`` for every ``(name, phase, method)`` in order.

    Records the completed step names in ``model.completed_steps``; on failure, tags and
    re-raises the exception (see the module docstring).
    """
    model.completed_steps = ()
    for name, phase, method in steps:
        before = set(vars(model))
        try:
            getattr(model, method)()
        except Exception as exc:
            for key in set(vars(model)) - before:  # what the failed step set half-way
                delattr(model, key)
            try:
                exc.build_step, exc.build_phase, exc.partial_model = name, phase, model
            except AttributeError:  # an exception type without a __dict__: raise it untagged
                pass
            raise
        model.completed_steps = model.completed_steps + (name,)
