"""Evaluation: the protocol on held-out scenes, its CLI, plots, held-out lists and promotion to the registry."""

import engine  # noqa: F401  (sets the environment before TensorFlow and MLflow load)
