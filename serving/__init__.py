"""The Showroom web app: ``create_app`` factory (``flask --app serving run``, ``gunicorn "serving:create_app()"``).

``create_app`` is looked up lazily: asking for it is the app's entry point, so the environment
defaults (``engine.runtime.configure_environment``) are set first, before ``serving.app`` loads
TensorFlow. Importing ``serving`` itself loads nothing heavy, so its light parts (such as the
``serving.hostile`` client) start quickly.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    """``create_app``, imported on first use after the environment is configured."""
    if name == "create_app":
        from engine.runtime import configure_environment

        configure_environment()
        from serving.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
