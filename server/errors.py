"""Domain errors, each carrying the canonical status code TF Serving answers with.

Every layer raises these; each front end translates them in one place
(``api/grpc/errors.py`` for gRPC). Messages follow TF Serving's wording where
clients or tests may match on it.
"""

from __future__ import annotations

import enum
import errno


class Code(enum.IntEnum):
    """Canonical error codes, numbered as gRPC and ``tensorflow.error.Code`` number them."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class ServingError(Exception):
    code: Code = Code.UNKNOWN

    def __init__(self, message: str, code: Code | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidArgument(ServingError):
    code = Code.INVALID_ARGUMENT


class NotFound(ServingError):
    code = Code.NOT_FOUND


class FailedPrecondition(ServingError):
    code = Code.FAILED_PRECONDITION


class Unimplemented(ServingError):
    code = Code.UNIMPLEMENTED


class Internal(ServingError):
    code = Code.INTERNAL


class Unavailable(ServingError):
    """Overloaded for now (a full batching queue); the client may retry."""

    code = Code.UNAVAILABLE


class ResourceExhausted(ServingError):
    """More memory than the server grants a request, or an allocation that failed."""

    code = Code.RESOURCE_EXHAUSTED


class DeadlineExceeded(ServingError):
    """The caller's deadline passed before the model ran: the run is skipped."""

    code = Code.DEADLINE_EXCEEDED


class Cancelled(ServingError):
    """The caller went away (cancelled, disconnected): nobody waits for the answer."""

    code = Code.CANCELLED


class ServableNotFound(NotFound):
    """No available version answers the request (TF Serving's manager wording)."""

    def __init__(self, name: str, version: int | None = None) -> None:
        request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        super().__init__(f"Servable not found for request: {request}")


class ModelLoadError(ServingError):
    """A version could not be loaded; kept as that version's status."""

    code = Code.UNKNOWN


_OS_ERROR_CODES = {
    errno.ENOENT: Code.NOT_FOUND, errno.ENOTDIR: Code.NOT_FOUND,
    errno.EACCES: Code.PERMISSION_DENIED, errno.EPERM: Code.PERMISSION_DENIED,
    errno.EMFILE: Code.RESOURCE_EXHAUSTED, errno.ENFILE: Code.RESOURCE_EXHAUSTED,
    errno.ENOMEM: Code.RESOURCE_EXHAUSTED,
}


class BasePathUnavailable(ServingError):
    """A model's base path cannot be listed now; its served versions are kept."""

    def __init__(self, model: str, base_path: object, error: OSError) -> None:
        super().__init__(
            f"Cannot list base path {base_path} of model {model}: {error.strerror or error}; "
            "keeping the versions loaded",
            _OS_ERROR_CODES.get(error.errno or 0, Code.UNAVAILABLE),
        )


class VersionNotCopied(BasePathUnavailable):
    """A version in an object store could not be copied to the local cache; what serves
    is kept, and the next poll tries again (server/repository/storage.py)."""

    def __init__(self, model: str, version_path: object, error: OSError) -> None:
        ServingError.__init__(
            self,
            f"Cannot copy {version_path} of model {model} to the local cache: "
            f"{error.strerror or error}; keeping the versions loaded",
            _OS_ERROR_CODES.get(error.errno or 0, Code.UNAVAILABLE),
        )


class ConfigError(ServingError):
    """A bad flag or config file; the server refuses to start."""

    code = Code.INVALID_ARGUMENT
