"""scaling: scaling-law experiments in JAX/Flax (train sweeps, fit power laws, predict)."""

__version__ = "0.1.0"
