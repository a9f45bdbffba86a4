"""gspo, cispo, gpg/reinforce, clip_cov, kl_cov and the rloo, reinforce_plus_plus_baseline and
grpo_passk estimators through the binding: the hand-derived fixtures of
Tests/fixtures/loss_modes.json to 1e-7, a PyTorch float64 transcription of verl's formulas to
1e-6, Clip-Cov's pick and KL-Cov's top-k against NumPy, determinism over runs and threads, the
fused head, and errors that name the argument."""
import json
import pathlib
import sys

import numpy as np
import pytest

import aepo

torch = pytest.importorskip("torch")

ROOT = pathlib.Path(__file__).resolve().parents[3]
FIXTURES = json.loads((ROOT / "Tests" / "fixtures" / "loss_modes.json").read_text())
sys.path.insert(0, str(ROOT / "scripts"))
import make_loss_fixtures as numpy_ref  # noqa: E402  (the fixtures' numpy transcription: Philox, Floyd, top-k)

AGG = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
MODES = ["gspo", "cispo", "gpg", "reinforce", "clip_cov", "kl_cov"]


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def aggs(mode):
    return ["seq-mean-token-mean"] if mode == "gspo" else AGG


# ------------------------------------------------------------------------------ fixtures

def _case_arrays(case):
    B, L = case["B"], case["L"]

    def bl(key):
        return None if key not in case else np.array(case[key], np.float32).reshape(B, L)

    adv = np.array(case["advantages"], np.float32)
    adv = adv.reshape(B, L) if case["adv_per_token"] else adv
    reg = None if "reg_rows" not in case else np.array(case["reg_rows"], np.uint8)
    return dict(logp=bl("logp"), old_logp=bl("old_logp"), advantages=adv,
                mask=np.array(case["mask"], np.uint8).reshape(B, L), ref_logp=bl("ref_logp"),
                is_weights=bl("is_weights"), entropy=bl("entropy"), reg_rows=reg)


@pytest.mark.parametrize("case", FIXTURES["loss_cases"], ids=lambda c: c["name"])
def test_loss_fixture(case):
    with aepo.Loss(case["config"]) as loss:
        r = loss.compute(**_case_arrays(case), step=case["step"])
    want = case["expect"]
    assert rel(r.loss, want["loss"]) <= 1e-7, (r.loss, want["loss"])
    for key in ("pg_clipfrac", "pg_clipfrac_lower", "ppo_kl"):
        assert rel(r.metrics[key], want[key]) <= 1e-7, (key, r.metrics[key], want[key])
    g, w = r.grad.ravel().astype(np.float64), np.array(want["grad"])
    err = np.where(w == 0, np.abs(g), np.abs(g - w) / np.where(w == 0, 1, np.abs(w)))
    assert err.max() <= 1e-7, f"{case['name']}: max relative grad error {err.max()} at {err.argmax()}"


@pytest.mark.parametrize("case", FIXTURES["advantage_cases"], ids=lambda c: c["name"])
def test_advantage_fixture(case):
    section = dict(case["config"]["advantage"])
    est = section.pop("estimator")
    got = aepo.compute_advantages(case["rewards"], case["group_ids"], estimator=est, lengths=case.get("lengths"),
                                  **section)
    want = np.array(case["expect"])
    err = np.where(want == 0, np.abs(got), np.abs(got - want) / np.where(want == 0, 1, np.abs(want)))
    assert err.max() <= 1e-7, (case["name"], got, want)


def test_fixture_file_is_current():
    """The committed fixture file is what the script produces."""
    assert FIXTURES == json.loads(json.dumps(numpy_ref.document(), sort_keys=True))


@pytest.mark.parametrize("estimator, extra", [("rloo", {}), ("rloo", {"rloo_singleton": "score"}),
                                              ("reinforce_plus_plus_baseline", {}), ("grpo_passk", {}),
                                              ("grpo_passk", {"norm_adv_by_std_in_grpo": False})])
def test_estimators_match_numpy_on_random_groups(rng, estimator, extra):
    n = 400
    ids = rng.integers(0, 90, n) * 7 - 300  # any int64 ids, any order
    if estimator == "grpo_passk":
        ids = np.repeat(np.arange(100) * 3 + 11, 4)
        rng.shuffle(ids)
    rewards = np.round(rng.uniform(-1, 2, n), 1).astype(np.float32)  # ties are common
    lengths = rng.integers(0, 60, n)
    got = aepo.compute_advantages(rewards, ids, estimator=estimator, lengths=lengths, **extra)
    want = numpy_ref.advantages_ref({"estimator": estimator, **extra}, rewards, list(ids), lengths)
    assert np.abs(got - want).max() <= 1e-6 * max(np.abs(want).max(), 1.0), np.abs(got - want).max()


# ---------------------------------------------------------------------- torch reference

def torch_mode_loss(cfg, lp, olp, adv, mask, ref=None, ent=None, isw=None, step=0):
    """verl's formulas (core_algos.py) in float64 autograd on the float32 values the library sees,
    with Clip-Cov's pick and KL-Cov's top-k from the NumPy transcription. Returns the loss,
    dL/dlogp, dL/dH and the selected flat indices."""
    c = aepo.validate_config(cfg)
    lc = c["loss"]
    mode = lc["policy_loss"]
    f64 = lambda x: torch.tensor(np.asarray(x, dtype=np.float32), dtype=torch.float64)  # noqa: E731
    B, L = np.asarray(lp).shape
    M = torch.tensor(np.asarray(mask), dtype=torch.float64)
    valid = M > 0
    safe = lambda x: torch.where(valid, x, torch.zeros_like(x))  # noqa: E731
    log_prob = f64(lp).requires_grad_(True)
    lpv, old = safe(log_prob), safe(f64(olp))
    A = f64(adv)
    A = safe(A if A.dim() == 2 else A[:, None].expand(B, L))
    lo, hi = 1 - lc["clip_ratio_low"], 1 + lc["clip_ratio_high"]
    selected = []
    nk = lpv - old
    if mode == "gspo":
        seq = (nk * M).sum(-1) / M.sum(-1).clamp(min=1)
        log_s = torch.clamp(lpv - lpv.detach() + seq.detach()[:, None], max=10.0)
        s = torch.exp(log_s)
        tok = torch.maximum(-A * s, -A * torch.clamp(s, lo, hi))
    elif mode == "cispo":
        r = torch.exp(torch.clamp(nk, -20, 20))
        tok = -torch.clamp(r, lo, hi).detach() * A * lpv
    elif mode in ("gpg", "reinforce"):
        tok = -lpv * A
    elif mode == "clip_cov":
        r = torch.exp(nk)
        l1, l2 = -A * r, -A * torch.clamp(r, lo, hi)
        mm = lambda x: (x * M).sum() / (M.sum() + 1e-8)  # noqa: E731
        cov = ((A - mm(A)) * (lpv - mm(lpv.detach()))).detach().numpy()
        cand = np.flatnonzero(((M > 0) & ~(l2 > l1)).numpy().ravel() & (cov.ravel() > lc["clip_cov_lb"])
                              & (cov.ravel() < lc["clip_cov_ub"]))
        k = min(max(int(lc["clip_cov_ratio"] * int(M.sum())), 1), len(cand))
        selected = sorted(int(cand[i]) for i in numpy_ref.clip_cov_pick(lc["seed"], step, 0, k, len(cand)))
        corr = torch.ones(B * L, dtype=torch.float64)
        corr[selected] = 0
        tok = torch.maximum(l1, l2) * corr.reshape(B, L)
    elif mode == "kl_cov":
        r = torch.exp(nk)
        idx = np.flatnonzero(np.asarray(mask).ravel() > 0)
        a, x = A.detach().numpy().ravel()[idx], lpv.detach().numpy().ravel()[idx]
        cov = (a - a.mean()) * (x - x.mean())
        k = max(1, int(len(idx) * lc["kl_cov_ratio"]))
        selected = sorted(int(i) for i in idx[np.lexsort((idx, -cov))[:k]])
        sel = torch.zeros(B * L, dtype=torch.bool)
        sel[selected] = True
        tok = torch.where(sel.reshape(B, L), -A * r + lc["ppo_kl_coef"] * nk.abs(), -A * r)
    else:
        raise ValueError(mode)
    if isw is not None:
        tok = tok * safe(f64(isw))

    def agg(x):
        x = torch.where(valid, x, torch.zeros_like(x))
        m = lc["loss_agg_mode"]
        if m == "token-mean":
            return (x * M).sum() / M.sum()
        if m == "token-sum":
            return (x * M).sum()
        s = (x * M).sum(-1)
        if m == "seq-mean-token-mean":
            s = s / (M.sum(-1) + 1e-8)
        nonempty = M.sum(-1) > 0
        v = s[nonempty].sum() / nonempty.sum()
        return v / lc["loss_scale_factor"] if m == "seq-mean-token-sum-norm" else v

    loss = agg(tok)
    ent_t = None
    if ent is not None:
        ent_t = f64(ent).requires_grad_(True)
        loss = loss - lc["entropy_coeff"] * agg(safe(ent_t))
    if ref is not None and lc["kl_loss_coef"] != 0:
        delta = lpv - safe(f64(ref))
        x = torch.clamp(-delta, -20, 20)
        k1, k2, k3 = delta, 0.5 * delta ** 2, torch.clamp(torch.exp(x) - x - 1, -10, 10)
        kl = {"kl": k1, "k1": k1, "abs": delta.abs(), "mse": k2, "k2": k2, "low_var_kl": k3,
              "k3": k3}[lc["kl_loss_type"]]
        loss = loss + lc["kl_loss_coef"] * agg(kl)
    loss.backward()
    return loss.item(), log_prob.grad.numpy(), None if ent_t is None else ent_t.grad.numpy(), selected


def random_case(rng, B=6, L=37, per_token=False):
    olp = rng.uniform(-4, -0.05, (B, L))
    lp = olp + rng.uniform(-1.2, 1.2, (B, L))
    lens = rng.integers(1, L + 1, B)
    lens[0] = L
    mask = (np.arange(L)[None, :] < lens[:, None]).astype(np.uint8)
    adv = rng.uniform(-2, 2, (B, L) if per_token else B)
    case = dict(logp=lp, old_logp=olp, advantages=adv, mask=mask, ref_logp=lp + rng.uniform(-1, 1, (B, L)),
                entropy=rng.uniform(0, 3, (B, L)), is_weights=rng.uniform(0.5, 1.5, (B, L)))
    case = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in case.items()}
    for k in ("logp", "old_logp", "ref_logp", "entropy", "is_weights"):
        case[k][mask == 0] = np.nan  # padding is never read
    return case


def mode_cfg(mode, agg, **loss):
    c = {"policy_loss": mode, "loss_agg_mode": agg, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28,
         "loss_scale_factor": 7, "clip_cov_ratio": 0.05, "clip_cov_lb": 0.2, "kl_cov_ratio": 0.05, "ppo_kl_coef": 0.4,
         "seed": 11}
    c.update(loss)
    return {"loss": c}


@pytest.mark.parametrize("mode", MODES)
def test_matches_torch_transcription(rng, mode):
    worst = 0.0
    for agg in aggs(mode):
        for per_token in (False, True):
            for kl in ("k1", "k3"):
                cfg = mode_cfg(mode, agg, kl_loss_type=kl, kl_loss_coef=0.3, entropy_coeff=0.05)
                case = random_case(rng, per_token=per_token)
                with aepo.Loss(cfg) as loss:
                    r = loss.compute(**case, step=17)
                t_loss, t_grad, t_gent, sel = torch_mode_loss(cfg, case["logp"], case["old_logp"], case["advantages"],
                                                              case["mask"], ref=case["ref_logp"], ent=case["entropy"],
                                                              isw=case["is_weights"], step=17)
                if mode in ("clip_cov", "kl_cov"):
                    assert len(sel) > 0
                assert rel(r.loss, t_loss) <= 1e-9, (agg, r.loss, t_loss)
                scale = np.abs(t_grad).max()
                diff = np.abs(r.grad - t_grad).max()
                assert diff <= 1e-6 * scale, f"{mode} {agg}: max |grad - torch| = {diff}, scale {scale}"
                assert np.abs(r.grad_entropy - t_gent).max() <= 1e-6 * np.abs(t_gent).max()
                worst = max(worst, diff / scale)
    print(f"{mode}: max |grad - torch| / max |grad| = {worst:.3g}")


# ----------------------------------------------------------------- covariance selections

def big_case(rng, B=64, L=1200):
    olp = rng.uniform(-4, 0, (B, L)).astype(np.float32)
    lp = (olp + rng.uniform(-0.4, 0.4, (B, L))).astype(np.float32)
    lens = rng.integers(L // 8, L + 1, B)
    mask = (np.arange(L)[None, :] < lens[:, None]).astype(np.uint8)
    return lp, olp, rng.uniform(-2, 2, B).astype(np.float32), mask


def test_clip_cov_pick_is_the_same_for_every_run_and_thread_count(rng):
    lp, olp, adv, mask = big_case(rng)
    results = []
    for threads in (1, 2, 4, 1):
        with aepo.Loss(mode_cfg("clip_cov", "token-mean", clip_cov_ratio=0.002, threads=threads)) as loss:
            results.append(loss.compute(lp, olp, adv, mask, step=41))
    for r in results[1:]:
        assert r.loss == results[0].loss and np.array_equal(r.grad, results[0].grad)
        assert r.metrics == results[0].metrics
    # The selection: unclipped tokens whose gradient is 0 although -A r is not.
    _, t_grad, _, sel = torch_mode_loss(mode_cfg("clip_cov", "token-mean", clip_cov_ratio=0.002), lp, olp, adv, mask,
                                        step=41)
    g = results[0].grad.ravel()
    assert len(sel) == int(0.002 * mask.sum()) and np.all(g[sel] == 0) and np.all(t_grad.ravel()[sel] == 0)
    assert np.abs(g - t_grad.ravel()).max() <= 1e-6 * np.abs(t_grad).max()
    assert results[0].metrics["pg_clipfrac"] == pytest.approx(len(sel) / (mask.sum() + 1e-8), rel=1e-12)
    # Another step (or seed) picks other tokens.
    with aepo.Loss(mode_cfg("clip_cov", "token-mean", clip_cov_ratio=0.002)) as loss:
        other = loss.compute(lp, olp, adv, mask, step=42)
    assert not np.array_equal(other.grad, results[0].grad)


def test_kl_cov_selection_equals_numpy(rng):
    for trial in range(3):
        lp, olp, adv, mask = big_case(rng, B=40, L=700)
        lp = (np.round(lp * 4) / 4).astype(np.float32)  # coarse values: exact covariance ties
        adv = (np.round(adv * 2) / 2).astype(np.float32)
        cfg = mode_cfg("kl_cov", "token-mean", kl_cov_ratio=0.01, ppo_kl_coef=1.0, threads=1 + trial)
        with aepo.Loss(cfg) as loss:
            r = loss.compute(lp, olp, adv, mask)
        # NumPy: covariance over the valid tokens, top k by (covariance desc, index asc).
        idx = np.flatnonzero(mask.ravel())
        a = np.repeat(adv.astype(np.float64)[:, None], lp.shape[1], 1).ravel()[idx]
        x = lp.astype(np.float64).ravel()[idx]
        cov = (a - a.mean()) * (x - x.mean())
        k = max(1, int(len(idx) * 0.01))
        order = np.lexsort((idx, -cov))
        want = np.sort(idx[order[:k]])
        assert cov[order[k - 1]] == cov[order[k]] or trial > 0  # the first trial has a tie at the cut
        # The library's selection: where its gradient has the extra ppo_kl_coef sign(d) / N.
        d = (lp.astype(np.float64) - olp).ravel()
        plain = (-np.repeat(adv[:, None], lp.shape[1], 1).ravel() * np.exp(d) / mask.sum()) * mask.ravel()
        got = np.flatnonzero(np.abs(r.grad.ravel() - plain) > 0.5 / mask.sum())
        assert np.array_equal(got, want), (got[:10], want[:10])


# ------------------------------------------------------------------------------- fused head

@pytest.mark.parametrize("mode", ["gspo", "cispo", "gpg", "clip_cov", "kl_cov"])
def test_fused_loss_and_grad_equals_forward_compute_backward(rng, mode):
    B, L, D, V = 4, 9, 16, 61
    X = rng.standard_normal((B * L, D)).astype(np.float32)
    W = (rng.standard_normal((V, D)) * 0.5).astype(np.float32)
    t = rng.integers(0, V, B * L)
    mask = np.ones((B, L), np.uint8)
    mask[1, 6:] = 0
    mask[3, 2] = 0
    adv = rng.standard_normal(B).astype(np.float32)
    cfg = mode_cfg(mode, "seq-mean-token-mean" if mode == "gspo" else "token-mean", clip_cov_ratio=0.1,
                   clip_cov_lb=0.05, kl_cov_ratio=0.1, entropy_coeff=0.02)
    cfg["fused"] = {"chunk_n": 5, "chunk_v": 16}
    with aepo.FusedHead(cfg) as head, aepo.Loss(cfg) as loss:
        lp, ent, lse = head.forward(X, W, t, mask=mask.ravel())
        old = (lp.reshape(B, L) + rng.normal(0, 0.3, (B, L))).astype(np.float32)
        value, dX, dW, db, metrics, logp, entropy = head.loss_and_grad(X, W, t, loss, old, adv, mask, step=9)
        r = loss.compute(lp.reshape(B, L), old, adv, mask, entropy=ent.reshape(B, L), step=9)
        dX2, dW2, _ = head.backward(X, W, t, lse, ent, r.grad.ravel(), r.grad_entropy.ravel(), mask=mask.ravel())
    assert abs(value - r.loss) <= 1e-6 * max(1.0, abs(r.loss))
    assert metrics["pg_clipfrac"] == pytest.approx(r.metrics["pg_clipfrac"], abs=1e-12)
    assert np.abs(dX - dX2).max() <= 1e-5 * np.abs(dX2).max() and np.abs(dW - dW2).max() <= 1e-5 * np.abs(dW2).max()
    # One pass (cispo, gpg) sums each row over all of V at once, forward over chunk_v columns:
    # the same values up to float32 rounding. The two-pass modes run forward itself.
    assert np.abs(logp - lp.reshape(B, L)).max() <= 1e-6 * np.abs(lp).max()
    assert np.abs(entropy - ent.reshape(B, L)).max() <= 1e-6 * np.abs(ent).max()
    if mode in ("gspo", "clip_cov", "kl_cov"):
        assert np.array_equal(logp, lp.reshape(B, L)) and np.array_equal(entropy, ent.reshape(B, L))


# ----------------------------------------------------------------------------------- errors

def test_errors_name_the_argument():
    with pytest.raises(aepo.ConfigError) as e:
        aepo.Loss({"loss": {"policy_loss": "gspo"}})
    assert e.value.argument == "loss.loss_agg_mode" and "seq-mean-token-mean" in str(e.value)
    with pytest.raises(aepo.ConfigError) as e:
        aepo.validate_config({"loss": {"policy_loss": "gspo", "loss_agg_mode": "token-sum"}})
    assert e.value.argument == "loss.loss_agg_mode"
    aepo.Loss({"loss": {"policy_loss": "gspo", "loss_agg_mode": "seq-mean-token-mean"}}).close()
    with pytest.raises(aepo.ConfigError) as e:
        aepo.Loss({"advantage": {"rloo_singleton": "mean"}})
    assert e.value.argument == "advantage.rloo_singleton"
    with pytest.raises(aepo.InvalidValueError) as e:
        aepo.compute_advantages([1, 0, 0.5], [4, 4, 9], estimator="grpo_passk")
    assert e.value.argument == "group_ids" and e.value.index == 2 and "at least 2" in str(e.value)
    with pytest.raises(aepo.InvalidValueError) as e:
        aepo.compute_advantages([1, 0], [0, 0], estimator="reinforce_plus_plus_baseline")
    assert e.value.argument == "lengths" and "required" in str(e.value)
    with pytest.raises(aepo.InvalidValueError) as e:
        aepo.compute_advantages([1, 0], [0, 0], estimator="reinforce_plus_plus_baseline", lengths=[0, 1])
    assert e.value.argument == "lengths"
    with pytest.raises(aepo.ShapeError) as e:
        aepo.compute_advantages([1, 0], [0, 0], estimator="reinforce_plus_plus_baseline", lengths=[3])
    assert e.value.argument == "lengths"
    with aepo.Loss({"advantage": {"estimator": "reinforce_plus_plus_baseline"}}) as loss:
        with pytest.raises(aepo.InvalidValueError) as e:
            loss.select_regularizer([1, 0, 1, 1], [0, 0, 1, 1], k_max=4, halve=False)
        assert e.value.argument == "lengths"
    with aepo.Loss(mode_cfg("clip_cov", "token-mean")) as loss:
        lp = np.full((2, 3), -1.0, np.float32)
        lp[1, 1] = np.nan
        with pytest.raises(aepo.NonFiniteError) as e:
            loss.compute(lp, lp * 0 - 1.2, [1, -1], np.ones((2, 3), np.uint8))
        assert e.value.argument == "logp" and e.value.index == 4
