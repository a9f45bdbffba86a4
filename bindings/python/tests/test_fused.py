"""FusedHead against float64 references: numpy for the forward statistics, PyTorch autograd
(float64) for the gradients and for the loss, plus argument errors."""
import numpy as np
import pytest

import aepo

torch = pytest.importorskip("torch")


def make_case(rng, N=12, D=16, V=53, bias=True, holes=()):
    X = rng.standard_normal((N, D)).astype(np.float32)
    W = (rng.standard_normal((V, D)) * 0.6).astype(np.float32)
    b = rng.standard_normal(V).astype(np.float32) if bias else None
    t = rng.integers(0, V, N).astype(np.int64)
    mask = np.ones(N, np.uint8)
    for r in holes:
        mask[r] = 0
        X[r] = np.nan
        t[r] = -100
    return X, W, b, t, mask


def torch_stats(X, W, b, t, mask, T):
    """log p, H and lse in float64 with autograd, rows with mask = 0 zeroed."""
    Xt = torch.tensor(np.nan_to_num(X), dtype=torch.float64, requires_grad=True)
    Wt = torch.tensor(W, dtype=torch.float64, requires_grad=True)
    bt = None if b is None else torch.tensor(b, dtype=torch.float64, requires_grad=True)
    z = Xt @ Wt.T
    if bt is not None:
        z = z + bt
    z = z / T
    lse = torch.logsumexp(z, -1)
    logp_all = z - lse[:, None]
    tt = torch.tensor(np.where(mask == 1, t, 0))
    logp = logp_all.gather(-1, tt[:, None]).squeeze(-1)
    H = lse - (logp_all.exp() * z).sum(-1)
    m = torch.tensor(mask, dtype=torch.float64)
    return Xt, Wt, bt, logp * m, H * m, lse * m, m


def rel(a, b):
    a = np.asarray(a, np.float64)
    b = b.detach().numpy() if hasattr(b, "detach") else np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)


@pytest.mark.parametrize("chunks", [(128, 8192), (5, 7), (1, 1)])
@pytest.mark.parametrize("T", [1.0, 0.7])
def test_forward_backward_match_float64_autograd(rng, chunks, T):
    X, W, b, t, mask = make_case(rng, holes=(3, 4, 9))
    cfg = {"fused": {"chunk_n": chunks[0], "chunk_v": chunks[1], "temperature": T}}
    with aepo.FusedHead(cfg) as head:
        logp, ent, lse = head.forward(X, W, t, bias=b, mask=mask)
        Xt, Wt, bt, lp_ref, H_ref, lse_ref, _ = torch_stats(X, W, b, t, mask, T)
        assert rel(logp, lp_ref) <= 1e-5 and rel(ent, H_ref) <= 1e-5 and rel(lse, lse_ref) <= 1e-5
        assert logp[3] == 0 and ent[4] == 0 and lse[9] == 0
        gl = rng.standard_normal(X.shape[0]).astype(np.float32)
        gh = rng.standard_normal(X.shape[0]).astype(np.float32)
        dX, dW, db = head.backward(X, W, t, lse, ent, gl, gh, bias=b, mask=mask)
        (lp_ref * torch.tensor(gl, dtype=torch.float64) + H_ref * torch.tensor(gh, dtype=torch.float64)).sum().backward()
        assert rel(dX, Xt.grad) <= 1e-5, rel(dX, Xt.grad)
        assert rel(dW, Wt.grad) <= 1e-5, rel(dW, Wt.grad)
        assert rel(db, bt.grad) <= 1e-5, rel(db, bt.grad)
        assert np.all(dX[[3, 4, 9]] == 0)


def test_leading_shape_temperature_override_and_accumulation(rng):
    X, W, b, t, mask = make_case(rng, N=12, bias=False)
    head = aepo.FusedHead()
    X3, t3 = X.reshape(3, 4, -1), t.reshape(3, 4)
    logp, ent, lse = head.forward(X3, W, t3, temperature=0.5)
    assert logp.shape == (3, 4)
    with aepo.FusedHead({"fused": {"temperature": 0.5}}) as other:
        ref = other.forward(X, W, t)
    assert np.array_equal(logp.reshape(-1), ref[0]) and np.array_equal(ent.reshape(-1), ref[1])
    gl = np.ones((3, 4), np.float32)
    gW = np.full(W.shape, 2.0, np.float32)
    out = np.empty(X3.shape, np.float32)
    dX, dW, db = head.backward(X3, W, t3, lse, None, gl, grad_W=gW, out_dX=out, temperature=0.5)
    assert dW is gW and dX is out and db is None
    fresh = head.backward(X3, W, t3, lse, None, gl, temperature=0.5)[1]
    assert np.allclose(gW, fresh + 2.0, rtol=1e-6, atol=1e-6)
    head.close()
    head.close()


def test_errors_name_the_argument(rng):
    X, W, b, t, mask = make_case(rng, N=4, D=6, V=9)
    head = aepo.FusedHead()
    with pytest.raises(aepo.ShapeError) as e:
        head.forward(X, W[:, :5], t)
    assert e.value.argument == "W" and "D = 6" in str(e.value)
    Xbad = X.copy()
    Xbad[2, 1] = np.inf
    with pytest.raises(aepo.NonFiniteError) as e:
        head.forward(Xbad, W, t)
    assert e.value.argument == "X" and e.value.index == 2 * 6 + 1 and isinstance(e.value, FloatingPointError)
    with pytest.raises(aepo.InvalidValueError) as e:
        head.forward(X, W, np.array([0, 1, 9, 2]))
    assert e.value.argument == "targets" and e.value.index == 2
    with pytest.raises(aepo.ConfigError) as e:
        aepo.FusedHead({"fused": {"chunk_n": 0}})
    assert e.value.argument == "fused.chunk_n"
    with pytest.raises(aepo.InvalidValueError) as e:
        head.forward(X, W, t, temperature=0)
    assert e.value.argument == "temperature" and "sampler.greedy" in str(e.value)
    with pytest.raises(aepo.DTypeError):
        head.forward(X, None, t)
    with pytest.raises(aepo.ShapeError) as e:
        head.backward(X, W, t, np.zeros(4, np.float32), None, np.zeros(4, np.float32), grad_W=np.zeros((9, 6)))
    assert e.value.argument == "grad_W"


LOSS_CFGS = [
    {"loss": {"entropy_coeff": 0.05}},
    {"loss": {"loss_agg_mode": "seq-mean-token-mean", "kl_loss_coef": 0.1, "entropy_coeff": -0.02},
     "fused": {"temperature": 0.8, "chunk_n": 4}},
    {"loss": {"loss_agg_mode": "token-sum"}, "regularizer": {"combine": "weighted", "alpha": 0.5},
     "fused": {"chunk_n": 1}},
]


@pytest.mark.parametrize("k", range(len(LOSS_CFGS)))
def test_loss_and_grad_matches_torch_and_the_pair(rng, k):
    from test_loss import torch_loss

    cfg = LOSS_CFGS[k]
    T = cfg.get("fused", {}).get("temperature", 1.0)
    B, L, D, V = 3, 5, 16, 41
    X, W, b, t, m1 = make_case(rng, N=B * L, D=D, V=V, holes=(4, 7, 8))
    mask = m1.reshape(B, L)
    Xt, Wt, bt, lp, H, _, _ = torch_stats(X, W, b, t, m1, T)
    lp_np = lp.detach().numpy().reshape(B, L)
    old = (lp_np + rng.normal(0, 0.3, (B, L))).astype(np.float32)
    ref = (lp_np + rng.normal(0, 0.3, (B, L))).astype(np.float32)
    adv = rng.standard_normal(B).astype(np.float32)
    reg_rows = np.array([0, 1, 0], np.uint8) if "regularizer" in cfg else None
    kw = {"ref_logp": ref, "reg_rows": reg_rows}
    with aepo.FusedHead(cfg) as head, aepo.Loss(cfg) as loss:
        value, dX, dW, db, metrics, logp, ent = head.loss_and_grad(X.reshape(B, L, D), W, t.reshape(B, L), loss, old,
                                                                   adv, mask, bias=b, **kw)
        # The reference: torch autograd in float64 through log p and H.
        want, glp, gent = torch_loss(cfg, lp_np, old, adv, mask, ref=ref, ent=H.detach().numpy().reshape(B, L),
                                     reg_rows=reg_rows)
        (lp * torch.tensor(glp.reshape(-1)) + H * torch.tensor(gent.reshape(-1))).sum().backward()
        assert abs(value - want) <= 1e-5 * max(1.0, abs(want)), (value, want)
        assert dX.shape == (B, L, D) and logp.shape == (B, L)
        assert rel(logp.reshape(-1), lp) <= 1e-5 and rel(ent.reshape(-1), H) <= 1e-5
        assert rel(dX.reshape(-1, D), Xt.grad) <= 1e-5, rel(dX.reshape(-1, D), Xt.grad)
        assert rel(dW, Wt.grad) <= 1e-5, rel(dW, Wt.grad)
        assert rel(db, bt.grad) <= 1e-5, rel(db, bt.grad)
        assert metrics["n_tokens"] == B * L - 3 and metrics["entropy"] > 0
        # The separate pair: forward, Loss.compute, backward.
        lp2, ent2, lse2 = head.forward(X, W, t, bias=b, mask=m1)
        r = loss.compute(lp2.reshape(B, L), old, adv, mask, entropy=ent2.reshape(B, L), **kw)
        dX2, dW2, db2 = head.backward(X, W, t, lse2, ent2, r.grad.reshape(-1), r.grad_entropy.reshape(-1), bias=b,
                                      mask=m1)
        assert abs(r.loss - value) <= 1e-6 * max(1.0, abs(value))
        assert rel(dX2, dX.reshape(-1, D)) <= 1e-5 and rel(dW2, dW) <= 1e-5 and rel(db2, db) <= 1e-5


def test_loss_and_grad_arguments(rng):
    B, L, D, V = 2, 3, 4, 7
    X, W, b, t, m1 = make_case(rng, N=B * L, D=D, V=V)
    mask = m1.reshape(B, L)
    with aepo.FusedHead() as head, aepo.Loss() as loss:
        old = np.zeros((B, L), np.float32)
        gW = np.zeros((V, D), np.float32)
        out = head.loss_and_grad(X, W, t, loss, old, np.ones(B), mask, grad_W=gW)
        assert out[2] is gW and out[3] is None and out[1].shape == (B * L, D)
        with pytest.raises(aepo.ShapeError) as e:
            head.loss_and_grad(X[:5], W, t[:5], loss, old, np.ones(B), mask)
        assert e.value.argument == "X"
        with pytest.raises(aepo.ShapeError) as e:
            head.loss_and_grad(X, W, t, loss, old[:, :2], np.ones(B), mask)
        assert e.value.argument == "old_logp"
        bad = old.copy()
        bad[1, 2] = np.nan
        with pytest.raises(aepo.NonFiniteError) as e:
            head.loss_and_grad(X, W, t, loss, bad, np.ones(B), mask)
        assert e.value.argument == "old_logp" and e.value.index == 5
        with pytest.raises(TypeError):
            head.loss_and_grad(X, W, t, loss, old, np.ones(B), mask, entropy=old)
        with pytest.raises(TypeError):
            head.loss_and_grad(X, W, t, "not a loss", old, np.ones(B), mask)
