"""The batch console: one HTML page (its CSS and JS inline) served by the API itself.

No build step and no CDN: the page is chalicelib/console.html as written, read once per
cold start, and it reads the API's own JSON routes from the same origin. It must never
hold or embed a secret: the admin token is typed in by the operator and lives in a JS
variable of the tab (see the page's script).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

PAGE = Path(__file__).with_name("console.html")
# Inline script and style are the page's own; it talks only to its origin.
HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                                "base-uri 'none'; form-action 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@cache
def page() -> str:
    return PAGE.read_text(encoding="utf-8")
