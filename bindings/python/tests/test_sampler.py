import math

import numpy as np
import pytest

import aepo


def reference_law(x, t, min_p=0.0, top_k=0, top_p=1.0):
    """The truncated tempered law of docs/SAMPLER.md in float64 with a full sort.

    Returns (probs over V, kept count, smallest relative distance of a top-p decision to
    its threshold)."""
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    m = x[finite].max()
    w = np.where(finite, np.exp((np.where(finite, x, m) - m) / t), 0.0)
    cand = np.flatnonzero(finite)
    if min_p > 0:
        cand = cand[x[cand] >= m + t * math.log(min_p)]
    cand = cand[np.lexsort((cand, -x[cand]))]  # larger logit first, then lower id
    if 0 < top_k < len(cand):
        cand = cand[:top_k]
    margin = math.inf
    if top_p < 1:
        z = w[cand].sum()
        above = np.concatenate([[0.0], np.cumsum(w[cand])[:-1]])
        keep = above < top_p * z
        rel = np.abs(above - top_p * z) / np.maximum(above, top_p * z)
        margin = rel[: keep.sum() + 1].min()
        cand = cand[keep]
    probs = np.zeros_like(w)
    probs[cand] = w[cand] / w[cand].sum()
    return probs, len(cand), margin


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@pytest.fixture
def logits(rng):
    return (rng.standard_normal((64, 3001)) * 2).astype(np.float32)


def test_result_types_and_shapes(logits):
    with aepo.Sampler({"sampler": {"seed": 1}}) as s:
        r = s.sample(logits, step=0)
        assert isinstance(r, aepo.SampleResult)
        assert r.tokens.dtype == np.int64 and r.tokens.shape == (64,)
        assert r.logp.dtype == np.float32 and r.logp_t1.dtype == np.float32
        assert r.kept is None
        assert ((r.tokens >= 0) & (r.tokens < 3001)).all()
        r = s.sample(logits, step=0, return_kept=True)
        assert r.kept.dtype == np.int32 and (r.kept == 3001).all()
        assert s.config["sampler"]["seed"] == 1
    s.close()  # idempotent
    with pytest.raises(aepo.InvalidValueError, match="closed"):
        s.sample(logits, step=0)


@pytest.mark.parametrize("cfg", [
    {},
    {"min_p": 0.05},
    {"top_k": 40},
    {"top_p": 0.9},
    {"min_p": 0.01, "top_k": 300, "top_p": 0.95},
])
@pytest.mark.parametrize("t", [0.5, 1.0, 1.6])
def test_kept_set_and_log_probs_match_the_reference(logits, cfg, t):
    with aepo.Sampler({"sampler": dict(cfg, seed=3, threads=2)}) as s:
        r = s.sample(logits, step=5, temperature=t, return_kept=True)
    lsm = log_softmax(logits)
    worst = worst_t1 = 0.0
    for i, row in enumerate(logits):
        probs, kept, margin = reference_law(row, t, cfg.get("min_p", 0.0), cfg.get("top_k", 0), cfg.get("top_p", 1.0))
        tok = r.tokens[i]
        worst_t1 = max(worst_t1, abs(r.logp_t1[i] - lsm[i, tok]))
        if margin < 1e-6:
            continue  # a top-p decision within float rounding of its threshold
        assert probs[tok] > 0, f"row {i}: token {tok} is outside the kept set"
        assert r.kept[i] == kept, f"row {i}: kept {r.kept[i]}, reference {kept}"
        worst = max(worst, abs(r.logp[i] - math.log(probs[tok])))
    assert worst < 1e-4, f"max |logp - reference| = {worst}"
    assert worst_t1 < 1e-4, f"max |logp_t1 - reference| = {worst_t1}"


def test_frequencies_follow_the_law():
    # 40 000 draws of one 12-token row under top-p 0.8: every kept token's count is within
    # 5 binomial standard deviations of its expectation, and nothing else is drawn.
    row = np.array([2.0, 1.5, 1.5, 0.3, -0.2, 1.0, 0.9, -3.0, 0.0, 0.5, -np.inf, 1.2], dtype=np.float32)
    n = 40_000
    x = np.tile(row, (n, 1))
    probs, _, margin = reference_law(row, 1.3, top_p=0.8)
    assert margin > 1e-3
    with aepo.Sampler({"sampler": {"top_p": 0.8, "temperature": 1.3, "seed": 9, "threads": 2}}) as s:
        r = s.sample(x, step=0)
    counts = np.bincount(r.tokens, minlength=row.size)
    assert counts[probs == 0].sum() == 0
    sd = np.sqrt(n * probs * (1 - probs))
    z = np.abs(counts - n * probs)[probs > 0] / sd[probs > 0]
    assert z.max() < 5, f"largest deviation {z.max():.2f} sd; counts {counts}, expected {n * probs}"


def test_same_seed_is_independent_of_threads_and_batch_split(logits):
    cfg = {"sampler": {"top_p": 0.9, "seed": 21, "temperature": 1.2}}
    with aepo.Sampler(cfg) as one, aepo.Sampler({"sampler": dict(cfg["sampler"], threads=2)}) as two:
        a = one.sample(logits, step=3, position=4, return_kept=True)
        b = two.sample(logits, step=3, position=4, return_kept=True)
        head = two.sample(logits[:25], step=3, position=4, return_kept=True)
        tail = one.sample(logits[25:], step=3, position=4, row_offset=25, return_kept=True)
        again = one.sample(logits, step=3, position=4, return_kept=True)
        other = one.sample(logits, step=4, position=4)
    for k in range(4):
        assert np.array_equal(a[k], b[k])
        assert np.array_equal(a[k], again[k])
        assert np.array_equal(a[k], np.concatenate([head[k], tail[k]]))
    assert (other.tokens != a.tokens).sum() > 32


def test_greedy_takes_the_lowest_id_among_ties():
    x = np.array([[0, 3, 1, 3, 2, -np.inf, 3],
                  [-1, -1, -1, -1, -1, -1, -1],
                  [0, 0, 0, 0, 0, 0, 7]], dtype=np.float32)
    with aepo.Sampler({"sampler": {"greedy": True}}) as s:
        r = s.sample(x, step=0, return_kept=True)
    assert r.tokens.tolist() == [1, 0, 6]
    assert r.logp.tolist() == [0, 0, 0] and r.kept.tolist() == [1, 1, 1]
    np.testing.assert_allclose(r.logp_t1, log_softmax(np.where(np.isinf(x), -1e30, x))[np.arange(3), r.tokens],
                               atol=1e-6)


def test_temperature_override_matches_the_config(logits):
    with aepo.Sampler({"sampler": {"temperature": 1.4, "top_k": 50, "seed": 2}}) as a, \
            aepo.Sampler({"sampler": {"top_k": 50, "seed": 2}}) as b:
        ra = a.sample(logits, step=1)
        rb = b.sample(logits, step=1, temperature=1.4)
    assert np.array_equal(ra.tokens, rb.tokens) and np.array_equal(ra.logp, rb.logp)


def test_inputs_are_read_without_or_with_one_copy(logits):
    import torch
    x3 = np.zeros((64, 3, 3001), dtype=np.float32)
    x3[:, -1, :] = logits
    with aepo.Sampler({"sampler": {"seed": 4}}) as s:
        want = s.sample(logits, step=0)
        for view in (x3[:, -1, :], logits.astype(np.float64), np.asfortranarray(logits), torch.from_numpy(logits)):
            got = s.sample(view, step=0)
            assert np.array_equal(got.tokens, want.tokens)
            assert np.array_equal(got.logp_t1, want.logp_t1)


def test_bad_input_raises_clear_errors(logits):
    with aepo.Sampler() as s:
        for t in (0.0, -1.0):
            with pytest.raises(aepo.InvalidValueError, match="sampler.greedy") as ei:
                s.sample(logits, step=0, temperature=t)
            assert ei.value.argument == "temperature"
        bad = logits.copy()
        bad[7, 11] = np.nan
        with pytest.raises(aepo.NonFiniteError, match=r"logits\[7, 11\]") as ei:
            s.sample(bad, step=0)
        assert ei.value.index == 7
        with pytest.raises(aepo.InvalidValueError, match="all -inf"):
            s.sample(np.full((2, 5), -np.inf, dtype=np.float32), step=0)
        with pytest.raises(aepo.ShapeError, match="logits"):
            s.sample(logits[0], step=0)
        with pytest.raises(aepo.DTypeError):
            s.sample(np.array([["a", "b"]]), step=0)
        with pytest.raises(aepo.InvalidValueError, match="step"):
            s.sample(logits, step=-1)
        with pytest.raises(aepo.ShapeError, match="V"):
            s.sample(np.zeros((3, 0), dtype=np.float32), step=0)
        with pytest.raises(TypeError):
            s.sample(logits, step=1.5)
        empty = s.sample(np.zeros((0, 10), dtype=np.float32), step=0)
        assert empty.tokens.shape == (0,)
    for cfg, path in [({"top_p": 0}, "sampler.top_p"), ({"top_p": 1.5}, "sampler.top_p"),
                      ({"top_k": -1}, "sampler.top_k"), ({"min_p": 1.0}, "sampler.min_p"),
                      ({"temperature": 0}, "sampler.temperature")]:
        with pytest.raises(aepo.ConfigError) as ei:
            aepo.Sampler({"sampler": cfg})
        assert ei.value.argument == path
