import Foundation
import AepoConfig
@testable import AepoCore
import AepoShim
import CAepoAPI
import Testing

/// Configs whose state covers every variable: the bang-bang level with hysteresis, the
/// adaptive temperature with EMA under a schedule, and the alpha actuator.
private let stateConfigs: [(String, ControllerConfig)] = {
    var hyst = ControllerConfig.bangBang(target: 0.6)
    hyst.hysteresis = 0.02
    var ema = ControllerConfig.adaptive(target: 0.4).withPiecewise(plantPiecewise)
    ema.adaptive.ema = 0.3
    var cosine = ControllerConfig.adaptive(target: 0.3)
    cosine.schedule.kind = "cosine"
    cosine.schedule.endTarget = 0.9
    cosine.schedule.startStep = 50
    cosine.schedule.endStep = 350
    var alpha = ControllerConfig.adaptive(target: 0.5)
    alpha.adaptive.actuator = "alpha"
    alpha.statistic = "entropy"
    alpha.history = 5
    return [("bang_bang", .bangBang()), ("hysteresis", hyst), ("adaptive+ema", ema),
            ("adaptive cosine", cosine), ("alpha", alpha)]
}()

/// The JSON document of a controller config.
private func document(_ c: ControllerConfig) -> String {
    var whole = Config()
    whole.controller = c
    return ConfigWriter.emit(whole)
}

@Suite struct ControllerStateTests {
    /// Save after `cut` steps, restore into a fresh controller, continue with
    /// the same observations: every decision is bit-identical to the uninterrupted run.
    @Test(arguments: 0..<5)
    func saveRestoreContinuesBitForBit(_ i: Int) throws {
        let (name, config) = stateConfigs[i]
        let kind: ControllerStatistic = config.statistic == "entropy" ? .entropy : .nll
        // The observations of a closed-loop plant run, replayed open loop.
        let trace = try EntropyPlant().run(config, seed: 7).observed
        var whole = try Controller(config)
        var uninterrupted: [ControllerDecision] = [whole.decision]
        for y in trace { uninterrupted.append(try whole.observe(kind, value: y)) }

        for cut in [0, 1, 137, 399] {
            var first = try Controller(config)
            for y in trace[..<cut] { try first.observe(kind, value: y) }
            let blob = try ControllerStateCodec.encode(first)
            var resumed = try Controller(config)
            try resumed.restore(ControllerStateCodec.decode(blob))
            #expect(resumed.state == first.state, "\(name), cut \(cut)")
            #expect(resumed.history == first.history, "\(name), cut \(cut)")
            #expect(try ControllerStateCodec.encode(resumed) == blob, "\(name), cut \(cut): blob not stable")
            var got: [ControllerDecision] = [resumed.decision]
            for y in trace[cut...] { got.append(try resumed.observe(kind, value: y)) }
            #expect(got == Array(uninterrupted[cut...]), "\(name), cut \(cut)")
        }
    }

    /// The same through the C API: state_json from one handle, restore into another.
    @Test func saveRestoreThroughTheCAPI() throws {
        let config = stateConfigs[2].1
        let trace = try EntropyPlant().run(config, seed: 5).observed
        let a = try CController(document(config))
        let b = try CController(document(config))
        for y in trace[..<200] { #expect(a.step(AEPO_CONTROLLER_STATISTIC_NLL, y).0 == AEPO_OK) }
        let blob = a.stateJSON()
        let (rc, err) = b.restore(blob)
        #expect(rc == AEPO_OK, "\(err.message)")
        #expect(b.stateJSON() == blob)
        #expect(sameDecision(a.decision, b.decision))
        #expect(b.historyCount == a.historyCount)
        for y in trace[200...] {
            let da = a.step(AEPO_CONTROLLER_STATISTIC_NLL, y).2
            let db = b.step(AEPO_CONTROLLER_STATISTIC_NLL, y).2
            #expect(sameDecision(da, db), "step \(da.step)")
        }
    }

    @Test func blobKeepsSeventeenDigitsAndRecordsTheConfig() throws {
        var ctl = try Controller(.bangBang())
        try ctl.observe(.nll, value: 0.1)
        let blob = try ControllerStateCodec.encode(ctl)
        #expect(blob.contains("\"statistic\": 0.10000000000000001"))
        #expect(blob.contains("\"format\": \"aepo.controller.state\""))
        #expect(blob.contains("\"mode\": \"bang_bang\""))
        #expect(blob.contains("\"alpha\": null"))
        #expect(blob.contains("\"t_low\": 0.80000000000000004"))  // 0.8 at 17 significant digits
        let snap = try ControllerStateCodec.decode(blob)
        #expect(snap.state.statistic == 0.1)
        #expect(snap.history.count == 2)
    }

    @Test func restoreKeepsTheNewestHistoryEntries() throws {
        var long = ControllerConfig.bangBang()
        long.history = 10
        var a = try Controller(long)
        for y in [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7] { try a.observe(.nll, value: y) }
        var short = long
        short.history = 3
        var b = try Controller(short)
        try b.restore(ControllerStateCodec.decode(ControllerStateCodec.encode(a)))
        #expect(b.history.entries == Array(a.history.entries.suffix(3)))
        #expect(b.decision == a.decision)
    }

    /// A blob from a controller whose state means something else is a state error naming
    /// the key; other differences (here the target) are accepted.
    @Test func incompatibleBlobsAreRejected() throws {
        var adaptiveExact = ControllerConfig.adaptive()
        adaptiveExact.statistic = "entropy"
        var adaptiveAlpha = ControllerConfig.adaptive()
        adaptiveAlpha.adaptive.actuator = "alpha"
        let cases: [(ControllerConfig, ControllerConfig, String)] = [
            (.bangBang(), .adaptive(), "config.mode"),
            (.adaptive(), .bangBang(), "config.mode"),
            (.adaptive(), adaptiveExact, "config.statistic"),
            (.adaptive(), adaptiveAlpha, "config.adaptive.actuator"),
        ]
        for (from, into, path) in cases {
            let src = try CController(document(from))
            _ = src.step(from.statistic == "entropy" ? AEPO_CONTROLLER_STATISTIC_ENTROPY : AEPO_CONTROLLER_STATISTIC_NLL, 0.4)
            let dst = try CController(document(into))
            let before = dst.stateJSON()
            let (rc, err) = dst.restore(src.stateJSON())
            #expect(rc == AEPO_ERR_STATE)
            #expect(err.argument == path, "\(err.message)")
            #expect(dst.stateJSON() == before)
        }
        // A new target is not a different meaning.
        let src = try CController(document(.bangBang(target: 0.5)))
        _ = src.step(AEPO_CONTROLLER_STATISTIC_NLL, 0.4)
        let dst = try CController(document(.bangBang(target: 0.7)))
        #expect(dst.restore(src.stateJSON()).0 == AEPO_OK)
        #expect(sameDecision(dst.decision, src.decision))
    }

    /// "exact", the spelling of the entropy statistic before 0.2: a config that uses it
    /// makes an entropy-driven controller whose documents say "entropy", and a state blob
    /// saved with the old spelling restores into it.
    @Test func theOldEntropySpellingStillLoads() throws {
        let old = try CController(#"{"controller": {"mode": "adaptive", "statistic": "exact"}}"#)
        #expect(old.step(AEPO_CONTROLLER_STATISTIC_ENTROPY, 0.4).0 == AEPO_OK)
        let blob = old.stateJSON()
        let spelled = blob.contains(#""statistic": "entropy""#) ? #""statistic": "entropy""# : #""statistic":"entropy""#
        #expect(blob.contains(spelled), "\(blob)")
        // The same blob as a 0.1 library wrote it.
        let legacy = blob.replacingOccurrences(of: spelled, with: spelled.replacingOccurrences(of: "entropy", with: "exact"))
        #expect(legacy != blob)
        let new = try CController(#"{"controller": {"mode": "adaptive", "statistic": "entropy"}}"#)
        #expect(new.restore(legacy).0 == AEPO_OK)
        #expect(sameDecision(new.decision, old.decision))
        #expect(new.stateJSON() == blob)
        let nll = try CController(#"{"controller": {"mode": "adaptive"}}"#)
        #expect(nll.restore(legacy).1.argument == "config.statistic")
    }

    /// Malformed blobs are state errors naming the field, and change nothing.
    @Test func malformedBlobsAreRejectedAndChangeNothing() throws {
        let ctl = try CController(document(.adaptive()))
        _ = ctl.step(AEPO_CONTROLLER_STATISTIC_NLL, 0.3)
        let good = ctl.stateJSON()
        _ = ctl.step(AEPO_CONTROLLER_STATISTIC_NLL, 0.35)
        let before = ctl.stateJSON()
        #expect(before != good)

        func edited(_ from: String, _ to: String) -> String {
            #expect(good.contains(from), "fixture: \(from)")
            return good.replacingOccurrences(of: from, with: to)
        }
        let cases: [(String, String)] = [
            ("{", "json"),
            ("[]", "json"),
            ("", "json"),
            (edited("\"format\": \"aepo.controller.state\"", "\"format\": \"other\""), "format"),
            (edited("\"version\": 2", "\"version\": 3"), "version"),
            (edited("\"level\": \"high\"", "\"level\": \"middle\""), "level"),
            (edited("\"step\": 1,", "\"step\": -4,"), "step"),
            (edited("\"observations\": 1", "\"observations\": 1.5"), "observations"),
            (edited("\"version\": 2", "\"version\": 2, \"extra\": 0"), "extra"),
            (edited("\"selected\": ", "\"selected\": 99, \"x\": "), "estimator.x"),
            (edited("\"leaky\": false", "\"leaky\": true"), "estimator.filters[0].leaky"),
            (edited("\"tuning\": \"auto\"", "\"tuning\": \"fixed\""), "config.adaptive.tuning"),
            (edited("\"error\": ", "\"eror\": "), "eror"),
            (edited("\"smoothed\": 0.29999999999999999, \"statistic\": 0.29999999999999999, \"step\"",
                    "\"smoothed\": 0.29999999999999999, \"statistic\": null, \"step\""), "statistic"),
        ]
        for (blob, path) in cases {
            let (rc, err) = ctl.restore(blob)
            #expect(rc == AEPO_ERR_STATE, "\(path): \(err.message)")
            #expect(err.argument == path, "expected \(path): \(err.message)")
            #expect(ctl.stateJSON() == before, "\(path) changed the state")
        }
        // Values the reader accepts but the controller must not: a zero temperature, a
        // negative statistic, a decision for another step.
        var snap = try ControllerStateCodec.decode(good)
        var core = try Controller(.adaptive())
        let untouched = core.state
        snap.state.decision.temperature = 0
        #expect(throws: AepoFailure.self) { try core.restore(snap) }
        snap = try ControllerStateCodec.decode(good)
        snap.state.smoothed = -1
        #expect(throws: AepoFailure.self) { try core.restore(snap) }
        snap = try ControllerStateCodec.decode(good)
        snap.state.decision.step += 1
        #expect(throws: AepoFailure.self) { try core.restore(snap) }
        snap = try ControllerStateCodec.decode(good)
        snap.history[0].alpha = -1
        #expect(throws: AepoFailure.self) { try core.restore(snap) }
        snap = try ControllerStateCodec.decode(good)
        snap.state.step = Int64.max
        #expect(throws: AepoFailure.self) { try core.restore(snap) }
        #expect(core.state == untouched)
    }
}

extension String {
    /// Plain substring replacement (no Foundation).
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.range(of: target) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

extension Substring {
    func range(of target: String) -> Range<Substring.Index>? {
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(target) {
                return i..<index(i, offsetBy: target.count)
            }
            i = index(after: i)
        }
        return nil
    }
}
