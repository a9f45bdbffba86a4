"""logits_stats / logits_backward against float64 PyTorch references of the same formulas."""
import numpy as np
import pytest
import torch

import aepo

TEMPERATURES = [0.3, 0.7, 1.0, 1.2, 2.0]


def reference(logits, targets, temperature):
    """float64 (logp, entropy, lse, logp_t1) of the formulas in docs/KERNELS.md."""
    x = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    t = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    z = x / temperature
    lse = torch.logsumexp(z, -1)
    p = torch.softmax(z, -1)
    pz = torch.where(p > 0, p * z, torch.zeros_like(z)).sum(-1)
    logp = z.gather(-1, t.unsqueeze(-1)).squeeze(-1) - lse
    logp_t1 = x.gather(-1, t.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(x, -1)
    return logp.numpy(), (lse - pz).numpy(), lse.numpy(), logp_t1.numpy()


def scaled_error(got, want):
    return float(np.max(np.abs(np.asarray(got, np.float64) - want) / np.maximum(1.0, np.abs(want))))


def test_anchor_entropy_table():
    """The entropy example of docs/API.md ("Reference values"): logits [2, 1, 0, -1]."""
    x = np.array([[2, 1, 0, -1]], np.float32)
    for t, h, lp in [(1.0, 0.9475369640, -0.4401896986), (0.7, 0.7020279765, -0.2706738307),
                     (1.3, 1.0907583528, -0.5752478943)]:
        s = aepo.logits_stats(x, [0], t)
        assert abs(s.entropy[0] - h) < 2e-7 and abs(s.logp[0] - lp) < 2e-7
    s = aepo.logits_stats(x, [0], 1.0)
    g = aepo.logits_backward(x, [0], 1.0, s.lse, s.entropy, grad_entropy=[1.0])
    np.testing.assert_allclose(g[0], [-0.326688139, 0.116700968, 0.130076206, 0.079910965], atol=2e-7)


@pytest.mark.parametrize("v", [2, 7, 100, 32000])
@pytest.mark.parametrize("scale", [1.0, 10.0, 50.0])
def test_stats_match_float64(rng, v, scale):
    n = 6
    x = (scale * rng.standard_normal((n, v))).astype(np.float32)
    x[1, ::3] = -np.inf
    x[1, 1] = 0.0
    targets = rng.integers(0, v, n)
    targets[1] = 1
    worst = 0.0
    for t in TEMPERATURES:
        s = aepo.logits_stats(x, targets, t, logp_t1=True)
        for got, want in zip((s.logp, s.entropy, s.lse, s.logp_t1), reference(x, targets, t)):
            worst = max(worst, scaled_error(got, want))
        assert s.count == n
        assert s.entropy_sum == pytest.approx(float(np.sum(s.entropy.astype(np.float64))), rel=1e-6)
    print(f"V={v} scale={scale}: max scaled error {worst:.3g}")
    assert worst <= 1e-5, worst


def torch_grad(x, targets, t, gl, gh):
    """Autograd in float64 of L = sum(gl * logp + gh * H)."""
    xt = torch.as_tensor(np.asarray(x, np.float64)).requires_grad_(True)
    z = xt / t
    lse = torch.logsumexp(z, -1)
    logp = z.gather(-1, torch.as_tensor(targets).long().unsqueeze(-1)).squeeze(-1) - lse
    p = torch.softmax(z, -1)
    h = lse - torch.where(p > 0, p * z, torch.zeros_like(z)).sum(-1)
    (torch.as_tensor(gl, dtype=torch.float64) * logp + torch.as_tensor(gh, dtype=torch.float64) * h).sum().backward()
    return xt.grad.numpy()


@pytest.mark.parametrize("t", TEMPERATURES)
def test_backward_matches_autograd(rng, t):
    b, l, v = 2, 3, 257
    x = (4 * rng.standard_normal((b, l, v))).astype(np.float32)
    targets = rng.integers(0, v, (b, l))
    gl = rng.standard_normal((b, l)).astype(np.float32)
    gh = rng.standard_normal((b, l)).astype(np.float32)
    s = aepo.logits_stats(x, targets, t)
    g = aepo.logits_backward(x, targets, t, s.lse, s.entropy, gl, gh)
    ref = torch_grad(x, targets, t, gl, gh)
    err = np.max(np.abs(g - ref)) / np.max(np.abs(ref))
    print(f"T={t}: ||g - g_ref||inf / ||g_ref||inf = {err:.3g}")
    assert err <= 1e-5, err


def test_shifted_view_and_in_place(rng):
    """logits[:, :-1] of a [B, L+1, V] buffer is read without a copy and can take the gradient in place."""
    b, l, v = 3, 4, 50
    buf = rng.standard_normal((b, l + 1, v)).astype(np.float32)
    view = buf[:, :-1]
    assert not view.flags.c_contiguous
    targets = rng.integers(0, v, (b, l + 1))[:, 1:]      # a strided view too
    compact = np.ascontiguousarray(view)
    s = aepo.logits_stats(view, targets, 0.7)
    s2 = aepo.logits_stats(compact, targets, 0.7)
    assert np.array_equal(s.logp, s2.logp) and np.array_equal(s.entropy, s2.entropy)
    gl = np.ones((b, l), np.float32)
    want = aepo.logits_backward(compact, targets, 0.7, s.lse, s.entropy, gl, -gl)
    last = buf[:, -1].copy()
    got = aepo.logits_backward(view, targets, 0.7, s.lse, s.entropy, gl, -gl, out=view)
    assert got is view
    assert np.array_equal(buf[:, :-1], want)
    assert np.array_equal(buf[:, -1], last)          # the row past the view is untouched


def test_threads_are_bit_identical(rng):
    x = (3 * rng.standard_normal((64, 3000))).astype(np.float32)
    targets = rng.integers(0, 3000, 64)
    mask = rng.integers(0, 2, 64)
    gl = rng.standard_normal(64).astype(np.float32)
    a = aepo.logits_stats(x, targets, 1.2, mask=mask, logp_t1=True, threads=1)
    b = aepo.logits_stats(x, targets, 1.2, mask=mask, logp_t1=True, threads=2)
    for u, w in zip(a, b):
        assert np.array_equal(np.asarray(u), np.asarray(w))
    ga = aepo.logits_backward(x, targets, 1.2, a.lse, a.entropy, gl, gl, mask=mask, threads=1)
    gb = aepo.logits_backward(x, targets, 1.2, a.lse, a.entropy, gl, gl, mask=mask, threads=2)
    assert np.array_equal(ga, gb)


def test_mask_rows_are_not_read(rng):
    x = rng.standard_normal((5, 10)).astype(np.float32)
    targets = np.array([1, -100, 3, 4, -100])
    mask = np.array([1, 0, 1, 1, 0], bool)
    x[1] = np.nan
    x[4] = np.nan
    s = aepo.logits_stats(x, targets, 1.0, mask=mask)
    assert s.count == 3
    assert s.logp[1] == 0 and s.entropy[4] == 0 and s.lse[1] == 0
    ok = ~mask
    ref = reference(np.where(ok[:, None], 0, x), np.where(ok, 0, targets), 1.0)
    assert s.nll_sum == pytest.approx(-float(np.sum(ref[0][mask])), rel=1e-6)
    assert s.entropy_sum == pytest.approx(float(np.sum(ref[1][mask])), rel=1e-6)
    g = aepo.logits_backward(x, targets, 1.0, s.lse, s.entropy, np.ones(5, np.float32), mask=mask)
    assert np.all(g[1] == 0) and np.all(g[4] == 0) and np.all(np.isfinite(g))


def test_entropy_only_needs_no_targets(rng):
    x = rng.standard_normal((4, 9)).astype(np.float32)
    s = aepo.logits_stats(x, None, 0.7)
    assert s.logp is None and s.nll_sum is None
    np.testing.assert_allclose(s.entropy, reference(x, np.zeros(4, int), 0.7)[1], atol=1e-6)


def test_other_dtypes_and_torch_inputs(rng):
    x64 = rng.standard_normal((3, 20))
    targets = torch.tensor([1, 2, 3])
    a = aepo.logits_stats(x64, targets, 1.2)
    b = aepo.logits_stats(torch.tensor(x64, dtype=torch.float32), targets.numpy(), 1.2)
    assert np.array_equal(a.logp, b.logp)
    # A CPU tensor as out is written through.
    out = torch.zeros(3, 20)
    aepo.logits_backward(x64, targets, 1.2, a.lse, a.entropy, np.ones(3), out=out)
    assert torch.count_nonzero(out) > 0


def test_errors_name_argument_and_row(rng):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    t = np.array([0, 1, 2, 3])
    x[2, 3] = np.nan
    with pytest.raises(aepo.NonFiniteError) as e:
        aepo.logits_stats(x, t, 1.0)
    assert e.value.argument == "logits" and e.value.index == 2 and "row 2" in str(e.value)
    assert isinstance(e.value, FloatingPointError)
    x[2] = -np.inf
    with pytest.raises(aepo.InvalidValueError, match="row 2 is all -inf"):
        aepo.logits_stats(x, t, 1.0)
    x[2] = 0
    for bad in (0.0, -0.5, float("nan")):
        with pytest.raises(aepo.InvalidValueError, match="sampler.greedy"):
            aepo.logits_stats(x, t, bad)
    with pytest.raises(aepo.InvalidValueError) as e:
        aepo.logits_stats(x, [0, 1, 6, 3], 1.0)
    assert e.value.argument == "targets" and e.value.index == 2 and isinstance(e.value, ValueError)
    with pytest.raises(aepo.ShapeError):
        aepo.logits_stats(x, [0, 1, 2], 1.0)
    with pytest.raises(aepo.ShapeError):
        aepo.logits_stats(x[0], [0], 1.0)
    with pytest.raises(aepo.DTypeError):
        aepo.logits_stats(x.astype(str), t, 1.0)
    with pytest.raises(aepo.InvalidValueError, match="threads"):
        aepo.logits_stats(x, t, 1.0, threads=0)
    s = aepo.logits_stats(x, t, 1.0)
    with pytest.raises(aepo.ShapeError, match="float32"):
        aepo.logits_backward(x, t, 1.0, s.lse, s.entropy, np.ones(4), out=np.zeros((4, 6)))
    with pytest.raises(aepo.ShapeError):
        aepo.logits_backward(x, t, 1.0, s.lse, s.entropy, np.ones(4), out=np.zeros((4, 7), np.float32))
    with pytest.raises(aepo.NonFiniteError) as e:
        aepo.logits_backward(x, t, 1.0, s.lse, s.entropy, np.array([1, 1, np.inf, 1]))
    assert e.value.argument == "grad_logp" and e.value.index == 2


def test_layouts_that_need_a_copy(rng):
    """A transposed last axis or overlapping rows are read through one copy, with the same results."""
    base = rng.standard_normal((12, 7)).astype(np.float32)
    t = rng.integers(0, 7, 12)
    want = aepo.logits_stats(base, t, 0.9)
    got = aepo.logits_stats(np.asfortranarray(base), t, 0.9)          # last axis not contiguous
    assert np.array_equal(want.logp, got.logp) and np.array_equal(want.entropy, got.entropy)
    flat = rng.standard_normal(20).astype(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(flat, 7)[:12]  # rows overlap
    s = aepo.logits_stats(windows, t, 0.9)
    np.testing.assert_allclose(s.logp, reference(np.array(windows), t, 0.9)[0], atol=1e-6)
    with pytest.raises(aepo.ShapeError, match="out"):
        aepo.logits_backward(base, t, 0.9, want.lse, want.entropy, np.ones(12), out=np.zeros((7, 12), np.float32).T)


def test_edge_shapes():
    """V = 1, empty batches, and logits near the float32 limits."""
    x = np.array([[3.0], [-5.0]], np.float32)
    s = aepo.logits_stats(x, [0, 0], 0.5, logp_t1=True)
    assert np.all(s.logp == 0) and np.all(s.entropy == 0) and np.all(s.logp_t1 == 0)
    assert list(s.lse) == [6.0, -10.0]
    assert np.all(aepo.logits_backward(x, [0, 0], 0.5, s.lse, s.entropy, [1, 1], [1, 1]) == 0)
    for shape in [(0, 5), (3, 0, 5), (0, 4, 5)]:
        e = aepo.logits_stats(np.zeros(shape, np.float32), np.zeros(shape[:-1], int), 1.0)
        assert e.count == 0 and e.entropy_sum == 0 and e.entropy.shape == shape[:-1]
        g = aepo.logits_backward(np.zeros(shape, np.float32), np.zeros(shape[:-1], int), 1.0, e.lse, e.entropy,
                                 np.ones(shape[:-1]))
        assert g.shape == shape
    with pytest.raises(aepo.ShapeError, match="V"):
        aepo.logits_stats(np.zeros((3, 0), np.float32), np.zeros(3, int), 1.0)
    # The forward pass works relative to the row max, so even logits at the float32 limit
    # give exact log-probs and entropy.
    big = np.array([[3.4e38, 3.4e38, -3.4e38]], np.float32)
    s = aepo.logits_stats(big, [1], 0.3)
    assert s.logp[0] == pytest.approx(-np.log(2), abs=1e-6) and s.entropy[0] == pytest.approx(np.log(2), abs=1e-6)
    # The backward pass reads lse back (float64), so it needs |lse| well below 1e9.
    large = np.array([[1e6, 1e6, -1e6, 1e6 - 0.6]], np.float32)
    s = aepo.logits_stats(large, [1], 0.3)
    g = aepo.logits_backward(large, [1], 0.3, s.lse, s.entropy, [1], [1])
    ref = torch_grad(large, [1], 0.3, [1.0], [1.0])
    assert np.max(np.abs(g - ref)) <= 1e-5 * np.max(np.abs(ref))
