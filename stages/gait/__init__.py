"""Gait recognition (GADER's GAR on a GaitBase-style backbone): model, weights loading, sequence
embedding, the embedding's per-part distance, stage."""
