"""``torch-port``: the slac-dynaboost PyTorch port (``eryx.models_torch.OnePhonon``) as a backend.

Their code runs in its own process (:mod:`parity.backends.external`), by
``parity/backends/workers/port_worker.py``, which maps their attributes onto the contract
(``docs/adapters.md`` has the table). No shim is needed; their numerics are reported as
they are. Gradients are their own autograd (d sum(finite Id) / d gamma through their
``requires_grad`` spring constants; d Id / d q through their arbitrary-q mode).

Usage: ``parity run --candidate torch-port --candidate-path DIR`` where DIR is a checkout of
slac-dynaboost/eryx or its ``git archive`` snapshot (``.tar.gz``). Their construction is
slow (minutes, and gigabytes, even on small grids: its Hessian is filled element by
element through autograd); raise ``PARITY_EXTERNAL_BUILD_TIMEOUT`` if needed.
"""
from __future__ import annotations

from typing import ClassVar

from parity.contract.spec import RunSpec
from parity.backends.external import ExternalBackend
from parity.backends.upstream import PROVIDED as _UPSTREAM

PROVIDED = _UPSTREAM | {"Id_qvectors", "Id_q_sample", "grad_q", "grad_gamma_inter", "grad_gamma_intra"}


class TorchPortBackend(ExternalBackend):
    """slac-dynaboost/eryx's PyTorch OnePhonon, run in a subprocess from a checkout or snapshot."""

    name = "torch-port"
    description = "slac-dynaboost/eryx: the PyTorch port eryx.models_torch.OnePhonon, in its own process"
    repository = "slac-dynaboost/eryx"
    worker_script = "port_worker.py"
    marker = ("eryx/models_torch.py", r"^class OnePhonon\b")
    provided = PROVIDED
    missing: ClassVar[dict[str, str]] = {
        "Id_q_offgrid": "not mapped by this adapter yet: it would need a third model of theirs in arbitrary-q mode "
                        "(their q-mode construction costs minutes on 5zck_p1)",
        "d_spacing": "not mapped by this adapter yet (their eryx.map_utils.compute_resolution could be called on "
                     "the probe cell; its use is compared through res_mask)"}
    shims: ClassVar[dict[str, str]] = {}

    def check_spec(self, spec: RunSpec) -> None:
        super().check_spec(spec)
        if spec.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"{self.name}: device {spec.device!r} requested but CUDA is not available here")
