"""Named failures of the worker. Every message is what the error callback says, so it
must be precise, one line, and never carry a secret."""

from __future__ import annotations


class WorkerError(Exception):
    """Base class: anything the worker reports in an error callback."""


class ConfigError(WorkerError):
    """The environment lacks a variable of contracts §3 (or has a bad value)."""


class DownloadError(WorkerError):
    """The TIFF could not be fetched from R2."""


class UploadError(WorkerError):
    """The JPEG could not be stored in R2."""


class CallbackDeliveryError(WorkerError):
    """The callback could not be delivered after the bounded number of attempts."""


class ConversionError(WorkerError):
    """The TIFF could not be turned into a JPEG."""


class NotATiffError(ConversionError):
    """The file does not start with a TIFF header."""


class CorruptTiffError(ConversionError):
    """The file is a TIFF but truncated or damaged."""


class UnsupportedTiffError(ConversionError):
    """A valid TIFF of a kind the worker cannot render."""


class ImageTooLargeError(ConversionError):
    """More pixels than the configured limit (a decompression bomb or a huge scan)."""


class ConversionTimeoutError(ConversionError):
    """The conversion ran past the wall-clock limit and was stopped."""


class ConversionCrashedError(ConversionError):
    """The conversion process died (a signal, most likely the out-of-memory killer)."""
