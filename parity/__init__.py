"""Parity harness: proves the NumPy reference and the PyTorch port of OnePhonon agree."""
