"""The harness's stages as parametrised pytest tests: ``phase3::eigenspaces[5zck_p1]``.

The tests are the package's own (:mod:`parity.testing.stage_tests`), imported here in the one line
a user's repository needs; the plugin parametrises them. Select with markers (``-m phase3``),
fixtures with ``--parity-fixture NAME`` (repeatable), the device with ``--parity-device``,
the backends with ``--reference`` and ``--candidate`` (and ``--reference-dump FILE``), and
write the CLI's JSON result with ``--parity-json FILE``.
"""
from parity.testing.stage_tests import test_stage  # noqa: F401
