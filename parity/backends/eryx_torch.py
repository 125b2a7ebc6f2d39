"""The project's PyTorch port (:class:`eryx.models_torch.OnePhonon`) as a backend.

Quantities are the model's tensors under the contract's names (``K``, ``Kinv``, ``D`` and
``U`` are already stacked over the BZ points). Gradients are autograd: d sum(Id)/d gamma
through a model built with ``requires_grad`` spring constants, d Id/d q through the
arbitrary-q mode with ``requires_grad`` q-vectors.

Options
-------
fault : str
    A named fault of :mod:`parity.backends.faults`, injected into every computation of the session
    (construction, lazy maps, gradients, cross-feeds): the harness proving it can fail.

Cross-feeding: each function of :data:`CROSSFEED` recomputes one quantity with the torch
stage functions from another backend's values of its inputs; the parameter names are the
input quantity names (the registry's ``Stage.inputs`` must match them; a test checks).
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import math
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from eryx import models_torch as tm
from eryx import functional_torch as st
from eryx.build import run_build_steps

from parity.contract.provenance import git_commit, package_version
from parity.contract.spec import PROBE_CELL, RunSpec
from parity.backends.base import TIMED_PHASES, Backend, NotProvided, Session
from parity.backends.eryx_numpy import gemmi_free_F_hkl
from parity.backends.faults import get_fault, inject

_TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}
#: The model's build steps (``OnePhonon.BUILD_STEPS``, :mod:`eryx.build`) that
#: :meth:`TorchSession.timed_phase` redoes for phases 1-3.
TIMED_STEPS = {"1": ("grid",), "2": ("matrices",), "3": ("contacts", "hessian", "phonons")}


class TorchSession(Session):
    """A torch model for one spec, with the backend's fault (if any) injected throughout."""

    backend: "TorchBackend"

    @contextlib.contextmanager
    def _injected(self) -> Iterator[None]:
        with inject(self.backend.opts.get("fault")):
            yield

    @property
    def torch_dtype(self) -> torch.dtype:
        return _TORCH_DTYPES[self.spec.dtype]

    def _model(self, **overrides) -> tm.OnePhonon:
        s = self.spec
        return tm.OnePhonon(s.pdb_path, *s.samplings, device=s.device, dtype=self.torch_dtype,
                            **{**s.model_kwargs, **overrides})

    def _build(self) -> None:
        self.model = None
        with self._injected():
            try:
                self.model = self._model()
            except Exception as exc:
                # The steps that completed stay comparable (eryx.models_torch.OnePhonon.BUILD_STEPS).
                self.model = getattr(exc, "partial_model", None)
                raise

    def _need(self) -> tm.OnePhonon:
        if self.model is None:
            raise self.build_error or NotProvided("the torch model was not built")
        return self.model

    def get(self, name: str) -> Any:
        with self._injected():
            return super().get(name)

    def crossfeed(self, name: str, inputs: Mapping[str, Any]) -> Any:
        with self._injected():
            return super().crossfeed(name, inputs)

    # -- quantities
    def _compute(self, name: str) -> Any:
        if name == "F_hkl":
            return gemmi_free_F_hkl(self._need().crystal, self.spec.oracle_hkl)
        getter = _QUANTITIES.get(name)
        if getter is None:
            raise NotProvided(f"the torch backend does not provide {name}")
        return getter(self)

    def _grad_gamma(self, which: str) -> np.ndarray:
        """d sum(Id) / d gamma: both gammas come from one backward pass (kept for the other)."""
        self._need()
        names = ("grad_gamma_intra", "grad_gamma_inter")
        g = {k: torch.tensor(float(self.spec.params[k]), dtype=torch.float64, requires_grad=True)
             for k in ("gamma_intra", "gamma_inter")}
        total = torch.nansum(self._model(**g).apply_disorder())
        if not total.requires_grad:
            # No finite point (every grid point at a Bragg k): sum(finite Id) is 0 for any gamma.
            grads = dict.fromkeys(names, 0.0)
        else:
            both = torch.autograd.grad(total, list(g.values()), allow_unused=True)
            grads = {k: 0.0 if d is None else d.item() for k, d in zip(names, both)}
        for k in names:  # the other gamma's gradient is this backward's too (get() caches it)
            if k != f"grad_{which}":
                self._cache.setdefault(k, (True, np.array([grads[k]])))
        return np.array([grads[f"grad_{which}"]])

    def _q_mode(self, q: torch.Tensor) -> torch.Tensor:
        return self._model(q_vectors=q).apply_disorder()

    def _grad_q(self, given: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """d Id / d q at the spec's sample, (n_sample, 3); NaN where Id is NaN.

        ``given``: quantities (q_grid; hessian, Amat, xyz, ADP) that replace the model's
        own before the map is computed (cross-feeding).
        """
        given = dict(given or {})
        idx = torch.as_tensor(self.spec.grad_q_sample, device=self._need().device)
        q_grid = given.pop("q_grid", self.model.q_grid)
        q = q_grid[idx].detach().clone().requires_grad_(True)
        model = self._model(q_vectors=q)
        for name, value in given.items():
            setattr(model, name, value)
        Id = model.apply_disorder()
        finite = torch.isfinite(Id)
        grad = torch.full_like(q, math.nan)
        if bool(finite.any()):
            (g,) = torch.autograd.grad(Id[finite].sum(), q)
            grad = torch.where(finite[:, None], g, grad)
        return grad.detach()

    def timed_phase(self, phase: str) -> Callable[[], Any]:
        """See :meth:`Session.timed_phase`: phases 1-3 rerun the model's build steps of
        :data:`TIMED_STEPS` on a shallow copy (phase 2 adds the structure factors at the q
        sample), phase 4 is ``apply_disorder()``; CUDA work is synchronised before returning,
        and the backend's fault (if any) is injected."""
        if phase not in TIMED_PHASES:
            return super().timed_phase(phase)
        device = tm.resolve_device(self.spec.device)
        if phase == "end_to_end":  # a fresh model: this session's own is not built for it
            work: Callable[[], Any] = lambda: self._model().apply_disorder()  # noqa: E731
        elif phase == "4":
            work = self.build()._need().apply_disorder
        else:
            m = self.build()._need()
            steps = [step for step in m.BUILD_STEPS if step[0] in TIMED_STEPS[phase]]
            q = m.q_grid[torch.as_tensor(self.spec.q_sample, device=m.device)]

            def work() -> Any:
                run_build_steps(copy.copy(m), steps)
                return m.structure_factors(q) if phase == "2" else None

        def timed() -> Any:
            with self._injected():
                out = work()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return out

        return timed

    def dtypes(self) -> dict:
        m = self._need()
        return {k: str(v.dtype).removeprefix("torch.") for k, v in vars(m).items() if isinstance(v, torch.Tensor)}

    # -- cross-feeding
    def tensor(self, x: Any, complex_: bool | None = None) -> torch.Tensor:
        """Another backend's array as a tensor of this session's device and precision."""
        m = self._need()
        arr = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        if arr.dtype == torch.bool or not (arr.is_floating_point() or arr.is_complex()):
            return arr.to(device=m.device)
        want = m.complex_dtype if (arr.is_complex() if complex_ is None else complex_) else m.real_dtype
        return arr.to(device=m.device, dtype=want)

    def _crossfeed(self, name: str, inputs: Mapping[str, Any]) -> Any:
        fn = CROSSFEED[name]
        params = inspect.signature(fn).parameters
        kwargs = {p: self.tensor(inputs[p]) for p in list(params)[1:]}
        return fn(self, **kwargs)

    def crossfed_model(self, inputs: Mapping[str, torch.Tensor]) -> tm.OnePhonon:
        """A copy of the model whose map stage reads the given (reference) quantities."""
        m = copy.copy(self._need())
        m.ADP, m.Amat, m.xyz, m.adp = inputs["ADP"], inputs["Amat"], inputs["xyz"], inputs["adp"]
        m.q_grid, m.res_mask, m.bz_index = inputs["q_grid"], inputs["res_mask"], inputs["bz_index"]
        n_dof = m.n_dof
        m._K_all = inputs["K"].reshape(-1, n_dof, n_dof)
        m._Winv_all = inputs["Winv"].reshape(-1, n_dof)
        m._V_all = inputs["V"].reshape(-1, n_dof, n_dof)
        return m


_QUANTITIES: dict[str, Callable[[TorchSession], Any]] = {
    **{name: (lambda n: lambda s: getattr(s._need(), n))(name) for name in (
        "cell", "A_inv", "unit_cell_axes", "xyz", "asu_xyz", "adp", "masses", "ff_a", "ff_b", "ff_c",
        "cell_origin", "hkl_grid", "q_grid", "res_mask", "kvec", "kvec_norm", "bz_index", "Amat",
        "M_allatoms", "Mmat", "Linv", "hessian_allatoms", "hessian", "K", "Kinv", "D", "Winv", "V", "U",
        "covar", "ADP")},
    "n_asu": lambda s: np.int64(s._need().n_asu),
    "map_shape": lambda s: np.array(s._need().map_shape),
    "form_factors": lambda s: st.form_factors(torch.sum(s.model.q_grid[s.spec.q_sample] ** 2, dim=1),
                                              s._need().ff_a[0], s.model.ff_b[0], s.model.ff_c[0]),
    # the model's own public method (chunked), not only the stage function it calls
    "structure_factors": lambda s: s._need().structure_factors(s.model.q_grid[s.spec.q_sample], use_data_adp=True),
    "Id": lambda s: s._need().apply_disorder(),
    "mode_maps": lambda s: s._need().mode_maps(),
    "Id_data_adp": lambda s: s._need().apply_disorder(use_data_adp=True),
    "Id_qvectors": lambda s: s._q_mode(s._need().q_grid),
    "Id_q_sample": lambda s: s._q_mode(s._need().q_grid[s.spec.q_sample]),
    "Id_q_offgrid": lambda s: s._q_mode(s._need().q_grid[s.spec.grad_q_sample] + s.tensor(s.spec.offgrid_shift_q)),
    "d_spacing": lambda s: _cf_d_spacing(s, s._need().hkl_grid, s.model.cell),
    "grad_gamma_inter": lambda s: s._grad_gamma("gamma_inter"),
    "grad_gamma_intra": lambda s: s._grad_gamma("gamma_intra"),
    "grad_q": lambda s: s._grad_q(),
    "dtypes": lambda s: s.dtypes(),
}


# ---------------------------------------------------------------- cross-feeding
# One function per quantity: (session, **inputs named as quantities) -> the quantity.
def _cf_hkl_grid(s: TorchSession):
    return st.generate_grid([tuple(x) for x in s.spec.samplings], dtype=s.model.real_dtype, device=s.model.device)


def _cf_d_spacing(s, hkl_grid, cell):
    hkl = hkl_grid[torch.as_tensor(s.spec.q_sample, device=hkl_grid.device)]
    return torch.stack([st.resolution(hkl, cell), st.resolution(hkl, s.tensor(PROBE_CELL))])


def _cf_q_grid(s, hkl_grid, A_inv):
    return st.q_from_hkl(hkl_grid, A_inv)


def _cf_res_mask(s, hkl_grid, cell):
    return st.res_mask(hkl_grid, cell, s.spec.params["res_limit"])


def _cf_kvec(s, A_inv):
    return st.build_kvec(A_inv, s.spec.oversampling)


def _cf_kvec_norm(s, kvec):
    return st.kvec_norm(kvec)


def _cf_bz_index(s):
    return st.grid_bz_index(s.spec.map_shape, s.spec.oversampling, s.model.device)


def _cf_Amat(s, asu_xyz):
    return st.build_A(asu_xyz)


def _cf_M_allatoms(s, masses, n_asu):
    return st.build_M_allatoms(masses, int(n_asu))


def _cf_Mmat(s, Amat, masses):
    return st.build_Mmat(Amat, masses)


def _cf_Linv(s, Mmat):
    return st.build_Linv(Mmat)


def _cf_form_factors(s, q_grid, ff_a, ff_b, ff_c):
    q = q_grid[s.spec.q_sample]
    return st.form_factors(torch.sum(q * q, dim=1), ff_a[0], ff_b[0], ff_c[0])


def _cf_structure_factors(s, q_grid, xyz, ff_a, ff_b, ff_c, adp, Amat):
    return st.structure_factors(q_grid[s.spec.q_sample], xyz, ff_a[0], ff_b[0], ff_c[0],
                                adp[0] / (8 * math.pi**2), Amat)


def _cf_hessian(s, Amat):
    m = s.model
    Hi, He = st.hessian_unit_blocks(m.contacts, Amat, m.n_asu)
    return st.combine_hessian(Hi, He, m.gamma_intra, m.gamma_inter)


def _cf_K(s, hessian, kvec, cell_origin):
    return st.build_K(hessian, kvec.reshape(-1, 3), cell_origin)


def _cf_D(s, K, Linv):
    return st.dynamical_matrix(K, Linv)


def _phonons(K, Linv):
    D = st.dynamical_matrix(K, Linv)
    Winv, U = st.phonons(D)
    return D, Winv, U, st.mass_weighted_modes(U, Linv)


def _cf_Winv(s, K, Linv):
    return _phonons(K, Linv)[1].reshape(tuple(s.spec.oversampling) + (-1,))


def _cf_V(s, K, Linv):
    V = _phonons(K, Linv)[3]
    return V.reshape(tuple(s.spec.oversampling) + V.shape[-2:])


def _cf_U(s, K, Linv):
    return _phonons(K, Linv)[2]


def _cf_Kinv(s, K):
    return st.pinv_hermitian(K)


def _adp(s, Kinv, kvec, cell_origin, Amat, adp):
    covar = st.covariance(Kinv, kvec.reshape(-1, 3), cell_origin)
    return st.adp_scaled(covar, Amat, adp)


def _cf_ADP(s, Kinv, kvec, cell_origin, Amat, adp):
    return _adp(s, Kinv, kvec, cell_origin, Amat, adp)[0]


def _cf_covar(s, Kinv, kvec, cell_origin, Amat, adp):
    return _adp(s, Kinv, kvec, cell_origin, Amat, adp)[1]


def _map_inputs(ADP, Amat, xyz, adp, q_grid, res_mask, bz_index, K, Winv, V) -> dict:
    return dict(ADP=ADP, Amat=Amat, xyz=xyz, adp=adp, q_grid=q_grid, res_mask=res_mask, bz_index=bz_index,
                K=K, Winv=Winv, V=V)


def _cf_Id(s, ADP, Amat, xyz, adp, q_grid, res_mask, bz_index, K, Winv, V):
    return s.crossfed_model(_map_inputs(ADP, Amat, xyz, adp, q_grid, res_mask, bz_index, K, Winv, V)).apply_disorder()


def _cf_mode_maps(s, ADP, Amat, xyz, adp, q_grid, res_mask, bz_index, K, Winv, V):
    return s.crossfed_model(_map_inputs(ADP, Amat, xyz, adp, q_grid, res_mask, bz_index, K, Winv, V)).mode_maps()


def _cf_Id_data_adp(s, ADP, Amat, xyz, adp, q_grid, res_mask, bz_index, K, Winv, V):
    m = s.crossfed_model(_map_inputs(ADP, Amat, xyz, adp, q_grid, res_mask, bz_index, K, Winv, V))
    return m.apply_disorder(use_data_adp=True)


def _cf_grad_q(s, q_grid, hessian, Amat, xyz, ADP):
    # The q-mode recomputes K(k(q)), F(q) and the map from the given sample points and
    # upstream quantities; only the q-dependence (and its derivative) is the candidate's own.
    return s._grad_q({"q_grid": q_grid, "hessian": hessian, "Amat": Amat, "xyz": xyz, "ADP": ADP})


#: Quantity -> its cross-feed ``fn(session, *inputs)``: the candidate's computation of the
#: quantity on given inputs (their names are the function's parameters, in order).
#: Written out, not gathered by name: a function is a cross-feed because it is listed here.
CROSSFEED: dict[str, Callable[..., Any]] = {
    "hkl_grid": _cf_hkl_grid, "d_spacing": _cf_d_spacing, "q_grid": _cf_q_grid, "res_mask": _cf_res_mask,
    "kvec": _cf_kvec, "kvec_norm": _cf_kvec_norm, "bz_index": _cf_bz_index, "Amat": _cf_Amat,
    "M_allatoms": _cf_M_allatoms, "Mmat": _cf_Mmat, "Linv": _cf_Linv, "form_factors": _cf_form_factors,
    "structure_factors": _cf_structure_factors, "hessian": _cf_hessian, "K": _cf_K, "D": _cf_D, "Winv": _cf_Winv,
    "V": _cf_V, "U": _cf_U, "Kinv": _cf_Kinv, "ADP": _cf_ADP, "covar": _cf_covar, "Id": _cf_Id,
    "mode_maps": _cf_mode_maps, "Id_data_adp": _cf_Id_data_adp, "grad_q": _cf_grad_q,
}


def crossfeed_inputs(name: str) -> tuple[str, ...]:
    """The input quantities of the cross-feed of ``name`` (its parameter names)."""
    return tuple(list(inspect.signature(CROSSFEED[name]).parameters)[1:])


class TorchBackend(Backend):
    """The project's PyTorch port: vectorised, any device, float64 or float32, differentiable."""

    name = "torch"
    description = "this project's PyTorch port (eryx.models_torch.OnePhonon)"
    options = ("fault",)
    takes_path = takes_python = False

    def __init__(self, *, path: str | None = None, python: str | None = None, **options: Any) -> None:
        super().__init__(path=path, python=python, **options)
        fault = self.opts.get("fault")
        if fault:
            try:
                get_fault(fault)
            except KeyError as exc:
                raise ValueError(exc.args[0]) from None

    @classmethod
    def static_provides(cls) -> frozenset[str]:
        return frozenset(_QUANTITIES) | {"F_hkl"}

    @classmethod
    def static_crossfeeds(cls) -> frozenset[str]:
        return frozenset(CROSSFEED)

    def provides(self) -> frozenset[str]:
        return self.static_provides()

    def crossfeeds(self) -> frozenset[str]:
        return self.static_crossfeeds()

    def check_spec(self, spec: RunSpec) -> None:
        tm.resolve_device(spec.device)

    def open(self, spec: RunSpec) -> TorchSession:
        return TorchSession(self, spec)

    def info(self) -> dict:
        return {"name": self.name, "description": self.description, "version": package_version(),
                "origin": f"eryx.models_torch ({tm.__file__})", "commit": git_commit(),
                "torch": torch.__version__, "fault": self.opts.get("fault")}
