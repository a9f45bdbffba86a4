import Glibc
@testable import AepoCore
import AepoShim
import CAepoAPI

/// The fixed plant of the controller tests, which the controller does not know:
///   w = k/k_max (k mode) or alpha/alpha_max (alpha mode), u = (T - 1) * w,
///   H[t+1] = H[t] - 0.02 (H[t] - 0.1) + 0.08 u (1.6 - H[t]) + 0.01 eps,  eps ~ N(0, 1),
///   the controller observes H + 0.02 u (the mixed-batch bias).
/// k mode assumes plenty of positives, so k = k_max, or floor(k_max / 2) when halving.
struct EntropyPlant {
    /// Which entropy the observation of step t reads: the one after the step's update
    /// (the statistic is measured during the actor update; the primary reading) or the
    /// one before it (a slower loop, used to check robustness).
    enum Reading { case afterUpdate, beforeUpdate }

    var reading: Reading = .afterUpdate
    var h0 = 0.5
    var steps = 400

    struct Run {
        var decisions: [ControllerDecision] = []
        var observed: [Double] = []
        var entropy: [Double] = []
        /// Mean |observed - target| over the second half of the run.
        var error = 0.0
    }

    /// Runs `steps` training steps; the controller sees only the observations.
    func run(_ config: ControllerConfig, seed: UInt64) throws -> Run {
        var ctl = try Controller(config)
        let kind = ctl.statistic
        var rng = TestGaussian(seed: seed)
        var out = Run()
        var h = h0
        var errSum = 0.0
        for t in 0..<steps {
            let d = ctl.decision
            let w: Double
            if !d.alpha.isNaN {
                w = d.alpha / config.adaptive.alphaMax
            } else {
                let k = d.halve ? d.kMax / 2 : d.kMax
                w = Double(k) / Double(d.kMax)
            }
            let u = (d.temperature - 1) * w
            let next = h - 0.02 * (h - 0.1) + 0.08 * u * (1.6 - h) + 0.01 * rng.next()
            let y = (reading == .afterUpdate ? next : h) + 0.02 * u
            if t >= steps / 2 { errSum += abs(y - d.target) }
            out.decisions.append(d)
            out.observed.append(y)
            out.entropy.append(h)
            try ctl.observe(kind, value: y)
            h = next
        }
        out.error = errSum / Double(steps - steps / 2)
        return out
    }
}

extension ControllerConfig {
    /// The adaptive controller with its default gains.
    static func adaptive(target: Double = 0.5) -> ControllerConfig {
        var c = ControllerConfig()
        c.mode = "adaptive"
        c.target = target
        return c
    }

    /// The reference rule at the given temperatures.
    static func bangBang(target: Double = 0.5, high: Double = 1.2, low: Double = 0.8) -> ControllerConfig {
        var c = ControllerConfig()
        c.mode = "bang_bang"
        c.target = target
        c.tHigh = high
        c.tLow = low
        return c
    }

    func withPiecewise(_ pts: [(Int64, Double)]) -> ControllerConfig {
        var c = self
        c.schedule.kind = "piecewise"
        c.schedule.points = pts.map { SchedulePoint(step: $0.0, target: $0.1) }
        return c
    }
}

// MARK: - calling the C exports from Swift

/// The status, argument and message of an `aepo_error`.
struct CError {
    var status: Int32
    var argument: String
    var message: String

    init(_ e: aepo_error) {
        var e = e
        status = e.status
        argument = withUnsafeBytes(of: &e.argument) { cText($0) }
        message = withUnsafeBytes(of: &e.message) { cText($0) }
    }
}

func cText(_ raw: UnsafeRawBufferPointer) -> String {
    let b = raw.bindMemory(to: UInt8.self)
    let n = b.firstIndex(of: 0) ?? b.count
    return String(decoding: UnsafeBufferPointer(rebasing: b[0..<n]), as: UTF8.self)
}

/// An empty decision struct with its size set.
func newDecision() -> aepo_decision {
    var d = aepo_decision()
    d.struct_size = MemoryLayout<aepo_decision>.size
    return d
}

/// A controller handle made through the C API.
final class CController {
    let handle: OpaquePointer

    init(_ json: String) throws {
        var out: OpaquePointer?
        var err = aepo_error()
        let bytes = Array(json.utf8)
        let rc = bytes.withUnsafeBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) {
                aepo_controller_create($0, b.count, &out, &err)
            }
        }
        guard rc == AEPO_OK, let out else { throw CFailure(error: CError(err)) }
        handle = out
    }

    deinit { aepo_controller_free(handle) }

    var decision: aepo_decision {
        var d = newDecision()
        var err = aepo_error()
        _ = aepo_controller_decision(handle, &d, &err)
        return d
    }

    /// Steps with a value; returns the status, the error and the next decision.
    func step(_ statistic: Int32, _ value: Double, step: Int64 = Int64(AEPO_CONTROLLER_STEP_NEXT))
        -> (Int32, CError, aepo_decision) {
        var d = newDecision()
        var err = aepo_error()
        let rc = aepo_controller_step(handle, statistic, value, step, &d, &err)
        return (rc, CError(err), d)
    }

    func stepSums(_ statistic: Int32, _ sum: Double, _ count: Int64,
                  step: Int64 = Int64(AEPO_CONTROLLER_STEP_NEXT)) -> (Int32, CError, aepo_decision) {
        var d = newDecision()
        var err = aepo_error()
        let rc = aepo_controller_step_sums(handle, statistic, sum, count, step, &d, &err)
        return (rc, CError(err), d)
    }

    /// The state blob, through the size query and a second call.
    func stateJSON() -> String {
        var len = 0
        var err = aepo_error()
        _ = aepo_controller_state_json(handle, nil, 0, &len, &err)
        var buf = [CChar](repeating: 0, count: len + 1)
        _ = aepo_controller_state_json(handle, &buf, buf.count, &len, &err)
        return String(decoding: buf.prefix(len).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func restore(_ blob: String) -> (Int32, CError) {
        var err = aepo_error()
        let bytes = Array(blob.utf8)
        let rc = bytes.withUnsafeBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) {
                aepo_controller_restore(handle, $0, b.count, &err)
            }
        }
        return (rc, CError(err))
    }

    var historyCount: Int64 {
        var n: Int64 = -1
        var err = aepo_error()
        _ = aepo_controller_history_count(handle, &n, &err)
        return n
    }
}

struct CFailure: Error {
    var error: CError
}

/// Bitwise equality of two C decisions, field by field.
func sameDecision(_ a: aepo_decision, _ b: aepo_decision) -> Bool {
    a.struct_size == b.struct_size && a.step == b.step && a.temperature.bitPattern == b.temperature.bitPattern
        && a.alpha.bitPattern == b.alpha.bitPattern && a.target.bitPattern == b.target.bitPattern
        && a.statistic.bitPattern == b.statistic.bitPattern && a.smoothed.bitPattern == b.smoothed.bitPattern
        && a.k_max == b.k_max && a.halve == b.halve && a.mode == b.mode && a.reason == b.reason
        && a.reserved == b.reserved
}
