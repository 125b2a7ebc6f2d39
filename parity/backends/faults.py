"""Named fault injections into the torch backend: the harness proving it can fail.

Each fault is a bug class this model has really had. Injecting one replaces a
pure function of :mod:`eryx.functional_torch` for the duration of a ``with inject(name)``
block (the model calls those functions through the module, so the replacement is
what runs; the NumPy reference is untouched). Every fault names the stage where
the bug lives and its phase: a parity run must fail first in that phase, and
``parity bisect`` must name that stage as the root cause.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import gemmi
import torch

from eryx import functional_torch as st


@dataclass(frozen=True)
class Fault:
    name: str
    stage: str
    phase: int
    description: str
    patch: Callable[[dict], dict]  # original functions -> replacements


def _grid_float32(orig):
    def q_from_hkl(hkl, A_inv):
        return orig["q_from_hkl"](hkl.float(), A_inv.float()).to(hkl.dtype)
    return {"q_from_hkl": q_from_hkl}


def _amat_shared_buffer(orig):
    def build_A(asu_xyz):
        A = orig["build_A"](asu_xyz)
        n_asu, n3, _ = A.shape
        A4 = A.reshape(n_asu, n3 // 3, 3, 6).clone()
        # The skew block accumulated in a buffer reused across atoms.
        A4[..., 3:] = torch.cumsum(A4[..., 3:], dim=1)
        return A4.reshape(n_asu, n3, 6)
    return {"build_A": build_A}


def _linv_upper(orig):
    def build_Linv(Mmat):
        n = Mmat.shape[0] * Mmat.shape[1]
        U = torch.linalg.cholesky(Mmat.reshape(n, n), upper=True)
        return torch.linalg.inv(U)
    return {"build_Linv": build_Linv}


def _linv_complex(orig):
    def build_Linv(Mmat):
        L = orig["build_Linv"](Mmat)
        return L.to(st.complex_dtype(L.dtype))
    return {"build_Linv": build_Linv}


def _phase_sign(orig):
    def build_K(Hrb, kvec, cell_origin):
        return orig["build_K"](Hrb, -kvec, cell_origin)
    return {"build_K": build_K}


def _eigvec_mixing(orig):
    def phonons(D):
        Winv, U = orig["phonons"](D)
        U = U.clone()
        # Rotate the two highest modes into each other (their eigenvalues differ).
        a, b = U[..., -2].clone(), U[..., -1].clone()
        c, s = math.cos(0.3), math.sin(0.3)
        U[..., -2], U[..., -1] = c * a + s * b, -s * a + c * b
        return Winv, U
    return {"phonons": phonons}


def _bz_off_by_one(orig):
    def grid_bz_index(map_shape, L, device):
        idx = [(torch.arange(n, device=device) + (1 if d == 0 else 0)) % l for d, (n, l) in enumerate(zip(map_shape, L))]
        ih, ik, il = torch.meshgrid(*idx, indexing="ij")
        return ((ih * L[1] + ik) * L[2] + il).reshape(-1)
    return {"grid_bz_index": grid_bz_index}


def _zero_modes_clamped(orig):
    def phonons(D):
        lam, U = torch.linalg.eigh(D)
        order = torch.argsort(lam.abs(), dim=-1)
        lam = torch.gather(lam, -1, order)
        U = torch.gather(U, -1, order[:, None, :].expand_as(U))
        w2 = torch.clamp(lam.abs(), min=st.zero_mode_cutoff(lam.dtype))
        return 1.0 / w2, U
    return {"phonons": phonons}


def _adp_scale(orig):
    def adp_scaled(covar, Amat, b_iso):
        ADP, cov = orig["adp_scaled"](covar, Amat, b_iso)
        return ADP / 3.0, cov / 3.0  # 8 pi^2 mean(ADP) instead of 8 pi^2 mean(ADP) / 3
    return {"adp_scaled": adp_scaled}


#: Atomic weights (Da) of sulphur and oxygen, from gemmi's table as eryx.structure reads them.
_S_MASS, _O_MASS = gemmi.Element("S").weight, gemmi.Element("O").weight


def _as_oxygen(masses):
    # Sulphur atoms (recognised by their weight) weighed as oxygen: a wrong row of an
    # element table. Only crystals with sulphur (Cys, Met) see it.
    return torch.where((masses - _S_MASS).abs() < 1e-6, torch.full_like(masses, _O_MASS), masses)


def _sulphur_mass(orig):
    def build_M_allatoms(masses, n_asu):
        return orig["build_M_allatoms"](_as_oxygen(masses), n_asu)

    def build_Mmat(Amat, masses):
        return orig["build_Mmat"](Amat, _as_oxygen(masses))
    return {"build_M_allatoms": build_M_allatoms, "build_Mmat": build_Mmat}


def _reflected(x):
    # 2 x.detach() - x has x's value and the opposite derivative.
    return 2 * x.detach() - x


def _q_gradient_sign(orig):
    # q enters the map through k(q) = q - G (in K) and through F(q): reflecting both keeps
    # every value and flips d Id / d q as a whole (a sign error only the q-gradient sees).
    def build_K(Hrb, kvec, cell_origin):
        return orig["build_K"](Hrb, _reflected(kvec), cell_origin)

    def structure_factors_T(q, *args):
        return orig["structure_factors_T"](_reflected(q), *args)
    return {"build_K": build_K, "structure_factors_T": structure_factors_T}


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("grid_float32", "q_grid", 1, "q grid computed in float32 and cast back", _grid_float32),
    Fault("amat_shared_buffer", "Amat", 2, "A's skew block built in a buffer reused across atoms", _amat_shared_buffer),
    Fault("linv_upper", "Linv", 2, "Linv from the upper instead of the lower Cholesky factor", _linv_upper),
    Fault("linv_complex", "Linv", 2, "Linv cast to complex", _linv_complex),
    Fault("phase_sign", "K", 3, "sign of the k.r phase flipped in K(k)", _phase_sign),
    Fault("eigvec_mixing", "eigenspaces", 3, "eigenvectors mixed across two non-degenerate eigenvalues", _eigvec_mixing),
    Fault("bz_off_by_one", "bz_index", 1, "grid-to-BZ index mapping off by one along h", _bz_off_by_one),
    Fault("zero_modes_clamped", "Winv", 3, "zero modes clamped instead of NaN", _zero_modes_clamped),
    # The scale is derived from the ADPs and multiplies covar and ADP alike (ALGORITHM.md 8):
    # covar comes first in phase order, so the wrong factor is first seen (and rooted) there;
    # ADP recomputes the covariance and its scale, so it inherits (one defect, one root).
    Fault("adp_scale", "covar", 3, "ADP scale with a wrong factor (8 pi^2 instead of 8 pi^2 / 3), applied to "
          "covar and ADP", _adp_scale),
    Fault("sulphur_mass", "M_allatoms", 2, "sulphur atoms weighed as oxygen (16.00 Da instead of 32.06): shows "
          "only on crystals with sulphur", _sulphur_mass),
    Fault("q_gradient_sign", "grad_q", 4, "d Id/d q with the wrong sign (values unchanged, only the q-gradient differs)",
          _q_gradient_sign),
)}


def get_fault(name: str) -> Fault:
    try:
        return FAULTS[name]
    except KeyError:
        raise KeyError(f"unknown fault {name!r}; known faults: {', '.join(FAULTS)}") from None


@contextlib.contextmanager
def inject(name: str | None) -> Iterator[Fault | None]:
    """Replace stage functions of the torch backend while the block runs."""
    if not name:
        yield None
        return
    fault = get_fault(name)
    originals = {k: getattr(st, k) for k in vars(st) if callable(getattr(st, k)) and not k.startswith("__")}
    replacements = fault.patch(originals)
    try:
        for k, fn in replacements.items():
            setattr(st, k, fn)
        yield fault
    finally:
        for k in replacements:
            setattr(st, k, originals[k])
