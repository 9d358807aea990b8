"""Errors the emulator answers with, in Fly's shape: `{"error": "..."}` and a status.

Never raised for anything but an answer to a client; internal bugs stay ordinary exceptions.
"""

from __future__ import annotations


class ApiError(Exception):
    """A request Fly would refuse: `status` is the HTTP status, `message` the error text."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": self.message}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def unprocessable(message: str) -> ApiError:
    return ApiError(422, message)


def not_found(message: str = "not found") -> ApiError:
    return ApiError(404, message)


def precondition_failed(message: str) -> ApiError:
    return ApiError(412, f"failed_precondition: {message}")


def rate_limited(retry_after_s: int) -> ApiError:
    return ApiError(429, "rate limit exceeded", {"Retry-After": str(max(1, retry_after_s))})
