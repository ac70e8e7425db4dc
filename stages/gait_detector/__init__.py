"""GADER gait detector: DHS, classifier, window detection, routing, stage. Training:
:mod:`training.gait_detector`; evaluation: :mod:`evaluation.gait_detector`."""
