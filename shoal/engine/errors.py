"""Errors the engine raises; each carries the HTTP status and Docker's wording.

shoal.api turns them into `{"message": ...}` responses; the CLI prints the message.
"""
from __future__ import annotations


class EngineError(Exception):
    """A refused request: `status` is the HTTP status Docker uses for it."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class NotFound(EngineError):
    status = 404


class InvalidParameter(EngineError):
    status = 400


class Conflict(EngineError):
    status = 409


class Forbidden(EngineError):
    status = 403


class NotModified(EngineError):
    status = 304
