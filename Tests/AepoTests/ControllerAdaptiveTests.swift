@testable import AepoCore
import Testing

/// The piecewise schedule of the plant test: one rise in the first half, then a fall of
/// 0.3 and a rise of 0.2 inside the measured second half.
let plantPiecewise: [(Int64, Double)] = [(0, 0.4), (150, 0.8), (250, 0.5), (320, 0.7)]
let plantSeeds: [UInt64] = [1, 2, 3, 4, 5]

private func fmt(_ x: Double) -> String {
    let r = (x * 1e5).rounded() / 1e5
    return "\(r)"
}

@Suite struct ControllerAdaptiveTests {
    /// The tracking cases: constant targets 0.3, 0.6 and 1.0, and a piecewise schedule.
    static let cases: [(String, ControllerConfig, ControllerConfig)] = [
        ("0.3", .adaptive(target: 0.3), .bangBang(target: 0.3)),
        ("0.6", .adaptive(target: 0.6), .bangBang(target: 0.6)),
        ("1.0", .adaptive(target: 1.0), .bangBang(target: 1.0)),
        ("piecewise", ControllerConfig.adaptive(target: 0.4).withPiecewise(plantPiecewise),
         ControllerConfig.bangBang(target: 0.4).withPiecewise(plantPiecewise)),
    ]

    /// With its default gains the adaptive controller keeps the mean absolute
    /// tracking error (observed statistic, second half) <= 0.02 nats on every case and
    /// seed, and below bang-bang's at 1.2/0.8 on the same plant and noise.
    @Test(arguments: 0..<4)
    func adaptiveHoldsTheTargetAndBeatsBangBang(_ i: Int) throws {
        let (name, adaptive, bangBang) = Self.cases[i]
        let plant = EntropyPlant()
        var line = "plant \(name): adaptive / bang-bang 1.2/0.8 per seed:"
        var sumA = 0.0
        var sumB = 0.0
        var worstA = 0.0
        for seed in plantSeeds {
            let a = try plant.run(adaptive, seed: seed).error
            let b = try plant.run(bangBang, seed: seed).error
            line += " \(fmt(a))/\(fmt(b))"
            sumA += a
            sumB += b
            worstA = max(worstA, a)
            #expect(a <= 0.02, "\(name), seed \(seed): adaptive error \(a) > 0.02")
            #expect(a < b, "\(name), seed \(seed): adaptive \(a) is not below bang-bang \(b)")
        }
        let n = Double(plantSeeds.count)
        print(line + "; mean \(fmt(sumA / n)) / \(fmt(sumB / n)); worst adaptive \(fmt(worstA))")
    }

    /// Robustness beyond those cases: the same gains on the slower reading of the plant, in
    /// which the observation of step t reads the entropy before that step's update (one
    /// more step of delay in the loop). Constant targets still hold within 0.02.
    @Test func constantTargetsHoldWithTheSlowerReading() throws {
        var plant = EntropyPlant()
        plant.reading = .beforeUpdate
        for (name, adaptive, bangBang) in Self.cases {
            var line = "plant (reading before update) \(name): adaptive / bang-bang per seed:"
            for seed in plantSeeds {
                let a = try plant.run(adaptive, seed: seed).error
                let b = try plant.run(bangBang, seed: seed).error
                line += " \(fmt(a))/\(fmt(b))"
                if name != "piecewise" {
                    #expect(a <= 0.02, "\(name), seed \(seed): adaptive error \(a) > 0.02")
                }
            }
            print(line)
        }
    }

    /// The alpha actuator with the default gains, at the targets the plant can reach with
    /// T in {0.8, 1.2} (|u| <= 0.2 holds the plant between about 0 and 0.77).
    @Test func alphaActuatorHoldsReachableTargets() throws {
        for target in [0.3, 0.6] {
            var c = ControllerConfig.adaptive(target: target)
            c.adaptive.actuator = "alpha"
            var line = "plant alpha actuator \(target): adaptive / bang-bang per seed:"
            for seed in plantSeeds {
                let run = try EntropyPlant().run(c, seed: seed)
                let b = try EntropyPlant().run(.bangBang(target: target), seed: seed).error
                line += " \(fmt(run.error))/\(fmt(b))"
                #expect(run.error <= 0.02, "alpha actuator, target \(target), seed \(seed): \(run.error)")
                for d in run.decisions {
                    #expect(d.alpha >= 0 && d.alpha <= c.adaptive.alphaMax)
                    #expect(d.temperature == 1.2 || d.temperature == 0.8)
                    #expect(d.halve == false)
                }
            }
            print(line)
        }
    }

    @Test func temperatureStaysInBoundsAndWithinTheRateLimit() throws {
        for (_, adaptive, _) in Self.cases {
            let run = try EntropyPlant().run(adaptive, seed: 3)
            var prev = 1.0  // the actuator starts from neutral
            for d in run.decisions {
                #expect(d.temperature >= 0.5 && d.temperature <= 2.0)
                #expect(abs(d.temperature - prev) <= 0.3 * (1 + 1e-12), "step \(d.step)")
                #expect(d.kMax == 60 && d.halve == false && d.alpha.isNaN)
                prev = d.temperature
            }
        }
    }

    /// Anti-windup: hold an unreachable target long enough to saturate at t_max, then drop
    /// the target. The incremental form leaves t_max on the very next decision (by the
    /// rate limit) and is back on target within a few dozen steps; an integrator that had
    /// wound up during the 150 saturated steps would stay pinned for far longer.
    @Test func saturationDoesNotWindUp() throws {
        var c = ControllerConfig.adaptive(target: 1.5).withPiecewise([(150, 0.5)])
        c.adaptive.tuning = "fixed"
        let run = try EntropyPlant().run(c, seed: 2)
        let saturated = run.decisions[100..<150]
        #expect(saturated.allSatisfy { $0.temperature == 2.0 && $0.reason == .saturatedHigh })
        let after = run.decisions[150]
        #expect(after.target == 0.5)
        #expect(after.temperature == 2.0 - 0.3)
        #expect(after.reason == .rateLimited)
        // Back within 0.05 of the target, and it stays there on average.
        let back = (150..<400).first { abs(run.observed[$0] - 0.5) < 0.05 }
        #expect(back != nil && back! < 190, "first step within 0.05: \(String(describing: back))")
        let tail = run.observed[250..<400].map { abs($0 - 0.5) }.reduce(0, +) / 150
        #expect(tail < 0.02)
    }

    /// A hand-checked sequence: kp 2, ki 0.5, no rate limit in the way, target 0.5,
    /// initial entropy 0.5 (so the first error is 0 and T starts at exactly 1).
    @Test func piUpdateByHand() throws {
        var c = ControllerConfig.adaptive(target: 0.5)
        c.adaptive.tuning = "fixed"
        c.adaptive.kp = 2
        c.adaptive.ki = 0.5
        c.adaptive.tRate = 1
        c.initialEntropy = 0.5
        var ctl = try Controller(c)
        #expect(ctl.decision.temperature == 1)
        #expect(ctl.decision.reason == .initial)
        // e = 0.1, e_prev = 0: dT = 2 * 0.1 + 0.5 * 0.1 = 0.25.
        var d = try ctl.observe(.nll, value: 0.4)
        #expect(abs(d.temperature - 1.25) < 1e-15)
        #expect(d.reason == .tracking)
        // e = 0.05: dT = 2 * (0.05 - 0.1) + 0.5 * 0.05 = -0.075.
        d = try ctl.observe(.nll, value: 0.45)
        #expect(abs(d.temperature - 1.175) < 1e-15)
        // e = -1.0: dT = 2 * (-1.05) - 0.5 = -2.6, cut to -1 by the rate, then t_min.
        d = try ctl.observe(.nll, value: 1.5)
        #expect(d.temperature == 0.5)
        #expect(d.reason == .saturatedLow)
        // e = 0: dT = 2 * (0 + 1.0) = 2, cut to +1 by the rate.
        d = try ctl.observe(.nll, value: 0.5)
        #expect(d.temperature == 1.5)
        #expect(d.reason == .rateLimited)
    }

    @Test func emaSmoothsTheStatistic() throws {
        var c = ControllerConfig.adaptive(target: 0.5)
        c.adaptive.tuning = "fixed"
        c.adaptive.ema = 0.75
        var ctl = try Controller(c)
        #expect(ctl.decision.smoothed == 0)  // initial_entropy
        var d = try ctl.observe(.nll, value: 0.4)
        #expect(d.smoothed == 0.4)  // the first observation starts the average
        d = try ctl.observe(.nll, value: 0.8)
        #expect(d.smoothed == 0.75 * 0.4 + 0.25 * 0.8)
        #expect(d.statistic == 0.8)
        // Bang-bang ignores the adaptive EMA.
        var b = ControllerConfig.bangBang()
        b.adaptive.ema = 0.75
        var bb = try Controller(b)
        _ = try bb.observe(.nll, value: 0.4)
        #expect(try bb.observe(.nll, value: 0.8).smoothed == 0.8)
    }

    @Test func alphaActuatorMapsTheExcursion() throws {
        var c = ControllerConfig.adaptive(target: 0.5)
        c.adaptive.tuning = "fixed"
        c.adaptive.actuator = "alpha"
        c.adaptive.kp = 0
        c.adaptive.ki = 1
        c.adaptive.tRate = 10
        c.initialEntropy = 0.5
        var ctl = try Controller(c)
        // No error yet: alpha 0, drawn at t_high.
        #expect(ctl.decision.alpha == 0 && ctl.decision.temperature == 1.2)
        // e = 0.1: x = 0.1, a half of t_high - 1.
        var d = try ctl.observe(.nll, value: 0.4)
        #expect(d.temperature == 1.2)
        #expect(abs(d.alpha - 0.25) < 1e-15)
        // e = -0.25: x = 0.1 - 0.25 = -0.15, three quarters of t_low - 1 = -0.2.
        d = try ctl.observe(.nll, value: 0.75)
        #expect(d.temperature == 0.8)
        #expect(abs(d.alpha - 0.375) < 1e-12)
        // e = -0.5: x = -0.65, clamped to -0.2: alpha_max at t_low.
        d = try ctl.observe(.nll, value: 1.0)
        #expect(d.temperature == 0.8 && d.alpha == 0.5 && d.reason == .saturatedLow)
    }

    @Test func alphaActuatorNeedsTemperaturesOnBothSidesOfOne() throws {
        var c = ControllerConfig.adaptive()
        c.adaptive.actuator = "alpha"
        c.tHigh = 1.0
        #expect(throws: AepoFailure.self) { try Controller(c) }
        var whole = Config()
        whole.controller = c
        do {
            try ConfigSchema.validate(whole)
            Issue.record("expected a config error")
        } catch {
            #expect(error.kind == .config && error.argument == "controller.t_high")
        }
    }
}
