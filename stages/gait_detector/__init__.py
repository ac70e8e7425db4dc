"""GADER gait detector: DHS, classifier, window detection, routing, training and evaluation."""
