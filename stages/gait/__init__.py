"""Gait recognition (GADER's GAR on a GaitBase-style backbone): model, weights loading, stage."""
