"""Evaluation: the protocol on held-out scenes, its CLI, plots, held-out lists and promotion to the registry."""
