"""The torch backend's cross-feed table is written out: nothing defined is left out of it."""
import inspect

from parity.backends import eryx_torch
from parity.contract.quantities import QUANTITY_NAMES


def test_every_cross_feed_function_is_in_the_table_under_its_quantity():
    defined = {name.removeprefix("_cf_"): fn for name, fn in vars(eryx_torch).items()
               if name.startswith("_cf_") and inspect.isfunction(fn)}
    assert eryx_torch.CROSSFEED == defined


def test_the_table_names_contract_quantities_fed_with_contract_quantities():
    for name in eryx_torch.CROSSFEED:
        assert name in QUANTITY_NAMES, name
        assert set(eryx_torch.crossfeed_inputs(name)) <= set(QUANTITY_NAMES), name
