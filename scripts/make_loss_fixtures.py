#!/usr/bin/env python3
"""Small reference cases for the policy-loss modes and advantage estimators added after vanilla
(gspo, cispo, gpg/reinforce, clip_cov, kl_cov; rloo, reinforce_plus_plus_baseline, grpo_passk),
derived from the formulas of docs/LOSS.md in plain numpy float64. Nothing here calls libaepo.

    python3 scripts/make_loss_fixtures.py            # writes Tests/fixtures/loss_modes.json
    python3 scripts/make_loss_fixtures.py --check    # exits 1 if the committed file differs

Inputs are rounded to float32 first (the library reads float32), then every formula runs in
float64. Each loss case holds the expected loss, dL/dlogp, the three policy metrics and, for
clip_cov and kl_cov, the selected flat token indices. Clip-Cov's random pick is transcribed
here: Philox4x32-10 (checked below against Random123's published known-answer vectors) and
Floyd's algorithm, keyed by (loss.seed, step, group) as docs/LOSS.md describes.
"""
import json
import pathlib
import sys

import numpy as np

OUT = pathlib.Path(__file__).resolve().parent.parent / "Tests" / "fixtures" / "loss_modes.json"
MASK32 = 0xFFFFFFFF


# ------------------------------------------------------------------------------ Philox

def philox4x32_10(counter, key):
    """Philox4x32 with ten rounds (Salmon et al., SC 2011) on Python integers."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for rnd in range(10):
        if rnd:
            k0 = (k0 + 0x9E3779B9) & MASK32
            k1 = (k1 + 0xBB67AE85) & MASK32
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & MASK32, p1 & MASK32, ((p0 >> 32) ^ c3 ^ k1) & MASK32, p0 & MASK32
    return c0, c1, c2, c3


def split64(v):
    return v & MASK32, (v >> 32) & MASK32


KAT = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
       ((MASK32,) * 4, (MASK32, MASK32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
       ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
for _ctr, _key, _want in KAT:
    assert philox4x32_10(_ctr, _key) == _want, "Philox transcription does not match Random123"

CLIP_COV_TAG = 0x436C6970436F7600  # "ClipCov\0"


def clip_cov_pick(seed, step, group, k, n):
    """k of the ranks 0..n-1, ascending: Floyd's algorithm on the stream keyed by (seed, step, group)."""
    if k <= 0 or n <= 0:
        return []
    if k >= n:
        return list(range(n))
    lo, hi = split64(step & (2**64 - 1)), split64(CLIP_COV_TAG | group)
    top = philox4x32_10((lo[0], lo[1], hi[0], hi[1]), split64(seed))
    stream_key = (top[0], top[1])
    taken = set()
    for j in range(n - k, n):
        draw = j - (n - k)
        b = philox4x32_10((draw & MASK32, draw >> 32, 0, 0), stream_key)
        x = (b[1] << 32) | b[0]
        t = (x * (j + 1)) >> 64
        taken.add(j if t in taken else t)
    return sorted(taken)


# ------------------------------------------------------------------------ aggregation

def f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def masked_mean(x, M):
    return float(np.where(M > 0, x, 0.0).sum() / (M.sum() + 1e-8))


def row_weights(M, mode, K=None, reg=None, combine="replace", alpha=0.09375):
    """verl agg_loss as one weight per row (dp = 1, the call's own counts), and the weight of
    `weighted` regulariser rows (token-mean over their tokens times alpha)."""
    B = M.shape[0]
    reg = np.zeros(B, bool) if reg is None else np.asarray(reg, bool)
    main = ~reg if combine == "weighted" else np.ones(B, bool)
    n_b = M.sum(1)
    W = np.zeros(B)
    if mode == "token-mean":
        W[main] = 1.0 / n_b[main].sum()
    elif mode == "token-sum":
        W[main] = 1.0
    else:
        G = ((n_b > 0) & main).sum()
        W[main] = 1.0 / G
        if mode == "seq-mean-token-mean":
            W[main] /= n_b[main] + 1e-8
        elif mode == "seq-mean-token-sum-norm":
            W[main] /= K
    if combine == "weighted" and reg.any():
        W[reg] = alpha / n_b[reg].sum()
    return W


def effective_advantages(adv, B, L, reg=None):
    A = f32(adv)
    A = np.repeat(A[:, None], L, 1) if A.ndim == 1 else A
    if reg is not None:
        A = np.where(np.asarray(reg, bool)[:, None], 1.0, A)
    return A


# ----------------------------------------------------------------------------- modes

def mode_terms(mode, lc, lp, olp, A, M, reg=None, combine="replace", step=0):
    """Per-token loss l, dl/dlogp, pg_clipfrac and pg_clipfrac_lower counts, ppo_kl terms, and
    the selected tokens, from the formulas."""
    lo, hi = 1 - lc["clip_ratio_low"], 1 + lc["clip_ratio_high"]
    delta = lp - olp
    B, L = lp.shape
    zeros = np.zeros_like(lp, dtype=bool)
    selected = []
    if mode == "gspo":
        n_b = M.sum(1)
        m = (np.where(M > 0, delta, 0) * M).sum(1) / np.maximum(n_b, 1)
        s = np.repeat(np.exp(np.minimum(m, 10.0))[:, None], L, 1)
        l1, l2 = -A * s, -A * np.clip(s, lo, hi)
        clipped = l2 > l1
        tok = np.maximum(l1, l2)
        flows = ~clipped & (m <= 10)[:, None]
        return tok, np.where(flows, -A * s, 0.0), clipped, zeros, -delta, selected
    if mode == "cispo":
        d = np.clip(delta, -20, 20)
        r = np.exp(d)
        c = np.clip(r, lo, hi)
        return -A * c * lp, -A * c, (r < lo) | (r > hi), zeros, -d, selected
    if mode in ("gpg", "reinforce"):
        return -A * lp, -A, zeros, zeros, -delta, selected
    if mode in ("clip_cov", "kl_cov"):
        r = np.exp(delta)
        l1 = -A * r
        groups = np.zeros(B, int)
        if combine == "weighted" and reg is not None:
            groups = np.asarray(reg, int)
        if mode == "clip_cov":
            l2 = -A * np.clip(r, lo, hi)
            clipped = l2 > l1
            for g in (0, 1):
                Mg = M * (groups == g)[:, None]
                N = int(Mg.sum())
                if N == 0:
                    continue
                cov = (A - masked_mean(A, Mg)) * (lp - masked_mean(lp, Mg))
                cand = np.flatnonzero(((Mg > 0) & ~clipped & (cov > lc["clip_cov_lb"]) & (cov < lc["clip_cov_ub"])).ravel())
                k = min(max(int(lc["clip_cov_ratio"] * N), 1), len(cand))
                selected += [int(cand[i]) for i in clip_cov_pick(lc["seed"], step, g, k, len(cand))]
            sel = np.zeros(B * L, bool)
            sel[selected] = True
            sel = sel.reshape(B, L)
            tok = np.where(sel, 0.0, np.maximum(l1, l2))
            return tok, np.where(~clipped & ~sel, l1, 0.0), sel, zeros, -delta, sorted(selected)
        for g in (0, 1):
            Mg = M * (groups == g)[:, None]
            idx = np.flatnonzero(Mg.ravel() > 0)
            if len(idx) == 0:
                continue
            a, x = A.ravel()[idx], lp.ravel()[idx]
            cov = (a - a.mean()) * (x - x.mean())
            k = max(1, int(len(idx) * lc["kl_cov_ratio"]))
            order = np.lexsort((idx, -cov))  # largest covariance first, then the lower index
            selected += [int(i) for i in idx[order[:k]]]
        sel = np.zeros(B * L, bool)
        sel[selected] = True
        sel = sel.reshape(B, L)
        coef = lc["ppo_kl_coef"]
        return (l1 + np.where(sel, coef * np.abs(delta), 0.0), l1 + np.where(sel, coef * np.sign(delta), 0.0),
                zeros, zeros, np.abs(delta), sorted(selected))
    raise ValueError(mode)


LOSS_DEFAULTS = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.2, "clip_ratio_c": 3.0, "clip_cov_ratio": 0.0002,
                 "clip_cov_lb": 1.0, "clip_cov_ub": 5.0, "kl_cov_ratio": 0.0002, "ppo_kl_coef": 0.1, "seed": 0,
                 "loss_agg_mode": "token-mean", "loss_scale_factor": 0, "kl_loss_type": "low_var_kl",
                 "kl_loss_coef": 0.0, "entropy_coeff": 0.0}


def loss_case(name, loss_cfg, logp, old_logp, advantages, mask, *, step=0, is_weights=None, ref_logp=None,
              entropy=None, reg_rows=None, combine="replace", note=""):
    lc = dict(LOSS_DEFAULTS)
    lc.update(loss_cfg)
    lp, olp, M = f32(logp), f32(old_logp), np.asarray(mask, float)
    B, L = lp.shape
    A = effective_advantages(advantages, B, L, reg_rows)
    safe = lambda x: np.where(M > 0, x, 0.0)  # noqa: E731
    tok, dl, clip, low, kl_terms, selected = mode_terms(lc["policy_loss"], lc, safe(lp), safe(olp), safe(A), M,
                                                        reg_rows, combine, step)
    w = np.ones_like(lp) if is_weights is None else f32(is_weights)
    W = row_weights(M, lc["loss_agg_mode"], lc["loss_scale_factor"] or None, reg_rows, combine)[:, None]
    Wa = W.copy()
    if combine == "weighted" and reg_rows is not None:
        Wa[np.asarray(reg_rows, bool)] = 0.0  # regulariser rows take no part in the KL and entropy terms
    loss = float((W * M * tok * w).sum())
    grad = W * M * dl * w
    if ref_logp is not None and lc["kl_loss_coef"] != 0:
        assert lc["kl_loss_type"] in ("k1", "kl")
        loss += lc["kl_loss_coef"] * float((Wa * M * (lp - f32(ref_logp))).sum())
        grad = grad + lc["kl_loss_coef"] * Wa * M
    if entropy is not None:
        loss -= lc["entropy_coeff"] * float((Wa * M * f32(entropy)).sum())
    cfg = {"loss": dict(loss_cfg)}
    if combine != "replace":
        cfg["regularizer"] = {"combine": combine}
    case = {"name": name, "note": note, "config": cfg, "B": B, "L": L, "step": step,
            "logp": np.asarray(logp, np.float32).ravel().tolist(),
            "old_logp": np.asarray(old_logp, np.float32).ravel().tolist(),
            "advantages": np.asarray(advantages, np.float32).ravel().tolist(),
            "adv_per_token": int(np.asarray(advantages).ndim == 2),
            "mask": np.asarray(mask, int).ravel().tolist()}
    for key, val in (("is_weights", is_weights), ("ref_logp", ref_logp), ("entropy", entropy)):
        if val is not None:
            case[key] = np.asarray(val, np.float32).ravel().tolist()
    if reg_rows is not None:
        case["reg_rows"] = [int(v) for v in reg_rows]
    case["expect"] = {"loss": loss, "grad": grad.ravel().tolist(),
                      "pg_clipfrac": masked_mean(clip, M), "pg_clipfrac_lower": masked_mean(low, M),
                      "ppo_kl": masked_mean(kl_terms, M)}
    if lc["policy_loss"] in ("clip_cov", "kl_cov"):
        case["expect"]["selected"] = selected
    return case


# ------------------------------------------------------------------------ estimators

def group_index(ids):
    first = {}
    return np.array([first.setdefault(g, len(first)) for g in ids]), len(first)


def advantages_ref(section, rewards, ids, lengths=None):
    r = f32(rewards)
    gi, G = group_index(ids)
    size = np.bincount(gi, minlength=G)
    mean = np.where(size >= 2, np.bincount(gi, weights=r, minlength=G) / size, 0.0)
    est = section["estimator"]
    eps = section.get("epsilon", 1e-6)
    norm = section.get("norm_adv_by_std_in_grpo", True)
    if est == "rloo":
        single = section.get("rloo_singleton", "zero")
        n = size[gi]
        return np.where(n >= 2, n / np.maximum(n - 1, 1) * (r - mean[gi]), r if single == "score" else 0.0)
    if est == "reinforce_plus_plus_baseline":
        a = r - mean[gi]
        ln = np.asarray(lengths, float)
        N = ln.sum()
        mu = (ln * a).sum() / (N + 1e-8)
        var = (ln * (a - mu) ** 2).sum() / (N + 1e-8) * N / (N - 1)
        return np.where(ln > 0, (a - mu) / np.sqrt(var + 1e-8), 0.0)
    if est == "grpo_passk":
        out = np.zeros_like(r)
        for g in range(G):
            members = np.flatnonzero(gi == g)
            vals = r[members]
            best = members[np.argmax(vals)]  # argmax takes the first of equal maxima
            second = np.sort(vals)[-2]
            adv = vals.max() - second
            if norm:
                adv /= np.std(vals, ddof=1) + eps
            out[best] = adv
        return out
    raise ValueError(est)


def advantage_case(name, section, rewards, ids, lengths=None, note=""):
    case = {"name": name, "note": note, "config": {"advantage": section},
            "rewards": np.asarray(rewards, np.float32).tolist(), "group_ids": list(ids)}
    if lengths is not None:
        case["lengths"] = list(lengths)
    case["expect"] = advantages_ref(section, rewards, ids, lengths).tolist()
    return case


# ------------------------------------------------------------------------------ cases

# The loss example of docs/API.md ("Reference values")
LP = [[-1, -0.5, -2, -0.1], [-0.3, -1.2, -0.7, -9.0]]
OLP = [[-1.2, -0.4, -1.0, -0.1], [-0.3, -2.7, -0.2, -0.5]]
MASK = [[1, 1, 1, 0], [1, 1, 1, 1]]
CLIP = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28}


def cases():
    loss = []
    sm = "seq-mean-token-mean"
    loss.append(loss_case("gspo_anchor", {"policy_loss": "gspo", "loss_agg_mode": sm, **CLIP}, LP, OLP, [1, -1], MASK,
                          note="anchor inputs; row ratios e^-0.3 (A = +1, unclipped) and e^-1.875 (A = -1, clipped at 0.8)"))
    # Row 0's mean log-ratio is 11 > 10: the clamp holds its ratio at e^10 and stops its gradient.
    loss.append(loss_case("gspo_clamp_per_token_adv", {"policy_loss": "gspo", "loss_agg_mode": sm, **CLIP},
                          [[-0.5, -1.0, -1.5, -2.0], [-1.0, -0.8, -0.9, -3.0], [-0.2, -0.1, -0.3, -0.4]],
                          [[-11.5, -12.0, -12.5, -13.0], [-1.1, -0.85, -0.7, -3.1], [-0.5, -0.6, -0.2, -0.3]],
                          [[0.5, -1.0, 1.5, 0.25], [1.0, -0.5, 0.75, -1.25], [-2.0, 1.0, -0.5, 0.5]],
                          [[1, 1, 1, 1], [1, 1, 1, 0], [0, 1, 1, 1]],
                          note="row 0: m = 11 > 10; per-token advantages of both signs"))
    loss.append(loss_case("cispo_anchor", {"policy_loss": "cispo", **CLIP}, LP, OLP, [1, -1], MASK,
                          note="token-mean; ratios outside both sides of [0.8, 1.28] are clipped"))
    loss.append(loss_case("cispo_seq_sum_isw_kl_entropy",
                          {"policy_loss": "cispo", "loss_agg_mode": "seq-mean-token-sum", **CLIP,
                           "kl_loss_type": "k1", "kl_loss_coef": 0.3, "entropy_coeff": 0.05},
                          [[-1, -0.5, -2, -0.1], [-0.3, -1.2, -0.7, -25.0]], OLP, [0.5, -2], MASK,
                          is_weights=[[0.9, 1.1, 1.0, 1.0], [1.2, 0.8, 1.0, 0.5]],
                          ref_logp=[[-1.1, -0.6, -1.9, 0], [-0.2, -1.0, -0.9, -24.0]],
                          entropy=[[1.5, 0.7, 2.0, 0], [0.3, 1.1, 0.9, 2.5]],
                          note="log-ratio -24.5 beyond the clamp at -20; is_weights; k1 KL and entropy terms"))
    loss.append(loss_case("gpg_anchor", {"policy_loss": "gpg"}, LP, OLP, [1, -1], MASK, note="-A logp, token-mean"))
    loss.append(loss_case("reinforce_alias_norm", {"policy_loss": "reinforce", "loss_agg_mode": "seq-mean-token-sum-norm",
                                                   "loss_scale_factor": 4}, LP, OLP, [1, -1], MASK,
                          note="reinforce is gpg; seq-mean-token-sum-norm with K = 4"))
    loss.append(loss_case("gpg_token_sum_per_token", {"policy_loss": "gpg", "loss_agg_mode": "token-sum"}, LP, OLP,
                          [[1, 0.5, -0.5, 9], [-1, 2, 0, -3]], MASK))
    # Clip-Cov with every candidate picked (k >= candidates): no randomness.
    loss.append(loss_case("clip_cov_all_candidates", {"policy_loss": "clip_cov", "clip_cov_ratio": 0.5,
                                                      "clip_cov_lb": 0.2, "clip_cov_ub": 5.0, **CLIP},
                          LP, OLP, [1, -1], MASK,
                          note="k = floor(0.5 * 7) = 3 >= the candidates, so every candidate is detached"))
    g = np.random.default_rng(20260901)
    B, L = 4, 16
    olp4 = g.uniform(-4, -0.1, (B, L))
    lp4 = olp4 + g.uniform(-0.4, 0.4, (B, L))
    mask4 = (np.arange(L)[None, :] < np.array([16, 11, 7, 14])[:, None]).astype(int)
    adv4 = [1.5, -0.8, 0.6, -1.9]
    loss.append(loss_case("clip_cov_random_pick", {"policy_loss": "clip_cov", "clip_cov_ratio": 0.08, "clip_cov_lb": 0.1,
                                                   "clip_cov_ub": 5.0, "seed": 7, **CLIP},
                          lp4, olp4, adv4, mask4, step=3,
                          note="more candidates than k = floor(0.08 * 48) = 3: Floyd's pick, seed 7, step 3"))
    loss.append(loss_case("clip_cov_random_pick_step4", {"policy_loss": "clip_cov", "clip_cov_ratio": 0.08,
                                                         "clip_cov_lb": 0.1, "clip_cov_ub": 5.0, "seed": 7, **CLIP},
                          lp4, olp4, adv4, mask4, step=4, note="the same batch at step 4"))
    loss.append(loss_case("kl_cov_anchor", {"policy_loss": "kl_cov", "kl_cov_ratio": 0.3, "ppo_kl_coef": 0.5},
                          LP, OLP, [1, -1], MASK, note="k = floor(7 * 0.3) = 2 tokens of largest covariance"))
    # Equal covariances: rows 0 and 1 repeat the same (A, logp) pairs, so ties are exact.
    loss.append(loss_case("kl_cov_ties", {"policy_loss": "kl_cov", "kl_cov_ratio": 0.25, "ppo_kl_coef": 1.0,
                                          "loss_agg_mode": "seq-mean-token-sum"},
                          [[-0.5, -2.0, -0.5, -1.0], [-0.5, -2.0, -0.5, -1.0], [-1.0, -1.5, -0.25, -3.0]],
                          [[-0.7, -1.5, -0.6, -1.2], [-0.4, -2.5, -0.9, -1.0], [-1.1, -1.2, -0.5, -2.0]],
                          [1.0, 1.0, -1.0], [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]],
                          note="k = floor(11 * 0.25) = 2: the largest covariance (index 9), then four tokens tie for the second: the lowest index (0) wins"))
    loss.append(loss_case("kl_cov_weighted_regulariser", {"policy_loss": "kl_cov", "kl_cov_ratio": 0.34,
                                                          "ppo_kl_coef": 0.2},
                          [[-1.0, -0.5, -2.0, -0.1], [-0.3, -1.2, -0.7, -3.0], [-0.9, -0.2, -1.4, -0.6]],
                          [[-1.2, -0.4, -1.0, -0.1], [-0.3, -2.7, -0.2, -0.5], [-1.0, -0.3, -1.1, -0.9]],
                          [1.0, -1.0, 0.7], [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]], reg_rows=[0, 0, 1],
                          combine="weighted",
                          note="weighted: the regulariser row (A = 1) is its own covariance group"))

    adv = []
    r5, ids5 = [1, 0, 0, 1, 0.5], [7, 7, 7, 7, 3]
    adv.append(advantage_case("rloo_singleton_zero", {"estimator": "rloo"}, r5, ids5,
                              note="reference values of docs/API.md: +-2/3; the singleton gets 0"))
    adv.append(advantage_case("rloo_singleton_score", {"estimator": "rloo", "rloo_singleton": "score"}, r5, ids5))
    adv.append(advantage_case("rloo_three", {"estimator": "rloo"}, [0.2, 0.5, 0.9, 1.0, -1.0], [1, 1, 1, 2, 2]))
    adv.append(advantage_case("rfpp_baseline", {"estimator": "reinforce_plus_plus_baseline"}, r5, ids5,
                              lengths=[3, 4, 0, 2, 5],
                              note="group mean, then whitened over 14 tokens (row 2 has none: 0)"))
    adv.append(advantage_case("rfpp_baseline_groups", {"estimator": "reinforce_plus_plus_baseline"},
                              [0.3, 0.9, 0.1, 0.4, 0.8, 0.6], [5, 5, 5, 2, 2, 9], lengths=[10, 1, 7, 3, 3, 6]))
    pk_r, pk_ids = [0.2, 0.9, 0.9, 0.1, 0.3, 1.0, 0.5], [1, 1, 1, 1, 2, 2, 2]
    adv.append(advantage_case("grpo_passk_norm", {"estimator": "grpo_passk"}, pk_r, pk_ids,
                              note="group 1 ties at 0.9: the first (index 1) gets 0.9 - 0.9 = 0"))
    adv.append(advantage_case("grpo_passk_raw", {"estimator": "grpo_passk", "norm_adv_by_std_in_grpo": False},
                              pk_r, pk_ids))
    return loss, adv


def document():
    loss, adv = cases()
    return {"generator": "scripts/make_loss_fixtures.py",
            "about": "hand-derived cases for the policy-loss modes and advantage estimators (numpy float64)",
            "loss_cases": loss, "advantage_cases": adv}


def main():
    text = json.dumps(document(), indent=1, sort_keys=True) + "\n"
    if "--check" in sys.argv:
        if OUT.read_text() != text:
            print(f"{OUT} differs from what the script produces", file=sys.stderr)
            sys.exit(1)
        return
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
