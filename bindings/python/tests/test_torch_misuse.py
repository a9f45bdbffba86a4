"""Misuse of aepo.torch raises aepo exceptions that name the argument (and subclass the matching
builtin): non-numeric dtypes, bad output buffers, tensors that must not require grad, and
mismatched devices (with ``meta`` tensors, which exist on every machine)."""
import numpy as np
import pytest

import aepo

torch = pytest.importorskip("torch")
import aepo.torch as at  # noqa: E402
from aepo.torch import distributed as atd  # noqa: E402

B, L = 2, 4


def good():
    return dict(logp=torch.full((B, L), -1.0, requires_grad=True), old_logp=torch.full((B, L), -1.1),
                advantages=torch.tensor([1.0, -1.0]), mask=torch.ones(B, L, dtype=torch.bool))


def call(**over):
    a = good()
    kw = {k: over.pop(k) for k in list(over) if k not in a}
    a.update(over)
    return at.policy_loss(a["logp"], a["old_logp"], a["advantages"], a["mask"], **kw)


def raises(exc, argument, fn, *args, **kw):
    with pytest.raises(exc) as e:
        fn(*args, **kw)
    assert isinstance(e.value, aepo.AepoError)
    assert e.value.argument == argument, (e.value.argument, str(e.value))
    assert argument.split(".")[0].split("[")[0] in str(e.value)
    return e.value


def test_the_good_call_works():
    assert torch.isfinite(call())


# -------------------------------------------------------------------- non-numeric dtypes

@pytest.mark.parametrize("name, value", [
    ("logp", torch.zeros(B, L, dtype=torch.complex64)),
    ("logp", torch.zeros(B, L, dtype=torch.bool)),
    ("logp", torch.zeros(B, L, dtype=torch.int32)),
    ("logp", np.zeros((B, L), np.float32)),
    ("old_logp", torch.zeros(B, L, dtype=torch.complex64)),
    ("old_logp", torch.zeros(B, L, dtype=torch.bool)),
    ("advantages", np.array(["a", "b"])),
    ("mask", torch.ones(B, L)),
    ("ref_logp", torch.zeros(B, L, dtype=torch.complex128)),
    ("entropy", torch.zeros(B, L, dtype=torch.int64)),
    ("reg_rows", torch.zeros(B, dtype=torch.float32)),
    ("global_tokens", "8"),
    ("dp_size", True),
])
def test_non_numeric_dtype(name, value):
    e = raises(aepo.DTypeError, name, call, **{name: value})
    assert isinstance(e, TypeError)


def test_non_numeric_dtype_elsewhere():
    logits = torch.zeros(3, 5)
    raises(aepo.DTypeError, "logits", at.logits_stats, logits.to(torch.complex64), None, 1.0)
    raises(aepo.DTypeError, "targets", at.logits_stats, logits, torch.zeros(3), 1.0)
    raises(aepo.DTypeError, "mask", at.logits_stats, logits, None, 1.0, mask=torch.ones(3))
    with at.FusedHead() as head:
        ids = torch.zeros(3, dtype=torch.long)
        raises(aepo.DTypeError, "W", head, torch.zeros(3, 4), torch.zeros(5, 4, dtype=torch.int8), ids)
    g = good()
    raises(aepo.DTypeError, "log_prob", at.verl_policy_loss, g["old_logp"], g["logp"].long(), g["advantages"],
           g["mask"])
    raises(aepo.DTypeError, "mask", atd.global_counts, torch.ones(B, L))
    raises(aepo.DTypeError, "sum", atd.all_reduce_sums, "1.0", 3)


# ------------------------------------------------------------------------ output buffers

def fused_args():
    X = torch.randn(B, L, 6)
    W = torch.randn(7, 6)
    targets = torch.zeros(B, L, dtype=torch.long)
    return X, W, targets, None, torch.full((B, L), -2.0), torch.tensor([1.0, -1.0]), torch.ones(B, L, dtype=torch.bool)


@pytest.mark.parametrize("buffer, value, exc", [
    ("grad_W", torch.zeros(6, 7).t(), aepo.ShapeError),                       # non-contiguous
    ("grad_W", torch.zeros(7, 12)[:, ::2], aepo.ShapeError),                  # non-contiguous
    ("grad_W", torch.zeros(7, 6, dtype=torch.bfloat16), aepo.ShapeError),     # not float32
    ("grad_W", torch.zeros(7, 5), aepo.ShapeError),                           # wrong shape
    ("grad_W", np.zeros((7, 6), np.float32), aepo.ShapeError),                # not a tensor
    ("grad_W", torch.zeros(7, 6, requires_grad=True), aepo.InvalidValueError),
    ("grad_W", torch.zeros(7, 6, device="meta"), aepo.DeviceError),
    ("grad_bias", torch.zeros(14)[::2], aepo.ShapeError),
    ("out_dX", torch.zeros(L, B, 6).transpose(0, 1), aepo.ShapeError),
])
def test_bad_output_buffer(buffer, value, exc):
    with at.FusedHead() as head:
        e = raises(exc, buffer, head.loss_and_grad, *fused_args(), **{buffer: value})
    assert isinstance(e, ValueError)


# ------------------------------------------------------------- tensors that must not need grad

@pytest.mark.parametrize("name", ["old_logp", "advantages", "ref_logp", "is_weights"])
def test_requires_grad_where_it_must_not(name):
    shape = (B,) if name == "advantages" else (B, L)
    value = torch.full(shape, 0.5, requires_grad=True)
    e = raises(aepo.InvalidValueError, name, call, **{name: value})
    assert "detach()" in str(e)


def test_requires_grad_where_it_must_not_elsewhere():
    g = good()
    raises(aepo.InvalidValueError, "old_log_prob", at.verl_policy_loss, g["old_logp"].requires_grad_(True),
           g["logp"], g["advantages"], g["mask"])
    X, W, targets, _, old_logp, adv, mask = fused_args()
    with at.FusedHead() as head:
        raises(aepo.InvalidValueError, "advantages", head.policy_loss, X, W, targets, old_logp,
               adv.requires_grad_(True), mask)


# ---------------------------------------------------------------------- mismatched devices

@pytest.mark.parametrize("name", ["old_logp", "advantages", "mask", "ref_logp", "is_weights", "entropy",
                                  "reg_rows"])
def test_meta_tensor_next_to_cpu_tensors(name):
    shape = (B,) if name in ("advantages", "reg_rows") else (B, L)
    dtype = torch.bool if name in ("mask", "reg_rows") else torch.float32
    e = raises(aepo.DeviceError, name, call, **{name: torch.zeros(shape, dtype=dtype, device="meta")})
    assert "meta" in str(e) and isinstance(e, ValueError)


def test_all_meta_and_meta_scalars():
    m = {k: (v.detach().to("meta") if isinstance(v, torch.Tensor) else v) for k, v in good().items()}
    raises(aepo.DeviceError, "logp", at.policy_loss, m["logp"], m["old_logp"], m["advantages"], m["mask"])
    raises(aepo.DeviceError, "global_tokens", call, global_tokens=torch.tensor(8, device="meta"))


def test_meta_elsewhere():
    logits = torch.zeros(3, 5)
    raises(aepo.DeviceError, "targets", at.logits_stats, logits, torch.zeros(3, dtype=torch.long, device="meta"), 1.0)
    raises(aepo.DeviceError, "logits", at.logits_stats, logits.to("meta"), None, 1.0)
    X, W, targets, _, old_logp, adv, mask = fused_args()
    with at.FusedHead() as head:
        raises(aepo.DeviceError, "W", head, X, W.to("meta"), targets)
        raises(aepo.DeviceError, "old_logp", head.policy_loss, X, W, targets, old_logp.to("meta"), adv, mask)
    g = good()
    raises(aepo.DeviceError, "response_mask", at.verl_policy_loss, g["old_logp"], g["logp"], g["advantages"],
           g["mask"].to("meta"))
    raises(aepo.DeviceError, "mask", atd.global_counts, g["mask"].to("meta"))


# ------------------------------------------------------------------------- other misuse

def test_shape_value_and_non_finite_errors_name_the_argument():
    raises(aepo.ShapeError, "old_logp", call, old_logp=torch.zeros(B, L + 1))
    raises(aepo.ShapeError, "advantages", call, advantages=torch.zeros(3))
    raises(aepo.InvalidValueError, "mask", call, mask=torch.full((B, L), 2, dtype=torch.uint8))
    lp = torch.full((B, L), -1.0)
    lp[1, 2] = float("nan")
    e = raises(aepo.NonFiniteError, "logp", call, logp=lp.requires_grad_(True))
    assert e.index == 1 * L + 2 and isinstance(e, FloatingPointError)
    raises(aepo.InvalidValueError, "temperature", at.logits_stats, torch.zeros(3, 5), None, 0.0)
    raises(aepo.ShapeError, "logits", at.logits_stats, torch.zeros(5), None, 1.0)
    raises(aepo.InvalidValueError, "mask", atd.global_counts, torch.full((B, L), 3))
    raises(aepo.NonFiniteError, "sum", atd.all_reduce_sums, float("inf"), 3)
    raises(aepo.InvalidValueError, "count", atd.all_reduce_sums, 1.0, -1)
    lp = torch.full((B, L), -1.0, requires_grad=True)
    lp2 = lp.detach().clone()
    lp2[0, 0] = float("inf")
    g = good()
    e = raises(aepo.NonFiniteError, "log_prob", at.verl_policy_loss, g["old_logp"], lp2.requires_grad_(True),
               g["advantages"], g["mask"])
    assert "logp" in str(e)
