"""Which worker errors are permanent: the one table, keyed by the `error_code` the TIFF
worker sends beside `error` (worker/exceptions.py names them; README "Retries").

Permanent means a new machine would get the same bytes and give the same answer, so the
task fails at once. Everything else is retried while attempts remain. A code this table
does not know (a newer worker) is retried: the attempt limit still ends it, and a wrong
retry costs a machine while a wrong failure loses a file. Only a callback without a code
(the seed's worker) is judged by its wording, as before.
"""

from __future__ import annotations

import re

PERMANENT = "permanent"
RETRY = "retry"
OUT_OF_MEMORY = "out_of_memory"  # retried on a machine with twice the memory (machine_size.py)
# The pool worker read the header and the image needs more memory than its machine has while
# the pool has larger tiers (`memory_mb` says how much): retried on a tier that fits (pool/large.py).
NEEDS_MEMORY = "needs_memory"

ERROR_CODES: dict[str, str] = {
    "input_missing": PERMANENT,  # R2 has no such key (404, NoSuchKey)
    "not_tiff": PERMANENT,  # the file does not start with a TIFF header
    "corrupt": PERMANENT,  # a TIFF, but truncated or damaged
    "unsupported": PERMANENT,  # a valid TIFF of a kind no decoder renders
    "too_large": PERMANENT,  # over the pixel limit (a bomb, or a scan past WORKER_MAX_PIXELS)
    OUT_OF_MEMORY: RETRY,  # the machine was too small (or the OOM killer struck)
    NEEDS_MEMORY: RETRY,  # too small a pool machine, said before converting
    "transfer_failed": RETRY,  # download/upload failed: network, 5xx, throttling
    "timeout": RETRY,  # the conversion ran past its wall-clock limit
    "internal": RETRY,  # a bug or a bad environment: maybe not on the next machine
}

# The fallback for workers that send no code: the seed's wording.
PERMANENT_WORDING = re.compile(
    r"\b404\b|not ?found|nosuchkey|no such key|not a tiff|cannot identify|unidentified|"
    r"corrupt|truncated|unsupported|decompression ?bomb|too many pixels|exceeds .*pixel|"
    r"invalid tiff|not a valid",
    re.IGNORECASE,
)


def is_permanent(error_code: object, error: str | None) -> bool:
    """Fail at once (True) or retry (False), from the code; from the text only when no
    code was sent."""
    if isinstance(error_code, str) and error_code:
        return ERROR_CODES.get(error_code, RETRY) == PERMANENT
    return bool(PERMANENT_WORDING.search(error or ""))
