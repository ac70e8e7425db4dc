"""Evaluation: retrieval metrics, the CASIA-B protocol, embedding extraction and baselines."""
