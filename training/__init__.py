"""Training: dataset readers, samplers, losses and training commands for the project's models."""
