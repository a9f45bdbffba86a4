"""Sampler rows: N=4096 rows of V=32000 logits ~ N(0, 2^2) at T=1.2, against PyTorch on the
CPU with the same thread count.

libaepo's call returns everything a trainer needs (tokens, the truncated tempered log-prob,
the T = 1 log-prob); the peers return tokens only. Each row also records the mean kept
count of both sides, as a check that they truncate the same way.
"""
from benchlib import Row

N, V, T = 4096, 32000, 1.2
TOP_P, TOP_K = 0.9, 50


def rows(ctx):
    np, aepo, torch = ctx.np, ctx.aepo, ctx.torch
    x = np.random.default_rng(0).standard_normal((N, V), dtype=np.float32) * np.float32(2)
    shape = f"N={N} V={V} T={T}"
    step = [0]

    def sampler(**keys):
        s = aepo.Sampler({"sampler": dict(keys, threads=ctx.threads, seed=1)})

        def run():
            step[0] += 1
            return s.sample(x, step=step[0], temperature=T)
        return s, run

    plain, lib_plain = sampler()
    topp, lib_topp = sampler(top_p=TOP_P)
    topk, lib_topk = sampler(top_k=TOP_K)
    out = []
    xt = torch.from_numpy(x) if torch is not None else None

    def peer_plain():
        return torch.multinomial(torch.softmax(xt / T, dim=-1), 1)

    def sorted_top_p(p=TOP_P):
        probs = torch.softmax(xt / T, dim=-1)
        sp, si = torch.sort(probs, dim=-1, descending=True)
        above = torch.cumsum(sp, dim=-1) - sp
        sp = sp.masked_fill(above >= p, 0.0)  # keep a token while the mass above it is < p
        return si, sp

    def peer_topp():
        si, sp = sorted_top_p()
        return si.gather(-1, torch.multinomial(sp, 1))

    def peer_topk():
        v, i = torch.topk(xt / T, TOP_K, dim=-1)
        return i.gather(-1, torch.multinomial(torch.softmax(v, dim=-1), 1))

    def kept_check(s, peer_kept):
        def extra():
            lib = s.sample(x[:256], step=0, temperature=T, return_kept=True).kept.mean()
            res = {"kept_mean_lib": float(lib)}
            if torch is not None:
                res["kept_mean_peer"] = float(peer_kept())
            return res
        return extra

    def torch_top_p_kept():
        probs = torch.softmax(xt[:256] / T, dim=-1)
        sp, _ = torch.sort(probs, dim=-1, descending=True)
        return ((torch.cumsum(sp, dim=-1) - sp) < TOP_P).sum(dim=-1).double().mean()

    have = torch is not None
    out.append(Row(name=f"sampler plain {shape}", lib=lib_plain, peer=peer_plain if have else None,
                   peer_name="torch.multinomial(softmax(x/T))",
                   extra=kept_check(plain, lambda: V), notes_keys=("kept_mean_lib",)))
    out.append(Row(name=f"sampler top-p {TOP_P} {shape}", lib=lib_topp, peer=peer_topp if have else None,
                   peer_name="torch sort + cumsum top-p + multinomial",
                   extra=kept_check(topp, torch_top_p_kept), notes_keys=("kept_mean_lib", "kept_mean_peer")))
    out.append(Row(name=f"sampler top-k {TOP_K} {shape}", lib=lib_topk, peer=peer_topk if have else None,
                   peer_name="torch.topk + softmax + multinomial",
                   extra=kept_check(topk, lambda: TOP_K), notes_keys=("kept_mean_lib",)))
    return out
