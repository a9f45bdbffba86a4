#!/usr/bin/env python3
"""Checks a run of the C example trainer (bindings/c/examples/aepo_train) from its outputs.

usage: check_example.py RUN_DIR STEPS RUN [--claims]

RUN_DIR holds metrics.csv and config.json as `aepo_train ... --out RUN_DIR` writes them; RUN
is grpo, bang_bang or adaptive. The checks:
  - the run finished: STEPS rows, steps 0..STEPS-1 in order;
  - every entropy is finite and within [0, ln 10] (10 digits), rewards lie in [0, 1];
  - the decisions followed the controller's rule, replayed here from the logged statistics
    and the effective config: bang-bang's T_high iff the previous statistic <= target, with
    halving above it; adaptive with tuning "fixed": its incremental PI on the temperature,
    clamped to [t_min, t_max] and rate-limited, with the temperature moving toward the side
    that closes the error; adaptive with tuning "auto" (self-tuning): a neutral first
    decision, the range and the rate limit, reasons that match what T did, the estimate
    reported, and each decision recording the statistic it was fed; every decision's reason;
  - the selection kept min(k_max, positives) regulariser rows, halved when the decision
    said so (none for GRPO).
With --claims (long runs) it also checks the qualitative result the README quotes: GRPO's
exact entropy falls by more than 0.5 nats, and adaptive AEPO holds its target (second-half
mean absolute error <= 0.05 nats over a 200-step run, final statistic within 0.1 of the target). Bang-bang's
tracking is printed, not asserted.
Plain python3, no third-party packages.
"""
import csv
import json
import math
import os
import sys

EPS = 1e-12  # the replay does the controller's double arithmetic in the same order


class Failures:
    def __init__(self):
        self.items = []

    def check(self, cond, msg):
        if not cond:
            self.items.append(msg)
        return cond


def load(run_dir):
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    ints = ("step", "k_max", "halve", "k", "n_positive")
    for r in rows:
        for key, value in r.items():
            if key in ints:
                r[key] = int(value)
            elif key not in ("run", "reason"):
                r[key] = float(value)
    return config, rows


def check_common(rows, steps, run, fail):
    fail.check(len(rows) == steps, f"expected {steps} rows, found {len(rows)}")
    for i, r in enumerate(rows):
        where = f"step {r['step']}"
        fail.check(r["step"] == i, f"row {i} is step {r['step']}")
        fail.check(r["run"] == run, f"{where}: run is {r['run']}, expected {run}")
        for key in ("statistic", "entropy_exact"):
            fail.check(math.isfinite(r[key]) and 0.0 <= r[key] <= math.log(10) + 1e-5,
                       f"{where}: {key} = {r[key]} is not a finite entropy in [0, ln 10]")
        fail.check(0.0 <= r["reward"] <= 1.0, f"{where}: reward {r['reward']} outside [0, 1]")
        fail.check(math.isfinite(r["loss"]), f"{where}: loss {r['loss']} is not finite")


def selected(r):
    """The number of regulariser rows the selection must keep for this row's decision."""
    k = min(r["k_max"], r["n_positive"])
    return k // 2 if r["halve"] else k


def check_bang_bang(rows, c, fail):
    high = True  # the level before any observation
    h = c["hysteresis"]
    for i, r in enumerate(rows):
        where = f"step {r['step']}"
        prev = c["initial_entropy"] if i == 0 else rows[i - 1]["statistic"]
        target = r["target"]
        fail.check(r["decision_statistic"] == prev,
                   f"{where}: the decision was made from {r['decision_statistic']!r}, the last statistic is {prev!r}")
        if prev <= target - h:
            high, reason = True, "at_or_below_target"
        elif prev > target + h:
            high, reason = False, "above_target"
        else:
            reason = "hysteresis_hold"
        if i == 0:
            reason = "initial"
        fail.check(r["temperature"] == (c["t_high"] if high else c["t_low"]),
                   f"{where}: T = {r['temperature']} but the previous statistic {prev} vs target {target} "
                   f"calls for {'t_high' if high else 't_low'}")
        fail.check(r["halve"] == (0 if high else int(c["halve_above_target"])), f"{where}: halve = {r['halve']}")
        fail.check(r["reason"] == reason, f"{where}: reason {r['reason']}, expected {reason}")
        fail.check(r["k_max"] == c["k_max"], f"{where}: k_max {r['k_max']}, config {c['k_max']}")
        fail.check(r["k"] == selected(r), f"{where}: kept {r['k']} of {r['n_positive']} positives, "
                                          f"expected {selected(r)}")


def check_self_tuning(rows, c, fail):
    """The self-tuning controller's decisions: inside the range, within the rate limit, a
    reason consistent with what the temperature did, and the estimate reported once there is
    an observation."""
    a = c["adaptive"]
    lo, hi, rate = (a["t_min"], a["t_max"], a["t_rate"]) if a["actuator"] == "temperature" else (None, None, None)
    prev = None
    for i, r in enumerate(rows):
        where = f"step {r['step']}"
        T = r["temperature"]
        if lo is not None:
            fail.check(lo <= T <= hi, f"{where}: T = {T} outside [{lo}, {hi}]")
            if i == 0:
                fail.check(T == min(max(1.0, lo), hi), f"{where}: the first decision is not neutral (T = {T})")
            else:
                fail.check(abs(T - prev) <= rate + EPS, f"{where}: T moved by more than t_rate = {rate}")
                if r["reason"] == "rate_limited":
                    fail.check(abs(abs(T - prev) - rate) <= EPS, f"{where}: rate_limited but T moved {T - prev}")
                if r["reason"] in ("saturated_high", "saturated_low", "unreachable"):
                    fail.check(T in (lo, hi), f"{where}: {r['reason']} but T = {T} is not at a bound")
        want = "initial" if i == 0 else None
        if want:
            fail.check(r["reason"] == want, f"{where}: reason {r['reason']}, expected {want}")
        else:
            fail.check(r["reason"] in ("tracking", "rate_limited", "saturated_high", "saturated_low", "unreachable"),
                       f"{where}: reason {r['reason']}")
            fail.check(r["est_delay"] >= 0 and r["est_gain"] > 0 and r["est_feedback"] > 0,
                       f"{where}: no estimate reported")
        fail.check(r["halve"] == 0, f"{where}: the adaptive controller never halves")
        fail.check(r["k_max"] == c["k_max"], f"{where}: k_max {r['k_max']}, config {c['k_max']}")
        fail.check(r["k"] == selected(r), f"{where}: kept {r['k']} of {r['n_positive']} positives, "
                                          f"expected {selected(r)}")
        # The decision records the statistic it was fed, which the trainer logs a step later.
        if i > 0:
            fail.check(abs(r["decision_statistic"] - rows[i - 1]["statistic"]) <= EPS,
                       f"{where}: the decision's statistic is not the one fed")
        prev = T


def check_adaptive(rows, c, fail):
    a = c["adaptive"]
    if a.get("tuning", "fixed") == "auto":
        check_self_tuning(rows, c, fail)
        return
    if not fail.check(a["actuator"] == "temperature", "the replay covers the temperature actuator only"):
        return
    lo, hi, rate = a["t_min"], a["t_max"], a["t_rate"]
    u = min(max(1.0, lo), hi)      # the actuator starts from neutral
    e_prev = 0.0
    smoothed = c["initial_entropy"]
    for i, r in enumerate(rows):
        where = f"step {r['step']}"
        if i > 0:
            y = rows[i - 1]["statistic"]
            smoothed = y if (i == 1 or a["ema"] == 0) else a["ema"] * smoothed + (1 - a["ema"]) * y
        e = r["target"] - smoothed
        raw = (0.0 if a["kp"] == 0 else a["kp"] * (e - e_prev)) + (0.0 if a["ki"] == 0 else a["ki"] * e)
        delta, reason = raw, "tracking"
        if delta > rate:
            delta, reason = rate, "rate_limited"
        elif delta < -rate:
            delta, reason = -rate, "rate_limited"
        u_prev, u = u, u + delta
        if u >= hi:
            u = hi
            reason = "saturated_high" if raw > 0 else reason
        elif u <= lo:
            u = lo
            reason = "saturated_low" if raw < 0 else reason
        if i == 0:
            reason = "initial"
        T = r["temperature"]
        fail.check(lo <= T <= hi, f"{where}: T = {T} outside [{lo}, {hi}]")
        fail.check(abs(T - u) <= EPS, f"{where}: T = {T!r}, the PI rule gives {u!r}")
        fail.check(abs(T - (rows[i - 1]["temperature"] if i else u_prev)) <= rate + EPS,
                   f"{where}: T moved by more than t_rate = {rate}")
        # The plain statement of the rule: when the error and its change agree, the
        # temperature moves the way that closes the error (up when the entropy is below the
        # target), unless it is already at that bound.
        if e > 0 and e - e_prev >= 0:
            fail.check(T > u_prev or T == hi, f"{where}: entropy below target but T did not rise")
        if e < 0 and e - e_prev <= 0:
            fail.check(T < u_prev or T == lo, f"{where}: entropy above target but T did not fall")
        e_prev = e
        fail.check(r["reason"] == reason, f"{where}: reason {r['reason']}, expected {reason}")
        fail.check(r["halve"] == 0, f"{where}: the adaptive controller never halves")
        fail.check(r["k_max"] == c["k_max"], f"{where}: k_max {r['k_max']}, config {c['k_max']}")
        fail.check(r["k"] == selected(r), f"{where}: kept {r['k']} of {r['n_positive']} positives, "
                                          f"expected {selected(r)}")
        fail.check(abs(r["decision_smoothed"] - smoothed) <= EPS, f"{where}: smoothed statistic differs")


def check_claims(rows, run, fail):
    tail = rows[-10:]
    start = rows[0]["entropy_exact"]
    final = sum(r["statistic"] for r in tail) / len(tail)
    final_exact = sum(r["entropy_exact"] for r in tail) / len(tail)
    if run == "grpo":
        fail.check(final_exact < start - 0.5,
                   f"GRPO entropy did not collapse: exact {start:.4f} -> {final_exact:.4f}")
        return f"exact entropy {start:.4f} -> {final_exact:.4f}"
    half = rows[len(rows) // 2:]
    mae = sum(abs(r["statistic"] - r["target"]) for r in half) / len(half)
    target = rows[-1]["target"]
    if run == "adaptive":
        # 200 steps: the second half still holds part of the approach from 1.6 nats.
        fail.check(mae <= 0.05, f"{run}: tracking error {mae:.4f} over the second half exceeds 0.05")
        fail.check(abs(final - target) <= 0.1, f"{run}: final statistic {final:.4f} is not within 0.1 of {target}")
    # Bang-bang at T 1.2 / 0.8 lacks the authority to hold every target on every seed (see
    # bindings/c/examples/README.md), so its tracking is reported, not asserted.
    return f"H {rows[0]['statistic']:.4f} -> {final:.4f}, target {target:g}, second-half error {mae:.4f}"


def main(argv):
    if len(argv) not in (4, 5) or (len(argv) == 5 and argv[4] != "--claims"):
        print(__doc__, file=sys.stderr)
        return 2
    run_dir, steps, run = argv[1], int(argv[2]), argv[3]
    config, rows = load(run_dir)
    c = config["controller"]
    fail = Failures()
    check_common(rows, steps, run, fail)
    if run == "grpo":
        fail.check(c["k_max"] == 0, "a GRPO run has controller.k_max = 0")
        for r in rows:
            fail.check(r["k"] == 0 and r["n_positive"] == 0, f"step {r['step']}: GRPO used the regulariser")
    elif run == "bang_bang":
        fail.check(c["mode"] == "bang_bang", f"config mode is {c['mode']}")
        check_bang_bang(rows, c, fail)
    elif run == "adaptive":
        fail.check(c["mode"] == "adaptive", f"config mode is {c['mode']}")
        check_adaptive(rows, c, fail)
    else:
        print(f"check_example: unknown run {run}", file=sys.stderr)
        return 2
    note = ""
    if len(argv) == 5 and not fail.items:
        note = "; " + check_claims(rows, run, fail)
    if fail.items:
        for msg in fail.items[:20]:
            print(f"check_example: {run_dir}: {msg}", file=sys.stderr)
        if len(fail.items) > 20:
            print(f"check_example: ... and {len(fail.items) - 20} more", file=sys.stderr)
        return 1
    used = sum(1 for r in rows if r["k"] > 0)
    print(f"check_example: {run} run of {steps} steps follows the rule (regulariser used on {used} steps){note}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
