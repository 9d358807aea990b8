"""Named failures of the worker. Every message is what the error callback says, so it
must be precise, one line, and never carry a secret. Each class carries the
machine-readable `code` the error callback sends as `error_code` (README, "Retries"):
the orchestrator decides retry or fail from it, never from the wording."""

from __future__ import annotations


class WorkerError(Exception):
    """Base class: anything the worker reports in an error callback."""

    code = "internal"

    def callback_fields(self) -> dict[str, object]:
        """Fields the error callback carries beside `error` and `error_code`."""
        return {}


class ConfigError(WorkerError):
    """The environment lacks a variable of contracts §3 (or has a bad value)."""


class DownloadError(WorkerError):
    """The TIFF could not be fetched from R2."""

    code = "transfer_failed"


class InputMissingError(DownloadError):
    """R2 answered that the TIFF does not exist (404, NoSuchKey)."""

    code = "input_missing"


class UploadError(WorkerError):
    """The JPEG could not be stored in R2."""

    code = "transfer_failed"


class CallbackDeliveryError(WorkerError):
    """The callback could not be delivered after the bounded number of attempts."""


class ConversionError(WorkerError):
    """The TIFF could not be turned into a JPEG."""


class NotATiffError(ConversionError):
    """The file does not start with a TIFF header."""

    code = "not_tiff"


class CorruptTiffError(ConversionError):
    """The file is a TIFF but truncated or damaged."""

    code = "corrupt"


class UnsupportedTiffError(ConversionError):
    """A valid TIFF of a kind the worker cannot render."""

    code = "unsupported"


class ImageTooLargeError(ConversionError):
    """More pixels than the configured limit (a decompression bomb or a huge scan)."""

    code = "too_large"


class ConversionTimeoutError(ConversionError):
    """The conversion ran past the wall-clock limit and was stopped."""

    code = "timeout"


class NotEnoughMemoryError(ImageTooLargeError):
    """The image fits the pixel limit but not this machine's memory: a machine with
    more memory would convert it."""

    code = "out_of_memory"


class NeedsMemoryError(WorkerError):
    """Pool mode: the full-quality encoder does not fit this machine, and the pool has
    machines with more memory (the assignment's `max_memory_mb`). Nothing was decoded or
    uploaded; `memory_mb` (the machine memory full quality needs) goes into the callback
    so that the orchestrator retries the task on a machine of a tier that fits."""

    code = "needs_memory"

    def __init__(self, message: str, memory_mb: int):
        super().__init__(message, memory_mb)  # both in args: it pickles out of the child
        self.memory_mb = int(memory_mb)

    def __str__(self) -> str:
        return str(self.args[0])

    def callback_fields(self) -> dict[str, object]:
        return {"memory_mb": self.memory_mb}


class ConversionCrashedError(ConversionError):
    """The conversion process died (a signal, most likely the out-of-memory killer)."""


class ConversionKilledError(ConversionCrashedError):
    """The conversion process was killed by SIGKILL: the out-of-memory killer's signal."""

    code = "out_of_memory"


class Cancelled(Exception):  # noqa: N818 (an outcome, not an error: nothing is reported)
    """The work was called off by its caller: in pool mode the orchestrator dropped the
    task (heartbeat answer "drop"). Not a `WorkerError` on purpose: a dropped task gets
    no callback at all, so nothing may turn this into an error body."""


class PoolRejectedError(WorkerError):
    """The orchestrator refused this machine (401 bad token, 404 unknown machine or
    batch): there is nothing to do, pulling again cannot help."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class PoolUnavailableError(WorkerError):
    """The orchestrator did not answer usefully (network error, timeout, 5xx, a body
    that is not the protocol's): worth retrying for a while."""
