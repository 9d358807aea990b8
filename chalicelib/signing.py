"""Per-task, per-attempt callback tokens: HMAC-SHA256 over (batch id, task id, attempt);
and pool machines' tokens, over (batch id, machine name).

Each machine gets the token of its own attempt in `CALLBACK_TOKEN` and sends it back as
`Authorization: Bearer ...`. A token opens exactly one callback route for one attempt, so
a leaked token cannot complete another task, and one from an earlier attempt cannot speak
for a later one. Comparison is constant-time. The key (`CALLBACK_SIGNING_KEY`) comes from
SSM like every other secret and never leaves the orchestrator.
"""

from __future__ import annotations

import hashlib
import hmac


def callback_token(key: str, batch_id: str, task_id: str, attempt: int) -> str:
    message = f"{batch_id}\n{task_id}\n{attempt}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def machine_token(key: str, batch_id: str, machine_name: str) -> str:
    """A pool machine's token (docs/pool.md): bound to its batch and its name, so it pulls
    and heartbeats for that machine only. Its own prefix keeps it from ever equalling a
    callback token."""
    message = f"pool-machine\n{batch_id}\n{machine_name}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def standing_token(key: str, machine_name: str) -> str:
    """A standing pool machine's token (docs/pool.md "Standing pool"): bound to its name
    only, as it serves one batch after another; it pulls only in a batch where it holds a
    live stint (the claim's condition), so it speaks for itself and no other machine."""
    message = f"pool-standing\n{machine_name}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def valid_standing_token(key: str, machine_name: str, presented: str | None) -> bool:
    if not presented or not key:
        return False
    return _same(standing_token(key, machine_name), presented)


def _same(expected: str, presented: str) -> bool:
    """Constant-time equality of two texts, compared as UTF-8 bytes: `compare_digest` on
    str raises TypeError for non-ASCII, which a forged header must not turn into a 500."""
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "surrogatepass"))


def valid_machine_token(key: str, batch_id: str, machine_name: str, presented: str | None) -> bool:
    if not presented or not key:
        return False
    return _same(machine_token(key, batch_id, machine_name), presented)


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def valid_callback_token(key: str, batch_id: str, task_id: str, attempt: int, presented: str | None) -> bool:
    if not presented:
        return False
    return _same(callback_token(key, batch_id, task_id, attempt), presented)


def same_secret(expected: str, presented: str | None) -> bool:
    """Constant-time equality for shared secrets (the admin token)."""
    if not presented or not expected:
        return False
    return _same(expected, presented)
