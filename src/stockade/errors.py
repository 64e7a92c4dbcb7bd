"""The one error type of the API: an EC2 error code, a message and an HTTP status."""

from __future__ import annotations


class ApiError(Exception):
    """A client-visible EC2 error (``Response/Errors/Error/Code`` and ``Message``)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
