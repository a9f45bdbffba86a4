"""The fused LM head: log-probs, exact entropy, the policy loss and every gradient straight
from hidden states, without materialising the [N, V] logits.

Shapes: ``X`` is ``[..., D]`` hidden states (N = the product of the leading dimensions),
``W`` is ``[V, D]`` (the layout of ``torch.nn.Linear(D, V).weight``), ``bias`` is ``[V]``,
``targets`` and ``mask`` have the leading shape of ``X``. Per-token results come back in
that leading shape. The logits are ``(X @ W.T + bias) / T`` with ``T`` the policy
temperature (``fused.temperature``).

OpenBLAS runs the three matrix products on its own threads; their number belongs to the
process (``OPENBLAS_NUM_THREADS``), libaepo never changes it. ``fused.threads`` sets the
threads of the library's own loops.
"""
import ctypes
import math
from typing import NamedTuple, Optional

import numpy as np

from . import _lib, _loss_inputs
from ._arrays import float_in, float_out, int_in, mask_in, ptr
from .errors import DTypeError, InvalidValueError, ShapeError
from .loss import METRIC_NAMES, Loss
from ._deprecated import module_getattr as _module_getattr

__all__ = ["FusedHead"]


class FusedHead(_lib.NativeHandle):
    """A fused LM head configured by the ``fused`` section of a config document.

    The handle keeps no per-call state; one instance belongs to one thread at a time.
    """

    _kind = "fused_head"

    def __init__(self, cfg=None):
        self._derived = {}
        super().__init__(cfg)

    def close(self):
        """Releases the handle (and any handle made for another temperature); idempotent."""
        for other in getattr(self, "_derived", {}).values():
            other.close()
        self._derived = {}
        super().close()

    @property
    def temperature(self):
        """The policy temperature of the head (``fused.temperature``)."""
        return self._config["fused"]["temperature"]

    def _handle(self, temperature=None):
        """The handle for ``temperature`` (None: this head's). A different temperature is a
        different config, so it gets a handle of its own, kept for later calls."""
        h = super()._handle()
        if temperature is None or float(temperature) == self.temperature:
            return h
        t = float(temperature)
        if not (math.isfinite(t) and t > 0):
            raise InvalidValueError(f"temperature: must be a finite number > 0, got {temperature}; "
                                    "for greedy decoding set sampler.greedy = true", argument="temperature")
        other = self._derived.get(t)
        if other is None:
            cfg = self.config
            cfg["fused"]["temperature"] = t
            other = FusedHead(cfg)
            self._derived[t] = other
        return other._h

    # -- shared argument handling -------------------------------------------------------

    @staticmethod
    def _inputs(X, W, targets, bias, mask):
        """``(inputs, arrays, lead)``: the ``aepo_fused_head_inputs`` of a call, the checked
        arrays it points into (hold them until the call returns) and the leading shape of X."""
        X = float_in(X, "X")
        if X.ndim < 1:
            raise ShapeError(f"X: expected [..., D], got shape {X.shape}", argument="X")
        lead, D = X.shape[:-1], X.shape[-1]
        W = float_in(W, "W", ndim=2)
        if W.shape[1] != D:
            raise ShapeError(f"W: has {W.shape[1]} columns but X has D = {D}; W must be [V, D] = [V, {D}]",
                             argument="W")
        V = W.shape[0]
        targets = int_in(targets, "targets", np.int32)
        if targets.shape != lead:
            raise ShapeError(f"targets: expected shape {lead} (the leading shape of X), got {targets.shape}",
                             argument="targets")
        if bias is not None:
            bias = float_in(bias, "bias", ndim=1)
            if bias.shape != (V,):
                raise ShapeError(f"bias: expected shape ({V},), got {bias.shape}", argument="bias")
        if mask is not None:
            mask = mask_in(mask, "mask", lead)
        inp = _lib.init(_lib.FusedHeadInputs)
        c = ctypes.c_float
        inp.X, inp.W, inp.bias = ptr(X, c), ptr(W, c), ptr(bias, c)
        inp.targets = ptr(targets, ctypes.c_int32)
        inp.mask = ptr(mask, ctypes.c_uint8)
        inp.N, inp.D, inp.V = int(np.prod(lead, dtype=np.int64)), D, V
        return inp, _Arrays(X, W, bias, targets, mask), lead

    @staticmethod
    def _row_input(a, name, lead):
        a = float_in(a, name)
        if a.shape != lead:
            raise ShapeError(f"{name}: expected shape {lead} (the leading shape of X), got {a.shape}", argument=name)
        return a

    # -- calls ----------------------------------------------------------------------------

    def forward(self, X, W, targets, *, bias=None, mask=None, temperature=None):
        """Returns ``(logp, entropy, lse)`` in the leading shape of X, 0 where mask = 0: logp and
        entropy float32, lse float64 (backward reads it back; a float32 lse would shift every
        log p by up to 6e-8 * |lse|)."""
        h = self._handle(temperature)
        inp, _arrays, lead = self._inputs(X, W, targets, bias, mask)
        logp = np.empty(lead, np.float32)
        entropy = np.empty(lead, np.float32)
        lse = np.empty(lead, np.float64)
        c = ctypes.c_float
        _lib.call(_lib.lib.aepo_fused_head_forward, h, ctypes.byref(inp), ptr(logp, c), ptr(entropy, c),
                  ptr(lse, ctypes.c_double))
        return logp, entropy, lse

    def backward(self, X, W, targets, lse, entropy, grad_logp, grad_entropy=None, *, bias=None, mask=None,
                 grad_W=None, grad_bias=None, out_dX=None, temperature=None):
        """Gradients of ``sum(grad_logp * logp + grad_entropy * entropy)``.

        Returns ``(dX, dW, dbias)``. dX has the shape of X. dW is ``grad_W`` when given
        (the gradient is added into it, float32 C-contiguous [V, D]), else a new array.
        dbias likewise with ``grad_bias``; it is None when there is neither a bias nor a
        ``grad_bias``. ``out_dX`` (float32 C-contiguous, X's shape) receives dX when given.
        ``lse`` and ``entropy`` are forward's results at the same temperature (``entropy``
        may be None without ``grad_entropy``).
        """
        h = self._handle(temperature)
        inp, arrays, lead = self._inputs(X, W, targets, bias, mask)
        D, V = inp.D, inp.V
        lse = _double_in(lse, "lse", lead)
        entropy = None if entropy is None else self._row_input(entropy, "entropy", lead)
        grad_logp = None if grad_logp is None else self._row_input(grad_logp, "grad_logp", lead)
        grad_entropy = None if grad_entropy is None else self._row_input(grad_entropy, "grad_entropy", lead)
        dX = float_out(out_dX, "out_dX", arrays.X.shape)
        dW = float_out(grad_W, "grad_W", (V, D)) if grad_W is not None else np.zeros((V, D), np.float32)
        if grad_bias is not None:
            dbias = float_out(grad_bias, "grad_bias", (V,))
        elif bias is not None:
            dbias = np.zeros(V, np.float32)
        else:
            dbias = None
        c = ctypes.c_float
        _lib.call(_lib.lib.aepo_fused_head_backward, h, ctypes.byref(inp), ptr(lse, ctypes.c_double),
                  ptr(entropy, c), ptr(grad_logp, c), ptr(grad_entropy, c), ptr(dX, c), ptr(dW, c), ptr(dbias, c))
        return dX, dW, dbias

    def loss_and_grad(self, X, W, targets, loss, old_logp, advantages, mask, *, bias=None, grad_W=None,
                      grad_bias=None, out_dX=None, ref_logp=None, is_weights=None, reg_rows=None, reg_alpha=None,
                      global_tokens=None, global_seqs=None, global_reg_tokens=None, dp_size=1, step=0):
        """The policy loss of a batch whose log-probs and entropies come from this head, and
        every gradient, in one pass over chunk_n x V logits blocks.

        ``loss`` is a :class:`Loss`; ``old_logp`` and ``mask`` are [B, L], ``advantages``
        [B] or [B, L], and the keyword arguments after ``out_dX`` are those of
        ``Loss.compute`` (the head supplies ``logp`` and ``entropy``). ``X`` is
        [B, L, D] or [B * L, D] and ``targets`` has its leading shape. The mask is also the
        head's mask: rows with mask = 0 are never read.

        Returns ``(loss, dX, dW, dbias, metrics, logp, entropy)``: the loss (float), dX in
        X's shape (into ``out_dX`` when given), dW [V, D] (added into ``grad_W`` when given),
        dbias [V] (added into ``grad_bias`` when given; None without bias and grad_bias), the
        metrics dict (the entropy metrics, ``entropy``, ``entropy_main`` and ``entropy_reg``,
        are always filled from the head's entropies), and logp and entropy [B, L].
        """
        if not isinstance(loss, Loss):
            raise TypeError(f"loss: expected an aepo.Loss, got {type(loss).__name__}")
        h = self._handle(None)
        lh = loss._handle()
        m = np.asarray(mask)
        if m.ndim != 2:
            raise ShapeError(f"mask: expected [B, L], got shape {m.shape}", argument="mask")
        B, L = m.shape
        m = mask_in(m, "mask", (B, L))
        head_in, arrays, lead = self._inputs(X, W, targets, bias, None)
        N, D, V = head_in.N, head_in.D, head_in.V
        if N != B * L or len(lead) not in (1, 2) or (len(lead) == 2 and lead != (B, L)):
            raise ShapeError(f"X: expected [{B}, {L}, D] or [{B * L}, D] to match mask [{B}, {L}], "
                             f"got {arrays.X.shape}", argument="X")
        loss_in, _loss_arrays = _loss_inputs.decode(
            B, L, old_logp=old_logp, advantages=advantages, mask=m, ref_logp=ref_logp, is_weights=is_weights,
            reg_rows=reg_rows, reg_alpha=reg_alpha, global_tokens=global_tokens, global_seqs=global_seqs,
            global_reg_tokens=global_reg_tokens, dp_size=dp_size, step=step)

        c = ctypes.c_float
        dX = float_out(out_dX, "out_dX", arrays.X.shape)
        dW = float_out(grad_W, "grad_W", (V, D)) if grad_W is not None else np.zeros((V, D), np.float32)
        if grad_bias is not None:
            dbias = float_out(grad_bias, "grad_bias", (V,))
        elif bias is not None:
            dbias = np.zeros(V, np.float32)
        else:
            dbias = None
        logp = np.empty((B, L), np.float32)
        entropy = np.empty((B, L), np.float32)
        metrics = (ctypes.c_double * len(METRIC_NAMES))()
        value = ctypes.c_double(0.0)
        _lib.call(_lib.lib.aepo_fused_head_loss_and_grad, h, lh, ctypes.byref(head_in), ctypes.byref(loss_in),
                  ctypes.byref(value), ptr(dX, c), ptr(dW, c), ptr(dbias, c), metrics, len(METRIC_NAMES),
                  ptr(logp, c), ptr(entropy, c))
        return value.value, dX, dW, dbias, dict(zip(METRIC_NAMES, metrics)), logp, entropy


class _Arrays(NamedTuple):
    """The arrays an ``aepo_fused_head_inputs`` points into."""

    X: np.ndarray
    W: np.ndarray
    bias: Optional[np.ndarray]
    targets: np.ndarray
    mask: Optional[np.ndarray]


def _double_in(x, name, shape):
    """A float64 C-contiguous view of a float input (one copy from another dtype or layout)."""
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise DTypeError(f"{name}: expected a numeric array, got dtype {a.dtype}", argument=name)
    if a.shape != tuple(shape):
        raise ShapeError(f"{name}: expected shape {tuple(shape)} (the leading shape of X), got {a.shape}",
                         argument=name)
    return np.ascontiguousarray(a, dtype=np.float64)


# Deprecated since 0.2, removed in the next release: old name -> (module, new name, use instead).
__getattr__ = _module_getattr(__name__, {"FusedLMHead": ("aepo.fused", "FusedHead", "aepo.FusedHead")})
