"""From the stage to the line: named probes across implementations and an operation-level
trace of torch code (``parity locate``, docs/locate.md).

- :mod:`parity.locate.probes`: recording, aligning and comparing ``eryx.probes`` probes;
- :mod:`parity.locate.trace`: a ``TorchDispatchMode`` recording every dispatched torch
  operation with its source line, aligned and compared between two runs of torch code;
- :mod:`parity.locate.run`: the driver behind ``parity locate``.
"""
from parity.locate.probes import ProbeLocation, ProbeRecorder, compare_probes  # noqa: F401
