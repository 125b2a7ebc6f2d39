"""THE ordered stage registry: the spine of the harness.

One entry per compared quantity, in phase order. The runner, the pytest parametrisation,
the HTML report, bisection, dumps and the history all read :data:`STAGES`; adding a stage
is adding one :class:`Stage` here (and, for a new quantity, one line in
``parity.contract.quantities`` and a getter in the backends that provide it).

A stage is data: which quantity it compares (``quantity``; the reference side may read
another, ``reference_quantity``), how (``kind`` and ``tier``), where an element lives
(``locate``), which quantities its computation consumes (``inputs``: bisection re-runs
the candidate's computation of this stage on the reference's values of them), and, for
derived stages, a function of both sides' quantities (``derive``). Invariants
(``kind='invariant'``) check the candidate alone; oracles (``kind='oracle'``) check the
reference against code neither backend uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from eryx.contacts import find_contacts

from parity.comparison.kinds import KIND_NAMES, Comparator, get_kind

from parity.contract.eigenclusters import cluster_eigenvalues
from parity.contract.conditioning import cluster_terms, far_terms
from parity.contract.run_view import RunView

#: The comparison kinds' names (the registry, :mod:`parity.comparison.kinds`, owns them).
KINDS = KIND_NAMES


@dataclass(frozen=True)
class Stage:
    """One compared quantity.

    Attributes
    ----------
    name, phase, tier, kind, description : str, int, str, str, str
        ``kind`` is one of :data:`KINDS` (a registered comparator or its class is accepted
        too and stored as its name).
    comparator : Comparator
        The kind's comparator from the registry (:mod:`parity.comparison.kinds`): how the
        stage is compared, diagnosed and cross-fed. Set from ``kind``.
    quantity : str
        The contract quantity both sides provide (default: the stage's name).
    reference_quantity : str
        What the reference provides instead, when it differs (default: ``quantity``).
    locate : 'grid' | 'bz' | 'bz_flat' | None
        How the worst element's index is named.
    inputs : tuple of str
        Quantities the candidate's computation of ``quantity`` consumes, in the order of
        its cross-feed (bisection feeds the reference's values of them).
    recomputes : tuple of str
        Quantities the stage's computation recomputes internally instead of reading them
        from ``inputs`` (``grad_q`` rebuilds K(k(q))): a defect there shows here even on
        the reference's inputs, so such a stage is inherited from a failing one of them,
        not a second root cause (``parity.running.causes``).
    reads : tuple of str
        For checks (invariants): the candidate quantities the check reads.
        ``inputs``, ``recomputes`` and ``reads`` together are the stage's edges in the
        input graph that tells root causes from inherited failures (``parity.running.causes``).
    derive : callable (run, side, value) -> value, optional
        A harness-side transformation of each side's quantity (e.g. cluster sums).
    check : str
        For invariants and oracles: the name of the check in ``parity.comparison.checks``
        (called as ``check(run, tier)`` with the stage's resolved tier).
    vacuous : callable (run) -> str or None, optional
        Why comparing this stage would be vacuous in this run (nothing to compare), or None.
    axes : tuple of str, optional
        Names of the compared array's axes in the stage's own terms, for the divergence
        diagnosis (``parity.diagnosis.signatures``); a grid map (n_q,) is analysed as (h, k, l).
    matrix_axes : tuple, optional
        The axes a transpose acts on (``()``: none; default: the last two when square).
    terms : callable (run) -> int or None, optional
        Terms of the longest floating-point sum behind one element (its round-off grows
        with it): the tier is scaled for it (``parity.contract.tiers.Tier.scaled``).
    require_nonzero : bool
        A pair that is zero everywhere on both sides compared nothing (a map that must not
        vanish): not comparable.
    view : tuple of int, optional
        Reshape both sides to this before diagnosing (-1 allowed): e.g. Amat's atom rows
        as (n_asu, n_at, 3, 6), so a fault reads "along atom", not "along atom row".
    """

    name: str
    phase: int
    tier: str
    kind: str
    description: str
    quantity: str = ""
    reference_quantity: str = ""
    locate: str | None = None
    inputs: tuple[str, ...] = ()
    recomputes: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    derive: Callable[[RunView, str, Any], Any] | None = None
    check: str | None = None
    vacuous: Callable[[RunView], str | None] | None = None
    axes: tuple[str, ...] | None = None
    matrix_axes: Any = None
    view: tuple[int, ...] | None = None
    terms: Callable[[RunView], int | None] | None = None
    require_nonzero: bool = False
    comparator: Comparator = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        try:
            comparator = get_kind(self.kind)
        except ValueError:
            raise ValueError(f"stage {self.name}: unknown kind {self.kind!r}; known kinds: "
                             f"{', '.join(KINDS)}") from None
        object.__setattr__(self, "kind", comparator.name)
        object.__setattr__(self, "comparator", comparator)
        if not self.quantity:
            object.__setattr__(self, "quantity", self.name)
        if not self.reference_quantity:
            object.__setattr__(self, "reference_quantity", self.quantity)

    @property
    def id(self) -> str:
        return f"phase{self.phase}::{self.name}"

    @property
    def is_map(self) -> bool:
        """An end-to-end intensity map: a run where it compared nothing is incomplete."""
        return self.phase == 4 and self.locate == "grid"

    @property
    def needs_reference(self) -> bool:
        return self.comparator.needs_reference


PHASE_TITLES = {
    1: "grid and precision",
    2: "A/M matrices and structure factors",
    3: "phonons and covariance",
    4: "end-to-end intensity",
}


# ---------------------------------------------------------------- derivations
def cluster_map(mode_maps: np.ndarray, Winv: np.ndarray, bz_index: np.ndarray, rank: int,
                rel_gap: float = 1e-6) -> np.ndarray:
    """Rank map summed over the eigenvalue cluster holding ``rank`` at each BZ point.

    Parameters
    ----------
    mode_maps : (n_q, n_dof)
    Winv : (n_bz, n_dof)
        Eigenvalues defining the clusters (the reference's, for both sides).
    bz_index : (n_q,) int
    """
    out = np.full(mode_maps.shape[0], np.nan)
    for b in range(Winv.shape[0]):
        members = next(cl for cl in cluster_eigenvalues(Winv[b], rel_gap=rel_gap) if rank in cl)
        rows = bz_index == b
        out[rows] = mode_maps[rows][:, members].sum(axis=1)
    return out


def _rank_last(n_dof: int) -> int:
    return min(7, n_dof - 1)


def _cluster(rank_of: Callable[[int], int]):
    """Both sides' mode maps summed over the reference's clusters, so both sum the same modes."""
    def derive(run: RunView, side: str, mode_maps: Any) -> np.ndarray:
        Winv = run.reference_value("Winv")
        n_dof = Winv.shape[-1]
        return cluster_map(np.asarray(mode_maps), Winv.reshape(-1, n_dof), run.reference_value("bz_index"),
                           rank_of(n_dof))
    return derive


def _cluster_terms(rank_of: Callable[[int], int]):
    """Size-scaling terms of a cluster map: its first-order perturbation bound under the
    two backends' difference in D (:mod:`parity.contract.conditioning`) over eps."""
    return cluster_terms(rank_of, lambda run: _terms(N_CELL + D_EXTRA)(run))


def _no_finite_map(run: RunView) -> str | None:
    """The gradient of sum(finite Id) is vacuously 0 when the map has no finite point."""
    if not np.isfinite(run.reference_value("Id")).any():
        return "the map has no finite point (every grid point at a Bragg k or outside the resolution limit): " \
               "d sum(finite Id) / d gamma is vacuously 0"
    return None


def _no_gradient_sample(run: RunView) -> str | None:
    if len(run.spec.grad_q_sample) == 0:
        return "no grid point off k = 0: d Id / d q has no sample point"
    return None


# ------------------------------------------------------- size scaling of tiers
#: Cells of the supercell summed into K(k) (ALGORITHM.md section 6).
N_CELL = 27
#: Terms of one entry of D = Linv K Linv^T beyond K's: two products with Linv's 6 x 6 blocks.
D_EXTRA = 2 * 6


def _contacts(run: RunView) -> dict | None:
    """The contact network of the reference's structure (computed once per run), or None."""
    def compute() -> dict | None:
        try:
            return find_contacts(run.reference_value("asu_xyz"), run.reference_value("cell_origin"),
                                 run.spec.params["gnm_cutoff"])
        except Exception:
            return None
    return run.cached("contacts", compute)


def _per_atom(run: RunView) -> int | None:
    """Most contacts of one atom: the terms of a diagonal entry of the all-atom Hessian."""
    c = _contacts(run)
    if c is None:
        return None
    n_at = run.reference_value("asu_xyz").shape[1]
    return int(np.bincount(c["i"] * n_at + c["a"]).max()) if c["i"].size else 1


def _per_asu(run: RunView) -> int | None:
    """Most contacts of one ASU: each adds a term to its diagonal block of the projected Hessian."""
    c = _contacts(run)
    if c is None:
        return None
    return int(np.bincount(c["i"]).max()) if c["i"].size else 1


def _terms(extra: int):
    def terms(run: RunView) -> int | None:
        n = _per_asu(run)
        return None if n is None else n + extra
    return terms


def _atoms_per_asu(run: RunView) -> int | None:
    return int(run.reference_value("asu_xyz").shape[1])


_BZ_MATRIX = ("BZ point", "dof row", "dof column")
_MAP_INPUTS = ("ADP", "Amat", "xyz", "adp", "q_grid", "res_mask", "bz_index", "K", "Winv", "V")
#: What the arbitrary-q mode recomputes at its own q (K(k(q)), its modes and inverse, F(q)), besides the map's inputs.
_Q_MODE = ("ADP", "Amat", "xyz", "adp", "q_grid", "res_mask", "hessian", "kvec", "K", "D", "Winv", "V", "Kinv",
           "structure_factors")
#: A gradient of sum(Id) recomputes the whole map (and the Hessian it differentiates through).
_WHOLE_MAP = _MAP_INPUTS + ("hessian", "Kinv", "Id")

STAGES: tuple[Stage, ...] = (
    # ---- phase 1: grid and precision
    Stage("hkl_grid", 1, "tight", "array", "Miller indices of the grid (h slowest, l fastest)", locate="grid",
          axes=("grid point", "hkl")),
    Stage("map_shape", 1, "exact", "exact", "grid dimensions (n_h, n_k, n_l)", axes=("axis",)),
    Stage("q_grid", 1, "tight", "array", "q = 2 pi A_inv^T hkl (1/A)", locate="grid", inputs=("hkl_grid", "A_inv"),
          axes=("grid point", "xyz")),
    Stage("res_mask", 1, "exact", "exact", "grid points inside the resolution limit", locate="grid",
          inputs=("hkl_grid", "cell"), axes=("grid point",)),
    Stage("d_spacing", 1, "tight", "array", "d-spacing of sampled hkl on the fixture's and a triclinic probe cell",
          inputs=("hkl_grid", "cell"), axes=("cell", "q sample"), matrix_axes=()),
    Stage("kvec", 1, "tight", "array", "k-vectors of the BZ points (1/A)", locate="bz", inputs=("A_inv",),
          axes=("dh", "dk", "dl", "xyz"), matrix_axes=()),
    Stage("kvec_norm", 1, "tight", "array", "|k|", locate="bz", inputs=("kvec",), axes=("dh", "dk", "dl", "norm"),
          matrix_axes=()),
    Stage("bz_index", 1, "exact", "exact", "grid point -> BZ point mapping (section 5)", locate="grid",
          axes=("grid point",)),
    Stage("dtype_audit", 1, "exact", "dtype", "every candidate intermediate at the requested precision",
          quantity="dtypes"),
    # ---- phase 2: matrices and scattering
    Stage("structure_oracle", 2, "exact", "oracle", "cell and ASU count vs gemmi's reading of the file",
          check="structure"),
    Stage("p1_oracle", 2, "oracle_symmetry", "oracle", "reference P1 expansion vs gemmi's space-group operations and packing",
          check="p1"),
    Stage("xyz", 2, "tight", "array", "P1-expanded coordinates (A)", axes=("ASU", "atom", "xyz"), matrix_axes=()),
    Stage("asu_xyz", 2, "tight", "array", "reference-cell ASU coordinates (A)", axes=("ASU", "atom", "xyz"),
          matrix_axes=(), recomputes=("xyz",)),
    Stage("Amat", 2, "tight", "array", "rigid-body projection A per ASU", inputs=("asu_xyz",),
          axes=("ASU", "atom", "xyz", "rigid-body dof"), matrix_axes=(), view=(0, -1, 3, 6), terms=far_terms()),
    Stage("M_allatoms", 2, "tight", "array", "all-atom mass matrix", inputs=("masses", "n_asu"),
          axes=("ASU", "atom row", "ASU", "atom row")),
    # Mmat = A^T M A recomputes the all-atom mass matrix M from the masses internally (never
    # forming it): a wrong mass shows in M_allatoms first, and Mmat inherits it (one root).
    Stage("Mmat", 2, "tight", "array", "projected mass matrix A^T M A", inputs=("Amat", "masses"),
          recomputes=("M_allatoms",), axes=("ASU", "dof", "ASU", "dof"), terms=far_terms()),
    Stage("Linv", 2, "decomposition", "array", "inverse lower Cholesky factor of Mmat (real)", inputs=("Mmat",),
          axes=("dof row", "dof column")),
    Stage("form_factors", 2, "tight", "array", "IT92 form factors at the q sample",
          inputs=("q_grid", "ff_a", "ff_b", "ff_c"), axes=("q sample", "atom"), matrix_axes=()),
    Stage("structure_factors", 2, "tight", "array", "projected F (n_q_sample, n_dof) at the q sample, file B factors",
          inputs=("q_grid", "xyz", "ff_a", "ff_b", "ff_c", "adp", "Amat"), axes=("q sample", "dof"), matrix_axes=(),
          terms=far_terms(_atoms_per_asu)),
    Stage("gemmi_oracle", 2, "oracle_gemmi", "oracle",
          "reference structure factors at integer hkl (B = 0) vs gemmi's StructureFactorCalculatorX",
          quantity="F_hkl", check="gemmi_sf"),
    # ---- phase 3: phonons and covariance
    # tight, not exact: the diagonal sums the gammas in another order than the reference.
    Stage("hessian_allatoms", 3, "tight", "array", "dense all-atom GNM Hessian",
          axes=("ASU", "atom", "cell", "ASU", "atom"), terms=_per_atom, recomputes=("asu_xyz", "cell_origin")),
    Stage("hessian", 3, "tight", "array", "projected Hessian (contacts vs dense)", inputs=("Amat",),
          recomputes=("hessian_allatoms",), axes=("ASU", "dof", "cell", "ASU", "dof"), terms=far_terms(_per_asu)),
    Stage("K", 3, "tight", "array", "K(k) per BZ point", locate="bz_flat", inputs=("hessian", "kvec", "cell_origin"),
          axes=_BZ_MATRIX, terms=far_terms(_terms(N_CELL))),
    Stage("D", 3, "tight", "array", "dynamical matrix Linv K Linv^T", locate="bz_flat", inputs=("K", "Linv"),
          axes=_BZ_MATRIX, terms=far_terms(_terms(N_CELL + D_EXTRA))),
    Stage("Winv", 3, "decomposition", "array", "1/w^2 per mode (NaN for zero modes)", locate="bz",
          inputs=("K", "Linv"), recomputes=("D",), axes=("dh", "dk", "dl", "mode"), matrix_axes=(), terms=_terms(N_CELL + D_EXTRA)),
    Stage("eigenspaces", 3, "decomposition", "eigenspace", "spectral projectors per eigenvalue cluster",
          quantity="V", locate="bz_flat", inputs=("K", "Linv"), axes=("BZ point", "mode"),
          recomputes=("D", "Winv"),  # one eigendecomposition gives the eigenvalues and the modes
          terms=_terms(N_CELL + D_EXTRA)),
    Stage("Kinv", 3, "decomposition", "array", "pseudo-inverse of K(k)", locate="bz_flat", inputs=("K",),
          axes=_BZ_MATRIX, terms=_terms(N_CELL)),
    Stage("covar", 3, "decomposition", "array", "scaled rigid-body covariance",
          inputs=("Kinv", "kvec", "cell_origin", "Amat", "adp"), axes=("ASU", "dof", "cell", "ASU", "dof"),
          terms=_terms(N_CELL)),
    # ADP recomputes the covariance from Kinv and shares its scale (derived from the ADPs).
    Stage("ADP", 3, "decomposition", "array", "scaled atomic displacement parameters",
          inputs=("Kinv", "kvec", "cell_origin", "Amat", "adp"), recomputes=("covar",), axes=("atom",),
          terms=_terms(N_CELL)),
    Stage("K_hermitian", 3, "exact", "invariant", "K(k) is Hermitian", check="K_hermitian",
          reads=("K",)),
    Stage("zero_modes", 3, "exact", "invariant", "exactly the zero modes the contact network predicts "
          "(three at k = 0)", check="zero_modes",
          reads=("Winv",)),
    # ---- phase 4: intensity
    Stage("Id", 4, "end_to_end", "array", "diffuse intensity, all modes", locate="grid", inputs=_MAP_INPUTS,
          require_nonzero=True),
    Stage("Id_cluster0", 4, "end_to_end", "array", "rank-0 map summed over its eigenvalue cluster",
          quantity="mode_maps", locate="grid", inputs=_MAP_INPUTS, derive=_cluster(lambda n: 0), require_nonzero=True,
          terms=_cluster_terms(lambda n: 0)),
    Stage("Id_cluster_last", 4, "end_to_end", "array", "rank-7 map summed over its eigenvalue cluster",
          quantity="mode_maps", locate="grid", inputs=_MAP_INPUTS, derive=_cluster(_rank_last), require_nonzero=True,
          terms=_cluster_terms(_rank_last)),
    Stage("Id_data_adp", 4, "end_to_end", "array", "intensity with the file's B factors", locate="grid",
          inputs=_MAP_INPUTS, require_nonzero=True),
    Stage("Id_qvectors", 4, "end_to_end", "array", "arbitrary-q mode at the grid's q vs the grid map",
          reference_quantity="Id", locate="grid", require_nonzero=True, recomputes=_Q_MODE),
    Stage("Id_q_offgrid", 4, "end_to_end", "array", "arbitrary-q mode between the grid's k-points "
          "(q-gradient sample + a fixed shift)", axes=("q point",), require_nonzero=True, recomputes=_Q_MODE),
    Stage("grad_gamma_inter", 4, "gradient", "gradient", "d sum(Id)/d gamma_inter (autograd or FD, per backend)",
          vacuous=_no_finite_map, require_nonzero=True, recomputes=_WHOLE_MAP),
    Stage("grad_gamma_intra", 4, "gradient", "gradient", "d sum(Id)/d gamma_intra (autograd or FD, per backend)",
          vacuous=_no_finite_map, require_nonzero=True, recomputes=_WHOLE_MAP),
    Stage("grad_q", 4, "gradient_q", "gradient", "d Id(q)/d q at sampled grid points (autograd or FD, per backend)",
          inputs=("q_grid", "hessian", "Amat", "xyz", "ADP"), axes=("q point", "q component"),
          recomputes=("kvec", "K", "Kinv", "structure_factors"),  # K(k(q)) and F(q) at its own q
          vacuous=_no_gradient_sample, require_nonzero=True),
    Stage("Id_nonnegative", 4, "exact", "invariant", "Id >= 0 off the Bragg points", check="nonnegative",
          reads=("Id",)),
    Stage("friedel", 4, "exact", "invariant", "Friedel symmetry Id(q) = Id(-q) on a symmetric grid",
          check="friedel", reads=("Id",)),
    Stage("qvectors_sample", 4, "end_to_end", "invariant", "arbitrary-q path equals the grid path at sampled points",
          check="qvectors_sample", reads=("Id", "Id_q_sample")),
)

STAGE_NAMES = tuple(s.name for s in STAGES)
_BY_NAME = {s.name: s for s in STAGES}


def get_stage(name: str) -> Stage:
    """The stage called ``name`` (KeyError listing the known names)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(STAGE_NAMES)}") from None


def select(phases=None, names=None, skip=None) -> list[Stage]:
    """Stages in registry order, filtered by phase numbers and/or names, minus ``skip``."""
    for n in list(names or ()) + list(skip or ()):
        get_stage(n)
    return [s for s in STAGES if (not phases or s.phase in phases) and (not names or s.name in names)
            and s.name not in (skip or ())]
