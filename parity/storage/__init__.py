"""Storage: safe output files (``outputs``, ``inputs``) and the SQLite run history (``history``)."""
