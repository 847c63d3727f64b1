"""The one error type the server's handlers raise for a request it refuses: an HTTP status and
one readable sentence, sent as {"error": message}."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message
