#!/usr/bin/env python3
"""The numbers behind docs/CONTROLLER.md: the entropy controller on the fixed plant
of the controller tests (EntropyPlant in Tests/AepoTests/ControllerTestSupport.swift).

    PYTHONPATH=bindings/python AEPO_LIB_PATH=build/lib/libaepo.so.0.2.0 python bench/controller_plant.py [--sweep]

Plant (the controller does not know it):
    w = k/k_max (k mode) or alpha/alpha_max (alpha mode), u = (T - 1) w
    H[t+1] = H[t] - 0.02 (H[t] - 0.1) + 0.08 u (1.6 - H[t]) + 0.01 eps,  eps ~ N(0, 1)
    observed statistic = H + 0.02 u, with H after the step's update ("after", the primary
    reading) or before it ("before", one more step of loop delay)
400 steps from H = 0.5; error = mean |observed - target| over steps 200..399.

Prints (1) adaptive with its default gains against bang-bang at 1.2/0.8 and 1.5/0.7,
(2) the linearised closed loop of the default gains, and with --sweep (3) a gain sweep.
Noise comes from numpy here, so the values differ slightly from the Swift plant test, which
draws its own.
"""
import argparse
import itertools

import numpy as np

from aepo import Controller

PIECEWISE = [{"step": 0, "target": 0.4}, {"step": 150, "target": 0.8}, {"step": 250, "target": 0.5},
             {"step": 320, "target": 0.7}]
CASES = [("0.3", {"target": 0.3}), ("0.6", {"target": 0.6}), ("1.0", {"target": 1.0}),
         ("piecewise", {"target": 0.4, "schedule": {"kind": "piecewise", "points": PIECEWISE}})]
SEEDS = [1, 2, 3, 4, 5]


def run(controller, seed, reading="after", steps=400):
    noise = np.random.default_rng(seed).standard_normal(steps)
    h = 0.5
    err = 0.0
    with Controller({"controller": controller}) as ctl:
        alpha_max = ctl.config["controller"]["adaptive"]["alpha_max"]
        d = ctl.decision()
        for t in range(steps):
            if d.alpha is not None:
                w = d.alpha / alpha_max
            else:
                w = (d.k_max // 2 if d.halve else d.k_max) / d.k_max
            u = (d.temperature - 1.0) * w
            nxt = h - 0.02 * (h - 0.1) + 0.08 * u * (1.6 - h) + 0.01 * noise[t]
            y = (nxt if reading == "after" else h) + 0.02 * u
            if t >= steps // 2:
                err += abs(y - d.target)
            d = ctl.step(nll=y)
            h = nxt
    return err / (steps - steps // 2)


def errors(controller, reading):
    """Per case: (mean, worst) over the seeds."""
    out = []
    for _, case in CASES:
        e = [run({**controller, **case}, s, reading) for s in SEEDS]
        out.append((float(np.mean(e)), float(np.max(e))))
    return out


def closed_loop(kp, ki, h_star, reading, scale=1.0):
    """Spectral radius of the linearised loop around the equilibrium for target h_star, with
    the plant gain multiplied by `scale`. State: (H, T - 1, previous error)."""
    u = 0.25 * (h_star - 0.1) / (1.6 - h_star)       # equilibrium input
    a = 1 - 0.02 - 0.08 * u                            # dH'/dH
    b = 0.08 * (1.6 - h_star) * scale                  # dH'/du
    c = 0.02 * scale                                   # bias of the observation
    if reading == "after":   # y_t = H_{t+1} + c u_t = a H_t + (b + c) u_t
        gy_h, gy_u = a, b + c
    else:                    # y_t = H_t + c u_t
        gy_h, gy_u = 1.0, c
    # u_{t+1} = u_t + kp (e_t - e_{t-1}) + ki e_t with e_t = -(gy_h H_t + gy_u u_t); the last
    # row stores e_t for the next step.
    m = np.array([[a, b, 0.0],
                  [-(kp + ki) * gy_h, 1 - (kp + ki) * gy_u, -kp],
                  [-gy_h, -gy_u, 0.0]])
    return max(abs(np.linalg.eigvals(m)))


def gain_margin(kp, ki, h_star, reading):
    scales = np.arange(0.05, 20.0, 0.05)
    stable = [s for s in scales if closed_loop(kp, ki, h_star, reading, s) < 1]
    return max(stable) if stable else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args()
    names = [n for n, _ in CASES]

    print("1. mean |error| over the second half, mean (worst) over seeds", SEEDS)
    print(f"{'controller':34} {'reading':8} " + " ".join(f"{n:>16}" for n in names))
    rows = [("adaptive, default gains", {"mode": "adaptive"}),
            ("bang-bang 1.2/0.8 (reference)", {"mode": "bang_bang"}),
            ("bang-bang 1.5/0.7", {"mode": "bang_bang", "t_high": 1.5, "t_low": 0.7})]
    for label, c in rows:
        for reading in ("after", "before"):
            e = errors(c, reading)
            print(f"{label:34} {reading:8} " + " ".join(f"{m:8.4f} ({w:.4f})" for m, w in e))

    kp, ki = 5.0, 1.5
    print(f"\n2. linearised loop, kp={kp} ki={ki}: spectral radius / gain margin (largest stable "
          "multiple of the plant gain)")
    for reading in ("after", "before"):
        parts = []
        for h in (0.3, 0.6, 1.0):
            parts.append(f"H*={h}: {closed_loop(kp, ki, h, reading):.3f} / x{gain_margin(kp, ki, h, reading):.2f}")
        print(f"   {reading:7} " + ";  ".join(parts))

    if args.sweep:
        print("\n3. gain sweep: worst error over cases and seeds, reading after / before; min gain margin")
        for kp, ki, rate in itertools.product([3.0, 4.0, 5.0, 6.0, 8.0], [1.0, 1.5, 2.0], [0.2, 0.3, 0.4]):
            c = {"mode": "adaptive", "adaptive": {"kp": kp, "ki": ki, "t_rate": rate}}
            wa = max(w for _, w in errors(c, "after"))
            wb = max(w for _, w in errors(c, "before"))
            gm = min(gain_margin(kp, ki, h, r) for h in (0.3, 0.6, 1.0) for r in ("after", "before"))
            print(f"   kp={kp:3.1f} ki={ki:3.1f} t_rate={rate:3.1f}: {wa:.4f} / {wb:.4f}; margin x{gm:.2f}")


if __name__ == "__main__":
    main()
