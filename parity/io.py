"""File output shared by the harness: JSON that any reader accepts, written atomically.

Every file the harness writes (results, reports, the dashboard) goes through
:func:`write_text_atomic`: readers never see half a file, and an interrupted write
leaves the previous file in place.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np


def json_safe(obj: Any) -> Any:
    """Recursively turn ``obj`` into something ``json.dumps(allow_nan=False)`` accepts.

    NaN/inf become None (null), complex numbers ``{"re": .., "im": ..}``, NumPy scalars and
    arrays plain Python values, anything else its ``str``.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, (complex, np.complexfloating)):
        return {"re": json_safe(float(obj.real)), "im": json_safe(float(obj.imag))}
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return str(obj)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` via a temporary file in the same folder and ``os.replace``.

    Creates missing parent folders; the file is world-readable (mkstemp's 0600 would
    hide a report from a web server); the temporary file is removed on any failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Atomic JSON write that other tools can read (no NaN tokens)."""
    return write_text_atomic(path, json.dumps(json_safe(payload), indent=1, allow_nan=False))
