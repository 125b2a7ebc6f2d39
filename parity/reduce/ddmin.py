"""Delta debugging (Zeller and Hildebrandt's ddmin), as pure functions.

``ddmin(items, test)`` returns a sub-list of ``items`` on which ``test`` still holds and
from which no single item can be removed with ``test`` still holding (1-minimal), unless
``should_stop`` cut the search short (then the result is the smallest passing list found
so far and ``minimal`` is False). ``test`` is never called on the empty list, and each
distinct sub-list is tested at most once (the answers are memoised).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class DdminResult(Generic[T]):
    """What :func:`ddmin` found.

    Attributes
    ----------
    items : list
        The smallest passing sub-list found (order preserved).
    minimal : bool
        True when removing any single item makes ``test`` fail (1-minimal); False when
        ``should_stop`` ended the search first.
    n_tests : int
        Calls of ``test`` (memoised repeats not counted).
    """

    items: list
    minimal: bool
    n_tests: int


def split(items: Sequence[T], n: int) -> list[list[T]]:
    """``items`` in ``n`` contiguous chunks of near-equal length (the first ones longer)."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


def ddmin(items: Sequence[T], test: Callable[[list[T]], bool], *,
          should_stop: Callable[[], bool] = lambda: False,
          prefetch: Callable[[list[list[T]]], None] | None = None) -> DdminResult[T]:
    """Minimise ``items`` while ``test`` holds (``test(items)`` is assumed to hold).

    Subsets are tried before complements, so the first successful tests are the largest
    reductions (half the items gone at the first step).

    Parameters
    ----------
    items : sequence
        The units to minimise over (chains, residues, atoms, ...).
    test : callable (list) -> bool
        True when the property (the divergence) persists on that sub-list.
    should_stop : callable () -> bool
        Polled before every test: True ends the search with the best list so far.
    prefetch : callable (list of lists) -> None, optional
        Told, before a round's subsets (then its complements) are tested one by one, which
        untested sub-lists that round may test, in test order: a caller may start judging
        them ahead (in worker processes). The tests themselves, their order and the result
        are those of the serial search: the first passing candidate in that order wins.
    """
    current = list(items)
    seen: dict[tuple, bool] = {}
    calls = 0

    def key_of(candidate: list[T]) -> tuple:
        return tuple(id(x) for x in candidate) if not _hashable(candidate) else tuple(candidate)

    def check(candidate: list[T]) -> bool | None:
        nonlocal calls
        key = key_of(candidate)
        if key in seen:
            return seen[key]
        if should_stop():
            return None
        calls += 1
        seen[key] = bool(test(candidate))
        return seen[key]

    def announce(candidates: list[list[T]]) -> None:
        if prefetch is not None:
            fresh = [c for c in candidates if key_of(c) not in seen]
            if len(fresh) > 1:  # one candidate alone gains nothing from running ahead
                prefetch(fresh)

    n = 2
    while len(current) >= 2:
        chunks = split(current, n)
        reduced = False
        announce(chunks)
        for chunk in chunks:  # reduce to a subset
            ok = check(chunk)
            if ok is None:
                return DdminResult(current, False, calls)
            if ok:
                current, n, reduced = chunk, 2, True
                break
        if not reduced and n > 2:  # reduce to a complement (at n = 2 these are the subsets)
            complements = [[x for j, c in enumerate(chunks) if j != i for x in c] for i in range(len(chunks))]
            announce(complements)
            for complement in complements:
                ok = check(complement)
                if ok is None:
                    return DdminResult(current, False, calls)
                if ok:
                    current, n, reduced = complement, max(n - 1, 2), True
                    break
        if not reduced:
            if n >= len(current):
                break
            n = min(len(current), 2 * n)
    return DdminResult(current, True, calls)


def _hashable(xs: list) -> bool:
    try:
        hash(tuple(xs))
        return True
    except TypeError:
        return False


def is_one_minimal(items: Sequence[T], test: Callable[[list[T]], bool]) -> bool:
    """True when ``test(items)`` holds and fails with any single item removed (a checker for tests)."""
    items = list(items)
    if not test(items):
        return False
    return all(not test(items[:i] + items[i + 1:]) for i in range(len(items)) if len(items) > 1)
