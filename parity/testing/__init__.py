"""Testing: the pytest plugin (``plugin``, registered through ``pytest11``), the folded
data-setting skips (``skips``) and the packaged stage tests (``stage_tests``)."""
