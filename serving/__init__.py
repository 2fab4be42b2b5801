"""The Showroom web app: ``create_app`` factory (``flask --app serving run``)."""

from serving.app import create_app

__all__ = ["create_app"]
