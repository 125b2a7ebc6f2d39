"""The project's NumPy reference (:class:`eryx.models.OnePhonon`) as a backend.

Its quantities are the model's attributes under the contract's names, with three
conventions applied: ``Winv`` (stored complex with zero imaginary part) is returned real,
refusing a non-zero imaginary part; ``hessian`` is returned real (its imaginary part is
zero by construction); ``K``, ``Kinv`` and ``D`` are stacked over the BZ points in C order.
d sum(Id)/d gamma_inter is the model's analytic derivative (:mod:`eryx.gradients_numpy`),
checked point by point against central differences of two separately built models at a
sample of grid points; d sum(Id)/d gamma_intra follows from it and sum(Id) by the model's
homogeneity (docs/gradients.md). ``Id``, ``mode_maps``, ``Id_data_adp`` and the
derivative share one pass of structure factors.

Structure and grid quantities need only the crystal, so they stay available where the
dense model itself is refused for memory (the ``MemoryBudgetError`` becomes the reason of
every quantity that needs the model).
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np

from eryx import gradients_numpy
from eryx import models as npm
from eryx import structure
from eryx.build import run_build_steps
from eryx.errors import MemoryBudgetError, UndefinedADPError
from eryx.probes import listening as probes_listening
from eryx.probes import probe
from eryx.validation import check_sampling

from parity.contract.provenance import git_commit, package_version
from parity.contract.spec import PROBE_CELL, RunSpec
from parity.contract.tiers import resolve_tier
from parity.backends.base import TIMED_PHASES, Backend, NotProvided, Session

#: Relative step of the central finite differences of the spring-constant gradients:
#: truncation (h^2) and round-off (eps / h) balance near 1e-5 (measured on 5zck_p1 and
#: 7n2h, grid -2,2,2: 3e-11 and 2e-10 of the autograd value, against 8e-9 at 1e-4).
FD_STEP_GAMMA = 1e-5
#: d sum(Id) / d gamma_intra from Euler's identity for degree -1 (docs/gradients.md)
#: instead of two more maps; False: central differences for both gammas.
EULER_INTRA = True
#: Step (1/A) of the central finite differences of d Id / d q: truncation and round-off
#: balance near 1e-6 (measured FD error 9.1e-10 of max|grad| on 5zck_p1, 3.7e-10 on 7n2h).
FD_STEP_Q = 1e-6
#: The model's build steps (``OnePhonon.BUILD_STEPS``, :mod:`eryx.build`) that
#: :meth:`NumpySession.timed_phase` redoes for phases 1-3.
TIMED_STEPS = {"1": ("grid",), "2": ("matrices",), "3": ("hessian", "phonons")}

#: d sum(Id)/d gamma_inter: "analytic" (the model's derivative from the map's own pass,
#: checked against central differences at the gradient sample, docs/gradients.md) or
#: "central" (the central difference of sum(Id) of two more full NumPy maps).
GAMMA_INTER_METHOD = "analytic"


class AnalyticDerivativeError(RuntimeError):
    """The NumPy analytic d Id / d gamma_inter disagrees with its central-difference check."""


def check_against_central_difference(analytic: np.ndarray, central: np.ndarray, rtol: float) -> str | None:
    """Why the analytic derivative at the sample points fails its check, or None.

    Parameters
    ----------
    analytic, central : (n,) real: d Id / d gamma at the same grid points.
    rtol : relative error allowed over the sample, ||analytic - central|| / ||central||.
    """
    finite = np.isfinite(central)
    if not np.array_equal(finite, np.isfinite(analytic)):
        return (f"finite at {int(np.isfinite(analytic).sum())} sample points, the central difference "
                f"at {int(finite.sum())}")
    scale = np.linalg.norm(central[finite])
    error = np.linalg.norm(analytic[finite] - central[finite])
    if not error <= rtol * scale:
        return f"relative error {error / scale if scale else np.inf:.3g} over the sample > {rtol:g}"
    return None


def real_checked(x: np.ndarray, what: str) -> np.ndarray:
    """A complex array whose imaginary part must vanish, as real (ValueError otherwise)."""
    x = np.asarray(x)
    if np.iscomplexobj(x):
        imag = x.imag[np.isfinite(x.imag)]
        if imag.size and np.any(imag != 0):
            raise ValueError(f"{what} has a non-zero imaginary part (max {np.max(np.abs(imag)):.3g})")
        return x.real.copy()
    return x


def bz_index_of_grid(L: tuple[int, int, int], map_shape: tuple[int, int, int]) -> np.ndarray:
    """(n_q,) flat BZ point of each grid point, literally from ALGORITHM.md section 5."""
    out = np.full(int(np.prod(map_shape)), -1, dtype=np.int64)
    for flat, bz in enumerate(np.ndindex(*L)):
        idx = npm.grid_indices_of_bz(bz, L, map_shape)
        out[idx] = probe("bz_index", np.full(len(idx), flat), axes=(("q", idx),))
    return out


def gemmi_free_F_hkl(crystal, hkl: np.ndarray) -> np.ndarray:
    """Unprojected F at integer reflections, B = 0, summed over every atom of the cell (n_hkl,)."""
    q = npm.q_from_hkl(hkl, crystal.A_inv)
    return npm.structure_factors(q, crystal.xyz.reshape(-1, 3), crystal.ff_a.reshape(-1, 4),
                                 crystal.ff_b.reshape(-1, 4), crystal.ff_c.reshape(-1)).sum(axis=1)


class NumpySession(Session):
    """A NumPy reference model for one spec."""

    backend: "NumpyBackend"

    def _build(self) -> None:
        self.crystal = None
        self.model = None
        self.refusal: str | None = None
        s = self.spec
        self.crystal = structure.load_crystal(s.pdb_path, s.params.get("expand_p1", True))
        try:
            self.model = npm.OnePhonon(s.pdb_path, *s.samplings, **self._model_kwargs())
        except MemoryBudgetError as exc:
            self.refusal = f"the dense NumPy reference does not fit: {exc}"

    #: Quantities scaled by the model's ADPs: refused (UndefinedADPError) when the scale is undefined.
    ADP_SCALED = frozenset({"Id", "mode_maps", "Id_q_offgrid", "grad_gamma_inter", "grad_gamma_intra", "grad_q",
                            "qvectors_sample"})

    def input_refusal(self, name: str) -> Exception | None:
        reason = getattr(self.model, "adp_undefined_reason", None)
        if reason and name in self.ADP_SCALED:
            return UndefinedADPError(reason)
        return None

    # -- helpers
    def _model_kwargs(self) -> dict:
        """The spec's model parameters, plus the backend's ``memory_limit`` option when given."""
        limit = self.backend.opts.get("memory_limit")
        return {**self.spec.model_kwargs, **({} if limit is None else {"memory_limit": limit})}

    def _needs_model(self) -> npm.OnePhonon:
        if self.model is None:
            raise NotProvided(self.refusal or "the NumPy reference model was not built")
        return self.model

    def _grid(self) -> dict:
        samplings = [check_sampling(s, a) for s, a in zip(self.spec.samplings, "hkl")]
        hkl, shape = npm.generate_grid(samplings)
        return {"hkl": hkl, "shape": shape}

    def _K_all(self) -> np.ndarray:
        m = self._needs_model()
        return np.array([m.K(bz) for bz in m.bz_points()])

    def _q_map(self, q: np.ndarray) -> np.ndarray:
        """Id at arbitrary q-vectors through the reference's own q-vector mode (section 10)."""
        return self._needs_model().apply_disorder_at(q)

    def _pass(self) -> dict[str, np.ndarray]:
        """Id, mode_maps, Id_data_adp and d Id / d gamma_inter from one pass of structure
        factors (eryx.gradients_numpy), computed once per session; each map bit for bit
        the model's own method's."""
        if "_shared_pass" not in self.__dict__:
            self._shared_pass = gradients_numpy.maps_and_gamma_inter_derivative(self._needs_model())
        return self._shared_pass

    def _maps(self) -> tuple[np.ndarray, np.ndarray]:
        """(Id, mode_maps) from the shared pass."""
        shared = self._pass()
        return shared["Id"], shared["mode_maps"]

    def _id_data_adp(self) -> np.ndarray:
        m = self._needs_model()
        # The model's own method (the same values bit for bit) where the shared pass cannot
        # serve: it needs the model's ADPs too, and it emits no probes for parity locate.
        if m.adp_undefined_reason is not None or probes_listening():
            return m.apply_disorder(use_data_adp=True)
        return self._pass()["Id_data_adp"]

    def _gamma_step(self, value: float) -> float:
        return FD_STEP_GAMMA * max(abs(value), 1.0)

    def _model_at(self, which: str, value: float) -> npm.OnePhonon:
        s = self.spec
        return npm.OnePhonon(s.pdb_path, *s.samplings, **{**s.model_kwargs, which: value})

    def _analytic_gamma_inter(self) -> np.ndarray:
        """sum of the analytic d Id / d gamma_inter, after its check at the gradient sample.

        The check: central differences of Id at ``spec.grad_q_sample`` from two separately
        built models (gamma_inter +- h, the q-vector mode, which is the grid map at grid
        q), within the ``gradient`` tier over the sample. With no finite sample point the
        full central difference is used instead. The check's numbers stay in
        ``self.gamma_inter_check``.
        """
        derivative = self._pass()["dId_dgamma_inter"]
        idx = self.spec.grad_q_sample
        q = self.get("q_grid")[idx]
        value = float(self.spec.params["gamma_inter"])
        h = self._gamma_step(value)
        central = (self._model_at("gamma_inter", value + h).apply_disorder_at(q)
                   - self._model_at("gamma_inter", value - h).apply_disorder_at(q)) / (2 * h)
        if not np.isfinite(central).any():
            return self._central_gamma("gamma_inter")
        rtol = resolve_tier("gradient").rtol
        analytic = derivative[idx]
        self.gamma_inter_check = {"points": idx, "analytic": analytic, "central": central, "rtol": rtol}
        why = check_against_central_difference(analytic, central, rtol)
        if why is not None:
            raise AnalyticDerivativeError(
                f"the NumPy reference's analytic d Id/d gamma_inter fails its central-difference check "
                f"at {len(idx)} grid points: {why}")
        return np.array([float(np.nansum(derivative))])

    def _central_gamma(self, which: str) -> np.ndarray:
        """Central difference of sum(Id) from two more full NumPy maps."""
        value = float(self.spec.params[which])
        h = self._gamma_step(value)
        self._needs_model()
        plus = float(np.nansum(self._model_at(which, value + h).apply_disorder()))
        minus = float(np.nansum(self._model_at(which, value - h).apply_disorder()))
        return np.array([(plus - minus) / (2 * h)])

    def _fd_gamma(self, which: str) -> np.ndarray:
        s = self.spec
        value = float(s.params[which])
        if which == "gamma_intra" and EULER_INTRA and value > 0:
            # K is linear in (gamma_intra, gamma_inter) and the scaled ADPs do not change when
            # both scale by t, so L(t gi, t ge) = L(gi, ge) / t: gi dL/dgi + ge dL/dge = -L.
            total = float(np.nansum(self.get("Id")))
            d_inter = float(self.get("grad_gamma_inter")[0])
            return np.array([-(total + float(s.params["gamma_inter"]) * d_inter) / value])
        if which == "gamma_inter" and GAMMA_INTER_METHOD == "analytic":
            self._needs_model()
            return self._analytic_gamma_inter()
        return self._central_gamma(which)

    def _fd_q(self) -> np.ndarray:
        """Central differences of Id(q) along x, y, z at the q-gradient sample (one q-mode call).

        NaN where Id(q) itself is not finite (the candidates' rule, docs/gradients.md): at a
        k-point with zero modes Id is undefined, yet the shifted points beside it can be
        finite (K there is nearly singular), and their difference is then a huge number
        that means nothing.
        """
        idx = self.spec.grad_q_sample
        q0 = self.get("q_grid")[idx]
        steps = FD_STEP_Q * np.eye(3)
        shifted = np.concatenate([q0 + d for d in steps] + [q0 - d for d in steps] + [q0])
        values = self._q_map(shifted)
        at, values = values[6 * len(idx):], values[:6 * len(idx)].reshape(2, 3, len(idx))
        grad = ((values[0] - values[1]) / (2 * FD_STEP_Q)).T
        return np.where(np.isfinite(at)[:, None], grad, np.nan)

    def _compute(self, name: str) -> Any:
        c, s = self.crystal, self.spec
        if name in _CRYSTAL:
            return np.asarray(_CRYSTAL[name](c))
        if name == "F_hkl":
            return gemmi_free_F_hkl(c, s.oracle_hkl)
        if name == "d_spacing":
            hkl = self.get("hkl_grid")[s.q_sample]
            return np.stack([npm.resolution(hkl, c.cell), npm.resolution(hkl, PROBE_CELL)])
        if name in ("hkl_grid", "map_shape", "q_grid", "res_mask", "kvec", "kvec_norm", "bz_index"):
            if self.model is not None and name not in ("map_shape", "bz_index"):
                return getattr(self.model, name)
            g = self._grid()
            if name == "hkl_grid":
                return g["hkl"]
            if name == "map_shape":
                return np.array(g["shape"])
            if name == "q_grid":
                return npm.q_from_hkl(g["hkl"], c.A_inv)
            if name == "res_mask":
                return npm.resolution(g["hkl"], c.cell) > s.params["res_limit"]
            if name == "bz_index":
                return bz_index_of_grid(s.oversampling, g["shape"])
            kvec = 2 * np.pi * np.einsum("ji,...j->...i", c.A_inv, npm.bz_fractions(s.oversampling))
            return kvec if name == "kvec" else np.linalg.norm(kvec, axis=-1, keepdims=True)
        getter = _MODEL.get(name)
        if getter is None:
            raise NotProvided(f"the NumPy reference does not provide {name}")
        return getter(self)

    def dtypes(self) -> dict:
        m = self._needs_model()
        return {k: str(v.dtype) for k, v in vars(m).items() if isinstance(v, np.ndarray)}

    def timed_phase(self, phase: str) -> Callable[[], Any]:
        """See :meth:`Session.timed_phase`: phases 1-3 rerun the model's build steps of
        :data:`TIMED_STEPS` on a shallow copy (phase 2 adds the structure factors at the q
        sample), phase 4 is ``apply_disorder()``. NotProvided where the model was refused for
        memory (``"end_to_end"`` raises the refusal when called)."""
        if phase not in TIMED_PHASES:
            return super().timed_phase(phase)
        s = self.spec
        if phase == "end_to_end":  # a fresh model: this session's own is not built for it
            kwargs = self._model_kwargs()
            return lambda: npm.OnePhonon(s.pdb_path, *s.samplings, **kwargs).apply_disorder()
        self.build()
        m = self._needs_model()
        if phase == "4":
            return m.apply_disorder
        steps = [step for step in m.BUILD_STEPS if step[0] in TIMED_STEPS[phase]]
        q_sample = s.q_sample

        def redo() -> Any:
            run_build_steps(copy.copy(m), steps)
            return m.structure_factors_at(q_sample) if phase == "2" else None

        return redo


_CRYSTAL: dict[str, Callable[[Any], Any]] = {
    "cell": lambda c: c.cell, "A_inv": lambda c: c.A_inv, "unit_cell_axes": lambda c: c.unit_cell_axes,
    "n_asu": lambda c: np.int64(c.n_asu), "xyz": lambda c: c.xyz, "asu_xyz": lambda c: c.asu_xyz,
    "adp": lambda c: c.adp, "masses": lambda c: c.masses, "ff_a": lambda c: c.ff_a, "ff_b": lambda c: c.ff_b,
    "ff_c": lambda c: c.ff_c, "cell_origin": lambda c: c.cell_origin,
}

_MODEL: dict[str, Callable[[NumpySession], Any]] = {
    "Amat": lambda s: s._needs_model().Amat,
    "M_allatoms": lambda s: s._needs_model().M_allatoms,
    "Mmat": lambda s: s._needs_model().Mmat,
    "Linv": lambda s: s._needs_model().Linv,
    "form_factors": lambda s: npm.form_factors(s.get("q_grid")[s.spec.q_sample], s.crystal.ff_a[0],
                                               s.crystal.ff_b[0], s.crystal.ff_c[0]),
    "structure_factors": lambda s: s._needs_model().structure_factors_at(s.spec.q_sample, use_data_adp=True),
    "hessian_allatoms": lambda s: s._needs_model().hessian_allatoms,
    "hessian": lambda s: real_checked(s._needs_model().hessian, "the projected Hessian"),
    "K": lambda s: s._K_all(),
    "Kinv": lambda s: np.array([np.linalg.pinv(k) for k in s.get("K")]),
    "D": lambda s: np.array([s.model.Linv @ k @ s.model.Linv.T for k in s.get("K")]),
    "Winv": lambda s: real_checked(s._needs_model().Winv, "Winv"),
    "V": lambda s: s._needs_model().V,
    "covar": lambda s: s._needs_model().covar,
    "ADP": lambda s: s._needs_model().ADP,
    "Id": lambda s: s._maps()[0],
    "mode_maps": lambda s: s._maps()[1],
    "Id_data_adp": lambda s: s._id_data_adp(),
    "Id_qvectors": lambda s: s._q_map(s.get("q_grid")),
    "Id_q_sample": lambda s: s._q_map(s.get("q_grid")[s.spec.q_sample]),
    "Id_q_offgrid": lambda s: s._q_map(s.get("q_grid")[s.spec.grad_q_sample] + s.spec.offgrid_shift_q),
    "grad_gamma_inter": lambda s: s._fd_gamma("gamma_inter"),
    "grad_gamma_intra": lambda s: s._fd_gamma("gamma_intra"),
    "grad_q": lambda s: s._fd_q(),
    "dtypes": lambda s: s.dtypes(),
}


class NumpyBackend(Backend):
    """The project's NumPy reference: literal to ALGORITHM.md (per-k loops, SVD, dense Hessian)."""

    name = "numpy"
    description = "this project's NumPy reference (eryx.models.OnePhonon)"
    #: ``memory_limit`` (bytes): the model's memory cap (``OnePhonon(memory_limit=...)``).
    options = ("memory_limit",)
    takes_path = takes_python = False

    @classmethod
    def static_provides(cls) -> frozenset[str]:
        return frozenset(_CRYSTAL) | frozenset(_MODEL) | {"F_hkl", "d_spacing", "hkl_grid", "map_shape", "q_grid",
                                                          "res_mask",
                                                          "kvec", "kvec_norm", "bz_index"}

    def provides(self) -> frozenset[str]:
        return self.static_provides()

    def open(self, spec: RunSpec) -> NumpySession:
        return NumpySession(self, spec)

    def info(self) -> dict:
        return {"name": self.name, "description": self.description, "version": package_version(),
                "origin": f"eryx.models ({npm.__file__})", "commit": git_commit(),
                "device": "cpu", "dtype": "float64"}

