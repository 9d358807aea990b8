"""What an id may look like: safe in a URL path, a DynamoDB key and a Fly machine name."""

from __future__ import annotations

import re

MAX_ID_LENGTH = 128
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")


def id_problem(value: object, what: str) -> str | None:
    """Why `value` is not a usable id, or None when it is."""
    if not isinstance(value, str) or not value:
        return f"{what} must be a non-empty string"
    if len(value) > MAX_ID_LENGTH:
        return f"{what} is longer than {MAX_ID_LENGTH} characters"
    if ".." in value or not _ID.match(value):
        return f"{what} may contain only letters, digits and . _ : @ - (no '/', '..' or control characters)"
    return None
