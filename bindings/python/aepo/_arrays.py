"""Array conventions shared by every call (docs/API.md, "Python").

- Read-only float inputs in another float dtype or layout are converted to float32
  C-contiguous with one copy; float32 C-contiguous input is passed zero-copy.
- Outputs and in-place buffers must already be float32 and C-contiguous (ShapeError).
- Non-numeric dtypes raise DTypeError. Integer inputs accept any integer dtype.
"""
import ctypes

import numpy as np

from .errors import DTypeError, ShapeError


def _check_numeric(a, name):
    if a.dtype.kind not in "biuf":
        raise DTypeError(f"{name}: expected a numeric array, got dtype {a.dtype}", argument=name)


def float_in(x, name, ndim=None):
    """A read-only float32 C-contiguous view of ``x`` (one copy if it is not one already)."""
    a = np.asarray(x)
    _check_numeric(a, name)
    if ndim is not None and a.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        raise ShapeError(f"{name}: expected {ndim} dimensions, got shape {a.shape}", argument=name)
    return np.ascontiguousarray(a, dtype=np.float32)


def int_in(x, name, dtype, ndim=None):
    """An integer array of ``dtype`` (int32/int64), converted from any integer dtype."""
    a = np.asarray(x)
    if a.dtype.kind not in "iub":
        if a.dtype.kind == "f" and a.size and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            pass  # integral floats are accepted
        else:
            raise DTypeError(f"{name}: expected an integer array, got dtype {a.dtype}", argument=name)
    if ndim is not None and a.ndim != ndim:
        raise ShapeError(f"{name}: expected {ndim} dimensions, got shape {a.shape}", argument=name)
    return np.ascontiguousarray(a, dtype=dtype)


def mask_in(x, name, shape):
    """A uint8 mask of ``shape`` (bool or any integer dtype; values are checked by the library)."""
    a = np.asarray(x)
    if a.dtype.kind not in "biu":
        raise DTypeError(f"{name}: expected a bool or integer mask, got dtype {a.dtype}", argument=name)
    if a.shape != tuple(shape):
        raise ShapeError(f"{name}: expected shape {tuple(shape)}, got {a.shape}", argument=name)
    return np.ascontiguousarray(a, dtype=np.uint8)


def float_out(out, name, shape):
    """Checks a caller-supplied output buffer, or allocates one."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if not isinstance(out, np.ndarray):
        raise ShapeError(f"{name}: expected a numpy array, got {type(out).__name__}", argument=name)
    if out.dtype != np.float32:
        raise ShapeError(f"{name}: output buffers must be float32, got {out.dtype}", argument=name)
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ShapeError(f"{name}: output buffers must be writeable and C-contiguous", argument=name)
    if out.shape != tuple(shape):
        raise ShapeError(f"{name}: expected shape {tuple(shape)}, got {out.shape}", argument=name)
    return out


def ptr(a, ctype):
    """A ctypes pointer to an array's data (None for None)."""
    if a is None:
        return None
    return a.ctypes.data_as(ctypes.POINTER(ctype))
