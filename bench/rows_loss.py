"""Policy loss: loss + gradient + metrics at B=512, L=2048 against PyTorch CPU autograd of the
same formula (verl's compute_policy_loss_vanilla with agg_loss token-mean; compute_policy_loss_gspo
with seq-mean-token-mean; compute_policy_loss_clip_cov with token-mean), same threads."""
import numpy as np

from benchlib import Row


def _case(B, L, seed=0, padded=True):
    """Responses of uniform length in [L/8, L], right-padded (as an RL batch is), or none padded."""
    g = np.random.default_rng(seed)
    olp = g.uniform(-3, 0, (B, L)).astype(np.float32)
    lp = (olp + g.uniform(-0.3, 0.3, (B, L))).astype(np.float32)
    adv = g.uniform(-2, 2, B).astype(np.float32)
    lens = g.integers(L // 8, L + 1, B) if padded else np.full(B, L)
    mask = (np.arange(L)[None, :] < lens[:, None]).astype(np.uint8)
    ref = (lp + g.uniform(-0.5, 0.5, (B, L))).astype(np.float32)
    ent = g.uniform(0, 3, (B, L)).astype(np.float32)
    return lp, olp, adv, mask, ref, ent


def _torch_vanilla(torch, lp0, olp, A, M, eps_low, eps_high, c, ref=None, ent=None, kl_coef=0.0, ent_coef=0.0):
    """verl's order of operations, float32 autograd; returns the loss and dL/dlogp."""
    lp = lp0.detach().requires_grad_(True)
    ent_t = None if ent is None else ent.detach().requires_grad_(True)
    n = M.sum()

    def masked_mean(x):
        return (x * M).sum() / (n + 1e-8)

    d = torch.clamp(lp - olp, -20.0, 20.0)
    ratio = torch.exp(d)
    ppo_kl = masked_mean(-d)
    l1 = -A * ratio
    l2 = -A * torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    c1 = torch.maximum(l1, l2)
    clipfrac = masked_mean(torch.gt(l2, l1).float())
    l3 = -A * c
    c2 = torch.min(l3, c1)
    clipfrac_lower = masked_mean(torch.gt(c1, l3).float() * (A < 0).float())
    pg = torch.where(A < 0, c2, c1)
    loss = (pg * M).sum() / n
    if ent_t is not None:
        loss = loss - ent_coef * (ent_t * M).sum() / n
    if ref is not None:
        x = torch.clamp(ref - lp, -20.0, 20.0)
        kl = torch.clamp(torch.exp(x) - x - 1, -10.0, 10.0)
        loss = loss + kl_coef * (kl * M).sum() / n
    loss.backward()
    return loss.detach(), lp.grad, ppo_kl.detach(), clipfrac.detach(), clipfrac_lower.detach()


def _torch_gspo(torch, lp0, olp, A, M, eps_low, eps_high):
    """verl's compute_policy_loss_gspo (sequence ratio, clamp at 10, seq-mean-token-mean), float32."""
    lp = lp0.detach().requires_grad_(True)
    n = M.sum()
    nk = lp - olp
    seq = (nk * M).sum(-1) / M.sum(-1).clamp(min=1)
    s = torch.exp(torch.clamp(lp - lp.detach() + seq.detach()[:, None], max=10.0))
    l1 = -A * s
    l2 = -A * torch.clamp(s, 1 - eps_low, 1 + eps_high)
    pg = torch.maximum(l1, l2)
    clipfrac = (torch.gt(l2, l1).float() * M).sum() / (n + 1e-8)
    ppo_kl = (-nk * M).sum() / (n + 1e-8)
    loss = ((pg * M).sum(-1) / (M.sum(-1) + 1e-8)).sum() / (M.sum(-1) > 0).sum()
    loss.backward()
    return loss.detach(), lp.grad, ppo_kl.detach(), clipfrac.detach()


def _torch_clip_cov(torch, lp0, olp, A, M, eps_low, eps_high, ratio, lb, ub):
    """verl's compute_policy_loss_clip_cov (unseeded randperm pick), token-mean, float32."""
    lp = lp0.detach().requires_grad_(True)
    n = M.sum()
    A = A.expand_as(lp)

    def masked_mean(x):
        return (x * M).sum() / (n + 1e-8)

    nk = lp - olp
    ratio_t = torch.exp(nk)
    ppo_kl = masked_mean(-nk)
    l1 = -A * ratio_t
    l2 = -A * torch.clamp(ratio_t, 1 - eps_low, 1 + eps_high)
    with torch.no_grad():
        clip_by_origin = (l2 > l1) & (M > 0)
        cov = (A - masked_mean(A)) * (lp - masked_mean(lp))
        cov[M == 0] = -torch.inf
        cov[clip_by_origin] = -torch.inf
        clip_num = max(int(ratio * n.item()), 1)
        idx = torch.nonzero((cov < ub) & (cov > lb) & (M > 0))
        idx = idx[torch.randperm(len(idx))[:min(clip_num, len(idx))]]
        corr = torch.ones_like(A)
        corr[idx[:, 0], idx[:, 1]] = 0
        clipfrac = masked_mean((corr == 0).float())
    loss = (torch.maximum(l1, l2) * corr * M).sum() / n
    loss.backward()
    return loss.detach(), lp.grad, ppo_kl.detach(), clipfrac


def rows(ctx):
    import aepo
    np_ = ctx.np
    torch = ctx.torch
    B, L = 512, 2048
    lp, olp, adv, mask, ref, ent = _case(B, L)
    out = []

    plain = aepo.Loss({"loss": {"threads": ctx.threads}})
    full = aepo.Loss({"loss": {"threads": ctx.threads, "kl_loss_type": "low_var_kl", "kl_loss_coef": 0.01,
                                     "entropy_coeff": 0.001}})

    def lib_plain():
        return plain.compute(lp, olp, adv, mask)

    def lib_full():
        return full.compute(lp, olp, adv, mask, ref_logp=ref, entropy=ent)

    peer_plain = peer_full = None
    peer_name = "PyTorch not installed"
    check = {}
    if torch is not None:
        t_lp, t_olp, t_ref, t_ent = (torch.from_numpy(a) for a in (lp, olp, ref, ent))
        t_A = torch.from_numpy(adv)[:, None]
        t_M = torch.from_numpy(mask.astype(np_.float32))

        def peer_plain():
            return _torch_vanilla(torch, t_lp, t_olp, t_A, t_M, 0.2, 0.2, 3.0)

        def peer_full():
            return _torch_vanilla(torch, t_lp, t_olp, t_A, t_M, 0.2, 0.2, 3.0, ref=t_ref, ent=t_ent,
                                  kl_coef=0.01, ent_coef=0.001)

        peer_name = f"torch {torch.__version__} autograd, float32 (verl's formula and metrics)"
        # The two sides compute the same numbers (torch in float32, libaepo in float64).
        r, t = lib_plain(), peer_plain()
        check = {"max_abs_grad_diff_vs_torch": float(np_.abs(r.grad - t[1].numpy()).max()),
                 "loss_rel_diff_vs_torch": abs(r.loss - float(t[0])) / abs(float(t[0]))}

    out.append(Row(name=f"loss: vanilla loss+grad+metrics B={B} L={L} token-mean", lib=lib_plain, peer=peer_plain,
                   peer_name=peer_name, extra=check, notes_keys=tuple(check)))

    # The same without padding: every token valid, so no vector can be skipped.
    lp_f, olp_f, adv_f, mask_f, _, _ = _case(B, L, padded=False)

    def lib_unpadded():
        return plain.compute(lp_f, olp_f, adv_f, mask_f)

    peer_unpadded = None
    if torch is not None:
        u_lp, u_olp = torch.from_numpy(lp_f), torch.from_numpy(olp_f)
        u_A, u_M = torch.from_numpy(adv_f)[:, None], torch.from_numpy(mask_f.astype(np_.float32))

        def peer_unpadded():
            return _torch_vanilla(torch, u_lp, u_olp, u_A, u_M, 0.2, 0.2, 3.0)

    out.append(Row(name=f"loss: vanilla, no padding (all {B}x{L} tokens valid)", lib=lib_unpadded,
                   peer=peer_unpadded, peer_name=peer_name))
    out.append(Row(name=f"loss: vanilla + k3 KL + entropy B={B} L={L}", lib=lib_full, peer=peer_full,
                   peer_name=peer_name))

    # gspo (sequence ratio: a statistics pass over every row first) and clip_cov (means, the
    # candidate count and the seeded pick, then the token pass), on the padded batch.
    gspo_h = aepo.Loss({"loss": {"threads": ctx.threads, "policy_loss": "gspo",
                                       "loss_agg_mode": "seq-mean-token-mean"}})
    clip_cov_h = aepo.Loss({"loss": {"threads": ctx.threads, "policy_loss": "clip_cov"}})

    def lib_gspo():
        return gspo_h.compute(lp, olp, adv, mask)

    def lib_clip_cov():
        return clip_cov_h.compute(lp, olp, adv, mask, step=1)

    peer_gspo = peer_clip_cov = None
    gspo_check = {}
    if torch is not None:
        def peer_gspo():
            return _torch_gspo(torch, t_lp, t_olp, t_A, t_M, 0.2, 0.2)

        def peer_clip_cov():
            return _torch_clip_cov(torch, t_lp, t_olp, t_A, t_M, 0.2, 0.2, 0.0002, 1.0, 5.0)

        r, t = lib_gspo(), peer_gspo()
        gspo_check = {"gspo_max_abs_grad_diff_vs_torch": float(np_.abs(r.grad - t[1].numpy()).max()),
                      "gspo_loss_rel_diff_vs_torch": abs(r.loss - float(t[0])) / abs(float(t[0]))}
    out.append(Row(name=f"loss: gspo loss+grad+metrics B={B} L={L} seq-mean-token-mean", lib=lib_gspo,
                   peer=peer_gspo, peer_name=peer_name.replace("verl's formula", "verl's gspo"), extra=gspo_check,
                   notes_keys=tuple(gspo_check)))
    out.append(Row(name=f"loss: clip_cov loss+grad+metrics B={B} L={L} token-mean", lib=lib_clip_cov,
                   peer=peer_clip_cov, peer_name=peer_name.replace("verl's formula", "verl's clip_cov")))

    # GRPO advantages for one AEPO step (512 prompts x 5 rollouts) against numpy.
    g = np_.random.default_rng(1)
    rewards = (g.random(2560) < 0.4).astype(np_.float32)
    groups = np_.repeat(np_.arange(512), 5)
    g.shuffle(groups)
    adv_h = aepo.Loss()

    def lib_adv():
        return adv_h.compute_advantages(rewards, groups)

    def numpy_adv():
        uniq, inv, counts = np_.unique(groups, return_inverse=True, return_counts=True)
        s = np_.bincount(inv, weights=rewards)
        mean = s / counts
        ss = np_.bincount(inv, weights=(rewards - mean[inv]) ** 2)
        std = np_.sqrt(ss / np_.maximum(counts - 1, 1))
        mean[counts == 1], std[counts == 1] = 0.0, 1.0
        return ((rewards - mean[inv]) / (std[inv] + 1e-6)).astype(np_.float32)

    out.append(Row(name="loss: GRPO advantages, 2560 rollouts in 512 groups", lib=lib_adv, peer=numpy_adv,
                   peer_name="numpy (unique + bincount)", inner=20))
    return out
