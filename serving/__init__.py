"""The Showroom web app: ``create_app`` factory (``flask --app serving run``)."""

import engine  # noqa: F401  (sets the environment before TensorFlow and Ultralytics load)
from serving.app import create_app

__all__ = ["create_app"]
