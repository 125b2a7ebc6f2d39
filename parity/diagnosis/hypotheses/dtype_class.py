"""Dtype class mismatch: ``real_as_complex`` (complex with zero imaginary part) and
``complex_as_real`` (the real part or the modulus of a complex quantity).

Called by :mod:`parity.diagnosis.arrays` before the pair is prepared: when the real parts
differ too, the rest of the library runs on the pair of the same class.
"""
from __future__ import annotations

import numpy as np

from parity.contract.tiers import Tier
from parity.diagnosis.result import Signature
from parity.diagnosis.wording import normwise, short, within


def class_signature(e: np.ndarray, a: np.ndarray, tier: Tier) -> tuple[Signature, np.ndarray, np.ndarray]:
    """Real carried as complex or the reverse; return the pair to analyse further (same class)."""
    if np.iscomplexobj(a):  # reference real, candidate complex
        ai = np.where(np.isfinite(a.imag), a.imag, 0)
        scale = float(np.nanmax(np.abs(np.where(np.isfinite(e), e, np.nan)))) if np.isfinite(e).any() else 0.0
        imag = normwise(float(np.max(np.abs(ai))) if ai.size else 0.0, scale)
        fin = np.isfinite(a.real) & np.isfinite(e)
        res, ok = within(a.real[fin], e[fin], tier)
        imag_ok = imag <= tier.atol + tier.rtol if not tier.is_exact else imag == 0
        explains = ok and imag_ok and np.array_equal(np.isfinite(a.real), np.isfinite(e))
        sentence = (f"The candidate is complex ({a.dtype}) where the reference is real ({e.dtype})"
                    + (", with zero imaginary part" if imag == 0 else f", imaginary part up to {short(imag)} of max|reference|")
                    + (f"; its real part agrees within tier {tier.name}." if explains
                       else "; its real part is analysed below."))
        params = {"max_imag": imag, "actual_dtype": str(a.dtype), "expected_dtype": str(e.dtype),
                  "allowed": f"tier {tier.name}"}
        phrase = "real carried as complex" + ("" if imag == 0 else f" (im {short(imag)})")
        return Signature("real_as_complex", phrase, sentence, params, float(max(res, imag)), bool(explains)), \
            e, a.real.copy()
    # reference complex, candidate real
    fin = np.isfinite(e) & np.isfinite(a)
    scale = float(np.max(np.abs(e[fin]))) if fin.any() else 0.0
    imag = normwise(float(np.max(np.abs(e.imag[fin]))) if fin.any() else 0.0, scale)
    res_re, ok_re = within(a[fin], e.real[fin], tier)
    res_abs, ok_abs = within(a[fin], np.abs(e[fin]), tier)
    form = "real part" if ok_re or res_re <= res_abs else "modulus"
    res, ok = (res_re, ok_re) if form == "real part" else (res_abs, ok_abs)
    explains = ok and np.array_equal(np.isfinite(a), np.isfinite(e))
    if imag == 0:
        lead = "a complex quantity with zero imaginary part is carried as real"
    elif form == "real part":
        lead = f"the imaginary part (up to {short(imag)} of max|reference|) is dropped"
    else:
        lead = "the modulus is taken instead of the complex value"
    sentence = (f"The candidate is real ({a.dtype}) where the reference is complex ({e.dtype}): {lead}"
                + (f"; the {form} agrees within tier {tier.name}." if explains
                   else f"; even the {form} leaves a residual of {short(res)}."))
    params = {"form": form, "max_imag": imag, "actual_dtype": str(a.dtype), "expected_dtype": str(e.dtype),
              "allowed": f"tier {tier.name}"}
    phrase = "complex carried as real" if imag == 0 else ("imaginary part dropped" if form == "real part"
                                                          else "modulus instead of complex")
    return Signature("complex_as_real", phrase, sentence, params, float(res), bool(explains)), \
        e, a.astype(np.complex128)

