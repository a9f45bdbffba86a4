"""aepo.torch.logits_stats and aepo.torch.FusedHead against float64 autograd of plain PyTorch."""
import numpy as np
import pytest

import aepo

torch = pytest.importorskip("torch")
import aepo.torch as at  # noqa: E402
import torch_reference as ref  # noqa: E402


def max_rel(got, want):
    got, want = got.double(), want.double()
    return ((got - want).abs().max() / want.abs().max()).item()


def logits_case(seed, B=3, L=7, V=41, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, L, V, generator=g) * scale
    targets = torch.randint(0, V, (B, L), generator=g)
    mask = torch.rand(B, L, generator=g) < 0.8
    mask[0, 0] = True
    targets[~mask] = -100  # padding targets are never read
    return logits, targets, mask


# -------------------------------------------------------------------------- logits_stats

@pytest.mark.parametrize("T", [1.0, 0.7, 1.3])
def test_logits_stats_gradient_matches_float64_autograd(T):
    logits, targets, mask = logits_case(1)
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    x = logits.clone()
    x[~mask] = float("nan")  # rows with mask = 0 are not read
    x.requires_grad_(True)
    s = at.logits_stats(x, targets, T, mask=mask)
    ((a * s.logp).sum() + (b * s.entropy).sum()).backward()

    x64 = logits.double().requires_grad_(True)
    lp, H = ref.logits_stats(x64, targets, T, mask=mask)
    ((a.double() * lp).sum() + (b.double() * H).sum()).backward()
    assert max_rel(s.logp, lp) <= 1e-6 and max_rel(s.entropy, H) <= 1e-6
    err = max_rel(x.grad, x64.grad)
    assert err <= 1e-5, f"T={T}: max |dlogits - autograd| / max |autograd| = {err:.3e}"
    assert torch.all(x.grad[~mask] == 0)
    # The plain call gives the same numbers, and the sums feed the controller.
    n = aepo.logits_stats(logits.numpy(), targets.numpy(), T, mask=mask.numpy())
    assert np.array_equal(s.logp.detach().numpy(), n.logp) and np.array_equal(s.entropy.detach().numpy(), n.entropy)
    assert s.entropy_sum == n.entropy_sum and s.nll_sum == n.nll_sum and s.count == int(mask.sum())
    assert s.lse.dtype == torch.float64 and not s.lse.requires_grad and s.logp_t1 is None


def test_shifted_view_is_read_in_place_and_gets_its_gradient():
    logits, targets, mask = logits_case(3, L=8)
    buf = logits.clone().requires_grad_(True)
    view = buf[:, :-1]  # next-token logits of a causal LM
    host, owned = at.kernels._logits_host(view)
    assert not owned and host.ctypes.data == buf.data_ptr()  # no copy
    s = at.logits_stats(view, targets[:, :-1], 1.0, mask=mask[:, :-1])
    s.logp.sum().backward()
    x64 = logits.double()[:, :-1].clone().requires_grad_(True)
    lp, _ = ref.logits_stats(x64, targets[:, :-1], 1.0, mask=mask[:, :-1])
    lp.sum().backward()
    assert max_rel(buf.grad[:, :-1], x64.grad) <= 1e-5
    assert torch.all(buf.grad[:, -1] == 0)


def test_entropy_only_and_logp_t1():
    logits, targets, mask = logits_case(4)
    x = logits.clone().requires_grad_(True)
    s = at.logits_stats(x, None, 0.8)
    assert s.logp is None and s.nll_sum is None
    s.entropy.sum().backward()
    x64 = logits.double().requires_grad_(True)
    _, H = ref.logits_stats(x64, targets.clamp(min=0), 0.8)
    H.sum().backward()
    assert max_rel(x.grad, x64.grad) <= 1e-5
    t1 = at.logits_stats(logits, targets, 0.8, mask=mask, logp_t1=True).logp_t1
    want, _ = ref.logits_stats(logits.double(), targets, 1.0, mask=mask)
    assert not t1.requires_grad and max_rel(t1, want) <= 1e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_logits_gradient_is_the_float32_gradient_rounded_once(dtype):
    logits, targets, mask = logits_case(5)
    xh = logits.to(dtype).requires_grad_(True)
    s = at.logits_stats(xh, targets, 1.0, mask=mask)
    assert s.logp.dtype == torch.float32 and s.entropy.dtype == torch.float32
    (s.logp.sum() - 0.5 * s.entropy.sum()).backward()
    x32 = logits.to(dtype).float().requires_grad_(True)  # the same values in float32
    s32 = at.logits_stats(x32, targets, 1.0, mask=mask)
    (s32.logp.sum() - 0.5 * s32.entropy.sum()).backward()
    assert xh.grad.dtype == dtype
    assert torch.equal(xh.grad, x32.grad.to(dtype))
    assert torch.equal(s.logp, s32.logp)


def test_in_place_change_after_forward_is_caught():
    logits, targets, mask = logits_case(6)
    x = logits.clone().requires_grad_(True)
    y = x * 1.0
    s = at.logits_stats(y, targets, 1.0, mask=mask)
    with torch.no_grad():
        y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        s.logp.sum().backward()


# ----------------------------------------------------------------------------- fused head

def fused_case(seed, B=3, L=5, D=12, V=37, bias=True):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(B, L, D, generator=g)
    W = torch.randn(V, D, generator=g) * 0.5
    b = torch.randn(V, generator=g) * 0.3 if bias else None
    targets = torch.randint(0, V, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 3:] = False
    mask[2, 4] = False
    return X, W, b, targets, mask


def head_logits(X, W, b):
    z = X @ W.T
    return z if b is None else z + b


@pytest.mark.parametrize("T", [1.0, 0.7])
def test_fused_head_forward_backward_match_float64_autograd(T):
    X, W, b, targets, mask = fused_case(1)
    g = torch.Generator().manual_seed(9)
    a, c = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    leaves = [t.clone().requires_grad_(True) for t in (X, W, b)]
    with at.FusedHead({"fused": {"temperature": T, "chunk_n": 4, "chunk_v": 16}}) as head:
        logp, H = head(leaves[0], leaves[1], targets, bias=leaves[2], mask=mask)
        ((a * logp).sum() + (c * H).sum()).backward()
    ref_leaves = [t.double().requires_grad_(True) for t in (X, W, b)]
    lp64, H64 = ref.logits_stats(head_logits(*ref_leaves), targets, T, mask=mask)
    ((a.double() * lp64).sum() + (c.double() * H64).sum()).backward()
    assert max_rel(logp, lp64) <= 1e-5 and max_rel(H, H64) <= 1e-5
    for got, want, name in zip(leaves, ref_leaves, ("X", "W", "bias")):
        err = max_rel(got.grad, want.grad)
        assert err <= 1e-5, f"d{name}: rel diff {err:.3e}"


def fused_reference(X, W, b, targets, mask, old_logp, adv, cfg):
    """Composite: plain logits, log-softmax, entropy and the transcription of the loss."""
    leaves = [t.double().requires_grad_(True) for t in (X, W, b)]
    lc = cfg["loss"]
    lp, H = ref.logits_stats(head_logits(*leaves), targets, 1.0, mask=mask)
    loss = ref.policy_loss(lp, old_logp.double(), adv.double(), mask, clip_high=lc["clip_ratio_high"],
                           entropy=H, entropy_coeff=lc["entropy_coeff"], agg=lc["loss_agg_mode"])
    loss.backward()
    return loss.item(), [t.grad for t in leaves]


def test_fused_policy_loss_matches_composite_autograd():
    X, W, b, targets, mask = fused_case(2)
    cfg = {"loss": {"clip_ratio_high": 0.28, "entropy_coeff": 0.01, "loss_agg_mode": "seq-mean-token-mean"},
           "fused": {"chunk_n": 4}}
    with torch.no_grad():
        lp0, _ = ref.logits_stats(head_logits(X, W, b), targets, 1.0, mask=mask)
    old_logp = lp0 + 0.3 * torch.randn(lp0.shape, generator=torch.Generator().manual_seed(3))
    adv = torch.tensor([1.0, -0.5, 0.8])
    leaves = [t.clone().requires_grad_(True) for t in (X, W, b)]
    with at.FusedHead(cfg) as head:
        out = head.policy_loss(*leaves[:2], targets, old_logp, adv, mask, bias=leaves[2])
        out.loss.backward()
        want, grads = fused_reference(X, W, b, targets, mask, old_logp, adv, cfg)
        assert abs(out.loss.item() - want) <= 1e-5 * abs(want)
        for got, g, name in zip(leaves, grads, ("X", "W", "bias")):
            err = max_rel(got.grad, g)
            assert err <= 1e-5, f"d{name}: rel diff {err:.3e}"
        assert out.logp.shape == (3, 5) and not out.logp.requires_grad
        assert out.metrics["entropy"] > 0
        # The same through logits_stats + policy_loss (the unfused path) agrees.
        x2 = [t.clone().requires_grad_(True) for t in (X, W, b)]
        s = at.logits_stats(head_logits(*x2), targets, 1.0, mask=mask)
        loss2 = at.policy_loss(s.logp, old_logp, adv, mask, config=cfg, entropy=s.entropy)
        loss2.backward()
        assert abs(loss2.item() - out.loss.item()) <= 1e-5 * abs(want)
        assert max_rel(x2[1].grad, grads[1]) <= 1e-5


def test_fused_loss_and_grad_adds_into_W_grad():
    X, W, b, targets, mask = fused_case(4)
    old_logp = torch.full((3, 5), -3.0)
    adv = torch.tensor([1.0, -1.0, 0.5])
    with at.FusedHead() as head:
        value, dX, dW, db, metrics, logp, H = head.loss_and_grad(X, W, targets, None, old_logp, adv, mask, bias=b)
        acc_W, acc_b = torch.ones_like(W), torch.zeros_like(b)
        r = head.loss_and_grad(X, W, targets, None, old_logp, adv, mask, bias=b, grad_W=acc_W, grad_bias=acc_b)
        assert r[2] is acc_W and r[3] is acc_b and r[0] == value
        assert torch.allclose(acc_W, 1 + dW, rtol=0, atol=1e-7) and torch.equal(acc_b, db)
    plain = {"loss": {"clip_ratio_high": 0.2, "entropy_coeff": 0.0, "loss_agg_mode": "token-mean"}}
    want, grads = fused_reference(X, W, b, targets, mask, old_logp, adv, plain)
    assert abs(value - want) <= 1e-6 * abs(want)
    assert max_rel(dX, grads[0]) <= 1e-5 and max_rel(dW, grads[1]) <= 1e-5 and max_rel(db, grads[2]) <= 1e-5
    assert isinstance(value, float) and metrics["n_tokens"] == int(mask.sum())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_half_precision_gradients_come_back_in_their_dtype(dtype):
    X, W, b, targets, mask = fused_case(5)
    Xh, Wh, bh = (t.to(dtype).requires_grad_(True) for t in (X, W, b))
    X32, W32, b32 = (t.to(dtype).float().requires_grad_(True) for t in (X, W, b))
    with at.FusedHead() as head:
        lp, H = head(Xh, Wh, targets, bias=bh, mask=mask)
        (lp.sum() + H.sum()).backward()
        lp32, H32 = head(X32, W32, targets, bias=b32, mask=mask)
        (lp32.sum() + H32.sum()).backward()
    assert lp.dtype == torch.float32 and torch.equal(lp, lp32)
    for h, f in ((Xh, X32), (Wh, W32), (bh, b32)):
        assert h.grad.dtype == dtype and torch.equal(h.grad, f.grad.to(dtype))
