"""The torch map engine (eryx/mapengine_torch.py): driven by models_torch's knobs, the same map at any chunking."""
from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import numpy as np
import torch

import eryx.mapengine_torch as me
import eryx.models_torch as tm
from eryx.fixtures import resolve_fixture

GRID = ((-2, 2, 2),) * 3


def test_the_knobs_of_models_torch_reach_the_engine_per_map(monkeypatch):
    m = tm.OnePhonon(str(resolve_fixture("synthetic")), *GRID)
    Id = m.apply_disorder()
    tables = me.grid_tables(m, False)
    blocks = list(range(int(np.prod(m.L))))
    default_units = me.grid_units(m, m.map_settings(), tables, blocks)
    monkeypatch.setattr(tm, "GRID_CHUNK_BYTES", 1)
    monkeypatch.setattr(tm, "GRID_CHUNK_MIN_POINTS", 1)
    monkeypatch.setattr(tm, "GRID_GROUP_BYTES", 1)
    monkeypatch.setattr(tm, "GRID_WORKERS", False)
    settings = m.map_settings()  # read now, not when the model was built
    assert (settings.grid_chunk_bytes, settings.grid_chunk_min_points, settings.grid_workers) == (1, 1, False)
    assert me.grid_chunk_points(m, settings) == 1
    small_units = me.grid_units(m, settings, tables, blocks)
    assert len(small_units) > len(default_units)
    # One point per chunk: the same map to round-off (the products' sizes differ).
    np.testing.assert_allclose(m.apply_disorder().numpy(), Id.numpy(), rtol=1e-13, atol=0, equal_nan=True)


def test_the_autograd_module_sits_above_the_engine_without_a_cycle():
    tree = ast.parse(Path(me.__file__).with_name("gridmap_torch.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert "mapengine_torch" in imported and not any("models_torch" in name for name in imported)
    engine = ast.parse(Path(me.__file__).read_text())
    assert not any(isinstance(node, (ast.Import, ast.ImportFrom)) and "gridmap" in ast.unparse(node)
                   for node in ast.walk(engine))


# ------------------------------------------------------------------ worker threads
def test_parallel_units_runs_every_unit_once_and_a_stalled_worker_holds_up_only_its_unit():
    """The workers pull units from one queue: while one worker is stuck on its first unit
    (as a thread descheduled on a shared machine), the other takes all the rest."""
    units = list(range(24))
    stuck = threading.Event()

    def run(subset):
        done = []
        for unit in subset:
            if not stuck.is_set():  # the first unit pulled anywhere stalls its worker
                stuck.set()
                time.sleep(0.5)
            done.append(unit)
        return done

    with me.torch_threads(2):
        parts = me.parallel_units(run, units, 2, size=lambda u: 1)
    assert len(parts) == 2
    assert sorted(u for part in parts for u in part) == units  # each unit exactly once
    stalled = min(parts, key=len)
    assert len(stalled) == 1 and max(map(len, parts)) == len(units) - 1, [len(p) for p in parts]


def test_parallel_units_restores_the_callers_thread_count_and_serial_is_one_part():
    before = torch.get_num_threads()
    with me.torch_threads(2):
        me.parallel_units(lambda s: list(s), [1, 2, 3], 2, size=lambda u: u)
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    assert me.parallel_units(lambda s: list(s), [1, 2, 3], 1) == [[1, 2, 3]]
