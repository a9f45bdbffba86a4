/// Saving and restoring the controller. The JSON form lives in
/// `AepoConfig/ControllerStateCodec.swift`; this file holds the value it carries and the
/// rules a restored value must pass.

/// A saved controller: its state, its history, and the config keys that give the state
/// its meaning, as recorded when it was saved.
public struct ControllerSnapshot: Sendable, Equatable {
    /// `controller.mode` of the controller that saved it.
    public var mode: String
    /// `controller.statistic` of the controller that saved it.
    public var statistic: String
    /// `controller.adaptive.actuator` of the controller that saved it.
    public var actuator: String
    /// `controller.adaptive.tuning` of the controller that saved it.
    public var tuning: String
    public var state: ControllerState
    /// Oldest first.
    public var history: [ControllerDecision]

    public init(mode: String, statistic: String, actuator: String, tuning: String, state: ControllerState,
                history: [ControllerDecision]) {
        self.mode = mode
        self.statistic = statistic
        self.actuator = actuator
        self.tuning = tuning
        self.state = state
        self.history = history
    }
}

extension Controller {
    /// The controller's state and history, for saving.
    public var snapshot: ControllerSnapshot {
        ControllerSnapshot(mode: mode.name, statistic: statistic.name, actuator: actuator.name,
                           tuning: tuning.name, state: state, history: history.entries)
    }

    /// Replaces the state and history with a saved snapshot.
    ///
    /// The snapshot must come from a controller with the same `mode`, `statistic` and
    /// (in adaptive mode) `adaptive.actuator` and `adaptive.tuning`: those decide what the
    /// state means. Other
    /// keys may differ (a new target, gains or bounds); they apply from the next step on.
    /// With an equal config, the restored controller continues bit for bit like the one
    /// that saved it. The history keeps the newest `controller.history` entries.
    ///
    /// Throws `.state` naming the offending field; on failure nothing changes.
    public mutating func restore(_ snap: ControllerSnapshot) throws(AepoFailure) {
        if snap.mode != mode.name {
            throw .state("config.mode", "the state was saved by a controller in mode \"\(snap.mode)\", "
                + "but this one runs \"\(mode.name)\"")
        }
        if ControllerStatistic(name: snap.statistic) != statistic {
            throw .state("config.statistic", "the state was saved by a controller driven by \"\(snap.statistic)\", "
                + "but this one is driven by \"\(statistic.name)\"")
        }
        if mode == .adaptive && snap.actuator != actuator.name {
            throw .state("config.adaptive.actuator", "the state was saved by an adaptive controller with actuator "
                + "\"\(snap.actuator)\", but this one moves \"\(actuator.name)\"")
        }
        if mode == .adaptive && snap.tuning != tuning.name {
            throw .state("config.adaptive.tuning", "the state was saved by an adaptive controller with tuning "
                + "\"\(snap.tuning)\", but this one runs \"\(tuning.name)\"")
        }
        let s = snap.state
        if !s.estimator.isValid {
            throw .state("estimator", "holds a non-finite value or a negative variance")
        }
        if s.pushes < 0 { throw .state("pushes", "is \(s.pushes); expected an integer >= 0") }
        if s.step < 0 || s.step == Int64.max {
            throw .state("step", "is \(s.step); expected an integer in [0, \(Int64.max - 1)]")
        }
        if s.observations < 0 {
            throw .state("observations", "is \(s.observations); expected an integer >= 0")
        }
        try Self.checkStatistic(s.statistic, "statistic")
        try Self.checkStatistic(s.smoothed, "smoothed")
        if !s.actuator.isFinite { throw .state("actuator", "is \(s.actuator); expected a finite real") }
        if !s.error.isFinite { throw .state("error", "is \(s.error); expected a finite real") }
        try checkDecision(s.decision, "decision")
        if s.decision.step != s.step {
            throw .state("decision.step", "is \(s.decision.step), but the state is at step \(s.step)")
        }
        for (i, d) in snap.history.enumerated() {
            try checkDecision(d, "history[\(i)]")
        }
        var h = DecisionHistory(capacity: history.capacity)
        for d in snap.history.suffix(history.capacity) { h.append(d) }
        state = s
        history = h
    }

    private static func checkStatistic(_ x: Double, _ path: String) throws(AepoFailure) {
        if !(x.isFinite && x >= 0) { throw .state(path, "is \(x); expected a finite real >= 0") }
    }

    private func checkDecision(_ d: ControllerDecision, _ path: String) throws(AepoFailure) {
        if d.step < 0 { throw .state("\(path).step", "is \(d.step); expected an integer >= 0") }
        if !(d.temperature.isFinite && d.temperature > 0) {
            throw .state("\(path).temperature", "is \(d.temperature); expected a finite real > 0")
        }
        if d.kMax < 0 { throw .state("\(path).k_max", "is \(d.kMax); expected an integer >= 0") }
        if !(d.alpha.isNaN || (d.alpha.isFinite && d.alpha >= 0)) {
            throw .state("\(path).alpha", "is \(d.alpha); expected null or a finite real >= 0")
        }
        try Self.checkStatistic(d.target, "\(path).target")
        try Self.checkStatistic(d.statistic, "\(path).statistic")
        try Self.checkStatistic(d.smoothed, "\(path).smoothed")
        if d.mode != mode {
            throw .state("\(path).mode", "is \"\(d.mode.name)\", but the controller runs \"\(mode.name)\"")
        }
    }
}
