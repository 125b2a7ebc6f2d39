"""The torch map engine (eryx/mapengine_torch.py): driven by models_torch's knobs, the same map at any chunking."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

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
