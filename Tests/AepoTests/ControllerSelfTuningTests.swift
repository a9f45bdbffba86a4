@testable import AepoConfig
@testable import AepoCore
import Testing

/// The self-tuning adaptive controller: the stability test its gain rule relies on, the
/// estimator on a known loop, checkpoints, and bad input.
@Suite struct ControllerSelfTuningTests {
    // MARK: - the gain rule's stability test

    /// Schur–Cohn against closed forms: with no delay and ε = 0 the loop polynomial's root
    /// is (μ - κ)/μ, stable exactly for 0 < κ < 2μ; with a perfect model (κ = 1, ε = 0) the
    /// roots are (μ - 1)/μ and zeros, stable for every μ >= 1.
    @Test func schurCohnMatchesClosedForms() {
        for mu in [1.0, 1.5, 2, 3.7, 10] {
            for kappa in stride(from: 0.1, through: 25, by: 0.1) {
                let p = SelfTuningLaw.loopPolynomial(delay: 0, mu: mu, kappa: kappa, eps: 0)
                let expected = abs((mu - kappa) / mu) < 1
                // Skip the boundary itself, where rounding decides.
                if abs(kappa - 2 * mu) < 1e-9 { continue }
                #expect(SelfTuningLaw.schurStable(p) == expected, "mu \(mu) kappa \(kappa)")
            }
            for d in 0...LoopEstimator.maxDelay {
                #expect(SelfTuningLaw.schurStable(SelfTuningLaw.loopPolynomial(delay: d, mu: mu, kappa: 1, eps: 0)))
            }
        }
        // Quadratics with known roots: (z - 0.5)(z + 0.9) stable, (z - 0.5)(z + 1.1) not.
        #expect(SelfTuningLaw.schurStable([1, 0.4, -0.45]))
        #expect(!SelfTuningLaw.schurStable([1, 0.6, -0.55]))
        // A root exactly on the circle is not strictly inside.
        #expect(!SelfTuningLaw.schurStable([1, -1]))
    }

    /// The robust margin is monotone in the horizon: a longer horizon tolerates a larger
    /// gain error, and with delay the tolerance shrinks (the gain rule's premise).
    @Test func marginGrowsWithTheHorizonAndShrinksWithDelay() {
        func kappaMax(_ d: Int, _ mu: Double) -> Double {
            var k = 1.0
            while SelfTuningLaw.schurStable(SelfTuningLaw.loopPolynomial(delay: d, mu: mu, kappa: k + 0.01, eps: 0))
                    && k < 100 { k += 0.01 }
            return k
        }
        for d in 0...LoopEstimator.maxDelay {
            var last = 0.0
            for m in [0.0, 1, 2, 4] {
                let k = kappaMax(d, 1 + m)
                #expect(k > last, "d \(d) m \(m)")
                last = k
            }
        }
        #expect(abs(kappaMax(0, 1) - 2) < 0.02)
        #expect(kappaMax(3, 2) < kappaMax(1, 2))
    }

    // MARK: - the estimator

    /// On a noise-free linear loop driven by a known, exciting input, the matching filter
    /// recovers b, c and the drift, and selection finds the delay.
    @Test func estimatorIdentifiesAKnownLoop() {
        for (b, c, d, g) in [(0.08, 0.02, 0, -0.002), (0.2, 0.1, 2, 0.0), (0.04, 0.2, 1, -0.001), (0.05, 0.0, 3, 0.003)] {
            var est = LoopEstimator()
            var h = 1.0
            var applied: [Double] = []
            var rng = TestGaussian(seed: 7)
            for t in 0..<300 {
                let u = 0.3 * (rng.next() > 0 ? 1 : -1)
                est.apply(u)
                applied.append(u)
                let uEff = t >= d ? applied[t - d] : 0
                h += b * uEff + g
                est.observe(h + c * u)
            }
            let f = est.filters[est.selected]
            // A delay of 1 and a delay of 0 with c - b in place of c predict the same
            // statistic; either explanation is right.
            let sameAsDelay0 = d == 1 && f.delay == 0
            #expect(f.delay == d || sameAsDelay0, "b \(b) c \(c) d \(d): delay \(f.delay)")
            #expect(abs(f.mean[1] - b) < 0.1 * b + 2e-3, "b \(b): \(f.mean[1])")
            #expect(abs(f.mean[2] - (sameAsDelay0 ? c - b : c)) < 0.01, "c \(c): \(f.mean[2])")
            #expect(abs(f.mean[3] + f.mean[4] * h - g) < 2e-3, "g \(g): \(f.mean[3]) + \(f.mean[4]) * \(h)")
            #expect(est.isValid)
        }
    }

    /// The noise moments: white measurement noise on a constant level shows up as σv, and
    /// not as process noise.
    @Test func estimatorSeparatesMeasurementFromProcessNoise() {
        var est = LoopEstimator()
        var rng = TestGaussian(seed: 11)
        for _ in 0..<400 {
            est.apply(0)
            est.observe(1.0 + 0.04 * rng.next())
        }
        // The moments are discounted (about 20 steps), so average the estimates over the
        // last 200 steps.
        var sv = 0.0
        var sw = 0.0
        for _ in 0..<200 {
            est.apply(0)
            est.observe(1.0 + 0.04 * rng.next())
            sv += est.measurementVariance.squareRoot() / 200
            sw += est.processVariance.squareRoot() / 200
        }
        #expect(sv > 0.03 && sv < 0.05, "sv \(sv)")
        #expect(sw < 0.6 * sv, "sw \(sw), sv \(sv)")
    }

    // MARK: - decisions

    private func autoConfig(target: Double = 0.8) -> ControllerConfig {
        var c = ControllerConfig()
        c.mode = "adaptive"
        c.target = target
        return c
    }

    /// Runs `steps` steps of a fixed noisy plant and returns the controller.
    private func drive(_ ctl: inout Controller, steps: Int, seed: UInt64, h0: Double = 1.0) throws -> Double {
        var rng = TestGaussian(seed: seed)
        var h = h0
        var last = 0.0
        for _ in 0..<steps {
            let u = ctl.decision.temperature - 1
            h += 0.08 * u - 0.02 * (h - 0.1) + 0.01 * rng.next()
            last = max(0, h + 0.05 * u + 0.01 * rng.next())
            try ctl.observe(.nll, value: last)
        }
        return last
    }

    @Test func decisionsCarryTheEstimate() throws {
        var ctl = try Controller(autoConfig())
        #expect(ctl.decision.reason == .initial && ctl.decision.estimate == .none)
        #expect(ctl.decision.temperature == 1)
        _ = try drive(&ctl, steps: 200, seed: 3)
        let e = ctl.decision.estimate
        #expect(e.delay >= 0 && e.delay <= Int64(LoopEstimator.maxDelay))
        #expect(e.gain > 0.03 && e.gain < 0.2, "gain \(e.gain)")
        #expect(e.confidence > 0.5 && e.confidence <= 1)
        #expect(e.feedback > 0 && e.horizon >= 0)
        #expect(e.processNoise > 0 && e.measurementNoise > 0)
        // The fixed PI and bang-bang carry none.
        var fixed = autoConfig()
        fixed.adaptive.tuning = "fixed"
        var f = try Controller(fixed)
        try f.observe(.nll, value: 0.5)
        #expect(f.decision.estimate == .none)
    }

    /// Save -> restore -> continue is bit-identical, estimator included, at several cut
    /// points, through the JSON blob.
    @Test func saveRestoreContinueIsBitIdentical() throws {
        for cut in [0, 1, 2, 7, 40, 150] {
            var a = try Controller(autoConfig())
            _ = try drive(&a, steps: cut, seed: 5)
            let blob = try ControllerStateCodec.encode(a)
            var b = try Controller(autoConfig())
            try b.restore(ControllerStateCodec.decode(blob))
            #expect(b.state == a.state, "cut \(cut)")
            var ra = TestGaussian(seed: 99)
            var rb = TestGaussian(seed: 99)
            for _ in 0..<60 {
                let ya = max(0, 0.7 + 0.1 * (a.decision.temperature - 1) + 0.02 * ra.next())
                let yb = max(0, 0.7 + 0.1 * (b.decision.temperature - 1) + 0.02 * rb.next())
                try a.observe(.nll, value: ya)
                try b.observe(.nll, value: yb)
                #expect(a.decision == b.decision, "cut \(cut)")
            }
            #expect(a.state == b.state && a.history.entries == b.history.entries)
            #expect(try ControllerStateCodec.encode(a) == ControllerStateCodec.encode(b))
        }
    }

    /// Configs at the edges of what validation accepts (a temperature range up to 1e300, a
    /// rate limit of 1e300, a target of 1e-300) and statistics far outside any real run keep
    /// every number the estimator holds finite, so its state always saves and restores.
    @Test func extremeRangesKeepTheEstimatorFinite() throws {
        let cases: [(actuator: String, high: Double, rate: Double, target: Double)] = [
            ("alpha", 1e300, 1e300, 1e-300), ("alpha", 1e300, 0.3, 2.5), ("alpha", 0.5, 1e300, 1e-300),
            ("temperature", 1e300, 1e300, 1e-300), ("temperature", 1e300, 1e300, 2.5), ("temperature", 2, 1e300, 0.5),
        ]
        for c in cases {
            var cfg = autoConfig(target: c.target)
            cfg.adaptive.actuator = c.actuator
            cfg.tHigh = c.actuator == "alpha" ? 1e300 : 1.2
            cfg.tLow = 1e-30
            cfg.adaptive.alphaMax = c.high
            cfg.adaptive.tMax = c.actuator == "temperature" ? c.high : 2
            cfg.adaptive.tMin = c.actuator == "temperature" ? 1e-30 : 0.5
            cfg.adaptive.tRate = c.rate
            var ctl = try Controller(cfg)
            var rng = TestGaussian(seed: 11)
            for t in 0..<120 {
                let y = t % 17 == 5 ? 150.0 : max(0, 1.0 + 0.5 * rng.next())
                try ctl.observe(.nll, value: y)
                #expect(ctl.state.estimator.isValid, "\(c) step \(t)")
                #expect(ctl.decision.temperature.isFinite && ctl.decision.temperature > 0)
                if t % 10 == 0 {
                    var fresh = try Controller(cfg)
                    try fresh.restore(ControllerStateCodec.decode(ControllerStateCodec.encode(ctl)))
                    #expect(fresh.state == ctl.state, "\(c) step \(t)")
                }
            }
        }
    }

    /// A covariance that is not positive semidefinite (a damaged blob passes the per-number
    /// checks of restore) restarts the filter that holds it instead of poisoning its score.
    @Test func anIndefiniteCovarianceRestartsItsFilter() {
        var est = LoopEstimator()
        var rng = TestGaussian(seed: 3)
        for t in 0..<30 {
            est.apply(t % 3 == 0 ? 0.2 : -0.1)
            est.observe(1 + 0.05 * rng.next())
        }
        let n = LoopEstimator.n
        for i in [0, 7] {
            est.filters[i].covariance[0 * n + 2] = -1e3
            est.filters[i].covariance[2 * n + 0] = -1e3
        }
        #expect(est.isValid)
        for t in 30..<40 {
            est.apply(0.5)
            est.observe(1 + 0.05 * rng.next())
            #expect(est.isValid, "step \(t)")
            #expect(est.filters.allSatisfy { $0.score.isFinite })
        }
    }

    /// Bad input is refused and leaves the state exactly as it was.
    @Test func badInputChangesNothing() throws {
        var ctl = try Controller(autoConfig())
        _ = try drive(&ctl, steps: 30, seed: 9)
        let before = ctl.state
        let blob = try ControllerStateCodec.encode(ctl)
        #expect(throws: AepoFailure.self) { try ctl.observe(.nll, value: .nan) }
        #expect(throws: AepoFailure.self) { try ctl.observe(.nll, value: -0.1) }
        #expect(throws: AepoFailure.self) { try ctl.observe(.nll, sum: 3, count: -2) }
        #expect(throws: AepoFailure.self) { try ctl.observe(.nll, sum: 3, count: 0) }
        #expect(throws: AepoFailure.self) { try ctl.observe(.entropy, value: 0.5) }
        // Malformed blobs and blobs of another mode or tuning.
        #expect(throws: AepoFailure.self) { try ctl.restore(ControllerStateCodec.decode("{}")) }
        var other = ControllerConfig()
        other.mode = "bang_bang"
        let bb = try Controller(other)
        #expect(throws: AepoFailure.self) { try ctl.restore(ControllerStateCodec.decode(ControllerStateCodec.encode(bb))) }
        var fixedCfg = autoConfig()
        fixedCfg.adaptive.tuning = "fixed"
        let fixed = try Controller(fixedCfg)
        #expect(throws: AepoFailure.self) {
            try ctl.restore(ControllerStateCodec.decode(ControllerStateCodec.encode(fixed)))
        }
        var snap = try ControllerStateCodec.decode(blob)
        snap.state.estimator.filters[3].covariance[6] = -1
        #expect(throws: AepoFailure.self) { try ctl.restore(snap) }
        snap = try ControllerStateCodec.decode(blob)
        snap.state.estimator.filters[0].mean[4] = 0.1  // a must stay 0 in a constant-pull filter
        #expect(throws: AepoFailure.self) { try ctl.restore(snap) }
        snap = try ControllerStateCodec.decode(blob)
        snap.state.estimator.inputs[0] = .infinity
        #expect(throws: AepoFailure.self) { try ctl.restore(snap) }
        #expect(ctl.state == before)
    }

    /// A version 1 blob (written before tuning and the estimator existed) still loads: an
    /// adaptive one into a fixed-tuning controller, and it continues from the saved actuator.
    @Test func versionOneBlobsStillLoad() throws {
        let v1 = #"{"actuator": 1.3, "config": {"adaptive": {"actuator": "temperature", "alpha_max": 0.5, "ema": 0.0, "ki": 1.5, "kp": 5.0, "t_max": 2.0, "t_min": 0.5, "t_rate": 0.3}, "halve_above_target": true, "history": 32, "hysteresis": 0.0, "initial_entropy": 0.0, "k_max": 60, "mode": "adaptive", "schedule": {"end_step": 0, "end_target": 0.5, "kind": "constant", "points": [], "start_step": 0}, "statistic": "nll", "t_high": 1.2, "t_low": 0.8, "target": 0.6}, "decision": {"alpha": null, "halve": false, "k_max": 60, "mode": "adaptive", "reason": "tracking", "smoothed": 0.5, "statistic": 0.5, "step": 4, "target": 0.6, "temperature": 1.3}, "error": 0.1, "format": "aepo.controller.state", "history": [], "level": "high", "observations": 4, "smoothed": 0.5, "statistic": 0.5, "step": 4, "version": 1}"#
        var fixedCfg = autoConfig(target: 0.6)
        fixedCfg.adaptive.tuning = "fixed"
        var ctl = try Controller(fixedCfg)
        try ctl.restore(ControllerStateCodec.decode(v1))
        #expect(ctl.decision.step == 4 && ctl.decision.temperature == 1.3)
        try ctl.observe(.nll, value: 0.5)
        // e = 0.1 again: u += kp * 0 + ki * 0.1.
        #expect(abs(ctl.decision.temperature - (1.3 + 0.15)) < 1e-12)
        var autoCtl = try Controller(autoConfig(target: 0.6))
        #expect(throws: AepoFailure.self) { try autoCtl.restore(ControllerStateCodec.decode(v1)) }
    }

    /// An unreachable target is reported, nothing winds up, and the controller leaves the
    /// bound on the first decision after the target comes back into range.
    @Test func unreachableIsReportedAndReleased() throws {
        var c = autoConfig(target: 0.8)
        c.schedule.kind = "piecewise"
        c.schedule.points = [SchedulePoint(step: 60, target: 5.0), SchedulePoint(step: 160, target: 0.8)]
        var ctl = try Controller(c)
        var h = 0.8
        var reasons: [ControllerReason] = []
        var temps: [Double] = []
        for _ in 0..<200 {
            let d = ctl.decision
            reasons.append(d.reason)
            temps.append(d.temperature)
            let u = d.temperature - 1
            h += 0.08 * u - 0.02 * (h - 0.1)
            try ctl.observe(.nll, value: h + 0.02 * u)
        }
        // The law aims a few steps ahead on the schedule, so it leaves t_max just before the
        // target returns at step 160.
        let away = reasons[120..<150]
        #expect(away.allSatisfy { $0 == .unreachable }, "\(away)")
        #expect(temps[120..<150].allSatisfy { $0 == 2.0 }, "\(temps[100..<170])")
        #expect(temps[160] < 2.0 && reasons[160] != .unreachable)
        // It then travels down at t_min (the plant falls at most 0.06 nats per step) and
        // leaves the bound before the end, back on target.
        #expect(temps[199] > 0.5 && reasons[199] != .unreachable, "\(temps[160...]) \(reasons[160...])")
    }
}
