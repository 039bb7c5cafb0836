"""Training: optimiser, step, loop."""
