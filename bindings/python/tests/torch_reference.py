"""A plain PyTorch transcription of verl's policy loss (compute_policy_loss_vanilla, agg_loss, kl_penalty),
used as the reference for aepo.torch. Import it only after ``pytest.importorskip("torch")``.

It runs in the dtype of its inputs, so the tests use it in float64 for gradients and in
float32 as the "pure-torch trainer" of the training test.
"""
import torch

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


def kl_penalty(lp, ref, kind):
    """verl's kl_penalty: k1/kl, abs, k2/mse, k3/low_var_kl, and the straight-through "+" forms."""
    delta = lp - ref
    base = kind.rstrip("+")
    if base in ("kl", "k1"):
        kl = delta
    elif base == "abs":
        kl = delta.abs()
    elif base in ("mse", "k2"):
        kl = 0.5 * delta ** 2
    elif base in ("low_var_kl", "k3"):
        x = torch.clamp(ref - lp, -20, 20)
        kl = torch.clamp(torch.exp(x) - x - 1, -10, 10)
    else:
        raise ValueError(kind)
    if kind.endswith("+") and base not in ("mse", "k2"):
        k2 = 0.5 * delta ** 2
        kl = k2 - k2.detach() + kl.detach()
    return kl


def agg_loss(x, mask, mode, *, dp_size=1, global_tokens=None, global_seqs=None, scale=None):
    """verl's agg_loss with the global counts; padding never reaches the result (where, not *)."""
    m = mask.to(x.dtype)
    x = torch.where(mask.bool(), x, torch.zeros_like(x))
    if mode == "token-mean":
        n = global_tokens if global_tokens is not None else m.sum()
        return (x * m).sum() / n * dp_size
    if mode == "token-sum":
        return (x * m).sum() * dp_size
    seq = (x * m).sum(-1)
    count = m.sum(-1)
    if mode == "seq-mean-token-mean":
        seq = seq / (count + 1e-8)
    nonempty = (count > 0).to(x.dtype)
    G = global_seqs if global_seqs is not None else nonempty.sum()
    value = (seq * nonempty).sum() / G * dp_size
    if mode == "seq-mean-token-sum-norm":
        value = value / scale
    return value


def policy_loss(lp, olp, adv, mask, *, clip_low=0.2, clip_high=0.2, clip_c=3.0, agg="token-mean", scale=None,
                is_weights=None, entropy=None, entropy_coeff=0.0, ref=None, kl_type="low_var_kl", kl_coef=0.0,
                dp_size=1, global_tokens=None, global_seqs=None):
    """pg - entropy_coeff * agg(H) + kl_coef * agg(KL), verl's vanilla loss, differentiable."""
    valid = mask.bool()
    zero = torch.zeros_like(lp)
    lp_v = torch.where(valid, lp, zero)
    olp_v = torch.where(valid, olp.to(lp.dtype), zero)
    A = adv.to(lp.dtype)
    if A.dim() == 1:
        A = A[:, None].expand_as(lp)
    A = torch.where(valid, A, zero)
    d = torch.clamp(lp_v - olp_v, -20, 20)
    r = torch.exp(d)
    l1 = -A * r
    l2 = -A * torch.clamp(r, 1 - clip_low, 1 + clip_high)
    c1 = torch.maximum(l1, l2)
    l3 = -A * clip_c
    tok = torch.where(A < 0, torch.minimum(l3, c1), c1)
    if is_weights is not None:
        tok = tok * torch.where(valid, is_weights.to(lp.dtype), zero)
    kw = dict(dp_size=dp_size, global_tokens=global_tokens, global_seqs=global_seqs, scale=scale)
    loss = agg_loss(tok, mask, agg, **kw)
    if entropy is not None:
        loss = loss - entropy_coeff * agg_loss(torch.where(valid, entropy, torch.zeros_like(entropy)), mask, agg,
                                               **kw)
    if ref is not None and kl_coef:
        loss = loss + kl_coef * agg_loss(kl_penalty(lp_v, torch.where(valid, ref.to(lp.dtype), zero), kl_type),
                                         mask, agg, **kw)
    return loss


def metrics(lp, olp, adv, mask, *, clip_low=0.2, clip_high=0.2, clip_c=3.0):
    """pg_clipfrac, pg_clipfrac_lower and ppo_kl with verl's masked_mean (+1e-8)."""
    m = mask.to(torch.float64)
    lp, olp = lp.double(), olp.double()
    A = adv.double()
    if A.dim() == 1:
        A = A[:, None].expand_as(lp)
    d = torch.clamp(lp - olp, -20, 20)
    r = torch.exp(d)
    l1, l2 = -A * r, -A * torch.clamp(r, 1 - clip_low, 1 + clip_high)
    c1 = torch.maximum(l1, l2)
    mean = lambda x: (torch.where(mask.bool(), x, torch.zeros_like(x)) * m).sum() / (m.sum() + 1e-8)  # noqa: E731
    return {"pg_clipfrac": mean((l2 > l1).double()).item(),
            "pg_clipfrac_lower": mean(((c1 > -A * clip_c) & (A < 0)).double()).item(),
            "ppo_kl": mean(-d).item()}


def logits_stats(logits, targets, T, mask=None):
    """log p(target) and exact entropy of logits / T, differentiable, rows with mask = 0 zeroed."""
    z = logits / T
    logp_all = torch.log_softmax(z, dim=-1)
    t = targets.clamp(min=0) if mask is None else torch.where(mask.bool(), targets, torch.zeros_like(targets))
    logp = logp_all.gather(-1, t.unsqueeze(-1)).squeeze(-1)
    H = -(logp_all.exp() * logp_all).sum(-1)
    if mask is not None:
        logp = torch.where(mask.bool(), logp, torch.zeros_like(logp))
        H = torch.where(mask.bool(), H, torch.zeros_like(H))
    return logp, H
