import AepoConfig
@testable import AepoCore
import AepoShim
import CAepoAPI
import Testing

/// Bad input gets a clear error and leaves the state untouched.
@Suite struct ControllerValidationTests {
    private static let nll = AEPO_CONTROLLER_STATISTIC_NLL
    private static let entropy = AEPO_CONTROLLER_STATISTIC_ENTROPY

    /// A controller a few steps in, so that "untouched" is not the trivial initial state.
    private func warmController(_ json: String = "") throws -> CController {
        let c = try CController(json)
        for y in [0.42, 0.55, 0.61] { #expect(c.step(Self.nll, y).0 == AEPO_OK) }
        return c
    }

    private func expectUntouched(_ c: CController, _ before: String, _ count: Int64, _ what: String) {
        #expect(c.stateJSON() == before, "\(what) changed the state")
        #expect(c.historyCount == count, "\(what) changed the history")
    }

    @Test func badStatisticsAreRejected() throws {
        let c = try warmController()
        let before = c.stateJSON()
        let count = c.historyCount
        let cases: [(String, (Int32, CError, aepo_decision), Int32, String)] = [
            ("nan", c.step(Self.nll, .nan), AEPO_ERR_NON_FINITE, "nll"),
            ("inf", c.step(Self.nll, .infinity), AEPO_ERR_NON_FINITE, "nll"),
            ("negative", c.step(Self.nll, -0.01), AEPO_ERR_INVALID_ARGUMENT, "nll"),
            ("missing statistic", c.step(Self.entropy, 0.5), AEPO_ERR_INVALID_ARGUMENT, "nll"),
            ("unknown statistic code", c.step(7, 0.5), AEPO_ERR_INVALID_ARGUMENT, "statistic"),
            ("count 0", c.stepSums(Self.nll, 5.0, 0), AEPO_ERR_INVALID_ARGUMENT, "count"),
            ("negative count", c.stepSums(Self.nll, 5.0, -3), AEPO_ERR_INVALID_ARGUMENT, "count"),
            ("nan sum", c.stepSums(Self.nll, .nan, 10), AEPO_ERR_NON_FINITE, "nll_sum"),
            ("negative sum", c.stepSums(Self.nll, -1, 10), AEPO_ERR_INVALID_ARGUMENT, "nll_sum"),
            ("missing statistic (sums)", c.stepSums(Self.entropy, 5, 10), AEPO_ERR_INVALID_ARGUMENT, "nll"),
            ("step backwards", c.step(Self.nll, 0.5, step: 1), AEPO_ERR_INVALID_ARGUMENT, "step"),
            ("step -2", c.step(Self.nll, 0.5, step: -2), AEPO_ERR_INVALID_ARGUMENT, "step"),
            ("step at the end", c.step(Self.nll, 0.5, step: Int64.max), AEPO_ERR_INVALID_ARGUMENT, "step"),
        ]
        for (what, (rc, err, _), status, argument) in cases {
            #expect(rc == status, "\(what): \(err.message)")
            #expect(err.status == status)
            #expect(err.argument == argument, "\(what): \(err.message)")
            #expect(err.message.hasPrefix(argument), "\(what): \(err.message)")
            expectUntouched(c, before, count, what)
        }
        #expect(c.step(Self.nll, .nan).1.message == "nll is nan; the statistic must be finite and >= 0")
        #expect(c.step(Self.entropy, 0.5).1.message.contains("controller.statistic is \"nll\""))
        // The same controller still works, and steps on from where it was.
        let (rc, _, d) = c.step(Self.nll, 0.5)
        #expect(rc == AEPO_OK && d.step == 4)
    }

    @Test func exactControllerNamesEntropy() throws {
        let c = try CController(#"{"controller": {"statistic": "exact"}}"#)
        let (rc, err, _) = c.step(Self.nll, 0.5)
        #expect(rc == AEPO_ERR_INVALID_ARGUMENT)
        #expect(err.argument == "entropy")
        #expect(c.stepSums(Self.entropy, .nan, 3).1.argument == "entropy_sum")
        #expect(c.stepSums(Self.entropy, 6, 3).2.statistic == 2)
    }

    @Test func sumsAreDividedByTheCount() throws {
        let c = try CController("")
        let (rc, _, d) = c.stepSums(Self.nll, 123.0, 300)
        #expect(rc == AEPO_OK)
        #expect(d.statistic == 123.0 / 300.0)
    }

    @Test func badConfigsAreRejectedAtCreate() throws {
        let cases: [(String, String)] = [
            (#"{"controller": {"adaptive": {"t_min": 2.0, "t_max": 2.0}}}"#, "controller.adaptive.t_max"),
            (#"{"controller": {"adaptive": {"t_min": 1.5, "t_max": 1.0}}}"#, "controller.adaptive.t_max"),
            (#"{"controller": {"schedule": {"kind": "piecewise", "points": [{"step": 10, "target": 0.3}, {"step": 5, "target": 0.4}]}}}"#,
             "controller.schedule.points[1].step"),
            (#"{"controller": {"schedule": {"kind": "piecewise", "points": [{"step": 10, "target": 0.3}, {"step": 10, "target": 0.4}]}}}"#,
             "controller.schedule.points[1].step"),
            (#"{"controller": {"mode": "pid"}}"#, "controller.mode"),
            (#"{"controller": {"statistic": "entropie"}}"#, "controller.statistic"),
            (#"{"controller": {"t_high": 0}}"#, "controller.t_high"),
            (#"{"controller": {"mode": "adaptive", "t_high": 0.9, "adaptive": {"actuator": "alpha"}}}"#, "controller.t_high"),
            (#"{"controller": {"adaptive": {"ema": 1.0}}}"#, "controller.adaptive.ema"),
            (#"{"controller": {"schedule": {"kind": "linear", "start_step": 10, "end_step": 5}}}"#, "controller.schedule.end_step"),
        ]
        for (json, path) in cases {
            do {
                _ = try CController(json)
                Issue.record("accepted \(json)")
            } catch let f as CFailure {
                #expect(f.error.status == AEPO_ERR_CONFIG, "\(json)")
                #expect(f.error.argument == path, "\(json): \(f.error.message)")
            }
        }
        // *out is NULL after a failed create.
        var out: OpaquePointer? = OpaquePointer(bitPattern: 0x1234)
        var err = aepo_error()
        let bad = #"{"controller": {"mode": "pid"}}"#
        let rc = bad.withCString { aepo_controller_create($0, bad.utf8.count, &out, &err) }
        #expect(rc == AEPO_ERR_CONFIG && out == nil)
    }

    @Test func nullPointersAndStructSizes() throws {
        var err = aepo_error()
        var d = newDecision()
        var n: Int64 = 0
        var len = 0
        #expect(aepo_controller_create(nil, 0, nil, &err) == AEPO_ERR_NULL_POINTER && CError(err).argument == "out")
        #expect(aepo_controller_decision(nil, &d, &err) == AEPO_ERR_NULL_POINTER && CError(err).argument == "controller")
        #expect(aepo_controller_step(nil, Self.nll, 0.5, -1, &d, &err) == AEPO_ERR_NULL_POINTER)
        #expect(aepo_controller_step_sums(nil, Self.nll, 0.5, 1, -1, &d, &err) == AEPO_ERR_NULL_POINTER)
        #expect(aepo_controller_state_json(nil, nil, 0, &len, &err) == AEPO_ERR_NULL_POINTER)
        #expect(aepo_controller_restore(nil, "{}", 2, &err) == AEPO_ERR_NULL_POINTER)
        #expect(aepo_controller_history_count(nil, &n, &err) == AEPO_ERR_NULL_POINTER)
        #expect(aepo_controller_history(nil, 0, &d, &err) == AEPO_ERR_NULL_POINTER)
        #expect(aepo_controller_config_json(nil, nil, 0, &len, &err) == AEPO_ERR_NULL_POINTER)
        aepo_controller_free(nil)

        let c = try warmController()
        let before = c.stateJSON()
        let count = c.historyCount
        #expect(aepo_controller_decision(c.handle, nil, &err) == AEPO_ERR_NULL_POINTER && CError(err).argument == "out")
        #expect(aepo_controller_history_count(c.handle, nil, &err) == AEPO_ERR_NULL_POINTER)
        #expect(aepo_controller_restore(c.handle, nil, 0, &err) == AEPO_ERR_NULL_POINTER && CError(err).argument == "json")
        var small = aepo_decision()
        small.struct_size = 40
        #expect(aepo_controller_decision(c.handle, &small, &err) == AEPO_ERR_INVALID_ARGUMENT)
        #expect(CError(err).argument == "struct_size" && CError(err).message.contains("out->") && small.step == 0)
        // A too-small `next` is caught before the controller advances.
        #expect(aepo_controller_step(c.handle, Self.nll, 0.5, -1, &small, &err) == AEPO_ERR_INVALID_ARGUMENT)
        #expect(CError(err).argument == "struct_size" && CError(err).message.contains("next->"))
        expectUntouched(c, before, count, "a short struct")
        // NULL `next` is allowed: the decision is then read separately.
        #expect(aepo_controller_step(c.handle, Self.nll, 0.5, -1, nil, &err) == AEPO_OK)
        #expect(c.decision.step == 4)
        // A larger struct from a newer header: the tail is left alone.
        var big = [UInt8](repeating: 0xAB, count: MemoryLayout<aepo_decision>.size + 16)
        big.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: raw.count, as: Int.self)
            let p = raw.baseAddress!.assumingMemoryBound(to: aepo_decision.self)
            #expect(aepo_controller_decision(c.handle, p, &err) == AEPO_OK)
            #expect(p.pointee.struct_size == raw.count && p.pointee.step == 4)
        }
        #expect(big.suffix(16).allSatisfy { $0 == 0xAB })
    }

    @Test func historyAccess() throws {
        let c = try CController(#"{"controller": {"history": 3}}"#)
        #expect(c.historyCount == 1)  // the initial decision
        for y in [0.4, 0.6, 0.45, 0.7] { _ = c.step(Self.nll, y) }
        #expect(c.historyCount == 3)
        var err = aepo_error()
        var d = newDecision()
        var steps: [Int64] = []
        for i in 0..<3 {
            #expect(aepo_controller_history(c.handle, Int64(i), &d, &err) == AEPO_OK)
            steps.append(d.step)
        }
        #expect(steps == [2, 3, 4])
        #expect(sameDecision(d, c.decision))  // the newest entry is the pending decision
        #expect(aepo_controller_history(c.handle, 3, &d, &err) == AEPO_ERR_INVALID_ARGUMENT)
        #expect(CError(err).argument == "index")
        #expect(aepo_controller_history(c.handle, -1, &d, &err) == AEPO_ERR_INVALID_ARGUMENT)
        let none = try CController(#"{"controller": {"history": 0}}"#)
        _ = none.step(Self.nll, 0.4)
        #expect(none.historyCount == 0)
        #expect(aepo_controller_history(none.handle, 0, &d, &err) == AEPO_ERR_INVALID_ARGUMENT)
    }

    @Test func namesArePinned() {
        func s(_ p: UnsafePointer<CChar>?) -> String { p.map { String(cString: $0) } ?? "(null)" }
        #expect(s(aepo_controller_mode_name(AEPO_CONTROLLER_MODE_BANG_BANG)) == "bang_bang")
        #expect(s(aepo_controller_mode_name(AEPO_CONTROLLER_MODE_ADAPTIVE)) == "adaptive")
        #expect(s(aepo_controller_mode_name(AEPO_CONTROLLER_MODE_COUNT)) == "unknown")
        #expect(s(aepo_controller_statistic_name(AEPO_CONTROLLER_STATISTIC_NLL)) == "nll")
        #expect(s(aepo_controller_statistic_name(AEPO_CONTROLLER_STATISTIC_ENTROPY)) == "entropy")
        #expect(s(aepo_controller_statistic_name(-1)) == "unknown")
        let reasons = ["initial", "at_or_below_target", "above_target", "hysteresis_hold", "tracking",
                       "saturated_high", "saturated_low", "rate_limited", "unreachable"]
        #expect(Int(AEPO_CONTROLLER_REASON_COUNT) == reasons.count)
        for (i, r) in reasons.enumerated() {
            #expect(s(aepo_controller_reason_name(Int32(i))) == r)
            #expect(ControllerReason(rawValue: Int32(i))?.name == r)
        }
        #expect(s(aepo_controller_reason_name(AEPO_CONTROLLER_REASON_COUNT)) == "unknown")
        #expect(AEPO_CONTROLLER_REASON_RATE_LIMITED == ControllerReason.rateLimited.rawValue)
        #expect(AEPO_CONTROLLER_REASON_HYSTERESIS_HOLD == ControllerReason.hysteresisHold.rawValue)
        #expect(AEPO_CONTROLLER_REASON_UNREACHABLE == ControllerReason.unreachable.rawValue)
        #expect(MemoryLayout<aepo_decision>.size == Int(AEPO_DECISION_SIZE_V2))
        #expect(Int(AEPO_DECISION_SIZE_V1) == 80)
        #expect(MemoryLayout<aepo_decision>.offset(of: \.reserved) == 76)
        #expect(MemoryLayout<aepo_decision>.offset(of: \.est_gain) == 80)
        #expect(MemoryLayout<aepo_decision>.offset(of: \.reserved2) == 140)
    }

    @Test func configJSONIsTheEffectiveDocument() throws {
        let c = try CController(#"{"controller": {"mode": "adaptive", "target": 0.7}}"#)
        var len = 0
        var err = aepo_error()
        #expect(aepo_controller_config_json(c.handle, nil, 0, &len, &err) == AEPO_OK)
        var buf = [CChar](repeating: 0, count: len + 1)
        #expect(aepo_controller_config_json(c.handle, &buf, buf.count, &len, &err) == AEPO_OK)
        let text = String(decoding: buf.prefix(len).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        #expect(buf[len] == 0)
        var expected = Config()
        expected.controller.mode = "adaptive"
        expected.controller.target = 0.7
        #expect(text == ConfigWriter.emit(expected))
        var tiny = [CChar](repeating: 1, count: 4)
        #expect(aepo_controller_config_json(c.handle, &tiny, tiny.count, &len, &err) == AEPO_ERR_BUFFER_TOO_SMALL)
        #expect(tiny[0] == 0)
    }
}
