@testable import AepoCore
import Testing

/// A transcription of the reference trainer's rule (AEPO `ray_trainer.py`, `fit`, the
/// AEPO branch), kept independent of the library:
/// - `H_prev` starts at 0;
/// - `T = temperature_high if H_prev <= entropy_base else temperature_low`;
/// - `k = min(reinforce_sample_num, #kept)`, then `k //= 2` when `H_prev > entropy_base`;
/// - after the update, `H_prev` is the step's statistic.
private struct ReferenceRule {
    var hPrev = 0.0
    let entropyBase: Double
    let temperatureHigh: Double
    let temperatureLow: Double
    let reinforceSampleNum: Int

    func choose(kept: Int) -> (temperature: Double, k: Int) {
        let t = hPrev <= entropyBase ? temperatureHigh : temperatureLow
        var k = min(reinforceSampleNum, kept)
        if hPrev > entropyBase { k = k / 2 }
        return (t, k)
    }
}

/// How many regulariser samples a decision admits out of `kept` positives (docs/API.md:
/// the first min(k_max, n_positive), then the floor-half when `halve`).
private func selected(_ d: ControllerDecision, kept: Int) -> Int {
    let k = min(Int(d.kMax), kept)
    return d.halve ? k / 2 : k
}

/// A recorded entropy trace (sampled-token NLL per step) around a target of 0.5: a fall
/// from a high start, a crossing, exact ties with the target, the neighbouring doubles
/// on either side of it, a zero, and a late rise.
private let recordedTrace: [Double] = [
    0.912, 0.874, 0.801, 0.733, 0.655, 0.590, 0.548, 0.511, 0.5, 0.487,
    0.503, 0.5, 0.5.nextDown, 0.5.nextUp, 0.462, 0.519, 0.5, 0.530, 0.495, 0.0,
    0.441, 0.476, 0.508, 0.5, 0.5, 0.617, 0.702, 0.5.nextUp, 0.5.nextDown, 0.499,
]

@Suite struct ControllerBangBangTests {
    /// Feeds `trace` to the library and to the transcription and compares, step by step,
    /// the temperature (bitwise) and the number of samples taken for several positive
    /// counts.
    private func compare(_ trace: [Double], _ config: ControllerConfig) throws {
        var ctl = try Controller(config)
        var ref = ReferenceRule(entropyBase: config.target, temperatureHigh: config.tHigh,
                                temperatureLow: config.tLow, reinforceSampleNum: Int(config.kMax))
        for (t, h) in trace.enumerated() {
            let d = ctl.decision
            let r = ref.choose(kept: 0)
            #expect(d.step == Int64(t))
            #expect(d.temperature.bitPattern == r.temperature.bitPattern, "step \(t): T \(d.temperature) vs reference \(r.temperature)")
            for kept in [0, 1, 2, 7, 29, 59, 60, 61, 119, 640] {
                #expect(selected(d, kept: kept) == ref.choose(kept: kept).k, "step \(t), \(kept) positives")
            }
            try ctl.observe(.nll, value: h)
            ref.hPrev = h
        }
    }

    @Test func recordedTraceMatchesTheReferenceRule() throws {
        try compare(recordedTrace, .bangBang())
    }

    @Test func otherTemperaturesAndTargetsMatchTheReferenceRule() throws {
        try compare(recordedTrace, .bangBang(target: 0.75, high: 1.5, low: 0.7))
        try compare(recordedTrace, .bangBang(target: 0.0))
        var c = ControllerConfig.bangBang()
        c.kMax = 7  // odd cap: the halving floors
        try compare(recordedTrace, c)
    }

    /// A trace recorded from the closed loop on the fixed plant, replayed through the
    /// transcription.
    @Test func plantTraceMatchesTheReferenceRule() throws {
        for target in [0.3, 0.6, 1.0] {
            let run = try EntropyPlant().run(.bangBang(target: target), seed: 11)
            try compare(run.observed, .bangBang(target: target))
        }
    }

    @Test func firstDecisionIsHighWithTheFullCap() throws {
        let d = try Controller(.bangBang()).decision
        #expect(d.step == 0)
        #expect(d.temperature == 1.2)
        #expect(d.kMax == 60)
        #expect(d.halve == false)
        #expect(d.statistic == 0)
        #expect(d.reason == .initial)
        #expect(d.mode == .bangBang)
        #expect(d.alpha.isNaN)
    }

    @Test func comparisonIsAtOrBelow() throws {
        var ctl = try Controller(.bangBang())
        var d = try ctl.observe(.nll, value: 0.5)
        #expect(d.temperature == 1.2 && !d.halve && d.reason == .atOrBelowTarget)
        d = try ctl.observe(.nll, value: 0.5.nextUp)
        #expect(d.temperature == 0.8 && d.halve && d.reason == .aboveTarget)
        #expect(d.statistic == 0.5.nextUp && d.smoothed == 0.5.nextUp)
    }

    @Test func halvingCanBeTurnedOff() throws {
        var c = ControllerConfig.bangBang()
        c.halveAboveTarget = false
        var ctl = try Controller(c)
        let d = try ctl.observe(.nll, value: 0.9)
        #expect(d.temperature == 0.8)
        #expect(d.halve == false)
    }

    @Test func hysteresisHoldsTheLevelInsideTheBand() throws {
        var c = ControllerConfig.bangBang()
        c.hysteresis = 0.05
        var ctl = try Controller(c)
        // (statistic, expected T, expected reason)
        let script: [(Double, Double, ControllerReason)] = [
            (0.52, 1.2, .hysteresisHold),   // inside (0.45, 0.55]: stays high
            (0.55, 1.2, .hysteresisHold),   // the upper edge is still inside
            (0.56, 0.8, .aboveTarget),
            (0.50, 0.8, .hysteresisHold),   // stays low
            (0.46, 0.8, .hysteresisHold),
            (0.45, 1.2, .atOrBelowTarget),  // at or below target - h
            (0.54, 1.2, .hysteresisHold),
        ]
        for (y, t, reason) in script {
            let d = try ctl.observe(.nll, value: y)
            #expect(d.temperature == t, "after \(y)")
            #expect(d.reason == reason, "after \(y)")
            #expect(d.halve == (t == 0.8))
        }
    }

    @Test func hysteresisIsOffByDefault() throws {
        #expect(ControllerConfig().hysteresis == 0)
        #expect(ControllerConfig().mode == "bang_bang")
    }

    @Test func initialEntropyAboveTheTargetStartsLow() throws {
        var c = ControllerConfig.bangBang()
        c.initialEntropy = 0.8
        let d = try Controller(c).decision
        #expect(d.temperature == 0.8 && d.halve && d.reason == .initial && d.statistic == 0.8)
    }
}
