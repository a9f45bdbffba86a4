"""Loss, compute_advantages and select_regularizer through the binding, checked against
the reference values of docs/API.md and a PyTorch autograd transcription."""
import math

import numpy as np
import pytest

import aepo
from aepo.loss import METRIC_NAMES

torch = pytest.importorskip("torch")

AGG = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
LP = np.array([[-1, -0.5, -2, -0.1], [-0.3, -1.2, -0.7, -9.0]])
OLP = np.array([[-1.2, -0.4, -1.0, -0.1], [-0.3, -2.7, -0.2, -0.5]])
MASK = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])


def anchor_cfg(mode="token-mean", **loss):
    c = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0, "loss_agg_mode": mode}
    if mode == "seq-mean-token-sum-norm":
        c["loss_scale_factor"] = 4
    c.update(loss)
    return {"loss": c}


def rel(a, b):
    return abs(a - b) / abs(b)


# --------------------------------------------------------------------- reference values

@pytest.mark.parametrize("mode, want", [("token-mean", 0.4436971975), ("seq-mean-token-sum", 1.5529401913),
                                        ("seq-mean-token-mean", 0.2843133967),
                                        ("seq-mean-token-sum-norm", 0.3882350478), ("token-sum", 3.1058803826)])
def test_vanilla_anchor(mode, want):
    with aepo.Loss(anchor_cfg(mode)) as loss:
        r = loss.compute(LP, OLP, [1, -1], MASK)
    assert rel(r.loss, want) <= 1e-7, (r.loss, want)
    assert rel(r.metrics["pg_clipfrac"], 0.2857142853) <= 1e-7
    assert rel(r.metrics["pg_clipfrac_lower"], 0.1428571427) <= 1e-7
    assert rel(r.metrics["ppo_kl"], 1.1999999983) <= 1e-7
    assert r.grad.dtype == np.float32 and r.grad.shape == (2, 4) and r.grad[0, 3] == 0
    assert r.grad_entropy is None
    assert list(r.metrics) == list(METRIC_NAMES)


@pytest.mark.parametrize("kl, want", [("k1", -1.1999999983), ("k2", 5.4142857066), ("k3", 1.6591478448)])
def test_kl_anchor(kl, want):
    with aepo.Loss(anchor_cfg(kl_loss_type=kl, kl_loss_coef=0.1)) as loss:
        r = loss.compute(LP, OLP, [1, -1], MASK, ref_logp=OLP)
    assert rel(r.metrics["kl_loss"], want) <= 1e-7
    assert rel(r.loss, 0.4436971975 + 0.1 * r.metrics["kl_loss"]) <= 1e-7


def test_grpo_anchor_and_dr_grpo():
    a = aepo.compute_advantages([1, 0, 0, 1, 0.5], [7, 7, 7, 7, 3])
    assert a.dtype == np.float32 and a.shape == (5,)
    for got, want in zip(a, [0.866023904, -0.866023904, -0.866023904, 0.866023904, 0.4999995]):
        assert rel(float(got), want) <= 1e-7
    d = aepo.compute_advantages([1, 0, 0, 1, 0.5], np.array([7, 7, 7, 7, 3], dtype=np.int32),
                                norm_adv_by_std_in_grpo=False)
    assert d.tolist() == [0.5, -0.5, -0.5, 0.5, 0.5]
    # GRPO on a group of 5 with k correct answers (docs/API.md, "Reference values").
    for k, right, wrong in [(1, 1.789, -0.447), (2, 1.095, -0.730), (3, 0.730, -1.095), (4, 0.447, -1.789)]:
        a = aepo.compute_advantages([1] * k + [0] * (5 - k), [0] * 5)
        assert abs(a[0] - right) < 5e-4 and abs(a[-1] - wrong) < 5e-4
    assert aepo.compute_advantages([1, 1, 1], [2, 2, 2]).tolist() == [0, 0, 0]


# ---------------------------------------------------------------------- torch reference

def torch_loss(cfg, lp, olp, adv, mask, ref=None, isw=None, ent=None, reg_rows=None, reg_alpha=None,
               global_tokens=None, global_seqs=None, global_reg_tokens=None, dp=1):
    """verl's formulas in float64 autograd, on the float32 values the library sees."""
    c = aepo.validate_config(cfg)
    lc, rc = c["loss"], c["regularizer"]
    f64 = lambda x: torch.tensor(np.asarray(x, dtype=np.float32), dtype=torch.float64)  # noqa: E731
    lp_t = f64(lp).requires_grad_(True)
    olp_t, M = f64(olp), torch.tensor(np.asarray(mask), dtype=torch.float64)
    B, L = lp_t.shape
    A = f64(adv)
    A = A if A.dim() == 2 else A[:, None].expand(B, L)
    reg = torch.zeros(B, dtype=torch.bool) if reg_rows is None else torch.tensor(np.asarray(reg_rows) == 1)
    A = torch.where(reg[:, None], torch.ones_like(A), A)
    weighted = rc["combine"] == "weighted"
    Mmain = M * (~reg[:, None] if weighted else torch.ones(B, 1, dtype=torch.bool))
    Mreg = M * (reg[:, None] if weighted else torch.zeros(B, 1, dtype=torch.bool))
    valid = M > 0
    safe = lambda x: torch.where(valid, x, torch.zeros_like(x))  # noqa: E731  (padding may hold NaN)

    d = torch.clamp(safe(lp_t) - safe(olp_t), -20, 20)
    r = torch.exp(d)
    l1 = -A * r
    l2 = -A * torch.clamp(r, 1 - lc["clip_ratio_low"], 1 + lc["clip_ratio_high"])
    c1 = torch.maximum(l1, l2)
    l3 = -A * lc["clip_ratio_c"]
    tok = torch.where(A < 0, torch.minimum(l3, c1), c1)
    if isw is not None:
        tok = tok * safe(f64(isw))

    def agg(x, m):
        x = torch.where(m > 0, x, torch.zeros_like(x))
        mode = lc["loss_agg_mode"]
        if mode == "token-mean":
            return (x * m).sum() / (global_tokens if global_tokens is not None else m.sum()) * dp
        if mode == "token-sum":
            return (x * m).sum() * dp
        s = (x * m).sum(-1)
        if mode == "seq-mean-token-mean":
            s = s / (m.sum(-1) + 1e-8)
        nonempty = m.sum(-1) > 0
        G = global_seqs if global_seqs is not None else nonempty.sum()
        v = s[nonempty].sum() / G * dp
        return v / lc["loss_scale_factor"] if mode == "seq-mean-token-sum-norm" else v

    loss = agg(tok, Mmain)
    ent_t = None
    if ent is not None:
        ent_t = f64(ent).requires_grad_(True)
        loss = loss - lc["entropy_coeff"] * agg(safe(ent_t), Mmain)
    if ref is not None and lc["kl_loss_coef"] != 0:
        delta = safe(lp_t) - safe(f64(ref))
        kind = lc["kl_loss_type"].rstrip("+")
        if kind in ("kl", "k1"):
            kl = delta
        elif kind == "abs":
            kl = delta.abs()
        elif kind in ("mse", "k2"):
            kl = 0.5 * delta ** 2
        else:
            x = torch.clamp(-delta, -20, 20)
            kl = torch.clamp(torch.exp(x) - x - 1, -10, 10)
        if lc["kl_loss_type"].endswith("+") and kind not in ("mse", "k2"):
            k2 = 0.5 * delta ** 2
            kl = k2 - k2.detach() + kl.detach()
        loss = loss + lc["kl_loss_coef"] * agg(kl, Mmain)
    if Mreg.sum() > 0:
        alpha = rc["alpha"] if reg_alpha is None else reg_alpha
        n = global_reg_tokens if global_reg_tokens is not None else Mreg.sum()
        loss = loss + alpha * (torch.where(Mreg > 0, tok, torch.zeros_like(tok)) * Mreg).sum() / n * dp
    loss.backward()
    return loss.item(), lp_t.grad.numpy(), None if ent_t is None else ent_t.grad.numpy()


def random_case(rng, B=6, L=37, per_token=False, garbage=True):
    olp = rng.uniform(-4, -0.05, (B, L))
    d = rng.uniform(-1.5, 1.5, (B, L))
    d[rng.random((B, L)) < 0.05] = -22.0
    lp = olp + d
    lens = rng.integers(0, L + 1, B)
    lens[0] = L
    mask = (np.arange(L)[None, :] < lens[:, None]).astype(np.uint8)
    adv = rng.uniform(-2, 2, (B, L) if per_token else B)
    ref = lp + rng.uniform(-2, 2, (B, L))
    ent = rng.uniform(0, 3, (B, L))
    isw = rng.uniform(0.5, 1.5, (B, L))
    if garbage:  # padding is never read
        for a in (lp, olp, ref, ent, isw):
            a[mask == 0] = np.nan
    return dict(logp=lp.astype(np.float32), old_logp=olp.astype(np.float32), advantages=adv.astype(np.float32),
                mask=mask, ref_logp=ref.astype(np.float32), entropy=ent.astype(np.float32),
                is_weights=isw.astype(np.float32))


def check_against_torch(cfg, case, **kw):
    with aepo.Loss(cfg) as loss:
        r = loss.compute(case["logp"], case["old_logp"], case["advantages"], case["mask"], ref_logp=case.get("ref_logp"),
                       is_weights=case.get("is_weights"), entropy=case.get("entropy"), **kw)
    t_loss, t_grad, t_gent = torch_loss(cfg, case["logp"], case["old_logp"], case["advantages"], case["mask"],
                                        ref=case.get("ref_logp"), isw=case.get("is_weights"), ent=case.get("entropy"),
                                        reg_rows=kw.get("reg_rows"), reg_alpha=kw.get("reg_alpha"),
                                        global_tokens=kw.get("global_tokens"), global_seqs=kw.get("global_seqs"),
                                        global_reg_tokens=kw.get("global_reg_tokens"), dp=kw.get("dp_size", 1))
    assert rel(r.loss, t_loss) <= 1e-9, (r.loss, t_loss)
    scale = np.abs(t_grad).max()
    diff = np.abs(r.grad - t_grad).max()
    assert scale > 0 and diff <= 1e-6 * scale, f"max |grad - torch| = {diff}, scale {scale}"
    if t_gent is not None:
        ge = np.abs(r.grad_entropy - t_gent).max()
        assert ge <= 1e-6 * max(np.abs(t_gent).max(), 1e-300), f"grad_entropy max diff {ge}"
    return r


@pytest.mark.parametrize("mode", AGG)
@pytest.mark.parametrize("kl", ["k1", "abs", "k2", "k3", "k3+", "k1+"])
def test_matches_torch_autograd(rng, mode, kl):
    cfg = anchor_cfg(mode, kl_loss_type=kl, kl_loss_coef=0.3, entropy_coeff=0.05, loss_scale_factor=7)
    for per_token in (False, True):
        check_against_torch(cfg, random_case(rng, per_token=per_token))


@pytest.mark.parametrize("mode", AGG)
@pytest.mark.parametrize("combine", ["replace", "weighted"])
def test_regulariser_rows_and_global_counts_match_torch(rng, mode, combine):
    cfg = anchor_cfg(mode, entropy_coeff=0.02, loss_scale_factor=5)
    cfg["regularizer"] = {"combine": combine}
    case = random_case(rng)
    reg = np.array([0, 0, 1, 0, 1, 0], dtype=bool)
    check_against_torch(cfg, case, reg_rows=reg, reg_alpha=0.3)
    check_against_torch(cfg, case, reg_rows=reg, global_tokens=500, global_seqs=17, global_reg_tokens=90, dp_size=2)


@pytest.mark.parametrize("mode", AGG)
def test_micro_batches_sum_to_one_call(rng, mode):
    cfg = anchor_cfg(mode, entropy_coeff=0.01, kl_loss_coef=0.2, loss_scale_factor=9)
    case = random_case(rng, B=12)
    m = case["mask"]
    gt, gs = int(m.sum()), int((m.sum(1) > 0).sum())
    with aepo.Loss(cfg) as loss:
        one = loss.compute(**case)
        dp, total, grads = 2, 0.0, []
        for lo in range(0, 12, 4):
            part = {k: v[lo:lo + 4] for k, v in case.items()}
            r = loss.compute(**part, global_tokens=gt, global_seqs=gs, dp_size=dp)
            total += r.loss
            grads.append(r.grad / dp)
    assert rel(total / dp, one.loss) <= 1e-6
    g = np.concatenate(grads)
    assert np.abs(g - one.grad).max() <= 1e-6 * np.abs(one.grad).max()


# ------------------------------------------------------------------------- selection

def test_select_regularizer_and_splice():
    rewards = [0, 1, 0, 1, 0, 1, 1, 1, 1, 1, 1]
    groups = [4, 4, 4, 4, 4, 9, 9, 9, 9, 9, 11]
    s = aepo.select_regularizer(rewards, groups, k_max=60, halve=False)
    assert s.indices.tolist() == [1, 3, 10] and s.n_positive == 3 and s.k == 3 and s.indices.dtype == np.int64
    h = aepo.select_regularizer(rewards, groups, k_max=60, halve=True)
    assert h.indices.tolist() == [1] and h.k == 1 and h.n_positive == 3
    assert aepo.select_regularizer(rewards, groups, k_max=2, halve=False).indices.tolist() == [1, 3]
    # a threshold above every advantage: no regulariser this step
    none = aepo.select_regularizer(rewards, groups, k_max=60, halve=False, threshold=5.0)
    assert none.k == 0 and none.indices.shape == (0,) and none.n_positive == 0
    main = np.arange(8) * 10
    assert s.splice(main, np.array(rewards) + 100).tolist() == [101, 101, 101, 30, 40, 50, 60, 70]
    assert s.splice(np.zeros(8), np.ones(11)).tolist() == [1, 1, 1, 0, 0, 0, 0, 0]


def test_empty_inputs():
    assert aepo.compute_advantages([], []).shape == (0,)
    s = aepo.select_regularizer([], [], k_max=60, halve=True)
    assert s.k == 0 and s.n_positive == 0 and s.indices.shape == (0,)
    with aepo.Loss() as loss:
        r = loss.compute(np.zeros((0, 5)), np.zeros((0, 5)), np.zeros(0), np.zeros((0, 5), np.uint8), global_tokens=3)
    assert r.loss == 0 and r.grad.shape == (0, 5) and r.metrics["n_tokens"] == 0


def test_weighted_metrics_report_the_regulariser():
    case = random_case(np.random.default_rng(3), garbage=False)
    with aepo.Loss({"regularizer": {"combine": "weighted"}}) as loss:
        r = loss.compute(case["logp"], case["old_logp"], case["advantages"], case["mask"], reg_rows=[0, 0, 0, 0, 1, 1],
                       reg_alpha=0.5)
        none = loss.compute(case["logp"], case["old_logp"], case["advantages"], case["mask"])
    m = case["mask"]
    assert r.metrics["n_positive"] == 2 and r.metrics["reg_used"] == (1.0 if m[4:].sum() else 0.0)
    assert math.isclose(r.metrics["reg_token_frac"], m[4:].sum() / m.sum())
    assert math.isclose(r.loss, r.metrics["pg_loss"] + r.metrics["reg_loss"], rel_tol=1e-12)
    assert none.metrics["reg_used"] == 0 and none.metrics["n_positive"] == 0 and none.metrics["reg_loss"] == 0


ROLE_METRICS = ("nll_main", "entropy_main", "n_tokens_main", "nll_reg", "entropy_reg", "n_tokens_reg")


def role_reference(case, reg_rows, entropy=True):
    """The role metrics in float64 numpy: plain token means over the valid tokens of main rows
    (reg_rows = 0) and of regulariser rows (reg_rows = 1)."""
    valid = case["mask"] != 0
    out = {}
    for role, rows in (("main", ~reg_rows), ("reg", reg_rows)):
        sel = valid & rows[:, None]
        n = int(sel.sum())
        lp = case["logp"].astype(np.float64)[sel]
        h = case["entropy"].astype(np.float64)[sel]
        out[f"nll_{role}"] = -lp.sum() / n if n else 0.0
        out[f"entropy_{role}"] = h.sum() / n if n and entropy else 0.0
        out[f"n_tokens_{role}"] = float(n)
    return out


@pytest.mark.parametrize("combine", ["replace", "weighted"])
@pytest.mark.parametrize("with_entropy", [True, False])
def test_role_metrics_match_numpy(rng, combine, with_entropy):
    assert METRIC_NAMES[12:18] == ROLE_METRICS
    cfg = anchor_cfg("seq-mean-token-mean")
    cfg["regularizer"] = {"combine": combine}
    case = random_case(rng, B=8)  # NaN padding: never read
    reg = np.array([0, 1, 0, 0, 1, 0, 1, 0], dtype=bool)
    kw = {k: case[k] for k in ("logp", "old_logp", "advantages", "mask")}
    if with_entropy:
        kw["entropy"] = case["entropy"]
    with aepo.Loss(cfg) as loss:
        r = loss.compute(**kw, reg_rows=reg)
        plain = loss.compute(**kw)
        parts = [loss.compute(**{k: v[lo:lo + 3] for k, v in kw.items()}, reg_rows=reg[lo:lo + 3],
                            global_tokens=10**6, global_seqs=10**6, global_reg_tokens=10**6) for lo in range(0, 8, 3)]
    want = role_reference(case, reg, with_entropy)
    assert want["n_tokens_main"] > 0 and want["n_tokens_reg"] > 0
    for name in ROLE_METRICS:
        assert math.isclose(r.metrics[name], want[name], rel_tol=1e-12, abs_tol=1e-12), (name, r.metrics[name], want[name])
    assert r.metrics["n_tokens_main"] + r.metrics["n_tokens_reg"] == r.metrics["n_tokens"]
    # Without reg_rows every valid token is a main-row token.
    none = role_reference(case, np.zeros(8, dtype=bool), with_entropy)
    for name in ROLE_METRICS:
        assert math.isclose(plain.metrics[name], none[name], rel_tol=1e-12, abs_tol=1e-12), name
    # Micro-batches: mean * count and count add up to the one call's.
    for role in ("main", "reg"):
        n = sum(p.metrics[f"n_tokens_{role}"] for p in parts)
        assert n == r.metrics[f"n_tokens_{role}"]
        for stat in ("nll", "entropy"):
            got = sum(p.metrics[f"{stat}_{role}"] * p.metrics[f"n_tokens_{role}"] for p in parts) / n
            assert math.isclose(got, r.metrics[f"{stat}_{role}"], rel_tol=1e-12, abs_tol=1e-12), (stat, role)


# ---------------------------------------------------------------------------- errors

def test_errors_name_the_argument():
    with aepo.Loss() as loss:
        with pytest.raises(aepo.ShapeError) as e:
            loss.compute(LP, OLP[:, :3], [1, -1], MASK)
        assert e.value.argument == "old_logp"
        with pytest.raises(aepo.ShapeError) as e:
            loss.compute(LP, OLP, [1, -1, 1], MASK)
        assert e.value.argument == "advantages"
        with pytest.raises(aepo.ShapeError):
            loss.compute(LP[0], OLP[0], [1], MASK[0])
        bad = MASK.copy()
        bad[1, 2] = 3
        with pytest.raises(aepo.InvalidValueError) as e:
            loss.compute(LP, OLP, [1, -1], bad)
        assert e.value.argument == "mask" and e.value.index == 6 and "mask[6] is 3" in str(e.value)
        lp = LP.copy()
        lp[1, 1] = np.inf
        with pytest.raises(aepo.NonFiniteError) as e:
            loss.compute(lp, OLP, [1, -1], MASK)
        assert e.value.argument == "logp" and e.value.index == 5 and isinstance(e.value, FloatingPointError)
        lp[1, 1] = -1.2
        lp[0, 3] = np.nan  # masked: fine
        loss.compute(lp, OLP, [1, -1], MASK)
        with pytest.raises(aepo.NonFiniteError) as e:
            loss.compute(LP, OLP, [np.nan, -1], MASK)
        assert e.value.argument == "advantages" and e.value.index == 0
        with pytest.raises(aepo.InvalidValueError) as e:
            loss.compute(LP, OLP, [1, -1], np.zeros_like(MASK))
        assert e.value.argument == "global_tokens" and "no valid tokens" in str(e.value)
        r = loss.compute(LP, OLP, [1, -1], np.zeros_like(MASK), global_tokens=10)
        assert r.loss == 0 and not r.grad.any()
        with pytest.raises(aepo.InvalidValueError) as e:
            loss.compute(LP, OLP, [1, -1], MASK, dp_size=2)
        assert e.value.argument == "global_tokens"
        with pytest.raises(aepo.DTypeError):
            loss.compute(LP.astype(str), OLP, [1, -1], MASK)
        with pytest.raises(aepo.DTypeError):
            loss.compute(LP, OLP, [1, -1], MASK.astype(np.float32))
    with pytest.raises(aepo.ConfigError) as e:
        aepo.Loss({"loss": {"policy_loss": "geo_mean"}})
    assert e.value.argument == "loss.policy_loss" and "unknown value" in str(e.value)
    with pytest.raises(aepo.ConfigError) as e:
        aepo.Loss({"loss": {"loss_agg_mode": "mean"}})
    assert e.value.argument == "loss.loss_agg_mode"
    with pytest.raises(aepo.ConfigError) as e:
        aepo.compute_advantages([1, 0], [0, 0], estimator="gae")
    assert e.value.argument == "advantage.estimator"
    with pytest.raises(aepo.NonFiniteError) as e:
        aepo.compute_advantages([1, np.nan], [0, 0])
    assert e.value.argument == "rewards" and e.value.index == 1
    with pytest.raises(aepo.ShapeError) as e:
        aepo.compute_advantages([1, 0], [0, 0, 1])
    assert e.value.argument == "group_ids"
    with pytest.raises(aepo.InvalidValueError):
        aepo.select_regularizer([1, 0], [0, 0], k_max=-1, halve=False)


def test_handle_lifecycle_and_config():
    loss = aepo.Loss({"loss": {"clip_ratio_high": 0.28}, "regularizer": {"combine": "weighted"}})
    cfg = loss.config
    assert cfg["loss"]["clip_ratio_high"] == 0.28 and cfg["regularizer"]["combine"] == "weighted"
    assert cfg == aepo.validate_config({"loss": {"clip_ratio_high": 0.28}, "regularizer": {"combine": "weighted"}})
    loss.close()
    loss.close()
    with pytest.raises(ValueError):
        loss.compute(LP, OLP, [1, -1], MASK)


def test_inputs_converted_once_and_threads_agree(rng):
    case = random_case(rng, B=9, L=301, garbage=False)
    with aepo.Loss({"loss": {"threads": 1}}) as a, aepo.Loss({"loss": {"threads": 2}}) as b:
        ra = a.compute(**case)
        rb = b.compute(**{k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in case.items()})
        rc = b.compute(**{k: np.asfortranarray(v) for k, v in case.items()})
    assert ra.loss == rb.loss == rc.loss
    assert np.array_equal(ra.grad, rb.grad) and np.array_equal(ra.grad, rc.grad)
    assert ra.metrics == rb.metrics
