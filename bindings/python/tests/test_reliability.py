"""Reliability of the Python layer (docs/RELIABILITY.md).

- The non-finite policy through every call that takes floating input, numpy and torch:
  NaN or Inf under mask = 1 raises NonFiniteError naming the argument and the flat index;
  the same values under mask = 0 are never read.
- Integers that do not fit the C int64_t they are passed as raise instead of arriving
  truncated (ctypes keeps only the low 64 bits).
- Random bad inputs (dtypes, shapes, layouts, sizes, values) raise aepo's exceptions or
  TypeError/ValueError and never crash the interpreter: the loop runs in a subprocess whose
  exit status is checked.
- Threads: distinct instances give the single-threaded results; a shared instance is
  serialised (sampler, controller) or read-only (loss, fused head) and stays correct.
"""
import math
import subprocess
import sys
import threading

import numpy as np
import pytest

import aepo

B, L, V, D = 3, 5, 11, 4


def inputs(rng):
    logp = rng.uniform(-4, -0.1, (B, L)).astype(np.float32)
    old = (logp + rng.uniform(-0.3, 0.3, (B, L))).astype(np.float32)
    mask = np.ones((B, L), np.uint8)
    mask[1, 3:] = 0
    adv = rng.uniform(-1, 1, B).astype(np.float32)
    return logp, old, adv, mask


def non_finite(exc_info, argument, index):
    e = exc_info.value
    assert isinstance(e, aepo.NonFiniteError) and isinstance(e, FloatingPointError)
    assert e.argument == argument, (e.argument, str(e))
    assert e.index == index, (e.index, str(e))
    assert argument in str(e)


# ------------------------------------------------------------------ non-finite policy ---

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["logp", "old_logp", "ref_logp", "is_weights", "entropy", "advantages"])
def test_loss_compute_non_finite(rng, name, bad):
    logp, old, adv, mask = inputs(rng)
    arrays = dict(logp=logp, old_logp=old, ref_logp=old - 0.1, is_weights=np.ones((B, L), np.float32),
                  entropy=np.full((B, L), 1.5, np.float32), advantages=adv)
    cfg = {"loss": {"kl_loss_coef": 0.1, "entropy_coeff": 0.01}}
    with aepo.Loss(cfg) as loss:
        def run(**over):
            a = dict(arrays, **over)
            return loss.compute(a["logp"], a["old_logp"], a["advantages"], mask, ref_logp=a["ref_logp"],
                                is_weights=a["is_weights"], entropy=a["entropy"])
        assert math.isfinite(run().loss)
        a = arrays[name].copy()
        if name == "advantages":
            a[2] = bad
            with pytest.raises(aepo.NonFiniteError) as e:
                run(advantages=a)
            non_finite(e, "advantages", 2)
        else:
            a[2, 1] = bad
            with pytest.raises(aepo.NonFiniteError) as e:
                run(**{name: a})
            non_finite(e, name, 2 * L + 1)
            a = arrays[name].copy()
            a[1, 4] = bad  # mask = 0 there: never read
            assert math.isfinite(run(**{name: a}).loss)


def test_loss_overflow_is_an_error_not_inf():
    with aepo.Loss({"loss": {"loss_agg_mode": "token-sum", "clip_ratio_high": 10}}) as loss:
        logp = np.array([[0.0, 1.0]], np.float32)
        old = np.zeros((1, 2), np.float32)
        with pytest.raises(aepo.NonFiniteError) as e:
            loss.compute(logp, old, np.array([3.4e38], np.float32), np.ones((1, 2), np.uint8))
        non_finite(e, "grad", 1)


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_advantages_and_selection_non_finite(bad):
    r = np.array([1, 0, 1, bad, 0, 1], np.float32)
    g = np.array([0, 0, 0, 1, 1, 1])
    with pytest.raises(aepo.NonFiniteError) as e:
        aepo.compute_advantages(r, g)
    non_finite(e, "rewards", 3)
    with pytest.raises(aepo.NonFiniteError) as e:
        aepo.select_regularizer(r, g, k_max=4, halve=False)
    non_finite(e, "rewards", 3)
    with pytest.raises(aepo.NonFiniteError) as e:
        aepo.compute_advantages(np.array([3.4e38, -3.4e38, -3.4e38], np.float32), np.zeros(3, np.int64),
                                norm_adv_by_std_in_grpo=False)
    non_finite(e, "out", 0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_kernels_non_finite(rng, bad):
    x = rng.normal(size=(B, L, V)).astype(np.float32)
    t = rng.integers(0, V, (B, L))
    mask = np.ones((B, L), np.uint8)
    mask[0, 2] = 0
    x[0, 2, 4] = np.nan  # masked row: never read
    s = aepo.logits_stats(x, t, 0.9, mask=mask)
    x[2, 1, 7] = bad
    with pytest.raises(aepo.NonFiniteError) as e:
        aepo.logits_stats(x, t, 0.9, mask=mask)
    non_finite(e, "logits", 2 * L + 1)
    x[2, 1, 7] = -np.inf  # a banned token is allowed
    s = aepo.logits_stats(x, t, 0.9, mask=mask)
    g = np.ones((B, L), np.float32)
    g[1, 1] = bad
    with pytest.raises(aepo.NonFiniteError) as e:
        aepo.logits_backward(x, t, 0.9, s.lse, s.entropy, g, mask=mask)
    non_finite(e, "grad_logp", L + 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_sampler_non_finite(rng, bad):
    x = rng.normal(size=(4, V)).astype(np.float32)
    x[1, :3] = -np.inf
    with aepo.Sampler() as s:
        s.sample(x, step=0)
        x[3, 5] = bad
        with pytest.raises(aepo.NonFiniteError) as e:
            s.sample(x, step=0)
        non_finite(e, "logits", 3)
        with pytest.raises(aepo.InvalidValueError):
            s.sample(x[:1], step=0, temperature=bad)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_controller_non_finite(bad):
    with aepo.Controller() as c:
        before = c.state_dict()
        with pytest.raises(aepo.NonFiniteError) as e:
            c.step(nll=bad)
        assert e.value.argument == "nll"
        with pytest.raises(aepo.NonFiniteError):
            c.step(nll_sum=bad, count=10)
        assert c.state_dict() == before  # a failed call changes nothing


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_fused_non_finite(rng, bad):
    X = rng.normal(size=(B * L, D)).astype(np.float32)
    W = rng.normal(size=(V, D)).astype(np.float32)
    t = rng.integers(0, V, B * L)
    mask = np.ones(B * L, np.uint8)
    mask[4] = 0
    X[4, 1] = np.nan  # masked row: never read
    with aepo.FusedHead() as head, aepo.Loss() as loss:
        logp, ent, lse = head.forward(X, W, t, mask=mask)
        Xb = X.copy()
        Xb[6, 2] = bad
        with pytest.raises(aepo.NonFiniteError) as e:
            head.forward(Xb, W, t, mask=mask)
        non_finite(e, "X", 6 * D + 2)
        Wb = W.copy()
        Wb[3, 1] = bad
        with pytest.raises(aepo.NonFiniteError) as e:
            head.forward(X, Wb, t, mask=mask)
        non_finite(e, "W", 3 * D + 1)
        g = np.ones(B * L, np.float32)
        g[2] = bad
        with pytest.raises(aepo.NonFiniteError) as e:
            head.backward(X, W, t, lse, ent, g, mask=mask)
        non_finite(e, "grad_logp", 2)
        old = np.full((B, L), -2.0, np.float32)
        old[0, 3] = bad
        with pytest.raises(aepo.NonFiniteError) as e:
            head.loss_and_grad(X.reshape(B, L, D), W, t.reshape(B, L), loss, old, np.ones(B, np.float32),
                               mask.reshape(B, L))
        non_finite(e, "old_logp", 3)


def test_torch_non_finite(rng):
    torch = pytest.importorskip("torch")
    import aepo.torch as at
    logp, old, adv, mask = inputs(rng)
    lp = torch.tensor(logp, requires_grad=True)
    old_t = torch.tensor(old)
    old_t[2, 0] = float("nan")
    with pytest.raises(aepo.NonFiniteError) as e:
        at.policy_loss(lp, old_t, torch.tensor(adv), torch.tensor(mask))
    non_finite(e, "old_logp", 2 * L)
    with pytest.raises(aepo.NonFiniteError) as e:
        at.verl_policy_loss(old_t, lp, torch.tensor(adv)[:, None].expand(B, L).contiguous(), torch.tensor(mask))
    assert e.value.argument == "old_log_prob" and e.value.index == 2 * L
    x = torch.randn(B, L, V)
    x[1, 2, 3] = float("inf")
    with pytest.raises(aepo.NonFiniteError) as e:
        at.logits_stats(x, torch.zeros(B, L, dtype=torch.long), 1.0)
    non_finite(e, "logits", L + 2)


# --------------------------------------------------------------- int64 arguments ---

@pytest.mark.parametrize("big", [2 ** 64 + 1, -(2 ** 63) - 1])
def test_ints_beyond_int64_raise(rng, big):
    logp, old, adv, mask = inputs(rng)
    with aepo.Loss() as loss:
        for kw in ({"step": big}, {"dp_size": big}, {"global_tokens": big}):
            with pytest.raises(aepo.InvalidValueError):
                loss.compute(logp, old, adv, mask, **kw)
        with pytest.raises(aepo.InvalidValueError):
            loss.select_regularizer(np.ones(4, np.float32), np.arange(4) // 2, k_max=big, halve=False)
    with aepo.Sampler() as s:
        x = rng.normal(size=(2, V)).astype(np.float32)
        for kw in ({"step": big}, {"position": big}, {"row_offset": big}):
            with pytest.raises(aepo.InvalidValueError):
                s.sample(x, **dict({"step": 0}, **kw))
    with pytest.raises(aepo.InvalidValueError):
        aepo.logits_stats(rng.normal(size=(2, V)).astype(np.float32), np.zeros(2, np.int64), 1.0, threads=big)


# --------------------------------------------------------- random bad inputs ---

_FUZZ = r'''
import numpy as np, aepo, sys
rng = np.random.default_rng(int(sys.argv[1]))
ALLOWED = (aepo.AepoError, TypeError, ValueError, OverflowError)
def arr(shape):
    kind = rng.integers(0, 9)
    if kind == 0: return rng.normal(size=shape).astype(np.float64)
    if kind == 1: return rng.integers(-3, 3, size=shape)
    if kind == 2: return np.full(shape, np.nan, np.float32)
    if kind == 3: return rng.normal(size=shape).astype(np.float32)[..., ::-1]
    if kind == 4: return np.array(["a"] * int(np.prod(shape))).reshape(shape)
    if kind == 5: return rng.normal(size=shape).astype(np.float16)
    if kind == 6: return np.zeros((0,) + tuple(shape[1:]), np.float32)
    if kind == 7: return None
    return rng.normal(size=shape).astype(np.float32)
def dims():
    return tuple(int(v) for v in rng.choice([0, 1, 2, 3, 7], size=rng.integers(1, 4)))
def num():
    return rng.choice([0, 1, -1, 2 ** 63, -2 ** 70, 0.5, float("nan"), float("inf"), 1e-300, 3])
try:
    import torch, aepo.torch as at
except ImportError:
    torch = None
def tensor(shape):
    a = arr(shape)
    if a is None or a.dtype.kind in "US": return a
    t = torch.from_numpy(np.ascontiguousarray(a))
    if t.is_floating_point() and rng.integers(0, 2): t.requires_grad_(True)
    return t
calls = 0
loss, sampler, ctl, head = aepo.Loss(), aepo.Sampler(), aepo.Controller(), aepo.FusedHead()
thead = at.FusedHead() if torch is not None else None
for _ in range(2000):
    op = rng.integers(0, 12 if torch is not None else 8)
    try:
        if op == 0: loss.compute(arr(dims()), arr(dims()), arr(dims()), arr(dims()), step=num(), dp_size=num())
        elif op == 1: aepo.compute_advantages(arr(dims()), arr(dims()))
        elif op == 2: aepo.select_regularizer(arr(dims()), arr(dims()), k_max=num(), halve=bool(rng.integers(0, 2)))
        elif op == 3: aepo.logits_stats(arr(dims()), arr(dims()), num(), threads=num())
        elif op == 4: sampler.sample(arr(dims()), step=num(), temperature=num())
        elif op == 5: ctl.step(nll=num(), step=num())
        elif op == 6: head.forward(arr(dims()), arr(dims()), arr(dims()), temperature=num())
        elif op == 7: aepo.validate_config(rng.bytes(int(rng.integers(0, 40))).decode("latin-1"))
        elif op == 8:
            r = at.policy_loss(tensor(dims()), tensor(dims()), tensor(dims()), tensor(dims()))
            if r.requires_grad: r.backward()
        elif op == 9:
            s = at.logits_stats(tensor(dims()), tensor(dims()), num())
            if s.logp is not None and s.logp.requires_grad: s.logp.sum().backward()
        elif op == 10: at.verl_policy_loss(tensor(dims()), tensor(dims()), tensor(dims()), tensor(dims()))
        else:
            lp, ent = thead(tensor(dims()), tensor(dims()), tensor(dims()))
            if lp.requires_grad: (lp.sum() + ent.sum()).backward()
    except ALLOWED:
        pass
    calls += 1
print("calls", calls)
'''


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_bad_inputs_never_crash(seed):
    r = subprocess.run([sys.executable, "-c", _FUZZ, str(seed)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    assert "calls 2000" in r.stdout


# ------------------------------------------------------------------------ threads ---

def _work(seed):
    rng = np.random.default_rng(seed)
    out = []
    logp, old, adv, mask = inputs(rng)
    x = rng.normal(size=(4, V)).astype(np.float32)
    X = rng.normal(size=(6, D)).astype(np.float32)
    W = rng.normal(size=(V, D)).astype(np.float32)
    t = rng.integers(0, V, 6)
    with aepo.Loss({"loss": {"threads": 2}}) as loss, aepo.Sampler({"sampler": {"top_k": 5}}) as s, \
            aepo.Controller() as c, aepo.FusedHead({"fused": {"chunk_n": 2}}) as head:
        for k in range(150):
            r = loss.compute(logp * (1 + k % 3), old, adv, mask)
            out += [r.loss, r.grad.tobytes()]
            out.append(s.sample(x, step=k).tokens.tobytes())
            out.append(c.step(nll=0.3 + 0.01 * (k % 40)).temperature)
            out.append(head.forward(X * (1 + k % 2), W, t)[2].tobytes())
    return out


def test_threads_distinct_instances_match_single_threaded():
    want = [_work(s) for s in range(8)]
    got = [None] * 8

    def run(i):
        got[i] = _work(i)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert got == want


def test_shared_instances_stay_correct(rng):
    logp, old, adv, mask = inputs(rng)
    x = rng.normal(size=(8, V)).astype(np.float32)
    with aepo.Loss() as loss, aepo.Sampler({"sampler": {"top_p": 0.8}}) as s, aepo.Controller() as c:
        want_loss = loss.compute(logp, old, adv, mask).grad.tobytes()
        want_tok = [s.sample(x, step=k).tokens.tobytes() for k in range(50)]
        bad = []
        steps = 200

        def run():
            for k in range(50):
                if loss.compute(logp, old, adv, mask).grad.tobytes() != want_loss:
                    bad.append("loss")
                if s.sample(x, step=k).tokens.tobytes() != want_tok[k]:
                    bad.append("sampler")
            for _ in range(steps):
                d = c.step(nll=0.5)
                if not d.temperature > 0:
                    bad.append("controller")
        threads = [threading.Thread(target=run) for _ in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not bad
        assert c.decision().step == 8 * steps
