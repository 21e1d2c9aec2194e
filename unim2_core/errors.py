"""Exceptions of unim2_core: one class per subsystem, all deriving from Unim2Error.

Messages name the offending path, key or value so the user can act on them; command-line
entry points catch Unim2Error, print ``ERROR: <message>`` and exit with status 1.
"""

from __future__ import annotations


class Unim2Error(Exception):
    """Base class of every error raised on purpose by unim2."""


class ConfigError(Unim2Error):
    """A configuration file or value is invalid (unknown key, wrong type, out of range)."""


class BackboneError(Unim2Error):
    """Backbone weights are missing, unreadable or do not match the architecture."""


class EncodingError(Unim2Error):
    """A raw modality array cannot be encoded (wrong dtype, shape, size or values).

    ``modality`` names the modality whose array is at fault (the name the caller gave, or the
    encoding kind when it gave none), so a caller can act on it, for example count the drop
    against that input, without reading the message; None when no single modality is to blame
    (a camera matrix, a mismatch between non-modality images).
    """

    def __init__(self, message: str, *, modality: str | None = None) -> None:
        super().__init__(message)
        self.modality = modality

    def __reduce__(self) -> tuple[type[EncodingError], tuple[str], dict[str, str | None]]:
        """Keeps ``modality`` through pickling (worker processes hand errors back this way)."""
        return (type(self), (str(self),), {"modality": self.modality})


class CheckpointError(Unim2Error):
    """A checkpoint bundle is unreadable, unsafe or does not match the running setup."""


class DataError(Unim2Error):
    """A dataset, folder or bag recording is missing files or holds inconsistent frames."""


class CacheError(Unim2Error):
    """The feature cache is unreadable or inconsistent."""


class TrainingError(Unim2Error):
    """Training cannot start or continue (for example an incompatible resume state)."""


class SearchError(Unim2Error):
    """A hyperparameter search cannot be created, resumed or completed."""


class Interrupted(KeyboardInterrupt):
    """A long command stopped on SIGINT / SIGTERM after saving what it needs to resume.

    A KeyboardInterrupt, so code that cleans up on Ctrl-C does so; the message says where the
    work stopped and ``signal_number`` which signal stopped it.
    """

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number


class ExportError(Unim2Error):
    """An ONNX export cannot be written, or an exported file cannot serve the given checkpoint."""


class ProviderError(ExportError):
    """ONNX Runtime's execution providers cannot serve the requested device or precision (none
    installed for it, or one that failed to start), as opposed to a problem with the file."""
