"""``upstream-eryx``: the original NumPy eryx (apeck12/eryx, ``eryx.models.OnePhonon``) as a backend.

Their code runs in its own process (:mod:`parity.backends.external`), by
``parity/backends/workers/upstream_worker.py``, which applies two run-time shims (gemmi
0.7's removed ``UnitCell.fractionalization_matrix``; ``n_processes=1``) and maps their
attributes onto the contract (``docs/adapters.md`` has the table). Their numerics are
reported as they are: no fix is applied.

Usage: ``parity run --candidate upstream-eryx --candidate-path DIR`` where DIR is a checkout
of apeck12/eryx or its ``git archive`` snapshot (``.tar.gz``).
"""
from __future__ import annotations

from typing import ClassVar

from parity.contract.spec import RunSpec
from parity.backends.external import ExternalBackend

_NOT_MAPPED_D = ("not mapped by this adapter yet (their eryx.map_utils.compute_resolution could be called on "
                 "the probe cell; its use is compared through res_mask)")
_NO_Q_MODE = "apeck12/eryx has no arbitrary-q mode (its OnePhonon evaluates its own grid only)"
_NO_GRAD = "apeck12/eryx is NumPy code and computes no derivatives"

PROVIDED = frozenset({
    "cell", "A_inv", "unit_cell_axes", "n_asu", "xyz", "asu_xyz", "adp", "masses", "ff_a", "ff_b", "ff_c",
    "cell_origin", "hkl_grid", "map_shape", "q_grid", "res_mask", "kvec", "kvec_norm", "bz_index", "Amat",
    "M_allatoms", "Mmat", "Linv", "form_factors", "structure_factors", "F_hkl", "hessian_allatoms", "hessian", "K",
    "Kinv", "D", "Winv", "V", "U", "covar", "ADP", "Id", "mode_maps", "Id_data_adp", "dtypes",
})


class UpstreamEryxBackend(ExternalBackend):
    """apeck12/eryx (the original NumPy OnePhonon), run in a subprocess from a checkout or snapshot."""

    name = "upstream-eryx"
    description = "apeck12/eryx: the original NumPy eryx.models.OnePhonon, in its own process"
    repository = "apeck12/eryx"
    worker_script = "upstream_worker.py"
    marker = ("eryx/models.py", r"^class OnePhonon\b")
    refuse: ClassVar[dict[str, str]] = {
        "eryx/models_torch.py": "that is the slac-dynaboost PyTorch fork: use --candidate torch-port"}
    provided = PROVIDED
    missing: ClassVar[dict[str, str]] = {"Id_qvectors": _NO_Q_MODE, "Id_q_sample": _NO_Q_MODE, "grad_q": _NO_Q_MODE,
                                         "grad_gamma_inter": _NO_GRAD, "grad_gamma_intra": _NO_GRAD,
                                         "Id_q_offgrid": _NO_Q_MODE, "d_spacing": _NOT_MAPPED_D}
    shims: ClassVar[dict[str, str]] = {
        "gemmi.UnitCell.fractionalization_matrix": "removed in gemmi 0.7; given as a property returning the same "
                                                   "matrix, cell.frac.mat",
        "n_processes=1": "their constructor otherwise starts a multiprocess pool of 8 for every structure-factor call",
    }

    def check_spec(self, spec: RunSpec) -> None:
        super().check_spec(spec)
        if spec.device != "cpu":
            raise ValueError(f"{self.name} is NumPy code and runs on the CPU only; use --device cpu")
