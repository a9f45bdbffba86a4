"""Exceptions raised by the aepo binding, built from the library's status codes.

Every exception carries ``status`` (the C status), ``argument`` (the offending argument or
config path) and ``index`` (the element or row, or -1). Each also subclasses the matching
builtin, so ``except ValueError`` keeps working in code that does not know aepo.
"""


class AepoError(Exception):
    """Base class of every error raised by aepo."""

    status = 9

    def __init__(self, message, *, argument="", index=-1, status=None):
        super().__init__(message)
        self.argument = argument
        self.index = index
        if status is not None:
            self.status = status


class InvalidValueError(AepoError, ValueError):
    """A value outside its domain (T <= 0, a mask value other than 0/1, ...)."""

    status = 1
    c_name = "AEPO_ERR_INVALID_ARGUMENT"


class NullPointerError(InvalidValueError):
    """A required buffer was missing."""

    status = 2
    c_name = "AEPO_ERR_NULL_POINTER"


class ShapeError(AepoError, ValueError):
    """Sizes, strides, layout or dtype of an output buffer do not fit."""

    status = 3
    c_name = "AEPO_ERR_SHAPE"


class ConfigError(AepoError, ValueError):
    """The config document is malformed or breaks a rule; ``argument`` is the JSON path."""

    status = 4
    c_name = "AEPO_ERR_CONFIG"


class NonFiniteError(AepoError, FloatingPointError):
    """NaN or Inf where a finite value is required; ``index`` says where."""

    status = 5
    c_name = "AEPO_ERR_NON_FINITE"


class BufferTooSmallError(AepoError):
    """An output capacity is too small (the binding sizes its own buffers, so rare)."""

    status = 6
    c_name = "AEPO_ERR_BUFFER_TOO_SMALL"


class OutOfMemoryError(AepoError, MemoryError):
    """A scratch allocation failed."""

    status = 7
    c_name = "AEPO_ERR_OUT_OF_MEMORY"


class StateError(AepoError, ValueError):
    """A state blob is malformed or belongs to another config."""

    status = 8
    c_name = "AEPO_ERR_STATE"


class InternalError(AepoError):
    """A bug in libaepo; please report it."""

    status = 9
    c_name = "AEPO_ERR_INTERNAL"


class DTypeError(AepoError, TypeError):
    """An array of a non-numeric dtype was passed where numbers are needed."""

    status = 1


class DeviceError(InvalidValueError):
    """Tensors of one call live on different devices, or one is a ``meta`` tensor (aepo.torch)."""

    status = 1


# One class per library status; at import the binding checks this table against the
# library's own names (aepo_status_name), so a status added there cannot go unmapped here.
_BY_STATUS = {cls.status: cls for cls in (InvalidValueError, NullPointerError, ShapeError, ConfigError,
                                          NonFiniteError, BufferTooSmallError, OutOfMemoryError, StateError,
                                          InternalError)}


def error_for_status(status, message, argument="", index=-1):
    cls = _BY_STATUS.get(status, AepoError)
    return cls(message, argument=argument, index=index, status=status)
