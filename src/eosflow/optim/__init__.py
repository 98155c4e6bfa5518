"""Optimizers for the Edge of Stability, as optax transformations."""
