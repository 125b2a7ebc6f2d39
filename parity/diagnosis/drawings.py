"""The drawers of :func:`parity.diagnosis.figures.figure`: one small picture per signature kind.

Each drawer takes a matplotlib ``Figure`` (no pyplot state), the signature and the pair
it was diagnosed on, draws into the figure and returns True, or returns False when no
picture helps. Pure drawing: matplotlib itself is imported by ``figures.figure`` only.
The registry names which drawer pictures which signature.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from parity.contract.values import nonfinite_code
from parity.diagnosis.engine import re_im_parts, work_array
from parity.diagnosis.result import Signature
from parity.diagnosis.wording import number_text


def _analysed(signature: Signature, x: Any) -> np.ndarray:
    arr = work_array(x)
    shape = signature.params.get("analysed_shape")
    return arr.reshape(shape) if shape and int(np.prod(shape)) == arr.size else arr


def draw_profile(fig, sig: Signature, expected, actual) -> bool:
    """Error per index along the signature's axis (partial agreement, accumulation)."""
    e, a = _analysed(sig, expected), _analysed(sig, actual)
    names = sig.params.get("analysed_axes") or [f"axis {i}" for i in range(e.ndim)]
    if sig.name == "accumulation":
        ax = sig.params["axis_index"]
    else:
        first = sig.params.get("first_agrees") or []
        per_axis = sig.params.get("per_axis") or []
        name = first[0] if first else (per_axis[0][0] if per_axis else None)
        if name is None or name not in names:
            return False
        ax = list(names).index(name)
    if np.iscomplexobj(a) != np.iscomplexobj(e):
        a = a.real if np.iscomplexobj(a) else a
        e = e.real if np.iscomplexobj(e) else e
    d = np.where(np.isfinite(a) & np.isfinite(e), np.abs(a - e), np.nan)
    scale = np.nanmax(np.abs(np.where(np.isfinite(e), e, np.nan)))
    others = tuple(i for i in range(e.ndim) if i != ax)
    profile = np.nanmax(d, axis=others) / (scale if scale > 0 else 1.0)
    axis = fig.add_subplot()
    axis.semilogy(np.arange(profile.size), np.maximum(profile, 1e-18), "o-", color="#4c72b0")
    axis.set_xlabel(f"{names[ax]} index")
    axis.set_ylabel("max |a - e| / max |e|")
    axis.set_title(f"Error along {names[ax]}", fontsize=10)
    axis.grid(alpha=0.3)
    return True


def draw_precision(fig, sig: Signature, expected, actual) -> bool:
    """Histogram of the relative error in units of the format's round-off."""
    e, a = re_im_parts(work_array(expected).reshape(-1)), re_im_parts(work_array(actual).reshape(-1))
    if e.shape != a.shape:
        return False
    ok = np.isfinite(e) & np.isfinite(a) & (e != 0)
    u = float(sig.params.get("unit_roundoff", 2.0 ** -24))
    r = np.abs(a[ok] - e[ok]) / np.abs(e[ok]) / u
    r = r[r > 0]
    if r.size == 0:
        return False
    axis = fig.add_subplot()
    axis.hist(np.log2(r), bins=40, color="#4c72b0")
    axis.set_xlabel(f"log2( |a - e| / |e| / u ),  u = {sig.params.get('format')} unit round-off")
    axis.set_ylabel("elements")
    axis.set_title("Relative error in units of round-off", fontsize=10)
    return True


def draw_factor(fig, sig: Signature, expected, actual) -> bool:
    """Candidate against reference with the fitted line."""
    e, a = work_array(expected).reshape(-1), work_array(actual).reshape(-1)
    if e.shape != a.shape:
        return False
    ok = np.isfinite(e) & np.isfinite(a)
    e, a = e[ok], a[ok]
    step = max(1, e.size // 2000)
    e, a = np.real(e[::step]), np.real(a[::step])
    c = sig.params.get("factor", 1.0)
    c = complex(c["re"], c["im"]) if isinstance(c, dict) else c
    axis = fig.add_subplot()
    axis.plot(e, a, ".", markersize=3, color="#4c72b0", label="elements")
    xs = np.array([min(0.0, e.min()), max(0.0, e.max())]) if e.size else np.array([0.0, 1.0])
    text = sig.params.get("expression") or number_text(c)
    axis.plot(xs, np.real(c) * xs, "--", color="#c0392b", label=f"candidate = {text} x reference")
    axis.set_xlabel("reference (real part)")
    axis.set_ylabel("candidate (real part)")
    axis.legend(fontsize=8)
    return True


def draw_overlap(fig, sig: Signature, expected, actual) -> bool:
    """|C| between the mixed modes at the worst item (C: candidate in the reference basis)."""
    ov = sig.params.get("overlap")
    if not ov:
        return False
    C = np.array(ov["abs_C"], dtype=float)
    axis = fig.add_subplot()
    im = axis.imshow(C, vmin=0, vmax=1, cmap="viridis")
    ticks = range(len(ov["modes"]))
    axis.set_xticks(ticks, [str(m) for m in ov["modes"]])
    axis.set_yticks(ticks, [str(m) for m in ov["modes"]])
    axis.set_xlabel("candidate mode")
    axis.set_ylabel("reference mode")
    axis.set_title(f"|overlap| at {ov['location']}", fontsize=10)
    fig.colorbar(im, ax=axis)
    return True


def draw_nan(fig, sig: Signature, expected, actual) -> bool:
    """Count of pattern mismatches along each axis that holds them."""
    e, a = _analysed(sig, expected), _analysed(sig, actual)
    if e.shape != a.shape:
        return False
    mm = nonfinite_code(e) != nonfinite_code(a)
    names = sig.params.get("analysed_axes") or [f"axis {i}" for i in range(e.ndim)]
    shown = [ax for ax in range(e.ndim) if 1 < e.shape[ax]][-4:]
    if not shown or not mm.any():
        return False
    for k, ax in enumerate(shown):
        axis = fig.add_subplot(1, len(shown), k + 1)
        others = tuple(i for i in range(e.ndim) if i != ax)
        axis.bar(np.arange(e.shape[ax]), mm.sum(axis=others), color="#c0392b")
        if e.shape[ax] <= 12:
            axis.set_xticks(range(e.shape[ax]))
        axis.set_xlabel(f"{names[ax]} index")
        if k == 0:
            axis.set_ylabel("NaN/inf mismatches")
    return True
