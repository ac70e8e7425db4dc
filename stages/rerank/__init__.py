"""Re-ranking of a retrieval shortlist: CarGait cross-attention over strips, k-reciprocal baseline."""
