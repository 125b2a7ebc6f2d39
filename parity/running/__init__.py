"""Running: one run of both sides through the stages (``runner``), cross-feeding for root
causes (``crossfeed``) and the nightly matrix (``nightly``)."""
