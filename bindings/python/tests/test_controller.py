import json
import math

import numpy as np
import pytest

import aepo
from aepo import Controller


def plant_run(cfg, seed, steps=400):
    """The fixed plant of the controller tests (see docs/CONTROLLER.md), with numpy's Gaussian noise.
    Returns the mean |observed - target| over the second half."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(steps)
    errors = []
    h = 0.5
    with Controller(cfg) as ctl:
        alpha_max = ctl.config["controller"]["adaptive"]["alpha_max"]
        for t in range(steps):
            d = ctl.decision()
            w = d.alpha / alpha_max if d.alpha is not None else (d.k_max // 2 if d.halve else d.k_max) / d.k_max
            u = (d.temperature - 1.0) * w
            nxt = h - 0.02 * (h - 0.1) + 0.08 * u * (1.6 - h) + 0.01 * noise[t]
            y = nxt + 0.02 * u
            if t >= steps // 2:
                errors.append(abs(y - d.target))
            ctl.step(nll=y)
            h = nxt
    return float(np.mean(errors))


def test_first_decision_is_t_high_from_initial_entropy():
    with Controller() as ctl:
        d = ctl.decision()
        assert d == aepo.Decision(step=0, temperature=1.2, k_max=60, halve=False, alpha=None, target=0.5,
                                  statistic=0.0, smoothed=0.0, mode="bang_bang", reason="initial")
        # decision() does not advance
        assert ctl.decision() == d


def test_bang_bang_known_decisions():
    with Controller() as ctl:
        d = ctl.step(nll=0.7)
        assert (d.step, d.temperature, d.k_max, d.halve, d.reason) == (1, 0.8, 60, True, "above_target")
        d = ctl.step(nll=0.5)  # a tie is at-or-below
        assert (d.step, d.temperature, d.halve, d.reason) == (2, 1.2, False, "at_or_below_target")
        d = ctl.step(nll=math.nextafter(0.5, 1.0))
        assert d.temperature == 0.8 and d.halve


def test_bang_bang_matches_a_transcription_of_the_reference_rule(rng):
    trace = np.concatenate([rng.uniform(0.3, 0.7, 200), [0.5, 0.5, 0.0, 0.5]])
    h_prev = 0.0
    with Controller({"controller": {"k_max": 7}}) as ctl:
        for h in trace:
            d = ctl.decision()
            t_ref = 1.2 if h_prev <= 0.5 else 0.8
            for kept in (0, 1, 6, 7, 8, 100):
                k_ref = min(7, kept) if h_prev <= 0.5 else min(7, kept) // 2
                k = min(d.k_max, kept) // 2 if d.halve else min(d.k_max, kept)
                assert k == k_ref
            assert d.temperature == t_ref
            ctl.step(nll=float(h))
            h_prev = float(h)


@pytest.mark.parametrize("spelling", ["entropy", "exact"])  # "exact": the older spelling
def test_entropy_statistic_and_all_reduced_sums(spelling):
    cfg = {"controller": {"statistic": spelling, "mode": "adaptive"}}
    with Controller(cfg) as ctl:
        assert ctl.statistic == "entropy"
        d = ctl.step(entropy_sum=np.float64(123.0), count=np.int64(300))
        assert d.statistic == 123.0 / 300.0
        # the other statistic may come along for logging; it is ignored
        d = ctl.step(entropy=0.41, nll=9.0)
        assert d.statistic == 0.41
        d = ctl.step(entropy_sum=np.float32(30.0), count=100, nll=1.0)
        assert d.statistic == pytest.approx(0.3)


def test_adaptive_holds_the_target_on_the_plant_and_beats_bang_bang():
    for target in (0.3, 0.6, 1.0):
        a = plant_run({"controller": {"mode": "adaptive", "target": target}}, seed=3)
        b = plant_run({"controller": {"mode": "bang_bang", "target": target}}, seed=3)
        print(f"target {target}: adaptive {a:.5f}, bang-bang 1.2/0.8 {b:.5f}")
        assert a <= 0.02
        assert a < b
    pts = [{"step": 0, "target": 0.4}, {"step": 150, "target": 0.8}, {"step": 250, "target": 0.5},
           {"step": 320, "target": 0.7}]
    schedule = {"kind": "piecewise", "points": pts}
    a = plant_run({"controller": {"mode": "adaptive", "target": 0.4, "schedule": schedule}}, seed=3)
    b = plant_run({"controller": {"mode": "bang_bang", "target": 0.4, "schedule": schedule}}, seed=3)
    print(f"piecewise: adaptive {a:.5f}, bang-bang 1.2/0.8 {b:.5f}")
    assert a <= 0.02 and a < b


def test_alpha_actuator_returns_alpha():
    cfg = {"controller": {"mode": "adaptive", "adaptive": {"actuator": "alpha"}}}
    with Controller(cfg) as ctl:
        d = ctl.decision()
        assert d.alpha is not None and 0 <= d.alpha <= 0.5
        d = ctl.step(nll=0.9)
        assert d.temperature == 0.8 and d.alpha > 0 and d.mode == "adaptive"


def test_step_argument_and_schedules():
    pts = [{"step": 10, "target": 0.3}, {"step": 20, "target": 0.7}]
    cfg = {"controller": {"schedule": {"kind": "piecewise", "points": pts}}}
    with Controller(cfg) as ctl:
        assert ctl.step(nll=0.4).step == 1
        d = ctl.step(nll=0.4, step=9)
        assert (d.step, d.target, d.temperature) == (10, 0.3, 0.8)
        d = ctl.step(nll=0.6, step=np.int64(19))
        assert (d.step, d.target, d.temperature) == (20, 0.7, 1.2)
        before = ctl.state_dict()
        with pytest.raises(aepo.InvalidValueError) as e:
            ctl.step(nll=0.5, step=3)
        assert e.value.argument == "step"
        with pytest.raises(aepo.InvalidValueError):
            ctl.step(nll=0.5, step=-1)
        with pytest.raises(aepo.DTypeError):
            ctl.step(nll=0.5, step=2.5)
        assert ctl.state_dict() == before


@pytest.mark.parametrize("kwargs, exc, argument", [
    ({"nll": float("nan")}, aepo.NonFiniteError, "nll"),
    ({"nll": float("inf")}, aepo.NonFiniteError, "nll"),
    ({"nll": -0.1}, aepo.InvalidValueError, "nll"),
    ({"nll_sum": 10.0, "count": 0}, aepo.InvalidValueError, "count"),
    ({"nll_sum": 10.0, "count": -5}, aepo.InvalidValueError, "count"),
    ({"nll_sum": float("nan"), "count": 4}, aepo.NonFiniteError, "nll_sum"),
    ({"nll_sum": 10.0}, aepo.InvalidValueError, "count"),
    ({"nll": 0.5, "count": 4}, aepo.InvalidValueError, "count"),
    ({"nll": 0.5, "nll_sum": 3.0, "count": 4}, aepo.InvalidValueError, "nll"),
    ({"entropy": 0.5}, aepo.InvalidValueError, "nll"),
    ({"entropy_sum": 5.0, "count": 10}, aepo.InvalidValueError, "nll"),
    ({}, aepo.InvalidValueError, "nll"),
    ({"nll": "0.5"}, aepo.DTypeError, "nll"),
])
def test_bad_input_is_rejected_and_changes_nothing(kwargs, exc, argument):
    with Controller({"controller": {"mode": "adaptive"}}) as ctl:
        for y in (0.42, 0.55, 0.61):
            ctl.step(nll=y)
        before = ctl.state_dict()
        history = ctl.history()
        with pytest.raises(exc) as e:
            ctl.step(**kwargs)
        assert e.value.argument == argument, str(e.value)
        assert argument in str(e.value)
        assert ctl.state_dict() == before
        assert ctl.history() == history
        assert ctl.step(nll=0.5).step == 4


def test_error_classes_subclass_builtins():
    with Controller() as ctl:
        with pytest.raises(FloatingPointError):
            ctl.step(nll=float("nan"))
        with pytest.raises(ValueError):
            ctl.step(nll=-1.0)
        with pytest.raises(ValueError, match="controller.statistic is \"nll\""):
            ctl.step(entropy=0.3)


@pytest.mark.parametrize("cfg, path", [
    ({"controller": {"adaptive": {"t_min": 2.0, "t_max": 2.0}}}, "controller.adaptive.t_max"),
    ({"controller": {"schedule": {"kind": "piecewise",
                                  "points": [{"step": 5, "target": 0.3}, {"step": 5, "target": 0.4}]}}},
     "controller.schedule.points[1].step"),
    ({"controller": {"mode": "pid"}}, "controller.mode"),
    ({"controller": {"mode": "adaptive", "t_low": 1.0, "adaptive": {"actuator": "alpha"}}}, "controller.t_low"),
])
def test_bad_configs(cfg, path):
    with pytest.raises(aepo.ConfigError) as e:
        Controller(cfg)
    assert e.value.argument == path


def test_state_dict_round_trip_continues_bit_for_bit(rng):
    cfg = {"controller": {"mode": "adaptive", "target": 0.6, "adaptive": {"ema": 0.2}}}
    trace = rng.uniform(0.3, 0.9, 300)
    with Controller(cfg) as whole:
        expected = [whole.step(nll=float(y)) for y in trace]
    with Controller(cfg) as first:
        for y in trace[:120]:
            first.step(nll=float(y))
        state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
    with Controller(cfg) as resumed:
        resumed.load_state_dict(state)
        got = [resumed.step(nll=float(y)) for y in trace[120:]]
        assert resumed.state_dict()["step"] == 300
    # bitwise: compare the float bit patterns, not only ==
    assert [tuple(np.float64(v).tobytes() if isinstance(v, float) else v for v in d) for d in got] == \
           [tuple(np.float64(v).tobytes() if isinstance(v, float) else v for v in d) for d in expected[120:]]


def test_load_state_dict_rejects_incompatible_and_malformed_states():
    with Controller({"controller": {"mode": "adaptive"}}) as a:
        a.step(nll=0.3)
        state = a.state_dict()
    with Controller() as b:
        b.step(nll=0.7)
        before = b.state_dict()
        with pytest.raises(aepo.StateError) as e:
            b.load_state_dict(state)
        assert e.value.argument == "config.mode"
        bad = dict(before, step=-3)
        with pytest.raises(aepo.StateError) as e:
            b.load_state_dict(bad)
        assert e.value.argument == "step"
        with pytest.raises(aepo.StateError):
            b.load_state_dict("{")
        with pytest.raises(aepo.StateError):
            b.load_state_dict(dict(before, statistic=float("nan")))
        assert b.state_dict() == before
        b.load_state_dict(json.dumps(before))  # JSON text works too
        assert b.state_dict() == before


def test_history_and_lifetime():
    ctl = Controller({"controller": {"history": 3}})
    for y in (0.4, 0.6, 0.45, 0.7):
        ctl.step(nll=y)
    hist = ctl.history()
    assert [d.step for d in hist] == [2, 3, 4]
    assert hist[-1] == ctl.decision()
    assert "bang_bang" in repr(ctl)
    ctl.close()
    ctl.close()
    assert repr(ctl) == "Controller(closed)"
    with pytest.raises(aepo.AepoError):
        ctl.decision()


def test_config_is_the_effective_document():
    with Controller({"controller": {"target": 0.75}}) as ctl:
        cfg = ctl.config
        assert cfg == aepo.validate_config({"controller": {"target": 0.75}})
        assert cfg["controller"]["adaptive"]["kp"] == 5.0
        assert cfg["controller"]["adaptive"]["ki"] == 1.5
        assert cfg["controller"]["adaptive"]["t_rate"] == 0.3


def _drive(ctl, steps, seed, h0=1.0):
    rng = np.random.default_rng(seed)
    h = h0
    for _ in range(steps):
        u = ctl.decision().temperature - 1.0
        h += 0.08 * u - 0.02 * (h - 0.1) + 0.01 * rng.standard_normal()
        ctl.step(nll=max(0.0, h + 0.05 * u + 0.01 * rng.standard_normal()))


def test_self_tuning_is_the_adaptive_default_and_reports_its_estimate():
    with Controller({"controller": {"mode": "adaptive", "target": 0.8}}) as ctl:
        assert ctl.config["controller"]["adaptive"]["tuning"] == "auto"
        assert ctl.config["controller"]["statistic_rows"] == "all"
        d = ctl.decision()
        assert d.temperature == 1.0 and d.reason == "initial" and d.estimate is None
        _drive(ctl, 200, seed=4)
        e = ctl.decision().estimate
        assert isinstance(e, aepo.Estimate)
        assert 0 <= e.delay <= 4 and 0.03 < e.gain < 0.2 and 0 < e.confidence <= 1
        assert e.feedback > 0 and e.horizon >= 0 and e.measurement_noise > 0
    with Controller({"controller": {"mode": "adaptive", "adaptive": {"tuning": "fixed"}}}) as ctl:
        assert ctl.step(nll=0.4).estimate is None


def test_self_tuning_state_round_trip_is_bit_identical():
    cfg = {"controller": {"mode": "adaptive", "target": 0.8}}
    with Controller(cfg) as a, Controller(cfg) as b:
        _drive(a, 37, seed=2)
        state = a.state_dict()
        assert state["version"] == 2 and state["estimator"] is not None
        b.load_state_dict(json.dumps(state))
        for y in np.linspace(0.6, 1.0, 30):
            assert a.step(nll=float(y)) == b.step(nll=float(y))
        assert a.state_dict() == b.state_dict()
        # A state of the other tuning is refused and changes nothing.
        with Controller({"controller": {"mode": "adaptive", "adaptive": {"tuning": "fixed"}}}) as f:
            before = a.state_dict()
            with pytest.raises(aepo.StateError) as ei:
                a.load_state_dict(f.state_dict())
            assert ei.value.argument == "config.adaptive.tuning"
            assert a.state_dict() == before


def _metrics(nll_main, n_main, nll_reg, n_reg):
    from aepo.loss import METRIC_NAMES
    m = dict.fromkeys(METRIC_NAMES, 0.0)
    m.update(nll_main=nll_main, n_tokens_main=n_main, nll_reg=nll_reg, n_tokens_reg=n_reg)
    return m


@pytest.mark.parametrize("mode,rows,expected", [
    ("adaptive", "all", (0.5 * 300 + 0.9 * 100) / 400),         # the default
    ("bang_bang", "all", (0.5 * 300 + 0.9 * 100) / 400),
    ("adaptive", "main", 0.5),
    ("bang_bang", "main", 0.5),
])
def test_step_from_metrics_picks_the_rows(mode, rows, expected):
    with Controller({"controller": {"mode": mode, "statistic_rows": rows}}) as ctl:
        d = ctl.step(metrics=_metrics(0.5, 300, 0.9, 100))
        assert d.statistic == pytest.approx(expected, rel=1e-15)
        # A sequence in metric index order works the same.
        from aepo.loss import METRIC_NAMES
        d2 = ctl.step(metrics=[_metrics(0.5, 300, 0.9, 100)[n] for n in METRIC_NAMES])
        assert d2.statistic == d.statistic


def test_step_from_metrics_rejects_bad_metrics_and_changes_nothing():
    with Controller({"controller": {"mode": "adaptive", "statistic_rows": "main"}}) as ctl:
        ctl.step(nll=0.5)
        before = ctl.state_dict()
        cases = [
            (dict(metrics=_metrics(float("nan"), 10, 0, 0)), aepo.NonFiniteError, "metrics"),
            (dict(metrics=_metrics(0.5, -4, 0, 0)), aepo.InvalidValueError, "metrics"),
            (dict(metrics=_metrics(0.5, 0, 0.9, 10)), aepo.InvalidValueError, "metrics"),  # no main-row token
            (dict(metrics=[0.0] * 5), aepo.ShapeError, "metrics"),
            (dict(metrics={"nll_main": 0.5}), aepo.InvalidValueError, "metrics"),
            (dict(metrics=_metrics(0.5, 10, 0, 0), nll=0.5), aepo.InvalidValueError, "metrics"),
        ]
        for kwargs, exc, arg in cases:
            with pytest.raises(exc) as ei:
                ctl.step(**kwargs)
            assert ei.value.argument == arg, str(ei.value)
        assert ctl.state_dict() == before


def test_loss_metrics_feed_the_controller_end_to_end(rng):
    """The role metrics of a real loss call drive the controller: the main-row NLL, not the
    regulariser rows' (reg_rows marks them under replace too)."""
    B, L = 6, 5
    logp = -rng.uniform(0.1, 2.0, (B, L)).astype(np.float32)
    mask = np.ones((B, L), np.uint8)
    reg = np.array([1, 1, 0, 0, 0, 0], np.uint8)
    adv = np.array([1, 1, 0.5, -0.5, 0.2, -0.2], np.float32)
    with aepo.Loss() as loss, \
            Controller({"controller": {"mode": "adaptive", "statistic_rows": "main"}}) as ctl:
        res = loss.compute(logp, logp, adv, mask, reg_rows=reg)
        d = ctl.step(metrics=res.metrics)
        assert d.statistic == pytest.approx(float(-logp[2:].astype(np.float64).mean()), rel=1e-6)
