"""The seeded temperature sampler (include/aepo.h, section "sampler")."""
import ctypes
import operator
from typing import NamedTuple, Optional

import numpy as np

from . import _lib
from ._arrays import float_in, ptr
from .errors import ShapeError


class SampleResult(NamedTuple):
    """One draw per row.

    ``tokens`` (int64 [N]); ``logp`` (float32 [N]), the log-prob under the truncated, tempered
    law actually used (0 under greedy); ``logp_t1`` (float32 [N]), the log-prob under the
    untruncated T = 1 policy; ``kept`` (int32 [N] or None), how many tokens the truncation
    kept, so that a trainer can replay it.
    """

    tokens: np.ndarray
    logp: np.ndarray
    logp_t1: np.ndarray
    kept: Optional[np.ndarray]


def _logits_view(logits):
    """A float32 2-D view whose rows are contiguous, and its row stride in elements.

    Rows that are already contiguous float32 (a C-contiguous array, or a view such as
    ``x[:, -1, :]`` of a [B, L, V] array) are passed without a copy; anything else is
    converted with one copy (docs/API.md, "Python").
    """
    a = np.asarray(logits)
    if a.ndim != 2:
        raise ShapeError(f"logits: expected a 2-D array [N, V], got shape {a.shape}", argument="logits")
    if (a.dtype == np.float32 and a.shape[1] > 0 and a.strides[1] == 4 and a.shape[0] > 0
            and a.strides[0] % 4 == 0 and a.strides[0] >= 4 * a.shape[1]):
        return a, a.strides[0] // 4
    a = float_in(a, "logits", ndim=2)
    return a, a.shape[1]


class Sampler(_lib.NativeHandle):
    """Draws tokens from rows of logits with temperature, min-p, top-k, top-p or greedy.

    ``cfg`` is a whole config document (``dict | str | None``); the sampler reads its
    ``sampler`` section. A row's draw depends only on (seed, step, position, row_offset + row)
    and the row's logits, never on ``threads`` or on how a batch is split into calls. An
    instance belongs to one thread at a time; it is a context manager, and ``close()`` is
    idempotent.
    """

    _kind = "sampler"

    def sample(self, logits, *, step, position=0, row_offset=0, temperature=None, return_kept=False):
        """Draws one token per row of ``logits`` [N, V].

        ``step``, ``position`` and ``row_offset`` (all >= 0) key the random stream: row i uses
        (seed, step, position, row_offset + i). ``temperature`` overrides the config's for this
        call (it must be > 0; use ``sampler.greedy`` for argmax decoding). Returns a
        :class:`SampleResult`; ``kept`` is filled when ``return_kept`` is true.
        """
        h = self._handle()
        x, row_stride = _logits_view(logits)
        n, v = x.shape
        tokens = np.empty(n, dtype=np.int32)
        logp = np.empty(n, dtype=np.float32)
        logp_t1 = np.empty(n, dtype=np.float32)
        kept = np.empty(n, dtype=np.int32) if return_kept else None
        t = None
        if temperature is not None:
            t = ctypes.byref(ctypes.c_double(float(temperature)))
        _lib.call(_lib.lib.aepo_sampler_sample, h, ptr(x, ctypes.c_float), n, v, row_stride,
                  _lib.int64(operator.index(step), "step"), _lib.int64(operator.index(position), "position"),
                  _lib.int64(operator.index(row_offset), "row_offset"), t,
                  ptr(tokens, ctypes.c_int32), ptr(logp, ctypes.c_float), ptr(logp_t1, ctypes.c_float),
                  ptr(kept, ctypes.c_int32))
        return SampleResult(tokens.astype(np.int64), logp, logp_t1, kept)
