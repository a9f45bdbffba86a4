"""The fused LM head for PyTorch: log-probs, entropy and the policy loss straight from hidden
states and the head weight, without an [N, V] logits tensor, with autograd.

- ``head(X, W, targets)`` -> ``(logp, entropy)``, differentiable with respect to X, W and
  bias; the backward pass is ``aepo.FusedHead.backward`` (one more pass over the logits).
- ``head.policy_loss(X, W, targets, old_logp, advantages, mask)`` -> the loss, whose
  gradients with respect to X, W and bias are formed in the same pass as the loss
  (``aepo.FusedHead.loss_and_grad``); backward only scales them.
- ``head.loss_and_grad(...)`` is the same without autograd: it returns the gradients and can
  add dW into ``W.grad`` in place.
"""
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from ..fused import FusedHead as _Head
from ..errors import ShapeError
from ..loss import Loss
from ._tensors import (common_device, float_host, index_host, no_grad_input, out_buffer, require_float, scalar,
                       scaled_grad, to_torch, value_dtype)
from .loss import COMPUTE_KEYS, loss_handle
from .._deprecated import module_getattr as _module_getattr

__all__ = ["FusedHead", "FusedHeadLossResult"]

_LOSS_KEYS = tuple(k for k in COMPUTE_KEYS if k != "entropy")


class FusedHeadLossResult(NamedTuple):
    """Result of :meth:`FusedHead.policy_loss`."""

    loss: torch.Tensor     # 0-dim, differentiable with respect to X, W and bias
    logp: torch.Tensor     # [B, L] log p(target) at the policy temperature (no gradient)
    entropy: torch.Tensor  # [B, L] exact entropy at the policy temperature (no gradient)
    metrics: dict          # the loss metrics (the entropy metrics are always filled)


class _Inputs:
    __slots__ = ("X", "W", "bias", "targets", "mask", "device", "x_meta", "w_meta", "b_meta")


def _inputs(X, W, bias, targets, mask, extra=()):
    require_float(X, "X")
    require_float(W, "W")
    if bias is not None:
        require_float(bias, "bias")
    named = [("X", X), ("W", W), ("bias", bias), ("targets", targets), ("mask", mask)] + list(extra)
    inp = _Inputs()
    inp.device = common_device(*named)
    inp.X = float_host(X, "X")
    inp.W = float_host(W, "W")
    inp.bias = float_host(bias, "bias")
    inp.targets = index_host(targets, "targets")
    inp.mask = index_host(mask, "mask")
    inp.x_meta = (X.device, X.dtype)
    inp.w_meta = (W.device, W.dtype)
    inp.b_meta = None if bias is None else (bias.device, bias.dtype)
    return inp


class _StatsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, X, W, bias, head, inp, temperature):
        logp, entropy, lse = head.forward(inp.X, inp.W, inp.targets, bias=inp.bias, mask=inp.mask,
                                          temperature=temperature)
        ctx.head, ctx.inp, ctx.temperature = head, inp, temperature
        ctx.lse, ctx.entropy = lse, entropy
        ctx.save_for_backward(X, W, bias)  # version check: the host arrays may share their memory
        ctx.set_materialize_grads(False)
        out = value_dtype(X.dtype)
        return to_torch(logp, inp.device, out), to_torch(entropy, inp.device, out)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_logp, g_entropy):
        ctx.saved_tensors  # noqa: B018  (raises if an input was modified in place)
        if g_logp is None and g_entropy is None:
            return None, None, None, None, None, None
        inp = ctx.inp
        dX, dW, db = ctx.head.backward(inp.X, inp.W, inp.targets, ctx.lse, ctx.entropy,
                                       float_host(g_logp, "grad_logp"), float_host(g_entropy, "grad_entropy"),
                                       bias=inp.bias, mask=inp.mask, temperature=ctx.temperature)
        need = ctx.needs_input_grad
        gx = to_torch(dX, *inp.x_meta) if need[0] else None
        gw = to_torch(dW, *inp.w_meta) if need[1] else None
        gb = to_torch(db, *inp.b_meta) if need[2] and db is not None else None
        return gx, gw, gb, None, None, None


class _LossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, X, W, bias, run):
        value, dX, dW, db, metrics, logp, entropy = run()
        ctx.grads = (torch.from_numpy(dX), torch.from_numpy(dW), None if db is None else torch.from_numpy(db))
        ctx.metas = (run.inp.x_meta, run.inp.w_meta, run.inp.b_meta)
        run.result = (metrics, logp, entropy)
        return torch.tensor(value, dtype=value_dtype(X.dtype), device=run.inp.device)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        out = []
        for i, (g, meta) in enumerate(zip(ctx.grads, ctx.metas)):
            out.append(scaled_grad(g, grad_out, *meta) if ctx.needs_input_grad[i] and g is not None else None)
        return out[0], out[1], out[2], None


class FusedHead:
    """The fused LM head (config section ``fused``) with PyTorch tensors and autograd.

    ``X`` is [..., D] hidden states, ``W`` [V, D] (``torch.nn.Linear(D, V).weight``), ``bias``
    [V]; ``targets`` and ``mask`` have the leading shape of X. Tensors may live on any one
    device and be float32, float64, bfloat16 or float16: they are moved to the CPU as float32
    with one copy, results come back on their device, and each gradient in its tensor's
    dtype. One instance belongs to one thread at a time.
    """

    def __init__(self, cfg=None):
        self._head = _Head(cfg)

    def close(self):
        """Releases the handle; idempotent."""
        self._head.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def config(self):
        """The whole normalised document this head was built from."""
        return self._head.config

    @property
    def temperature(self):
        """The policy temperature of the head (``fused.temperature``)."""
        return self._head.temperature

    def __call__(self, X, W, targets, *, bias=None, mask=None, temperature=None):
        """``(logp, entropy)`` in the leading shape of X (0 where mask = 0), differentiable with
        respect to X, W and bias: float32 (float64 for float64 X) on X's device."""
        inp = _inputs(X, W, bias, targets, mask)
        T = None if temperature is None else scalar(temperature, "temperature", float)
        return _StatsFunction.apply(X, W, bias, self._head, inp, T)

    forward = __call__

    def _run(self, X, W, targets, loss, old_logp, advantages, mask, bias, kwargs, outputs=None):
        unknown = sorted(set(kwargs) - set(_LOSS_KEYS))
        if unknown:
            raise TypeError(f"unexpected keyword argument {unknown[0]!r}; the keywords are {', '.join(_LOSS_KEYS)}")
        arrays = [("old_logp", old_logp), ("advantages", advantages)]
        arrays += [(k, kwargs.get(k)) for k in ("ref_logp", "is_weights", "reg_rows")]
        inp = _inputs(X, W, bias, targets, mask, extra=arrays)
        for name in ("old_logp", "advantages", "ref_logp", "is_weights"):
            no_grad_input(dict(arrays)[name], name)
        kw = {"ref_logp": float_host(kwargs.get("ref_logp"), "ref_logp"),
              "is_weights": float_host(kwargs.get("is_weights"), "is_weights"),
              "reg_rows": index_host(kwargs.get("reg_rows"), "reg_rows")}
        for name in ("global_tokens", "global_seqs", "global_reg_tokens", "dp_size", "step"):
            if kwargs.get(name) is not None:
                kw[name] = scalar(kwargs[name], name, int)
        if kwargs.get("reg_alpha") is not None:
            kw["reg_alpha"] = scalar(kwargs["reg_alpha"], "reg_alpha", float)
        kw.update(outputs or {})
        handle = loss_handle(self._head.config if loss is None else loss)
        olp, adv = float_host(old_logp, "old_logp"), float_host(advantages, "advantages")

        def run():
            return self._head.loss_and_grad(inp.X, inp.W, inp.targets, handle, olp, adv, inp.mask, bias=inp.bias,
                                            **kw)
        run.inp = inp
        return run

    def policy_loss(self, X, W, targets, old_logp, advantages, mask, *, bias=None, config=None, **compute_kwargs):
        """The policy loss of a batch whose log-probs and entropies come from this head.

        ``mask``, ``old_logp`` are [B, L], ``advantages`` [B] or [B, L]; X is [B, L, D] or
        [B * L, D]. ``config`` is the loss's config (dict, JSON text or ``aepo.Loss``;
        None: the document this head was built from). The keyword arguments are those of
        ``aepo.Loss.compute`` except ``entropy`` (the head supplies it). Returns
        :class:`FusedHeadLossResult`; ``loss.backward()`` fills the gradients of X, W and bias,
        which were formed in the forward pass together with the loss.
        """
        run = self._run(X, W, targets, config, old_logp, advantages, mask, bias, compute_kwargs)
        loss = _LossFunction.apply(X, W, bias, run)
        metrics, logp, entropy = run.result
        out = value_dtype(X.dtype)
        return FusedHeadLossResult(loss, to_torch(logp, run.inp.device, out),
                                   to_torch(entropy, run.inp.device, out), metrics)

    def loss_and_grad(self, X, W, targets, loss, old_logp, advantages, mask, *, bias=None, grad_W=None,
                      grad_bias=None, out_dX=None, **compute_kwargs):
        """Loss and every gradient in one pass, without autograd.

        ``loss`` is an ``aepo.Loss``, a config document or None (this head's document).
        Returns ``(loss, dX, dW, dbias, metrics, logp, entropy)``: the loss as a float,
        gradients as tensors (on their tensor's device, in its dtype), the metrics dict, and
        logp and entropy [B, L]. ``grad_W`` / ``grad_bias`` (e.g. ``W.grad``) receive dW /
        dbias added in place, and ``out_dX`` receives dX; these buffers must be CPU float32
        C-contiguous tensors that do not require grad (ShapeError / DeviceError /
        InvalidValueError otherwise, naming the buffer).
        """
        if not (loss is None or isinstance(loss, (Loss, dict, str))):
            raise TypeError(f"loss: expected an aepo.Loss, a config or None, got {type(loss).__name__}")
        require_float(X, "X")
        require_float(W, "W")
        if W.dim() != 2:
            raise ShapeError(f"W: expected [V, D], got shape {tuple(W.shape)}", argument="W")
        V, D = W.shape
        outputs = {"grad_W": out_buffer(grad_W, "grad_W", (V, D)),
                   "grad_bias": out_buffer(grad_bias, "grad_bias", (V,)),
                   "out_dX": out_buffer(out_dX, "out_dX", tuple(X.shape))}
        run = self._run(X, W, targets, loss, old_logp, advantages, mask, bias, compute_kwargs, outputs)
        value, dX, dW, db, metrics, logp, entropy = run()
        inp = run.inp
        out = value_dtype(X.dtype)
        dX_t = out_dX if out_dX is not None else to_torch(dX, *inp.x_meta)
        dW_t = grad_W if grad_W is not None else to_torch(dW, *inp.w_meta)
        if grad_bias is not None:
            db_t = grad_bias
        else:
            db_t = None if db is None else to_torch(db, *(inp.b_meta or inp.w_meta))
        return (value, dX_t, dW_t, db_t, metrics, to_torch(logp, inp.device, out),
                to_torch(entropy, inp.device, out))


# Deprecated since 0.2, removed in the next release: old name -> (module, new name, use instead).
__getattr__ = _module_getattr(__name__, {
    "FusedLMHead": ("aepo.torch.fused", "FusedHead", "aepo.torch.FusedHead"),
    "FusedPolicyLoss": ("aepo.torch.fused", "FusedHeadLossResult", "aepo.torch.FusedHeadLossResult"),
})
