"""The one device check: an unavailable ``--device`` is refused before any backend runs.

Every path that builds a run spec (:func:`parity.contract.spec.make_spec`: ``run``, ``bisect``,
``check``, ``dump``, the pytest plugin, the Python API) and ``parity bench`` call
:func:`check_device`, so every backend, a user's or an external one without its own
``check_spec`` included, sees only a device that exists here. The refusal is one line
(:class:`~eryx.errors.EryxInputError`: exit 2, or 128 under ``parity check``, where a
usage error must abort ``git bisect run``).
"""
from __future__ import annotations

from eryx.errors import EryxInputError

#: Device types the harness runs on (torch's names); "cpu" needs no torch at all.
DEVICE_TYPES = ("cpu", "cuda")


def check_device(device: str) -> str:
    """Return ``device`` when it names a device available here; raise EryxInputError naming why not.

    Parameters
    ----------
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (torch's notation).
    """
    text = str(device).strip()
    if text == "cpu":
        return text
    try:
        import torch
    except ImportError:
        raise EryxInputError(f"device {text!r} is not available: torch is not installed here "
                             f"(only 'cpu' works without it)") from None
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise EryxInputError(f"unknown device {text!r} ({_first_line(exc)}); use cpu, cuda or cuda:N") from None
    if dev.type not in DEVICE_TYPES:
        raise EryxInputError(f"device {text!r}: device type {dev.type!r} is not supported "
                             f"(supported: {', '.join(DEVICE_TYPES)})")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EryxInputError(f"device {text!r} is not available: no CUDA device is present on this machine")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise EryxInputError(f"device {text!r} is not available: this machine has {count} CUDA device(s) "
                                 f"(cuda:0 to cuda:{count - 1})")
    return text


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__
