"""The hypothesis families of the diagnosis, one module each.

Every family tested on a prepared pair exposes ``examine(p, ctx) -> list[Signature]``
(``p``: :class:`parity.diagnosis.engine.Pair`, ``ctx``:
:class:`parity.diagnosis.engine.Context`) and is listed, with its stage and its rank of
simplicity, in :data:`parity.diagnosis.registry.HYPOTHESES`. Two families rearrange the
pair before it is prepared and are called by :mod:`parity.diagnosis.arrays` directly:
:mod:`.shape` (singleton axes, axes in another order) and :mod:`.dtype_class` (real carried
as complex or the reverse).
"""
