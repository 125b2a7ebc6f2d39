"""parity locate on the peers (GPL-2 code run through the adapters, never copied or edited):
the upstream eryx's Amat divergence localised to the loop iteration where its reused
buffer first differs, the port's kvec divergence to its line."""
from __future__ import annotations

import pytest

from parity.locate.run import locate_probes
from parity.running.runner import make_run

from tests.backends.test_adapters import snapshot

GRID = ((-1, 1, 2), (-1, 1, 2), (-1, 1, 3))


def _locate(fixture_pdb, candidate: str, snapshot_prefix: str, stage: str):
    fixture_pdb("5zck_p1")
    run = make_run("5zck_p1", samplings=GRID, candidate=candidate, candidate_path=str(snapshot(snapshot_prefix)),
                   build=False)
    try:
        return locate_probes(run, stage)
    finally:
        run.candidate_session.close()


def test_upstream_amat_localised_to_the_loop_iteration(fixture_pdb):
    result = _locate(fixture_pdb, "upstream-eryx", "apeck12-eryx", "Amat")
    root = result.probes.root
    # Atom 0 of ASU 0 is right (the buffer starts at zero); atom 1 reads atom 0's leftovers.
    assert root is not None and root.first_bad == "A_block[asu=0, atom=1]", result.text()
    assert root.where_candidate.startswith("eryx/models.py:")  # their line: the np.hstack of their loop
    assert any("buffer reused across the loop" in s.sentence for s in result.probes.diagnosis)


@pytest.mark.slow
def test_port_kvec_localised_to_its_line(fixture_pdb):
    result = _locate(fixture_pdb, "torch-port", "slac-dynaboost-eryx", "kvec")
    root = result.probes.root
    assert root is not None and root.key == "kvec", result.text()
    assert root.where_candidate.startswith("eryx/models_torch.py:")
    # Its input, the fractional BZ coordinates, agrees: the line itself (a missing 2 pi) is wrong.
    assert [r.key for r in result.probes.results if r.status == "pass"] == ["bz_fraction"]
    assert "2 pi" in result.probes.diagnosis[0].sentence
