"""File output shared by the harness: JSON that any reader accepts, written atomically.

Every file the harness writes (results, reports, the dashboard) goes through
:func:`write_text_atomic`: readers never see half a file, and an interrupted write
leaves the previous file in place.
"""
from __future__ import annotations

import json
import math
import os
import signal
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

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


def _staged(path: Path, write: Callable[[BinaryIO], None]) -> str:
    """A temporary file beside ``path`` holding what ``write(handle)`` wrote, synced, world-readable.

    Missing parent folders are created; mkstemp's 0600 would hide a report from a web
    server, hence 0644. On any failure the temporary file is removed and the error raised.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file through a temporary file in the same folder and ``os.replace``.

    ``write(handle)`` writes the content to a binary handle. Readers never see half a
    file, and on any failure the previous file stays in place. The path is not checked
    here (see :func:`write_text_atomic`).
    """
    tmp = _staged(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_together(files: Mapping[Path, str]) -> None:
    """Write every text file or none: all staged first, then replaced with Ctrl-C held off."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            data = text.encode("utf-8")
            temps.append((_staged(path, lambda handle: handle.write(data)), path))
        blocked = hasattr(signal, "pthread_sigmask")
        if blocked:
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for tmp, path in temps:
                os.replace(tmp, path)
        finally:
            if blocked:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
    finally:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically (:func:`write_atomic`).

    Refuses (:class:`OutputPathError`) a target that is not a regular file or a new path:
    replacing a device, a folder, a FIFO or a symbolic link would destroy it.
    """
    path = check_output_path(path)
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))
    return path


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Atomic JSON write that other tools can read (no NaN tokens)."""
    return write_text_atomic(path, json.dumps(json_safe(payload), indent=1, allow_nan=False))


class OutputPathError(ValueError):
    """An output location the harness must not or cannot write (a usage error, exit 2)."""


def check_output_path(path: str | os.PathLike, option: str = "output") -> Path:
    """Refuse, before any work, an output that is not a regular file or a new path in a writable folder.

    The atomic writer replaces whatever stands at the target: a device (``/dev/null``), a
    folder, a FIFO or a symbolic link would be destroyed or silently replaced. Missing
    parent folders are allowed (they are created) when the nearest existing ancestor is a
    writable folder.
    """
    if path is None or not os.fspath(path).strip():
        raise OutputPathError(f"{option} names no file (an empty path): give a file name")
    path = Path(path)
    text = os.fspath(path)
    label = f"{option} {text if len(text) <= 80 else text[:60] + '...' + text[-12:]}"
    _check_name_length(path, label)
    if path.is_symlink():
        raise OutputPathError(f"{label} is a symbolic link: refusing to replace it (give the real path)")
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a device, FIFO or socket)"
        raise OutputPathError(f"{label} is {kind}: refusing to replace it")
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"{label}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{label}: folder {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{label}: the file is not writable")
    return path


def _check_name_length(path: Path, label: str) -> None:
    """Refuse a file name longer than the file system allows (checked before the work, not at the write)."""
    # The atomic writer adds '.' + name + a random part + '.tmp' to the temporary file's name.
    longest = max((len(os.fsencode(part)) for part in path.parts if part not in ("/", "")), default=0)
    parent = path.parent
    while parent != parent.parent:  # the nearest folder that exists (stat fails on too long a name)
        try:
            if os.path.isdir(parent):
                break
        except (OSError, ValueError):
            pass
        parent = parent.parent
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if longest + 16 > name_max:
        raise OutputPathError(f"{label}: a name in the path is {longest} bytes long; this file system allows "
                              f"{name_max} (and {name_max - 16} for a file written atomically): use a shorter name")


def _file_key(value: Any) -> Any:
    """What identifies a file: device and inode when it exists (hard links too), else its real path.

    The path is resolved first (symbolic links, ``..`` through folders that do not exist
    yet), so ``sub/../in.pdb`` is ``in.pdb`` even before ``sub`` is created.
    """
    text = os.path.realpath(os.fspath(value))
    try:
        st = os.stat(text)
        return ("inode", st.st_dev, st.st_ino)
    except (OSError, ValueError):
        return ("path", os.path.realpath(text))


def same_file(a: Any, b: Any) -> bool:
    """Whether two paths name one file (the same inode, or the same resolved path)."""
    return _file_key(a) == _file_key(b)


def check_outputs(outputs: Mapping[str, Any], inputs: Mapping[str, Any] | None = None) -> None:
    """Refuse, before any work, outputs that would destroy an input or each other, or cannot be written.

    Parameters
    ----------
    outputs : mapping option -> path or None
        What the command will write (``--json``, ``--html``, ``--out``, ...).
    inputs : mapping option -> path or None
        What it reads: the fixture's PDB file, a result, dumps, the history store. An output
        naming an input (also through a symbolic or hard link) is refused.

    Raises
    ------
    OutputPathError
        Naming the option and the reason, in one line.
    """
    check_distinct_outputs(outputs)
    keys = {option: _file_key(path) for option, path in outputs.items() if path is not None and os.fspath(path)}
    for source, value in (inputs or {}).items():
        if value is None or not os.fspath(value):
            continue
        key = _file_key(value)
        for option, out_key in keys.items():
            if key == out_key:
                raise OutputPathError(f"{source} and {option} name the same file ({value}): refusing to "
                                      f"overwrite the input {source}; give {option} another path")
    for option, path in outputs.items():
        if path is not None:
            check_output_path(path, option)


def check_distinct_outputs(paths: Mapping[str, Any]) -> None:
    """Refuse two options naming the same file (one would overwrite the other), naming both.

    ``paths`` maps an option name (``--json``, ``--db``, ...) to its path or None; inputs can
    be listed too, so an output that is also an input is refused.
    """
    seen: dict[str, str] = {}
    for option, value in paths.items():
        if value is None or not os.fspath(value):
            continue
        key = _file_key(value)
        if key in seen:
            raise OutputPathError(f"{seen[key]} and {option} name the same file ({value}): refusing to "
                                  f"overwrite one with the other")
        seen[key] = option
