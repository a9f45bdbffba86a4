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


class NullPointerError(InvalidValueError):
    """A required buffer was missing."""

    status = 2


class ShapeError(AepoError, ValueError):
    """Sizes, strides, layout or dtype of an output buffer do not fit."""

    status = 3


class ConfigError(AepoError, ValueError):
    """The config document is malformed or breaks a rule; ``argument`` is the JSON path."""

    status = 4


class NonFiniteError(AepoError, FloatingPointError):
    """NaN or Inf where a finite value is required; ``index`` says where."""

    status = 5


class BufferTooSmallError(AepoError):
    status = 6


class OutOfMemoryError(AepoError, MemoryError):
    status = 7


class StateError(AepoError, ValueError):
    """A state blob is malformed or belongs to another config."""

    status = 8


class InternalError(AepoError):
    status = 9


class DTypeError(AepoError, TypeError):
    """An array of a non-numeric dtype was passed where numbers are needed."""

    status = 1


class DeviceError(InvalidValueError):
    """Tensors of one call live on different devices, or one is a ``meta`` tensor (aepo.torch)."""

    status = 1


_BY_STATUS = {
    1: InvalidValueError,
    2: NullPointerError,
    3: ShapeError,
    4: ConfigError,
    5: NonFiniteError,
    6: BufferTooSmallError,
    7: OutOfMemoryError,
    8: StateError,
    9: InternalError,
}


def error_for_status(status, message, argument="", index=-1):
    cls = _BY_STATUS.get(status, AepoError)
    return cls(message, argument=argument, index=index, status=status)
