import Glibc
@testable import AepoCore

// A family of entropy plants for the adaptive controller, and the simulator that closes the
// loop around an `Controller`. Everything here is deterministic: the noise comes
// from `TestGaussian` streams seeded from the plant's name and the run's seed, and nothing
// reads a clock.
//
// The model (temperature actuator), per training step t:
//
//     d_t     = ctl.decision,  u_t = d_t.temperature - 1
//     u_eff   = u_{t-delay}                    (0 before the run started)
//     H_next  = H + b*sat(u_eff, H) - leak*(H - hRest) + sigmaW*eps_t
//     S_clean = H_next + c*u_t                 (entropy after the update + same-step response)
//     S_obs   = max(0, S_clean + sigmaV*nu_t)  (what the controller is fed)
//     ctl.observe(.nll, value: S_obs);  H = H_next
//
// The tracking error of a run is the mean |S_clean - target_t| over the second half.

/// How the regulariser's push saturates.
enum PlantSaturation: Sendable, Equatable {
    /// Linear: the push is b*u.
    case none
    /// The push is b*s*tanh(u/s): linear near u = 0, at most b*s either way.
    case tanh(Double)
    /// The push is b*u*(hMax - H)/(hMax - 1): it fades as H approaches hMax (the form of the
    /// old single plant `EntropyPlant`, with hMax 1.6). For u < 0 it grows as H falls, so
    /// a lowering push can run away below zero when the leak cannot hold it.
    case ceiling(Double)
}

/// One plant of the family. Units: nats, steps, and u = T - 1.
struct FamilyPlant: Sendable {
    var name: String
    /// What the plant stands for.
    var about: String
    /// Same-step response of the statistic, nats per unit of T - 1 (0...0.25).
    var c: Double
    /// Per-step effect on the entropy, nats per step per unit of T - 1 (0.005...0.3).
    var b: Double
    /// Steps before the temperature acts on the entropy (0...3).
    var delay: Int
    /// Process noise sd per step (0...0.05).
    var sigmaW: Double
    /// Measurement noise sd of the fed statistic (0...0.05).
    var sigmaV: Double
    /// Relaxation rate toward `hRest` per step (entropy collapse).
    var leak: Double
    var saturation: PlantSaturation = .none
    /// Start entropy.
    var h0 = 1.0
    /// Where the entropy relaxes to; 0.1 on every plant except `floor`.
    var hRest = 0.1

    /// b*sat(u, H): the push of an applied u on the entropy of the next step.
    func push(_ u: Double, _ h: Double) -> Double {
        switch saturation {
        case .none: return b * u
        case .tanh(let s): return b * s * tanh(u / s)
        case .ceiling(let hMax): return b * u * (hMax - h) / (hMax - 1)
        }
    }

    /// One noise-free-or-not entropy update with effective input `uEff`.
    func update(_ h: Double, _ uEff: Double, noise: Double) -> Double {
        h + push(uEff, h) - leak * (h - hRest) + sigmaW * noise
    }

    /// The constant u* that holds the statistic at `target` in the noise-free steady state:
    /// b*sat(u*, H*) = leak*(H* - hRest) with H* = target - c*u*, by bisection on u in
    /// [-0.5, 1.0] (T in [0.5, 2.0]); nil when there is no sign change there.
    func equilibriumU(target: Double) -> Double? {
        func f(_ u: Double) -> Double {
            let h = target - c * u
            return push(u, h) - leak * (h - hRest)
        }
        var lo = -0.5, hi = 1.0
        var flo = f(lo)
        let fhi = f(hi)
        if flo == 0 { return lo }
        if fhi == 0 { return hi }
        if (flo < 0) == (fhi < 0) { return nil }
        for _ in 0..<200 {
            let mid = 0.5 * (lo + hi)
            let fm = f(mid)
            if fm == 0 { return mid }
            if (fm < 0) == (flo < 0) {
                lo = mid
                flo = fm
            } else {
                hi = mid
            }
        }
        return 0.5 * (lo + hi)
    }

    /// The noise-free steady entropy under a constant u (+inf / -inf when the plant runs
    /// away: no leak, or a ceiling push that grows faster than the leak pulls back).
    func steadyEntropy(u: Double) -> Double {
        switch saturation {
        case .none, .tanh:
            let p = push(u, 0)
            if leak > 0 { return hRest + p / leak }
            return p > 0 ? .infinity : (p < 0 ? -.infinity : h0)
        case .ceiling(let hMax):
            // b*u*(hMax - H)/(hMax - 1) = leak*(H - hRest), stable when the slope in H is < 0.
            let g = b * u / (hMax - 1)
            let den = g + leak
            if den <= 0 { return u < 0 ? -.infinity : .infinity }
            return (g * hMax + leak * hRest) / den
        }
    }

    /// The noise-free steady statistic under a constant u: steady entropy + c*u.
    func steadyStatistic(u: Double) -> Double { steadyEntropy(u: u) + c * u }

    /// Open-loop settling time: from the steady state at u = 0, u steps to +0.2 at step 0;
    /// the number of updates until the noise-free H stays within 2% of its final move
    /// (the delay included), capped at `cap`.
    func settlingTime(cap: Int = 400) -> Int {
        let step = 0.2
        let start = leak > 0 ? steadyEntropy(u: 0) : h0
        let final = steadyEntropy(u: step)
        guard final.isFinite else { return cap }
        let tol = 0.02 * abs(final - start)
        var h = start
        var lastOutside = 0
        for k in 1...cap {
            let uEff = k - 1 >= delay ? step : 0
            h = update(h, uEff, noise: 0)
            if !(abs(h - final) <= tol) { lastOutside = k }
        }
        return min(cap, lastOutside + 1)
    }

    /// A stable 64-bit hash of the name (FNV-1a), for the noise seeds.
    var nameHash: UInt64 {
        var x: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in name.utf8 {
            x ^= UInt64(byte)
            x = x &* 0x0000_0100_0000_01B3
        }
        return x
    }

    /// The seeds of the process-noise and measurement-noise streams of run `seed`.
    func noiseSeeds(_ seed: UInt64) -> (UInt64, UInt64) {
        var g = TestGaussian(seed: nameHash ^ (seed &* 0x9E37_79B9_7F4A_7C15))
        return (g.nextBits(), g.nextBits())
    }

    /// Closes the loop for `steps` steps. The controller sees only S_obs. With `record`
    /// false the per-step lists stay empty (the grid search runs thousands of these).
    func run(_ config: ControllerConfig, seed: UInt64, steps: Int = 400,
             record: Bool = true) throws(AepoFailure) -> FamilyRun {
        var ctl = try Controller(config)
        let kind = ctl.statistic
        let (seedW, seedV) = noiseSeeds(seed)
        var eps = TestGaussian(seed: seedW)
        var nu = TestGaussian(seed: seedV)
        let tRate = config.adaptive.tRate
        let half = steps / 2

        var out = FamilyRun()
        if record {
            out.decisions.reserveCapacity(steps)
            out.clean.reserveCapacity(steps)
            out.observed.reserveCapacity(steps)
            out.entropy.reserveCapacity(steps)
        }
        var pastU = [Double](repeating: 0, count: delay + 1)  // ring of u_{t-delay}...u_t
        var h = h0
        var errSum = 0.0
        var onRate = 0
        var prevT = 0.0
        var dT: [Double] = []
        dT.reserveCapacity(steps - half)
        for t in 0..<steps {
            let d = ctl.decision
            let u = d.temperature - 1
            pastU[t % (delay + 1)] = u
            let uEff = t >= delay ? pastU[(t - delay) % (delay + 1)] : 0
            let next = update(h, uEff, noise: eps.next())
            let clean = next + c * u
            let noisy = clean + sigmaV * nu.next()
            let observed = noisy > 0 ? noisy : 0
            if t >= half {
                errSum += abs(clean - d.target)
                let change = d.temperature - prevT
                dT.append(change)
                if abs(change) >= tRate - 1e-9 { onRate += 1 }
            }
            prevT = d.temperature
            if record {
                out.decisions.append(d)
                out.clean.append(clean)
                out.observed.append(observed)
                out.entropy.append(next)
            }
            if !observed.isFinite {
                // The plant ran away beyond what a double holds: count the run as lost.
                out.error = .infinity
                out.rateLimited = 1
                out.lag1 = 0
                return out
            }
            try ctl.observe(kind, value: observed)
            h = next
        }
        out.error = errSum / Double(steps - half)
        out.rateLimited = Double(onRate) / Double(steps - half)
        out.lag1 = lag1Autocorrelation(dT)
        return out
    }
}

/// The record of one closed-loop run.
struct FamilyRun: Sendable {
    /// Decision t (the one step t ran with).
    var decisions: [ControllerDecision] = []
    /// S_clean of step t: the entropy after the update plus the same-step response.
    var clean: [Double] = []
    /// S_obs of step t, as fed to the controller.
    var observed: [Double] = []
    /// The entropy after step t's update.
    var entropy: [Double] = []
    /// Mean |S_clean - target| over the second half.
    var error = 0.0
    /// Fraction of second-half steps whose temperature change reached t_rate.
    var rateLimited = 0.0
    /// Lag-1 autocorrelation of the second-half temperature changes.
    var lag1 = 0.0
}

/// The sample lag-1 autocorrelation sum((x_i - m)(x_{i+1} - m)) / sum((x_i - m)^2); 0 when
/// the variance is below 1e-18 (a constant series).
func lag1Autocorrelation(_ x: [Double]) -> Double {
    guard x.count >= 2 else { return 0 }
    let n = Double(x.count)
    let m = x.reduce(0, +) / n
    var den = 0.0
    for v in x { den += (v - m) * (v - m) }
    if den / n < 1e-18 { return 0 }
    var num = 0.0
    for i in 0..<(x.count - 1) { num += (x[i] - m) * (x[i + 1] - m) }
    return num / den
}

extension FamilyPlant {
    /// The family. All parameters lie inside the ranges above; the leaks are chosen so that
    /// the constant targets 0.4, 0.8 and 1.2 need T* inside [0.6, 1.9] on most plants.
    static let family: [FamilyPlant] = [
        // The reference loop: moderate push, mild collapse, small process noise, no delay.
        FamilyPlant(name: "nominal", about: "reference loop, moderate push, mild collapse",
                    c: 0.02, b: 0.08, delay: 0, sigmaW: 0.01, sigmaV: 0, leak: 0.02),
        // The same loop when the regulariser acts one, two or three updates late (rollouts
        // drawn for step t shape the policy only after a lagging optimizer / async actor).
        FamilyPlant(name: "delay1", about: "nominal, push acts 1 step late",
                    c: 0.02, b: 0.08, delay: 1, sigmaW: 0.01, sigmaV: 0, leak: 0.02),
        FamilyPlant(name: "delay2", about: "nominal, push acts 2 steps late",
                    c: 0.02, b: 0.08, delay: 2, sigmaW: 0.01, sigmaV: 0, leak: 0.02),
        FamilyPlant(name: "delay3", about: "nominal, push acts 3 steps late",
                    c: 0.02, b: 0.08, delay: 3, sigmaW: 0.01, sigmaV: 0, leak: 0.02),
        // A strong push (large learning rate / many regulariser rollouts) behind a delay:
        // high loop gain with dead time, the classic way to make a PI oscillate.
        FamilyPlant(name: "fast+delay", about: "strong push (high lr), 2 steps late",
                    c: 0.02, b: 0.3, delay: 2, sigmaW: 0.01, sigmaV: 0, leak: 0.05),
        // A weak push on a slowly collapsing policy (tiny lr, few regulariser rollouts): the
        // controller has little authority per step and must not wind up.
        FamilyPlant(name: "slow", about: "weak push, slow collapse (tiny lr)",
                    c: 0, b: 0.005, delay: 0, sigmaW: 0.003, sigmaV: 0.01, leak: 0.0005),
        // A GRPO batch whose statistic includes the regulariser rows: the temperature shows
        // up in the same step's statistic far more than in the policy's entropy.
        FamilyPlant(name: "grpo-batch", about: "same-step response dominates (mixed batch)",
                    c: 0.13, b: 0.01, delay: 0, sigmaW: 0.005, sigmaV: 0.01, leak: 0.003),
        // The extreme of the above: the largest same-step response, the smallest push,
        // one step late.
        FamilyPlant(name: "same-step-max", about: "largest same-step response, weakest push, 1 late",
                    c: 0.25, b: 0.005, delay: 1, sigmaW: 0.005, sigmaV: 0.01, leak: 0.001),
        // Large process noise: small batches, the entropy jumps from step to step.
        FamilyPlant(name: "noisy-process", about: "large process noise (small batches), 1 late",
                    c: 0.02, b: 0.1, delay: 1, sigmaW: 0.05, sigmaV: 0, leak: 0.02),
        // Large measurement noise: the statistic is estimated from few tokens.
        FamilyPlant(name: "noisy-measure", about: "large measurement noise (few tokens)",
                    c: 0.02, b: 0.05, delay: 0, sigmaW: 0.005, sigmaV: 0.05, leak: 0.02),
        // The push saturates: beyond |u| ~ s hotter rollouts add no more entropy.
        FamilyPlant(name: "tanh-sat", about: "push saturates beyond |T-1| ~ 0.3, 1 late",
                    c: 0.05, b: 0.15, delay: 1, sigmaW: 0.01, sigmaV: 0, leak: 0.03,
                    saturation: .tanh(0.3)),
        // The old single plant of the controller tests (EntropyPlant), started at 1.0: push fading
        // toward a ceiling of 1.6 nats.
        FamilyPlant(name: "ceiling", about: "old plant: push fades toward 1.6 nats",
                    c: 0.02, b: 0.08, delay: 0, sigmaW: 0.01, sigmaV: 0, leak: 0.02,
                    saturation: .ceiling(1.6)),
        // Everything at once: strong push and same-step response, three steps late, noise
        // on both sides.
        FamilyPlant(name: "worst", about: "strong push and same-step response, 3 late, both noises",
                    c: 0.2, b: 0.2, delay: 3, sigmaW: 0.03, sigmaV: 0.03, leak: 0.01),
        // A task whose entropy collapses only to 0.7 nats (an inherently uncertain output
        // space) and pulls back hard: the one plant with hRest != 0.1, added so that a
        // target below what T = t_min can hold exists (the unreachable-low test).
        FamilyPlant(name: "floor", about: "collapses only to 0.7 nats, strong pull, 1 late",
                    c: 0.02, b: 0.05, delay: 1, sigmaW: 0.01, sigmaV: 0.01, leak: 0.06, hRest: 0.7),
    ]
}

/// One target of the family runs: a constant, or a schedule.
struct FamilyTarget: Sendable {
    var label: String
    /// The constant target, nil for schedules.
    var constant: Double?
    var apply: @Sendable (inout ControllerConfig) -> Void

    static let all: [FamilyTarget] = [
        .init(label: "0.4", constant: 0.4) { $0.target = 0.4 },
        .init(label: "0.8", constant: 0.8) { $0.target = 0.8 },
        .init(label: "1.2", constant: 1.2) { $0.target = 1.2 },
        .init(label: "piecewise", constant: nil) { c in
            c.target = 0.5
            c.schedule.kind = "piecewise"
            c.schedule.points = [SchedulePoint(step: 150, target: 1.0), SchedulePoint(step: 250, target: 0.7)]
        },
        .init(label: "ramp", constant: nil) { c in
            c.target = 0.4
            c.schedule.kind = "linear"
            c.schedule.endTarget = 1.2
            c.schedule.startStep = 100
            c.schedule.endStep = 300
        },
    ]
}

/// The controllers compared on the family.
enum FamilyControllers {
    static let seeds: [UInt64] = [1, 2, 3]
    static let kpGrid: [Double] = [0, 0.5, 1, 2, 4, 8, 16, 32, 64, 128]
    static let kiGrid: [Double] = [0.03125, 0.0625, 0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64]
    static let emaGrid: [Double] = [0, 0.5, 0.8]

    /// The grid points in search order (kp outermost, ema innermost); ties keep the first.
    static let grid: [(kp: Double, ki: Double, ema: Double)] = kpGrid.flatMap { kp in
        kiGrid.flatMap { ki in emaGrid.map { (kp: kp, ki: ki, ema: $0) } }
    }

    /// `ControllerConfig()` in mode adaptive with the library's defaults (tuning "auto").
    static func defaultConfig(_ target: FamilyTarget) -> ControllerConfig {
        var c = ControllerConfig()
        c.mode = "adaptive"
        target.apply(&c)
        return c
    }

    /// The fixed PI with the given gains.
    static func fixed(_ target: FamilyTarget, kp: Double, ki: Double, ema: Double) -> ControllerConfig {
        var c = defaultConfig(target)
        c.adaptive.tuning = "fixed"
        c.adaptive.kp = kp
        c.adaptive.ki = ki
        c.adaptive.ema = ema
        return c
    }

    /// The old defaults: fixed PI, kp 5, ki 1.5, no EMA.
    static func old(_ target: FamilyTarget) -> ControllerConfig { fixed(target, kp: 5, ki: 1.5, ema: 0) }
}
