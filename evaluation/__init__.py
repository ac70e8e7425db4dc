"""Evaluation: shared metrics and benchmark protocols (CASIA-B, mini-MARS) and one entry point per
learned stage, ``python -m evaluation.<stage> ...``."""
