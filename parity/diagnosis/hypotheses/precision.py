"""Round-off of a narrower float format (bfloat16, float16/TF32, float32), from cast evidence
(the candidate's values are numbers of the format) or from the distribution of the errors.
"""
from __future__ import annotations

import numpy as np

from parity.contract.tiers import F32_SUFFIX
from parity.diagnosis.engine import Context, Pair, re_im_parts
from parity.diagnosis.result import Signature
from parity.diagnosis.wording import short

#: Narrower float formats and their significant bits p (unit round-off u = 2**-p).
FORMATS = (("bfloat16", 8), ("float16", 11), ("tf32", 11), ("float32", 24))
#: Precision: allowance (in units of u) when the candidate's values are numbers of the
#: format (cast evidence), and the band of the normwise error otherwise.
CAST_ALLOWANCE_U = 1024.0
ROUNDOFF_BAND_U = (0.25, 64.0)
ROUNDOFF_P99_U = 16.0
ROUNDOFF_MIN_SPREAD = 0.2
MIN_ELEMENTS_FOR_PRECISION = 16


def _representable(x: np.ndarray, fmt: str) -> np.ndarray:
    """Which float64 values are exactly numbers of the format."""
    with np.errstate(over="ignore", invalid="ignore"):
        if fmt == "float16":
            return x.astype(np.float16).astype(np.float64) == x
        f = x.astype(np.float32)
        ok = f.astype(np.float64) == x
    if fmt == "float32":
        return ok
    drop = {"tf32": 13, "bfloat16": 16}[fmt]
    return ok & ((f.view(np.uint32) & np.uint32((1 << drop) - 1)) == 0)


_UNIT = {fmt: 2.0 ** -bits for fmt, bits in FORMATS}
_LABEL = {"float16": "float16/TF32", "tf32": "float16/TF32"}  # the same unit round-off


def _roundoff_like(rel: np.ndarray, u: float) -> dict | None:
    """Distribution statistics of signed relative errors, when they look like round-off of unit ``u``.

    Round-off is relative to each element (p99 within ``ROUNDOFF_P99_U`` units, unlike
    additive noise), not far below ``u`` (median >= u/64: else a wider format), and spread
    out (one rounding is uniform in [0, u], coefficient of variation 0.58; one wrong factor
    on a subset gives a single value, CV 0). No sign test: round-off of one shared constant
    upstream (float32(2 pi) > 2 pi) biases every error the same way.
    """
    mag = np.abs(rel)
    nonzero = mag[mag > 0]
    p99, median = float(np.percentile(mag, 99)), float(np.median(mag))
    spread = float(np.std(nonzero) / np.mean(nonzero)) if nonzero.size > 1 else 0.0
    if p99 <= ROUNDOFF_P99_U * u and median >= u / 64 and spread >= ROUNDOFF_MIN_SPREAD:
        return {"p99_rel_in_u": p99 / u, "median_rel_in_u": median / u, "spread": spread}
    return None


def _in_band(error: float, u: float) -> bool:
    return ROUNDOFF_BAND_U[0] * u <= error <= ROUNDOFF_BAND_U[1] * u


def _precision(p: Pair) -> list[Signature]:
    """Round-off of a narrower float format, from cast evidence or the error distribution.

    A format is claimed only with evidence the candidate carries it: its values are
    numbers of that format (cast), or float32 numbers with errors of a narrower
    format's size (TF32/bfloat16 arithmetic stored in float32). Without cast evidence
    only float32 is claimed, from the distribution of the errors: a relative error of
    ~1e-7 spread like round-off is specific, one of ~1e-3 (bfloat16's size) describes
    many ordinary bugs too.
    """
    f = p.finite
    a, e = re_im_parts(p.a[f]), re_im_parts(p.e[f])
    skip_f32 = p.tier.name.endswith(F32_SUFFIX)  # a float32 run: float32 round-off is expected
    nz = e != 0
    if np.count_nonzero(nz) < MIN_ELEMENTS_FOR_PRECISION:
        return []
    rel = (a[nz] - e[nz]) / e[nz]
    base = {"error_before": p.error}
    values = a[a != 0]
    # Every narrower format is a subset of float32: no float32 values, no cast evidence.
    cast = values.size >= MIN_ELEMENTS_FOR_PRECISION and bool(np.all(_representable(values, "float32")))
    fmt = next((f_ for f_, _ in FORMATS if cast and np.all(_representable(values, f_))), None)
    if fmt is not None and not (skip_f32 and fmt == "float32"):
        ref_fraction = float(np.mean(_representable(e[nz], fmt)))
        if ref_fraction <= 0.5:
            return [_cast_signature(p, fmt, ref_fraction, rel, base)]
    if skip_f32 or not _in_band(p.error, _UNIT["float32"]):
        return []
    stats = _roundoff_like(rel, _UNIT["float32"])
    if stats is None:
        return []
    u = _UNIT["float32"]
    params = {**base, "format": "float32", "evidence": "distribution", "unit_roundoff": u,
              "error_in_u": p.error / u, **stats, "allowed": ROUNDOFF_BAND_U[1] * u}
    sentence = (f"The errors have the size and distribution of float32 round-off somewhere upstream: "
                f"relative to each element, median {stats['median_rel_in_u']:.2g} and 99th percentile "
                f"{stats['p99_rel_in_u']:.2g} units of float32 round-off, spread out as round-off is "
                f"(normwise {short(p.error)}).")
    return [Signature("precision", "float32 round-off", sentence, params, p.error, True)]


def _cast_signature(p: Pair, fmt: str, ref_fraction: float, rel: np.ndarray, base: dict) -> Signature:
    """The candidate's values are numbers of ``fmt``: round-off of that format, or of a narrower
    arithmetic stored in it (float32 numbers with TF32/bfloat16-sized errors)."""
    u = _UNIT[fmt]
    params = {**base, "format": fmt, "evidence": "cast", "unit_roundoff": u, "error_in_u": p.error / u,
              "allowed": CAST_ALLOWANCE_U * u, "reference_representable": ref_fraction}
    lead = (f"Every candidate value is exactly a {fmt} number (of the reference values only "
            f"{100 * ref_fraction:.0f} % are)")
    if p.error <= CAST_ALLOWANCE_U * u:
        sentence = (f"{lead}: the quantity was computed or stored in {fmt} and cast back; the error is "
                    f"{p.error / u:.3g} units of {fmt} round-off ({short(p.error)} of max|reference|).")
        return Signature("precision", f"{fmt} round-off (cast)", sentence, params, p.error, True)
    if fmt == "float32":
        for narrow in ("tf32", "bfloat16"):
            un = _UNIT[narrow]
            stats = _roundoff_like(rel, un) if _in_band(p.error, un) else None
            if stats is not None:
                label = _LABEL.get(narrow, narrow)
                params.update(format=label, stored_as="float32", unit_roundoff=un, error_in_u=p.error / un,
                              allowed=ROUNDOFF_BAND_U[1] * un, **stats)
                sentence = (f"{lead}, and the errors have the size and distribution of {label} round-off "
                            f"({p.error / un:.3g} units normwise, 99th percentile "
                            f"{stats['p99_rel_in_u']:.2g} units relative): {label} arithmetic upstream, "
                            f"stored in float32.")
                return Signature("precision", f"{label} arithmetic (float32)", sentence, params, p.error, True)
    sentence = (f"{lead}: the quantity went through {fmt}, but the error ({p.error / u:.3g} units of {fmt} "
                f"round-off) is more than the {CAST_ALLOWANCE_U:g} allowed for round-off alone.")
    return Signature("precision", f"through {fmt}, error too large", sentence, params, p.error, False)



def examine(p: Pair, ctx: Context) -> list[Signature]:
    """Round-off of a narrower format (see :func:`_precision`); needs no time budget."""
    return _precision(p)
