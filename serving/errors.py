"""The service's client errors: raised anywhere in a request, answered as JSON with a 4xx."""

from __future__ import annotations


class ApiError(Exception):
    """A client error answered as JSON ``{"error": message}`` with a 4xx status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message
