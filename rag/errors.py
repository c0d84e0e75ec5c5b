"""Project errors. Every message says what went wrong and what to do about it."""


class RagError(Exception):
    """Base of every error the library raises on purpose."""

    exit_code = 1


class ModelNotFound(RagError):
    pass


class StoreError(RagError):
    """The index is missing, damaged, locked or built with another embedding model."""


class IndexMissing(StoreError):
    pass


class IndexMismatch(StoreError):
    pass


class IndexLocked(StoreError):
    pass


class UsageError(RagError):
    """Wrong usage: a bad value for an option, an argument or an environment variable."""

    exit_code = 2


class InputRefused(RagError):
    """One input file could not be read; the message names the file and the reason.
    `transient`: it failed for an operating-system reason (permission denied, I/O error), so
    what the index holds from it must be kept, not removed as gone."""

    def __init__(self, path: str, reason: str, transient: bool = False):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.transient = transient


class PromptError(RagError):
    pass


class QAFileError(RagError):
    pass
