"""The one decoder of the policy loss's per-call inputs: arrays and keyword arguments to an
``aepo_loss_inputs`` struct. ``Loss.compute`` and ``FusedHead.loss_and_grad`` both
use it (the fused head passes no ``logp`` or ``entropy``: it computes them).
"""
import ctypes
import math

from . import _lib
from ._arrays import float_in, mask_in, ptr
from .errors import InvalidValueError, ShapeError


def float_shaped(x, name, shape):
    """A float32 C-contiguous view of ``x``, which must have ``shape``."""
    a = float_in(x, name)
    if a.shape != tuple(shape):
        raise ShapeError(f"{name}: expected shape {tuple(shape)}, got {a.shape}", argument=name)
    return a


def count(v, name):
    """A global count: -1 for None (the call's own count), else an int64 >= 0."""
    if v is None:
        return -1
    v = _lib.int64(int(v), name)
    if v < 0:
        raise InvalidValueError(f"{name}: must be >= 0, got {v}", argument=name)
    return v


def decode(B, L, *, old_logp, advantages, mask, logp=None, ref_logp=None, is_weights=None, entropy=None,
           reg_rows=None, reg_alpha=None, global_tokens=None, global_seqs=None, global_reg_tokens=None, dp_size=1,
           step=0):
    """``(inputs, keep)``: the filled struct, and the arrays it points into (hold ``keep``
    until the call returns). Shapes: [B, L] per token, advantages [B] or [B, L], reg_rows [B]."""
    keep = {}

    def floats(name, x):
        keep[name] = None if x is None else float_shaped(x, name, (B, L))
        return ptr(keep[name], ctypes.c_float)

    inp = _lib.init(_lib.LossInputs)
    inp.B, inp.L = B, L
    inp.logp = floats("logp", logp)
    inp.old_logp = floats("old_logp", old_logp)
    adv = float_in(advantages, "advantages")
    if adv.shape == (B,):
        inp.adv_per_token = 0
    elif adv.shape == (B, L):
        inp.adv_per_token = 1
    else:
        raise ShapeError(f"advantages: expected shape ({B},) or ({B}, {L}), got {adv.shape}", argument="advantages")
    keep["advantages"] = adv
    inp.advantages = ptr(adv, ctypes.c_float)
    keep["mask"] = mask_in(mask, "mask", (B, L))
    inp.mask = ptr(keep["mask"], ctypes.c_uint8)
    inp.ref_logp = floats("ref_logp", ref_logp)
    inp.is_weights = floats("is_weights", is_weights)
    inp.entropy = floats("entropy", entropy)
    keep["reg_rows"] = None if reg_rows is None else mask_in(reg_rows, "reg_rows", (B,))
    inp.reg_rows = ptr(keep["reg_rows"], ctypes.c_uint8)
    if reg_alpha is not None:
        a = float(reg_alpha)
        if not (a >= 0 and math.isfinite(a)):
            raise InvalidValueError(f"reg_alpha: must be a finite real >= 0, got {reg_alpha}", argument="reg_alpha")
        inp.reg_alpha = a
    inp.global_tokens = count(global_tokens, "global_tokens")
    inp.global_seqs = count(global_seqs, "global_seqs")
    inp.global_reg_tokens = count(global_reg_tokens, "global_reg_tokens")
    inp.dp_size = _lib.int64(int(dp_size), "dp_size")
    inp.step = _lib.int64(int(step), "step")
    return inp, keep
