"""Training: shared machinery (dataset readers such as CASIA-B, samplers, losses, checkpoints) and one
entry point per learned stage, ``python -m training.<stage> --config configs/train/...``."""
