"""``policy_loss``: the library's policy loss as a differentiable PyTorch function.

The forward call runs ``aepo.Loss.compute`` once; it returns the loss and its exact
gradients with respect to the log-probs and the per-token entropy, which the backward pass
scales by the incoming gradient. Nothing is recomputed and no handle is touched in backward.
"""
import json
import threading
from collections import OrderedDict

import torch
from torch.autograd.function import once_differentiable

from ..errors import ConfigError
from ..loss import Loss
from ._tensors import (common_device, float_host, index_host, no_grad_input, require_float, scalar, scaled_grad,
                       value_dtype)

__all__ = ["policy_loss", "loss_handle", "clear_cache"]

COMPUTE_KEYS = ("ref_logp", "is_weights", "entropy", "reg_rows", "reg_alpha", "global_tokens", "global_seqs",
                "global_reg_tokens", "dp_size", "step")

# -- handles -----------------------------------------------------------------------------

CACHE_SIZE = 8


class _Cache(threading.local):
    """Loss handles by config, per thread (a handle belongs to one thread at a time)."""

    def __init__(self):
        self.handles = OrderedDict()


_cache = _Cache()


def _key(config):
    if config is None:
        return ""
    if isinstance(config, str):
        return "s" + config
    if isinstance(config, (bytes, bytearray)):
        return b"b" + bytes(config)
    if isinstance(config, dict):
        try:
            return "d" + json.dumps(config, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError):
            return None
    return None


def loss_handle(config=None):
    """The ``aepo.Loss`` for ``config`` (None, a dict or JSON text), from this thread's cache.

    An ``aepo.Loss`` is returned as it is (it stays the caller's). The cache keeps the
    ``CACHE_SIZE`` most recently used handles of each thread and closes the one it drops; a
    handle that fails to build is not cached, so the error is raised again on the next call.
    """
    if isinstance(config, Loss):
        return config
    key = _key(config)
    if key is None:
        if config is not None and not isinstance(config, dict):
            raise ConfigError(f"config: expected a dict, JSON text, an aepo.Loss or None, got "
                              f"{type(config).__name__}", argument="config")
        return Loss(config)  # raises the ConfigError that names the problem
    handles = _cache.handles
    h = handles.get(key)
    if h is not None:
        handles.move_to_end(key)
        return h
    h = Loss(config)
    handles[key] = h
    while len(handles) > CACHE_SIZE:
        _, old = handles.popitem(last=False)
        old.close()
    return h


def clear_cache():
    """Closes the cached loss handles of the calling thread."""
    handles = _cache.handles
    while handles:
        _, h = handles.popitem()
        h.close()


# -- the autograd function ---------------------------------------------------------------

class _Call:
    """The arguments of one call, already on the host, and what the forward pass produced."""

    __slots__ = ("handle", "arrays", "kwargs", "device", "metrics")


class _LossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logp, entropy, call):
        a = call.arrays
        res = call.handle.compute(a["logp"], a["old_logp"], a["advantages"], a["mask"], entropy=a["entropy"],
                                  ref_logp=a["ref_logp"], is_weights=a["is_weights"], reg_rows=a["reg_rows"],
                                  **call.kwargs)
        call.metrics = res.metrics
        ctx.grad = torch.from_numpy(res.grad)
        ctx.grad_entropy = None if res.grad_entropy is None else torch.from_numpy(res.grad_entropy)
        ctx.logp_meta = (logp.device, logp.dtype)
        ctx.entropy_meta = None if entropy is None else (entropy.device, entropy.dtype)
        return torch.tensor(res.loss, dtype=value_dtype(logp.dtype), device=call.device)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        g_logp = g_entropy = None
        if ctx.needs_input_grad[0]:
            g_logp = scaled_grad(ctx.grad, grad_out, *ctx.logp_meta)
        if ctx.needs_input_grad[1] and ctx.grad_entropy is not None:
            g_entropy = scaled_grad(ctx.grad_entropy, grad_out, *ctx.entropy_meta)
        return g_logp, g_entropy, None


def _prepare(logp, old_logp, advantages, mask, config, compute_kwargs):
    unknown = sorted(set(compute_kwargs) - set(COMPUTE_KEYS))
    if unknown:
        raise TypeError(f"policy_loss: unexpected keyword argument {unknown[0]!r}; the keywords are "
                        f"{', '.join(COMPUTE_KEYS)}")
    require_float(logp, "logp")
    entropy = compute_kwargs.get("entropy")
    if entropy is not None:
        require_float(entropy, "entropy")
    tensors = [("logp", logp), ("old_logp", old_logp), ("advantages", advantages), ("mask", mask)]
    tensors += [(k, compute_kwargs.get(k)) for k in ("ref_logp", "is_weights", "entropy", "reg_rows")]
    device = common_device(*tensors)
    for name in ("old_logp", "advantages", "ref_logp", "is_weights"):
        no_grad_input(dict(tensors)[name], name)

    call = _Call()
    call.handle = loss_handle(config)
    call.device = device
    call.metrics = None
    call.arrays = {
        "logp": float_host(logp, "logp"),
        "old_logp": float_host(old_logp, "old_logp"),
        "advantages": float_host(advantages, "advantages"),
        "mask": index_host(mask, "mask"),
        "ref_logp": float_host(compute_kwargs.get("ref_logp"), "ref_logp"),
        "is_weights": float_host(compute_kwargs.get("is_weights"), "is_weights"),
        "entropy": float_host(entropy, "entropy"),
        "reg_rows": index_host(compute_kwargs.get("reg_rows"), "reg_rows"),
    }
    kw = {}
    for name in ("global_tokens", "global_seqs", "global_reg_tokens", "step"):
        if compute_kwargs.get(name) is not None:
            kw[name] = scalar(compute_kwargs[name], name, int)
    if compute_kwargs.get("dp_size") is not None:
        kw["dp_size"] = scalar(compute_kwargs["dp_size"], "dp_size", int)
    if compute_kwargs.get("reg_alpha") is not None:
        kw["reg_alpha"] = scalar(compute_kwargs["reg_alpha"], "reg_alpha", float)
    call.kwargs = kw
    return call, entropy


def policy_loss(logp, old_logp, advantages, mask, *, config=None, return_metrics=False, **compute_kwargs):
    """The policy loss of a (micro-)batch as a differentiable 0-dim tensor.

    ``logp`` [B, L] is the current log-prob of each sampled token (a floating tensor, usually
    requiring grad); ``old_logp`` [B, L]; ``advantages`` [B] or [B, L]; ``mask`` [B, L] bool
    or integer. ``config`` is a config document (dict, JSON text or None for the defaults;
    its handle is built once and cached per thread) or an ``aepo.Loss``. The keyword
    arguments are those of ``aepo.Loss.compute``: ``ref_logp``, ``is_weights``, ``entropy``
    (a tensor that may require grad: the entropy term's gradient flows into it),
    ``reg_rows``, ``reg_alpha``, ``global_tokens``, ``global_seqs``, ``global_reg_tokens``,
    ``dp_size``, ``step``.

    The backward pass gives ``logp`` (and ``entropy``) the library's exact gradient, in their
    dtype and on their device. The loss is float32 (float64 for float64 ``logp``) on
    ``logp``'s device. With ``return_metrics`` the result is ``(loss, metrics)``, the metrics
    dict of ``aepo.Loss.compute`` (Python floats; ``pg_loss`` there is the exact double).

    ``old_logp``, ``advantages``, ``ref_logp`` and ``is_weights`` must not require grad: the
    loss gives them no gradient, so the call refuses them rather than return a silent zero.
    """
    call, entropy = _prepare(logp, old_logp, advantages, mask, config, compute_kwargs)
    loss = _LossFunction.apply(logp, entropy, call)
    if return_metrics:
        return loss, call.metrics
    return loss
