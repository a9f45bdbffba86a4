"""aepo.torch.policy_loss: its backward pass against torch autograd of a transcription of verl's
formula (tests/torch_reference.py), in float32, bfloat16 and float16; handles and caching."""
import gc
import subprocess
import sys
import threading
import weakref

import numpy as np
import pytest

import aepo

torch = pytest.importorskip("torch")
import aepo.torch as at  # noqa: E402
import torch_reference as ref  # noqa: E402

KL_TYPES = ["k1", "abs", "k2", "k3", "k3+", "k1+"]


def make_batch(seed, B=6, L=29, per_token=False, garbage=True):
    g = np.random.default_rng(seed)
    olp = g.uniform(-4, -0.05, (B, L))
    d = g.uniform(-1.2, 1.2, (B, L))
    d[g.random((B, L)) < 0.04] = -22.0  # beyond the +-20 clamp of the log-ratio
    lp = olp + d
    lens = g.integers(1, L + 1, B)
    lens[0] = L
    lens[-1] = 0  # an empty row
    mask = np.arange(L)[None, :] < lens[:, None]
    adv = g.uniform(-2, 2, (B, L) if per_token else B)
    batch = dict(logp=lp, old_logp=olp, advantages=adv, ref_logp=lp + g.uniform(-2, 2, (B, L)),
                 entropy=g.uniform(0, 3, (B, L)), is_weights=g.uniform(0.5, 1.5, (B, L)))
    batch = {k: torch.tensor(v, dtype=torch.float32) for k, v in batch.items()}
    if garbage:  # padding is never read: NaN there must not reach the loss or the gradient
        for k in ("logp", "old_logp", "ref_logp", "entropy", "is_weights"):
            batch[k][~torch.from_numpy(mask)] = float("nan")
    batch["mask"] = torch.from_numpy(mask)
    return batch


def lib_cfg(mode, kl="k3", kl_coef=0.3, entropy_coeff=0.05, low=0.2, high=0.28, c=3.0, scale=7):
    return {"loss": {"loss_agg_mode": mode, "kl_loss_type": kl, "kl_loss_coef": kl_coef, "entropy_coeff": entropy_coeff,
                     "clip_ratio_low": low, "clip_ratio_high": high, "clip_ratio_c": c, "loss_scale_factor": scale}}


def reference(batch, cfg, dtype=torch.float64, **kw):
    """Loss and gradients by autograd of the transcription, in ``dtype``, on the values given."""
    lc = cfg["loss"]
    lp = batch["logp"].detach().to(dtype).requires_grad_(True)
    ent = batch["entropy"].detach().to(dtype).requires_grad_(True)
    loss = ref.policy_loss(lp, batch["old_logp"].to(dtype), batch["advantages"].to(dtype), batch["mask"],
                           clip_low=lc["clip_ratio_low"], clip_high=lc["clip_ratio_high"], clip_c=lc["clip_ratio_c"],
                           agg=lc["loss_agg_mode"], scale=lc["loss_scale_factor"],
                           is_weights=batch["is_weights"].to(dtype), entropy=ent,
                           entropy_coeff=lc["entropy_coeff"], ref=batch["ref_logp"].to(dtype),
                           kl_type=lc["kl_loss_type"], kl_coef=lc["kl_loss_coef"], **kw)
    loss.backward()
    return loss.item(), lp.grad, ent.grad


def lib(batch, cfg, **kw):
    lp = batch["logp"].detach().clone().requires_grad_(True)
    ent = batch["entropy"].detach().clone().requires_grad_(True)
    loss, metrics = at.policy_loss(lp, batch["old_logp"], batch["advantages"], batch["mask"], config=cfg,
                                   return_metrics=True, ref_logp=batch["ref_logp"], is_weights=batch["is_weights"],
                                   entropy=ent, **kw)
    loss.backward()
    return loss, metrics, lp.grad, ent.grad


def max_rel(got, want):
    """‖got − want‖∞ / ‖want‖∞ (the gradient-check norm of docs/API.md), over float64."""
    got, want = got.double(), want.double()
    return ((got - want).abs().max() / want.abs().max()).item()


# ------------------------------------------------------------------------ float32: 1e-6

@pytest.mark.parametrize("mode", ref.AGG_MODES)
@pytest.mark.parametrize("kl", KL_TYPES)
def test_float32_gradient_matches_autograd_of_transcription(mode, kl):
    for seed, per_token in ((1, False), (2, True)):
        batch = make_batch(seed, per_token=per_token)
        cfg = lib_cfg(mode, kl=kl)
        loss, metrics, g_lp, g_ent = lib(batch, cfg)
        want, w_lp, w_ent = reference(batch, cfg)
        assert loss.dtype == torch.float32 and loss.dim() == 0
        terms = metrics["pg_loss"] - 0.05 * metrics["entropy"] + 0.3 * metrics["kl_loss"]
        assert abs(terms - want) <= 1e-6 * abs(want), (terms, want)
        assert g_lp.dtype == torch.float32 and g_ent.dtype == torch.float32
        e_lp, e_ent = max_rel(g_lp, w_lp), max_rel(g_ent, w_ent)
        assert e_lp <= 1e-6, f"{mode}/{kl}: max |g_logp - autograd| / max |autograd| = {e_lp:.3e}"
        assert e_ent <= 1e-6, f"{mode}/{kl}: grad_entropy rel diff {e_ent:.3e}"
        assert abs(loss.item() - want) <= 1e-6 * abs(want), (loss.item(), want)
        assert torch.all(g_lp[~batch["mask"]] == 0) and torch.all(g_ent[~batch["mask"]] == 0)


@pytest.mark.parametrize("mode", ref.AGG_MODES)
def test_global_counts_and_dp_size_reach_the_gradient(mode):
    batch = make_batch(3)
    cfg = lib_cfg(mode)
    n_tok = int(batch["mask"].sum()) + 11
    n_seq = int((batch["mask"].sum(-1) > 0).sum()) + 3
    kw = dict(global_tokens=n_tok, global_seqs=n_seq, dp_size=4)
    loss, _, g_lp, g_ent = lib(batch, cfg, **kw)
    want, w_lp, w_ent = reference(batch, cfg, **kw)
    assert max_rel(g_lp, w_lp) <= 1e-6 and max_rel(g_ent, w_ent) <= 1e-6
    assert abs(loss.item() - want) <= 1e-6 * abs(want)
    # Counts may be one-element tensors, as all-reduced values are.
    loss2, _, g2, _ = lib(batch, cfg, global_tokens=torch.tensor(n_tok), global_seqs=torch.tensor([n_seq]),
                          dp_size=torch.tensor(4))
    assert loss2.item() == loss.item() and torch.equal(g2, g_lp)


def test_anchor_values_and_metrics():
    """The loss example of docs/API.md, vanilla, eps_low 0.2, eps_high 0.28, c 3: token-mean 0.4436971975."""
    lp = torch.tensor([[-1, -0.5, -2, -0.1], [-0.3, -1.2, -0.7, -9.0]], requires_grad=True)
    olp = torch.tensor([[-1.2, -0.4, -1.0, -0.1], [-0.3, -2.7, -0.2, -0.5]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    cfg = {"loss": {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0}}
    loss, m = at.policy_loss(lp, olp, torch.tensor([1.0, -1.0]), mask, config=cfg, return_metrics=True)
    assert abs(m["pg_loss"] - 0.4436971975) <= 1e-7 * 0.4436971975
    assert abs(loss.item() - 0.4436971975) <= 1e-7
    want = ref.metrics(lp.detach(), olp, torch.tensor([1.0, -1.0]), mask, clip_high=0.28)
    for k in ("pg_clipfrac", "pg_clipfrac_lower", "ppo_kl"):
        assert abs(m[k] - want[k]) <= 1e-7 * abs(want[k]), (k, m[k], want[k])
    assert abs(m["pg_clipfrac"] - 0.2857142853) <= 1e-9 and abs(m["ppo_kl"] - 1.1999999983) <= 1e-7


# --------------------------------------------------------------- bfloat16 and float16

# The library sees the half-precision values exactly (upcast to float32 is exact), computes
# the float32 gradient (1e-6 of the reference, as above), and rounds it once to the input
# dtype. The stated tolerance is that one rounding: the unit roundoff 2^-8 relative for
# bfloat16 (8 significant bits) and 2^-11 for float16 (11), plus the float32 bound. Beyond
# the bound, the gradient must be the float64 reference rounded to the dtype.
HALF = [(torch.bfloat16, 2.0 ** -8), (torch.float16, 2.0 ** -11)]


@pytest.mark.parametrize("dtype, unit_roundoff", HALF, ids=["bfloat16", "float16"])
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_half_precision_gradient(dtype, unit_roundoff, mode):
    batch = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in make_batch(4).items()}
    cfg = lib_cfg(mode)
    loss, _, g_lp, g_ent = lib(batch, cfg)
    want, w_lp, w_ent = reference(batch, cfg)  # float64 on the same half-precision values
    assert loss.dtype == torch.float32 and g_lp.dtype == dtype and g_ent.dtype == dtype
    assert abs(loss.item() - want) <= 1e-6 * abs(want)
    for got, exp, name in ((g_lp, w_lp, "logp"), (g_ent, w_ent, "entropy")):
        err = (got.double() - exp).abs()
        bound = unit_roundoff * exp.abs() + 2e-6 * exp.abs().max()
        worst = (err / bound).max().item()
        assert worst <= 1.0, f"{dtype} grad {name}: max error / tolerance = {worst:.3f}"
        # The float32 gradient is within ~1e-7 of the reference, so rounding it lands on the
        # reference's rounding except where the reference sits that close to a tie.
        off = int((got != exp.to(dtype)).sum())
        print(f"{dtype} {mode} grad {name}: max error / tolerance {worst:.3f}, {off} elements off the rounded "
              "reference")
        assert off <= 1, f"{dtype} grad {name}: {off} elements differ from the rounded reference"


def test_float64_input_gives_float64_loss_and_gradient():
    batch = {k: (v.double() if v.is_floating_point() else v) for k, v in make_batch(5).items()}
    cfg = lib_cfg("token-mean")
    loss, _, g_lp, _ = lib(batch, cfg)
    _, w_lp, _ = reference(batch, cfg)
    assert loss.dtype == torch.float64 and g_lp.dtype == torch.float64
    assert max_rel(g_lp, w_lp) <= 1e-6  # computed in float32 inputs: float32 accuracy, not float64


# ---------------------------------------------------------------------- autograd contract

def test_upstream_gradient_scales_and_retain_graph_reuses():
    batch = make_batch(6)
    cfg = lib_cfg("token-mean", kl_coef=0.0, entropy_coeff=0.0)
    lp = batch["logp"].clone().requires_grad_(True)
    loss = at.policy_loss(lp, batch["old_logp"], batch["advantages"], batch["mask"], config=cfg)
    (2.5 * loss).backward(retain_graph=True)
    g1 = lp.grad.clone()
    lp.grad = None
    loss.backward(retain_graph=True)
    g2 = lp.grad.clone()
    assert torch.allclose(g1, 2.5 * g2, rtol=1e-6, atol=0)
    lp.grad = None
    loss.backward()  # a third pass through the same graph gives the same gradient
    assert torch.equal(lp.grad, g2)


def test_no_grad_inputs_and_non_leaf_logp():
    batch = make_batch(7, garbage=False)  # the chain rule through lp * w would carry padding NaN
    w = torch.tensor(1.5, requires_grad=True)
    lp = batch["logp"] * w  # a non-leaf logp: the gradient flows on to w
    loss = at.policy_loss(lp, batch["old_logp"], batch["advantages"], batch["mask"])
    loss.backward()
    lp2 = (batch["logp"] * 1.5).requires_grad_(True)
    at.policy_loss(lp2, batch["old_logp"], batch["advantages"], batch["mask"]).backward()
    want = (torch.where(batch["mask"], lp2.grad * batch["logp"], torch.zeros(()))).sum()
    assert abs(w.grad.item() - want.item()) <= 1e-5 * abs(want.item())
    with torch.no_grad():
        v = at.policy_loss(batch["logp"] * 1.5, batch["old_logp"], batch["advantages"], batch["mask"])
    assert not v.requires_grad and v.item() == loss.item()


def test_entropy_without_grad_and_numpy_inputs():
    batch = make_batch(8)
    cfg = lib_cfg("token-mean")
    lp = batch["logp"].clone().requires_grad_(True)
    adv = batch["advantages"].numpy()  # host arrays are accepted for the non-differentiable inputs
    loss = at.policy_loss(lp, batch["old_logp"].numpy(), adv, batch["mask"].numpy(), config=cfg,
                          entropy=batch["entropy"], ref_logp=batch["ref_logp"], is_weights=batch["is_weights"])
    loss.backward()
    want, w_lp, _ = reference(batch, cfg)
    assert max_rel(lp.grad, w_lp) <= 1e-6 and abs(loss.item() - want) <= 1e-6 * abs(want)


def test_policy_loss_handle_passthrough_and_unknown_keyword():
    batch = make_batch(9)
    with aepo.Loss(lib_cfg("token-sum", kl_coef=0.0, entropy_coeff=0.0)) as h:
        a = at.policy_loss(batch["logp"], batch["old_logp"], batch["advantages"], batch["mask"], config=h)
        b = h.compute(batch["logp"].numpy(), batch["old_logp"].numpy(), batch["advantages"].numpy(),
                      batch["mask"].numpy())
        assert a.item() == np.float32(b.loss)
    with pytest.raises(TypeError, match="ref_lopg"):
        at.policy_loss(batch["logp"], batch["old_logp"], batch["advantages"], batch["mask"], ref_lopg=None)
    with pytest.raises(aepo.ConfigError) as e:
        at.policy_loss(batch["logp"], batch["old_logp"], batch["advantages"], batch["mask"],
                       config={"loss": {"clip_ratio_c": 0.5}})
    assert e.value.argument == "loss.clip_ratio_c"


# ---------------------------------------------------------------------------- handles

def test_handles_are_cached_per_config_and_closed_on_eviction():
    at.clear_cache()
    cfg = {"loss": {"clip_ratio_high": 0.28}}
    h1 = at.loss_handle(cfg)
    assert at.loss_handle({"loss": {"clip_ratio_high": 0.28}}) is h1  # equal dicts share one handle
    assert at.loss_handle('{"loss": {"clip_ratio_high": 0.28}}') is not h1  # text is its own key
    assert at.loss_handle(None) is at.loss_handle(None)
    evicted = at.loss_handle({"loss": {"clip_ratio_low": 0.1}})
    for i in range(at.loss.CACHE_SIZE):
        at.loss_handle({"loss": {"clip_ratio_c": 3.0 + i}})
    assert evicted._h is None  # dropped from the cache and closed
    h2 = at.loss_handle(cfg)
    assert h2._h is not None
    at.clear_cache()
    assert h2._h is None


def test_handles_belong_to_their_thread_and_go_with_it():
    at.clear_cache()
    mine = at.loss_handle(None)
    seen = []
    t = threading.Thread(target=lambda: seen.append(weakref.ref(at.loss_handle(None))))
    t.start()
    t.join()
    gc.collect()
    assert seen[0]() is None  # the thread's cache, and with it its handle, is gone
    assert at.loss_handle(None) is mine
    at.clear_cache()


def test_import_aepo_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import aepo; assert aepo.Loss\n"
            "try:\n    import aepo.torch\nexcept ImportError as e:\n    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "refused: aepo.torch needs PyTorch" in out.stdout
