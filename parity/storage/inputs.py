"""What a command reads, checked before any work: the files its outputs must never replace,
options that do not apply to the chosen backend.

Kept free of heavy imports: the CLI imports it at start-up.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from eryx.fixtures import fixtures_dir as _fixtures_dir

from parity.contract.options import UsageError
from parity.storage.outputs import check_output_path


def fixture_file(fixture: str | None, fixtures_dir: str | None = None) -> Path | None:
    """The PDB file a ``--fixture`` value reads, when it names an existing file (else None).

    A path (``in.pdb``, ``dir/x.ent``) is the file itself; a bare name is ``NAME.pdb`` in the
    fixtures folder. Synthetic fixtures live in the project's cache and are not user files.

    Raises
    ------
    UsageError
        An empty value (it would silently mean the default fixture).
    """
    if fixture is None:
        return None
    if not str(fixture).strip():
        raise UsageError("--fixture names nothing (an empty value): give a fixture name or a PDB path")
    path = Path(str(fixture)).expanduser()
    if os.path.lexists(path):
        return path

    root = _fixtures_dir(fixtures_dir)
    if root is not None and os.sep not in str(fixture) and (root / f"{fixture}.pdb").is_file():
        return root / f"{fixture}.pdb"
    return None


def fixture_inputs(args: Any) -> dict[str, Path]:
    """``{"--fixture": PDB path}`` for the commands that read a fixture file (else empty)."""
    path = fixture_file(getattr(args, "fixture", None), getattr(args, "fixtures_dir", None))
    return {"--fixture": path} if path is not None else {}



def check_folder_output(path: str | os.PathLike, option: str) -> None:
    """Refuse, before any work, an output folder that is a file or cannot be created or written."""
    path = Path(path)
    if path.is_symlink() and not path.is_dir():
        raise UsageError(f"{option} {path} is a symbolic link that leads to no folder")
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a folder: give a folder for the reports")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: folder {existing} is not writable")


def check_nightly_outputs(db: str | os.PathLike, reports_dir: str | os.PathLike,
                          dashboard: str | os.PathLike | None) -> None:
    """What ``parity nightly`` writes, refused before the first run (not after the night's work).

    ``--db`` through a symbolic link would write into the link's target; ``--reports-dir``
    must be a folder; ``--dashboard`` a regular file or a new path in a writable folder.
    """
    if Path(db).is_symlink():
        raise UsageError(f"--db {db} is a symbolic link (to {os.readlink(db)}): give the history store's real "
                         "path")
    check_folder_output(reports_dir, "--reports-dir")
    if dashboard is not None:
        try:
            check_output_path(dashboard, "--dashboard")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
