"""Diagnosis: why two sides disagree (signatures) and which failure is the root (causes)."""
