"""Re-ranking of a retrieval shortlist: CarGait cross-attention over strips. Training:
:mod:`training.rerank`; evaluation (with the k-reciprocal baseline): :mod:`evaluation.rerank`."""
