import AepoConfig
import AepoCore
import CAepoAPI

// The entropy controller's exports: validate every argument, call the core, report.

/// What an `aepo_controller *` points to.
final class ControllerHandle: ExportedHandle {
    /// The whole normalised document the handle was created from.
    let config: Config
    /// Read and written only under `lock`.
    var controller: Controller
    let lock = HandleLock()

    init(config: Config, controller: Controller) {
        self.config = config
        self.controller = controller
    }
}

@c @implementation
public func aepo_controller_mode_name(_ mode: Int32) -> UnsafePointer<CChar>? {
    ControllerNames.mode(mode)
}

@c @implementation
public func aepo_controller_statistic_name(_ statistic: Int32) -> UnsafePointer<CChar>? {
    ControllerNames.statistic(statistic)
}

@c @implementation
public func aepo_controller_reason_name(_ reason: Int32) -> UnsafePointer<CChar>? {
    ControllerNames.reason(reason)
}

@c @implementation
public func aepo_controller_create(_ json: UnsafePointer<CChar>?, _ len: Int,
                                   _ out: UnsafeMutablePointer<OpaquePointer?>?,
                                   _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        try createHandle(json, len, out) { config throws(AepoFailure) in
            ControllerHandle(config: config, controller: try Controller(config.controller))
        }
    }
}

@c @implementation
public func aepo_controller_free(_ ctl: OpaquePointer?) {
    ControllerHandle.release(ctl)
}

@c @implementation
public func aepo_controller_config_json(_ ctl: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
                                        _ len: UnsafeMutablePointer<Int>?,
                                        _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        try writeHandleConfig(ControllerHandle.self, ctl, "controller", buf, cap, len)
    }
}

@c @implementation
public func aepo_controller_decision(_ ctl: OpaquePointer?, _ out: UnsafeMutablePointer<aepo_decision>?,
                                     _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let h = try ControllerHandle.borrow(ctl, "controller")
        let o = try decisionOutput(out, "out")
        writeDecision(h.lock.run { h.controller.decision }, o)
    }
}

@c @implementation
public func aepo_controller_step(_ ctl: OpaquePointer?, _ statistic: Int32, _ value: Double, _ step: Int64,
                                 _ next: UnsafeMutablePointer<aepo_decision>?,
                                 _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let h = try ControllerHandle.borrow(ctl, "controller")
        let kind = try statisticArgument(statistic)
        try observeAndWrite(h, step, next) { (c, s) throws(AepoFailure) in try c.observe(kind, value: value, step: s) }
    }
}

@c @implementation
public func aepo_controller_step_sums(_ ctl: OpaquePointer?, _ statistic: Int32, _ sum: Double, _ count: Int64,
                                      _ step: Int64, _ next: UnsafeMutablePointer<aepo_decision>?,
                                      _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let h = try ControllerHandle.borrow(ctl, "controller")
        let kind = try statisticArgument(statistic)
        try observeAndWrite(h, step, next) { (c, s) throws(AepoFailure) in
            try c.observe(kind, sum: sum, count: count, step: s)
        }
    }
}

@c @implementation
public func aepo_controller_step_metrics(_ ctl: OpaquePointer?, _ metrics: UnsafePointer<Double>?, _ n: Int,
                                         _ step: Int64, _ next: UnsafeMutablePointer<aepo_decision>?,
                                         _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let h = try ControllerHandle.borrow(ctl, "controller")
        guard let metrics else { throw .nullPointer("metrics") }
        if n < 0 { throw .shape("n", "must be >= 0, got \(n)") }
        let buf = UnsafeBufferPointer(start: metrics, count: n)
        try observeAndWrite(h, step, next) { (c, s) throws(AepoFailure) in try c.observe(metrics: buf, step: s) }
    }
}

/// The rest of every step export, after its own arguments: check `step` and `next`, record
/// the statistic under the handle's lock, and write the next decision when asked.
private func observeAndWrite(_ h: ControllerHandle, _ step: Int64, _ next: UnsafeMutablePointer<aepo_decision>?,
                             _ observe: (inout Controller, Int64?) throws(AepoFailure) -> ControllerDecision)
    throws(AepoFailure) {
    let s = try stepArgument(step)
    let o: UnsafeMutableRawPointer? = next == nil ? nil : try decisionOutput(next, "next")
    let d = try h.lock.run { () throws(AepoFailure) in try observe(&h.controller, s) }
    if let o { writeDecision(d, o) }
}

@c @implementation
public func aepo_controller_state_json(_ ctl: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
                                       _ len: UnsafeMutablePointer<Int>?,
                                       _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let h = try ControllerHandle.borrow(ctl, "controller")
        let text = try h.lock.run { () throws(AepoFailure) in try ControllerStateCodec.encode(h.controller) }
        try writeText(text, buf, cap, len)
    }
}

@c @implementation
public func aepo_controller_restore(_ ctl: OpaquePointer?, _ json: UnsafePointer<CChar>?, _ len: Int,
                                    _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let h = try ControllerHandle.borrow(ctl, "controller")
        guard let json else { throw .nullPointer("json") }
        if len < 0 { throw .shape("len", "must be >= 0, got \(len)") }
        let bytes = UnsafeBufferPointer(start: UnsafeRawPointer(json).assumingMemoryBound(to: UInt8.self), count: len)
        let snapshot = try ControllerStateCodec.decode(bytes)
        try h.lock.run { () throws(AepoFailure) in try h.controller.restore(snapshot) }
    }
}

@c @implementation
public func aepo_controller_history_count(_ ctl: OpaquePointer?, _ count: UnsafeMutablePointer<Int64>?,
                                          _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let h = try ControllerHandle.borrow(ctl, "controller")
        guard let count else { throw .nullPointer("count") }
        count.pointee = Int64(h.lock.run { h.controller.history.count })
    }
}

@c @implementation
public func aepo_controller_history(_ ctl: OpaquePointer?, _ index: Int64, _ out: UnsafeMutablePointer<aepo_decision>?,
                                    _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let h = try ControllerHandle.borrow(ctl, "controller")
        let d = try h.lock.run { () throws(AepoFailure) -> ControllerDecision in
            let n = h.controller.history.count
            guard index >= 0 && index < Int64(n) else {
                throw .invalid("index", n == 0 ? "is \(index), but the history is empty"
                                               : "is \(index); expected 0 ... \(n - 1) (the history holds \(n) decisions)")
            }
            return h.controller.history[Int(index)]
        }
        writeDecision(d, try decisionOutput(out, "out"))
    }
}

// MARK: - helpers

func statisticArgument(_ code: Int32) throws(AepoFailure) -> ControllerStatistic {
    guard let k = ControllerStatistic(rawValue: code) else {
        throw .invalid("statistic", "is \(code); expected AEPO_CONTROLLER_STATISTIC_NLL (0) or "
            + "AEPO_CONTROLLER_STATISTIC_ENTROPY (1)")
    }
    return k
}

func stepArgument(_ step: Int64) throws(AepoFailure) -> Int64? {
    if step == Int64(AEPO_CONTROLLER_STEP_NEXT) { return nil }
    if step < 0 {
        throw .invalid("step", "is \(step); expected a step >= 0, or AEPO_CONTROLLER_STEP_NEXT (-1) for the "
            + "pending decision's step")
    }
    return step
}

/// Checks a caller's decision struct: non-NULL, and struct_size at least the first
/// version's size. Reads only the leading size field. The struct is handed on as raw
/// memory, since a caller's may be shorter than this library's.
func decisionOutput(_ p: UnsafeMutablePointer<aepo_decision>?, _ name: String) throws(AepoFailure)
    -> UnsafeMutableRawPointer {
    guard let p else { throw .nullPointer(name) }
    let size = UnsafeRawPointer(p).load(as: Int.self)
    let need = Int(AEPO_DECISION_SIZE_V1)
    if size < need {
        throw .invalid("struct_size", "\(name)->struct_size is \(size); set it to sizeof(aepo_decision) (at least \(need))")
    }
    return UnsafeMutableRawPointer(p)
}

/// Writes the fields the caller's struct_size covers; struct_size itself and anything past
/// this library's struct stay as they were.
func writeDecision(_ d: ControllerDecision, _ out: UnsafeMutableRawPointer) {
    var c = aepo_decision()
    let callerSize = out.load(as: Int.self)
    c.struct_size = callerSize
    c.step = d.step
    c.temperature = d.temperature
    c.alpha = d.alpha
    c.target = d.target
    c.statistic = d.statistic
    c.smoothed = d.smoothed
    c.k_max = d.kMax
    c.halve = d.halve ? 1 : 0
    c.mode = d.mode.rawValue
    c.reason = d.reason.rawValue
    c.reserved = 0
    let e = d.estimate
    c.est_gain = e.gain
    c.est_same_step = e.sameStep
    c.est_process_noise = e.processNoise
    c.est_measurement_noise = e.measurementNoise
    c.est_horizon = e.horizon
    c.est_feedback = e.feedback
    c.est_confidence = e.confidence
    c.est_delay = Int32(clamping: e.delay)
    c.reserved2 = 0
    withUnsafeBytes(of: &c) { src in
        if let base = src.baseAddress { out.copyMemory(from: base, byteCount: min(callerSize, src.count)) }
    }
}

/// Static names of the controller's codes.
enum ControllerNames {
    nonisolated(unsafe) static let modes = ControllerMode.allCases.map { StaticText.intern($0.name) }
    nonisolated(unsafe) static let statistics = ControllerStatistic.allCases.map { StaticText.intern($0.name) }
    nonisolated(unsafe) static let reasons = ControllerReason.allCases.map { StaticText.intern($0.name) }
    nonisolated(unsafe) static let unknown = StaticText.intern("unknown")

    static func mode(_ c: Int32) -> UnsafePointer<CChar> {
        c >= 0 && Int(c) < modes.count ? modes[Int(c)] : unknown
    }
    static func statistic(_ c: Int32) -> UnsafePointer<CChar> {
        c >= 0 && Int(c) < statistics.count ? statistics[Int(c)] : unknown
    }
    static func reason(_ c: Int32) -> UnsafePointer<CChar> {
        c >= 0 && Int(c) < reasons.count ? reasons[Int(c)] : unknown
    }
}
