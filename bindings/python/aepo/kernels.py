"""Temperature-consistent log-probs, exact entropy and their gradient, straight from logits.

With T the policy temperature and z = logits / T, per row::

    lse  = log sum_v exp(z_v)
    logp = z_target - lse             (and, with logp_t1=True, the same at T = 1)
    H    = lse - sum_v softmax(z)_v z_v

``logits`` is [N, V] or [B, L, V] with any row and batch strides as long as the vocabulary
axis is contiguous, so the shifted view ``logits[:, :-1]`` of a [B, L+1, V] array is passed
without a copy. Other layouts and dtypes are converted with one copy (read-only input).
Per-row arrays (targets, mask, outputs) have the shape ``logits.shape[:-1]``.

Rows with mask = 0 are not read: their logits and targets may hold anything. Their outputs
are 0 and they do not count in the sums.
"""
import ctypes
from typing import NamedTuple, Optional

import numpy as np

from . import _lib
from ._arrays import float_in, int_in, mask_in
from .errors import DTypeError, ShapeError

__all__ = ["LogitsStats", "logits_stats", "logits_backward"]


class LogitsStats(NamedTuple):
    """Result of :func:`logits_stats`. Per-row arrays have shape ``logits.shape[:-1]``."""

    logp: Optional[np.ndarray]      # float32 log p(target) at T (None without targets)
    entropy: np.ndarray             # float32 exact entropy at T
    lse: np.ndarray                 # float64 log-sum-exp of logits / T (pass it to logits_backward)
    logp_t1: Optional[np.ndarray]   # float32 log p(target) at T = 1, or None
    entropy_sum: float              # sum of entropy over rows with mask = 1 (float64, row order)
    nll_sum: Optional[float]        # sum of -logp over rows with mask = 1 (None without targets)
    count: int                      # number of rows with mask = 1


def _numpy(x, name):
    """A numpy view of ``x``; torch tensors are detached (and moved to the CPU) first."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach") and hasattr(x, "numpy"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _view(a):
    """(B, L, V, stride_b, stride_l) of a float32 array whose last axis is contiguous and whose
    rows do not overlap, or None when the library cannot read it as it is."""
    if a.dtype != np.float32 or a.ndim not in (2, 3):
        return None
    if a.size == 0:
        # numpy reports zero strides for empty arrays; nothing is read, any valid layout does.
        b, l, v = (1,) + a.shape if a.ndim == 2 else a.shape
        return b, l, v, l * v, v
    if a.ndim == 2:
        dims = [(1, 0), (a.shape[0], a.strides[0])]
    else:
        dims = [(a.shape[0], a.strides[0]), (a.shape[1], a.strides[1])]
    v = a.shape[-1]
    if v > 1 and a.strides[-1] != 4:
        return None
    strides = []
    for n, s in dims:
        if n > 1 and (s <= 0 or s % 4):
            return None
        strides.append(s // 4 if n > 1 else 0)
    # The library's non-overlap rule, checked here so that such views get a copy instead.
    axes = sorted((s, n) for (n, _), s in zip(dims, strides) if n > 1)
    if axes and axes[0][0] < v:
        return None
    if len(axes) == 2 and axes[1][0] < axes[0][0] * axes[0][1]:
        return None
    return dims[0][0], dims[1][0], v, strides[0], strides[1]


def _logits_in(logits):
    """The logits as an array the library reads in place (one copy if needed) and its view."""
    a = _numpy(logits, "logits")
    if a.dtype.kind not in "biuf":
        raise DTypeError(f"logits: expected a numeric array, got dtype {a.dtype}", argument="logits")
    if a.ndim not in (2, 3):
        raise ShapeError(f"logits: expected [N, V] or [B, L, V], got shape {a.shape}", argument="logits")
    view = _view(a)
    if view is None:
        a = float_in(a, "logits")
        view = _view(a)
    return a, view


def _rows_in(x, name, rows_shape, convert):
    if x is None:
        return None
    a = convert(_numpy(x, name))
    if a.shape != rows_shape:
        raise ShapeError(f"{name}: expected shape {rows_shape} (logits.shape[:-1]), got {a.shape}", argument=name)
    return a


def _float64_in(a):
    if a.dtype.kind not in "biuf":
        raise DTypeError(f"lse: expected a numeric array, got dtype {a.dtype}", argument="lse")
    return np.ascontiguousarray(a, dtype=np.float64)


def _ptr(a, ctype):
    return None if a is None else a.ctypes.data_as(ctypes.POINTER(ctype))


def _inputs(x, view, targets, mask, temperature, threads):
    """``(inputs, keep)``: the ``aepo_logits_inputs`` of a call on ``x`` (read through ``view``,
    the ``(B, L, V, stride_b, stride_l)`` of :func:`_view`), and the arrays it points into
    (hold ``keep`` until the call returns)."""
    b, l, v, sb, sl = view
    inp = _lib.init(_lib.LogitsInputs)
    inp.logits = x.ctypes.data_as(_lib.c_float_p)
    inp.B, inp.L, inp.V = b, l, v
    inp.stride_b, inp.stride_l = sb, sl
    inp.targets = _ptr(targets, _lib.c_int32)
    inp.mask = _ptr(mask, _lib.c_uint8)
    inp.temperature = float(temperature)
    inp.threads = _lib.int64(int(threads), "threads")
    return inp, (x, targets, mask)


def logits_stats(logits, targets, temperature, *, mask=None, logp_t1=False, threads=1):
    """Log-probs, exact entropy and lse of every row at ``temperature``, in one streaming pass.

    ``targets`` may be None when only the entropy is wanted. Returns :class:`LogitsStats`.
    Raises NonFiniteError for NaN or +inf under mask = 1 (-inf is allowed), InvalidValueError
    for an all -inf row, a target outside [0, V) under mask = 1 or ``temperature <= 0``.
    """
    x, view = _logits_in(logits)
    shape = x.shape[:-1]
    t = _rows_in(targets, "targets", shape, lambda a: int_in(a, "targets", np.int32))
    m = None if mask is None else mask_in(_numpy(mask, "mask"), "mask", shape)
    logp = np.empty(shape, np.float32) if t is not None else None
    entropy = np.empty(shape, np.float32)
    lse = np.empty(shape, np.float64)
    lp1 = np.empty(shape, np.float32) if logp_t1 and t is not None else None
    inp, _keep = _inputs(x, view, t, m, temperature, threads)
    es, ns, cnt = _lib.c_double(), _lib.c_double(), _lib.c_int64()
    _lib.call(_lib.lib.aepo_logits_stats, ctypes.byref(inp),
              _ptr(logp, _lib.c_float), _ptr(entropy, _lib.c_float), _ptr(lse, _lib.c_double),
              _ptr(lp1, _lib.c_float), ctypes.byref(es), ctypes.byref(ns) if t is not None else None,
              ctypes.byref(cnt))
    return LogitsStats(logp, entropy, lse, lp1, es.value, ns.value if t is not None else None, cnt.value)


def _out_view(out, shape):
    """(array, stride_b, stride_l) of a caller's output buffer (float32, writeable, last axis
    contiguous; row and batch strides are allowed, as for logits)."""
    if not isinstance(out, np.ndarray):
        if hasattr(out, "detach") and hasattr(out, "numpy"):
            out = out.detach().numpy()   # shares memory with a CPU tensor
        else:
            raise ShapeError(f"out: expected a numpy array or CPU tensor, got {type(out).__name__}", argument="out")
    if out.dtype != np.float32:
        raise ShapeError(f"out: output buffers must be float32, got {out.dtype}", argument="out")
    if not out.flags.writeable:
        raise ShapeError("out: output buffer is read-only", argument="out")
    if out.shape != shape:
        raise ShapeError(f"out: expected shape {shape} like logits, got {out.shape}", argument="out")
    view = _view(out)
    if view is None:
        raise ShapeError("out: the last axis must be contiguous and rows must not overlap "
                         f"(strides {out.strides})", argument="out")
    return out, view[3], view[4]


def logits_backward(logits, targets, temperature, lse, entropy, grad_logp=None, grad_entropy=None, *,
                    out=None, mask=None, threads=1):
    """dL/dlogits for L = sum(grad_logp * logp + grad_entropy * entropy), reusing ``lse`` and
    ``entropy`` from :func:`logits_stats` at the same temperature (no extra pass).

    Returns ``out`` (allocated when None). ``out`` may be ``logits`` itself to write the
    gradient over the logits in place; it may also be a row-strided view such as
    ``buf[:, :-1]``. Rows with mask = 0, or with both upstream gradients 0, get zeros and are
    not read.
    """
    x, view = _logits_in(logits)
    shape = x.shape[:-1]
    gl = _rows_in(grad_logp, "grad_logp", shape, lambda a: float_in(a, "grad_logp"))
    gh = _rows_in(grad_entropy, "grad_entropy", shape, lambda a: float_in(a, "grad_entropy"))
    t = _rows_in(targets, "targets", shape, lambda a: int_in(a, "targets", np.int32)) if gl is not None else None
    m = None if mask is None else mask_in(_numpy(mask, "mask"), "mask", shape)
    ls = _rows_in(lse, "lse", shape, _float64_in)
    h = _rows_in(entropy, "entropy", shape, lambda a: float_in(a, "entropy")) if gh is not None else None
    if out is None:
        out = np.empty(x.shape, np.float32)
        l, v = view[1], view[2]
        osb, osl = (l * v, v) if x.ndim == 3 else (0, v)
    else:
        out, osb, osl = _out_view(out, x.shape)
    inp, _keep = _inputs(x, view, t, m, temperature, threads)
    _lib.call(_lib.lib.aepo_logits_backward, ctypes.byref(inp), _ptr(ls, _lib.c_double),
              _ptr(h, _lib.c_float), _ptr(gl, _lib.c_float), _ptr(gh, _lib.c_float),
              out.ctypes.data_as(_lib.c_float_p), osb, osl)
    return out
