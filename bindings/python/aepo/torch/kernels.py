"""``logits_stats`` as a differentiable PyTorch function: logits -> (log p(target), entropy) at
the policy temperature, with ``logits_backward`` as its backward pass (docs/KERNELS.md)."""
import math
from typing import NamedTuple, Optional

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .. import kernels as _k
from ..errors import InvalidValueError, ShapeError
from ._tensors import common_device, float_host, index_host, require_float, scalar, to_torch, value_dtype

__all__ = ["LogitsStats", "logits_stats"]

_CPU = torch.device("cpu")


class LogitsStats(NamedTuple):
    """Result of :func:`logits_stats`: the fields of :class:`aepo.LogitsStats`, with tensors for
    arrays. Per-row tensors have the shape ``logits.shape[:-1]`` and live on the logits' device."""

    logp: Optional[torch.Tensor]     # log p(target) at T, differentiable (None without targets)
    entropy: torch.Tensor            # exact entropy at T, differentiable
    lse: torch.Tensor                # float64 log-sum-exp of logits / T (no gradient)
    logp_t1: Optional[torch.Tensor]  # log p(target) at T = 1 (no gradient), or None
    entropy_sum: float               # sum of entropy over rows with mask = 1 (float64)
    nll_sum: Optional[float]         # sum of -logp over rows with mask = 1 (None without targets)
    count: int                       # rows with mask = 1


def _logits_host(logits):
    """(array the library reads, owned). A CPU float32 tensor whose last axis is contiguous is
    read in place, whatever its other strides (``logits[:, :-1]`` included); anything else is
    converted with one copy."""
    t = logits.detach()
    if t.device == _CPU and t.dtype == torch.float32 and not t.is_neg() and t.dim() in (2, 3):
        a = t.numpy()
        if _k._view(a) is not None:
            return a, False
    t = t.to(device=_CPU, dtype=torch.float32, memory_format=torch.contiguous_format)
    return t.resolve_neg().numpy(), True


class _Call:
    __slots__ = ("x", "targets", "mask", "temperature", "threads", "logp_t1", "stats", "device", "dtype")


class _LogitsStatsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, call):
        s = _k.logits_stats(call.x, call.targets, call.temperature, mask=call.mask, logp_t1=call.logp_t1,
                            threads=call.threads)
        call.stats = s
        ctx.call = call
        ctx.set_materialize_grads(False)
        # The library reads the caller's memory when no copy was made: keep the tensor so that
        # autograd notices an in-place change before backward.
        ctx.save_for_backward(logits)
        out = value_dtype(logits.dtype)
        entropy = to_torch(s.entropy, call.device, out)
        if s.logp is None:
            return entropy
        return to_torch(s.logp, call.device, out), entropy

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        call = ctx.call
        ctx.saved_tensors  # noqa: B018  (raises if the logits were modified in place)
        g_logp, g_entropy = grads if call.stats.logp is not None else (None, grads[0])
        if g_logp is None and g_entropy is None:
            return None, None
        s = call.stats
        dx = _k.logits_backward(call.x, call.targets, call.temperature, s.lse, s.entropy,
                                float_host(g_logp, "grad_logp"), float_host(g_entropy, "grad_entropy"),
                                mask=call.mask, threads=call.threads)
        return to_torch(dx, call.device, call.dtype), None


def logits_stats(logits, targets, temperature, *, mask=None, logp_t1=False, threads=1):
    """Log-probs and exact entropy of every row of ``logits`` at ``temperature``, differentiable
    with respect to the logits.

    ``logits`` is [N, V] or [B, L, V] (a floating tensor; the shifted view ``logits[:, :-1]``
    of a CPU float32 tensor is read without a copy), ``targets`` and ``mask`` have its
    leading shape (integer/bool tensors; ``targets`` may be None when only the entropy is
    wanted). Returns :class:`LogitsStats`. ``logp`` and ``entropy`` are float32 (float64 for
    float64 logits) on the logits' device; the gradient to the logits has their dtype.
    """
    require_float(logits, "logits")
    device = common_device(("logits", logits), ("targets", targets), ("mask", mask))
    if logits.dim() not in (2, 3):
        raise ShapeError(f"logits: expected [N, V] or [B, L, V], got shape {tuple(logits.shape)}", argument="logits")
    T = scalar(temperature, "temperature", float)
    if not (math.isfinite(T) and T > 0):
        raise InvalidValueError(f"temperature: must be a finite number > 0, got {T}; for greedy decoding set "
                                "sampler.greedy = true", argument="temperature")
    call = _Call()
    call.x, _ = _logits_host(logits)
    call.targets = index_host(targets, "targets")
    call.mask = index_host(mask, "mask")
    call.temperature = T
    call.threads = scalar(threads, "threads", int)
    call.logp_t1 = bool(logp_t1)
    call.device = device
    call.dtype = logits.dtype
    out = _LogitsStatsFunction.apply(logits, call)
    logp, entropy = (None, out) if targets is None else out
    s = call.stats
    lse = to_torch(np.asarray(s.lse, np.float64), device)
    lp1 = None if s.logp_t1 is None else to_torch(s.logp_t1, device, value_dtype(logits.dtype))
    return LogitsStats(logp, entropy, lse, lp1, s.entropy_sum, s.nll_sum, s.count)
