/// The entropy controller: once per training step it reads an entropy statistic and
/// decides the temperature, the regulariser cap and halving (or the weight alpha) for the
/// next step.
///
/// Timing (docs/API.md, "Entropy controller"):
/// - `decision` is the decision for the coming step. Before any observation it comes from
///   `initial_entropy`, so with the default 0 the first decision is T_high.
/// - `observe` records the statistic of the update that just finished (step k, by default
///   the step of the pending decision), advances to step k + 1, and returns the decision
///   for it. A call that throws leaves the controller exactly as it was.
///
/// Modes:
/// - `bang_bang` is the reference rule (the AEPO reference code's): T_high with the full
///   k_max when the last statistic is <= the target, otherwise T_low, halved when
///   `halve_above_target`. With `hysteresis` h > 0 it switches to T_high only at or below
///   target - h and to T_low only above target + h, holding its level in between; h = 0
///   is exactly the reference comparison.
/// - `adaptive` is a PI controller on e = target - smoothed statistic, in incremental
///   (velocity) form: u += kp * (e - e_prev) + ki * e. Its state is the applied actuator
///   itself, so saturation and the rate limit can never wind the integral up. The change
///   per step is limited to `t_rate` and the actuator is clamped to its range.
///   - actuator `temperature`: u is the temperature, within [t_min, t_max]; k_max is used
///     in full and never halved.
///   - actuator `alpha`: u is a temperature-equivalent excursion x in
///     [t_low - 1, t_high - 1]. x > 0 draws at t_high with alpha = alpha_max * x/(t_high-1);
///     x < 0 draws at t_low with alpha = alpha_max * x/(t_low-1). The regulariser's effect
///     (T - 1) * alpha/alpha_max then equals x, so the same gains serve both actuators.
///   The actuator starts from neutral (T = 1 clamped to the range, or alpha = 0), and
///   `initial_entropy` acts as the observation before step 0.
///
/// Numerical properties: every decision is a deterministic function of the config and the
/// sequence of observations (no clocks, no randomness), so a restored state continues
/// bit for bit. Temperatures stay exactly inside their bounds.
public struct Controller: Sendable {
    public let config: ControllerConfig
    public let mode: ControllerMode
    public let statistic: ControllerStatistic
    public let actuator: ControllerActuator
    public let tuning: ControllerTuning
    /// `controller.statistic_rows`: which rows the statistic from loss metrics covers.
    public let statisticRows: StatisticRows
    public let schedule: TargetSchedule

    public internal(set) var state: ControllerState
    public internal(set) var history: DecisionHistory

    /// Builds a controller; the section is checked by the config schema first (bounds and
    /// cross-field rules), so a config built in code gets the same errors as JSON.
    public init(_ config: ControllerConfig) throws(AepoFailure) {
        var whole = Config()
        whole.controller = config
        try ConfigSchema.validate(whole)
        let mode = try ControllerMode.parse(config.mode, key: "controller.mode")
        let statistic = try ControllerStatistic.parse(config.statistic, key: "controller.statistic")
        let actuator = try ControllerActuator.parse(config.adaptive.actuator, key: "controller.adaptive.actuator")
        let tuning = try ControllerTuning.parse(config.adaptive.tuning, key: "controller.adaptive.tuning")
        self.config = config
        self.mode = mode
        self.statistic = statistic
        self.actuator = actuator
        self.tuning = tuning
        self.statisticRows = try StatisticRows.parse(config.statisticRows, key: "controller.statistic_rows")
        self.schedule = try TargetSchedule(target: config.target, schedule: config.schedule)
        self.history = DecisionHistory(capacity: Int(clamping: config.history))

        var s = ControllerState(
            step: 0, observations: 0, statistic: config.initialEntropy, smoothed: config.initialEntropy,
            high: true, actuator: 0, error: 0,
            decision: ControllerDecision(step: 0, temperature: 1, kMax: 0, halve: false, alpha: .nan, target: 0,
                                         statistic: 0, smoothed: 0, mode: mode, reason: .initial),
            estimator: LoopEstimator(), pushes: 0)
        if mode == .adaptive && actuator == .temperature {
            s.actuator = min(max(1, config.adaptive.tMin), config.adaptive.tMax)
        }
        // The placeholder decision above is replaced by the first real one.
        s.decision = Self.decide(&s, step: 0, initial: true, config: config, mode: mode, actuator: actuator,
                                 tuning: tuning, schedule: schedule)
        self.state = s
        history.append(s.decision)
    }

    /// The decision for the coming step (does not advance).
    public var decision: ControllerDecision { state.decision }

    /// Records a statistic (a token mean) for the step that just finished.
    ///
    /// - Parameters:
    ///   - kind: which statistic `value` is; it must be the one `controller.statistic` picks.
    ///   - value: finite and >= 0.
    ///   - step: the step the statistic belongs to, >= the pending decision's step and
    ///     < Int64.max; nil means the pending decision's step.
    /// - Returns: the decision for `step + 1`.
    @discardableResult
    public mutating func observe(_ kind: ControllerStatistic, value: Double,
                                 step: Int64? = nil) throws(AepoFailure) -> ControllerDecision {
        try checkKind(kind)
        let name = kind.name
        if !value.isFinite {
            throw AepoFailure(.nonFinite, name, "\(name) is \(value); the statistic must be finite and >= 0")
        }
        if value < 0 {
            throw .invalid(name, "is \(value); the statistic must be finite and >= 0")
        }
        return try advance(with: value, step: step)
    }

    /// Records a statistic given as a sum over `count` tokens, as all-reduced across ranks;
    /// the statistic is `sum / count`.
    @discardableResult
    public mutating func observe(_ kind: ControllerStatistic, sum: Double, count: Int64,
                                 step: Int64? = nil) throws(AepoFailure) -> ControllerDecision {
        try checkKind(kind)
        let name = kind.name + "_sum"
        if !sum.isFinite {
            throw AepoFailure(.nonFinite, name, "\(name) is \(sum); the sum must be finite and >= 0")
        }
        if sum < 0 {
            throw .invalid(name, "is \(sum); the sum must be finite and >= 0")
        }
        if count < 1 {
            throw .invalid("count", "is \(count); the number of tokens behind \(name) must be >= 1")
        }
        return try advance(with: sum / Double(count), step: step)
    }

    /// Records the statistic from the loss metrics of the update (indexed by `LossMetric`):
    /// `controller.statistic` over the rows `statisticRows` picks, as the token-weighted
    /// mean of the per-role means. The exact statistic needs metrics that carry entropy (a
    /// loss call given the entropy input, or the fused head).
    @discardableResult
    public mutating func observe(metrics: UnsafeBufferPointer<Double>, step: Int64? = nil) throws(AepoFailure)
        -> ControllerDecision {
        let need = LossMetric.nTokensReg.rawValue + 1
        if metrics.count < need {
            throw .shape("metrics", "holds \(metrics.count) values; the controller reads the role metrics up to "
                + "index \(need - 1) (n_tokens_reg), so pass at least \(need)")
        }
        let (mainMean, regMean): (LossMetric, LossMetric) = statistic == .nll
            ? (.nllMain, .nllReg) : (.entropyMain, .entropyReg)
        var parts: [(LossMetric, LossMetric)] = [(mainMean, .nTokensMain)]
        if statisticRows == .all { parts.append((regMean, .nTokensReg)) }
        var sum = 0.0
        var count = 0.0
        for (m, n) in parts {
            let mean = metrics[m.rawValue]
            let tokens = metrics[n.rawValue]
            if !mean.isFinite {
                throw AepoFailure(.nonFinite, "metrics", "metrics[\(m.rawValue)] (\(m.name)) is \(mean)", index: m.rawValue)
            }
            if !(tokens >= 0 && tokens.isFinite && tokens == tokens.rounded()) {
                throw .invalid("metrics", "metrics[\(n.rawValue)] (\(n.name)) is \(tokens); a token count must be "
                    + "a whole number >= 0", index: n.rawValue)
            }
            sum += mean * tokens
            count += tokens
        }
        if count < 1 {
            throw .invalid("metrics", "the rows controller.statistic_rows picks (\"\(statisticRows.name)\") hold no "
                + "token in these metrics, so there is no statistic to record")
        }
        if count > 9e15 { throw .invalid("metrics", "the token count \(count) is too large") }
        return try observe(statistic, sum: sum, count: Int64(count), step: step)
    }

    private func checkKind(_ kind: ControllerStatistic) throws(AepoFailure) {
        guard kind == statistic else {
            let want = statistic.name
            throw .invalid(want, "missing; controller.statistic is \"\(statistic.name)\", so the controller needs "
                + "\(want) (or \(want)_sum with count), but got only \(kind.name)")
        }
    }

    private mutating func advance(with value: Double, step: Int64?) throws(AepoFailure) -> ControllerDecision {
        let k = step ?? state.step
        if k < 0 {
            throw .invalid("step", "is \(k); a step must be >= 0")
        }
        if k < state.step {
            throw .invalid("step", "is \(k), before the pending decision's step \(state.step); steps never go "
                + "backwards (restore a saved state to rewind)")
        }
        if k == Int64.max {
            throw .invalid("step", "is \(k); it must be < \(Int64.max) so that a next step exists")
        }
        var s = state
        let selfTuning = mode == .adaptive && tuning == .auto
        let ema = mode == .adaptive && !selfTuning ? config.adaptive.ema : 0
        s.statistic = value
        if s.observations == 0 || ema == 0 {
            s.smoothed = value
        } else {
            let m = ema * s.smoothed + (1 - ema) * value
            s.smoothed = m.isFinite ? m : value
        }
        if selfTuning { s.estimator.observe(value) }
        s.observations = s.observations == Int64.max ? Int64.max : s.observations + 1
        s.step = k + 1
        s.decision = Self.decide(&s, step: k + 1, initial: false, config: config, mode: mode,
                                 actuator: actuator, tuning: tuning, schedule: schedule)
        state = s
        history.append(s.decision)
        return s.decision
    }

    /// The rule itself: updates the level or actuator in `s` and returns the decision for
    /// `step` from `s.statistic` / `s.smoothed`.
    static func decide(_ s: inout ControllerState, step: Int64, initial: Bool, config c: ControllerConfig,
                       mode: ControllerMode, actuator: ControllerActuator, tuning: ControllerTuning,
                       schedule: TargetSchedule) -> ControllerDecision {
        let r = schedule.target(at: step)
        switch mode {
        case .bangBang:
            let y = s.statistic
            var reason: ControllerReason
            if y <= r - c.hysteresis {
                s.high = true
                reason = .atOrBelowTarget
            } else if y > r + c.hysteresis {
                s.high = false
                reason = .aboveTarget
            } else {
                reason = .hysteresisHold
            }
            if initial { reason = .initial }
            return ControllerDecision(step: step, temperature: s.high ? c.tHigh : c.tLow, kMax: c.kMax,
                                      halve: !s.high && c.halveAboveTarget, alpha: .nan, target: r,
                                      statistic: y, smoothed: s.smoothed, mode: mode, reason: reason)
        case .adaptive where tuning == .auto:
            return decideSelfTuning(&s, step: step, initial: initial, config: c, actuator: actuator,
                                    schedule: schedule)
        case .adaptive:
            let a = c.adaptive
            let e = r - s.smoothed
            // Both statistic and target are >= 0, so e and e - e_prev are finite except for
            // inputs near the largest double; a gain of 0 contributes exactly 0 even then.
            let p = a.kp == 0 ? 0 : a.kp * (e - s.error)
            let i = a.ki == 0 ? 0 : a.ki * e
            var raw = p + i
            if raw.isNaN { raw = 0 }
            var delta = raw
            var reason: ControllerReason = .tracking
            if delta > a.tRate {
                delta = a.tRate
                reason = .rateLimited
            } else if delta < -a.tRate {
                delta = -a.tRate
                reason = .rateLimited
            }
            let (lo, hi) = actuatorRange(c, actuator)
            var u = s.actuator + delta
            if u >= hi {
                u = hi
                if raw > 0 { reason = .saturatedHigh }
            } else if u <= lo {
                u = lo
                if raw < 0 { reason = .saturatedLow }
            }
            if initial { reason = .initial }
            s.actuator = u
            s.error = e
            return adaptiveDecision(u, s, step: step, target: r, reason: reason, config: c, actuator: actuator)
        }
    }

    /// The self-tuning rule: identify, derive the gains, apply the law, then the rate limit
    /// and the range. `s.estimator` has already seen the statistic of the last step.
    static func decideSelfTuning(_ s: inout ControllerState, step: Int64, initial: Bool, config c: ControllerConfig,
                                 actuator: ControllerActuator, schedule: TargetSchedule) -> ControllerDecision {
        let a = c.adaptive
        let r = schedule.target(at: step)
        let (lo, hi) = actuatorRange(c, actuator)
        var reason: ControllerReason = .initial
        var estimate = ControllerEstimate.none
        var u: Double
        if initial || s.estimator.observations == 0 {
            // Start safe: neutral (T = 1, or alpha 0) until there is something to learn from.
            u = min(max(0, lo), hi)
            if actuator == .temperature { u = min(max(1, a.tMin), a.tMax) }
            s.pushes = 0
            if !initial { reason = .tracking }
        } else {
            let design = SelfTuningLaw.design(s.estimator, tRate: a.tRate)
            let ahead = SelfTuningLaw.lookahead(design)
            let aim = schedule.target(at: step > Int64.max - ahead ? Int64.max : step + ahead)
            // The law works in the temperature-equivalent excursion x = T - 1.
            let offset = actuator == .temperature ? 1.0 : 0.0
            var raw = SelfTuningLaw.actuator(s.estimator, design, target: aim) + offset
            if !raw.isFinite { raw = s.actuator }
            let prev = s.actuator
            var v = raw
            reason = .tracking
            if v > prev + a.tRate {
                v = prev + a.tRate
                reason = .rateLimited
            } else if v < prev - a.tRate {
                v = prev - a.tRate
                reason = .rateLimited
            }
            // At a bound with the law asking for more and the error of the same sign: a push.
            // After a few pushes in a row (more than the delay) the target is out of reach of
            // the actuator's range, for now.
            let e = r - s.statistic
            var pushing = false
            if v >= hi {
                v = hi
                if raw > hi {
                    reason = .saturatedHigh
                    pushing = e > 0
                }
            } else if v <= lo {
                v = lo
                if raw < lo {
                    reason = .saturatedLow
                    pushing = e < 0
                }
            }
            s.pushes = pushing ? (s.pushes == Int64.max ? s.pushes : s.pushes + 1) : 0
            if s.pushes >= Int64(max(3, design.delay + 2)) { reason = .unreachable }
            u = v
            s.error = e
            let f = s.estimator.filters[s.estimator.selected]
            estimate = ControllerEstimate(
                gain: design.b, sameStep: design.c, delay: Int64(f.delay),
                processNoise: s.estimator.processVariance.squareRoot(),
                measurementNoise: s.estimator.measurementVariance.squareRoot(), horizon: design.horizon,
                feedback: 1 / design.denominator, confidence: design.confidence)
        }
        s.actuator = u
        s.estimator.apply(actuator == .temperature ? u - 1 : u)
        var d = adaptiveDecision(u, s, step: step, target: r, reason: reason, config: c, actuator: actuator)
        d.estimate = estimate
        return d
    }

    /// The decision for the adaptive actuator value u (a temperature, or the alpha
    /// actuator's temperature-equivalent excursion).
    static func adaptiveDecision(_ u: Double, _ s: ControllerState, step: Int64, target r: Double,
                                 reason: ControllerReason, config c: ControllerConfig,
                                 actuator: ControllerActuator) -> ControllerDecision {
        var temperature = u
        var alpha = Double.nan
        if actuator == .alpha {
            let (lo, hi) = actuatorRange(c, actuator)
            if u > 0 {
                temperature = c.tHigh
                alpha = c.adaptive.alphaMax * (u / hi)
            } else if u < 0 {
                temperature = c.tLow
                alpha = c.adaptive.alphaMax * (u / lo)
            } else {
                temperature = c.tHigh
                alpha = 0
            }
        }
        return ControllerDecision(step: step, temperature: temperature, kMax: c.kMax, halve: false,
                                  alpha: alpha, target: r, statistic: s.statistic, smoothed: s.smoothed,
                                  mode: .adaptive, reason: reason)
    }

    /// The range of the adaptive actuator: the temperature, or the temperature-equivalent
    /// excursion for the alpha actuator.
    static func actuatorRange(_ c: ControllerConfig, _ actuator: ControllerActuator) -> (Double, Double) {
        switch actuator {
        case .temperature: return (c.adaptive.tMin, c.adaptive.tMax)
        case .alpha: return (c.tLow - 1, c.tHigh - 1)
        }
    }
}

/// Everything the controller remembers between steps.
public struct ControllerState: Sendable, Equatable {
    /// The step the pending decision is for.
    public var step: Int64
    /// How many statistics have been observed.
    public var observations: Int64
    /// The last raw statistic (`initial_entropy` before any).
    public var statistic: Double
    /// The EMA of the statistic (adaptive mode; equal to `statistic` otherwise).
    public var smoothed: Double
    /// Bang-bang level: true for T_high.
    public var high: Bool
    /// Adaptive actuator: the temperature, or the temperature-equivalent excursion for the
    /// alpha actuator.
    public var actuator: Double
    /// The error of the last adaptive decision (target - smoothed).
    public var error: Double
    /// The pending decision.
    public var decision: ControllerDecision
    /// The self-tuning controller's identification of the loop (untouched in other modes).
    public var estimator: LoopEstimator
    /// Self-tuning: consecutive decisions at a bound with the law pushing beyond it.
    public var pushes: Int64

    public init(step: Int64, observations: Int64, statistic: Double, smoothed: Double, high: Bool,
                actuator: Double, error: Double, decision: ControllerDecision,
                estimator: LoopEstimator = LoopEstimator(), pushes: Int64 = 0) {
        self.step = step
        self.observations = observations
        self.statistic = statistic
        self.smoothed = smoothed
        self.high = high
        self.actuator = actuator
        self.error = error
        self.decision = decision
        self.estimator = estimator
        self.pushes = pushes
    }

    public static func == (a: ControllerState, b: ControllerState) -> Bool {
        a.step == b.step && a.observations == b.observations && a.statistic.bitPattern == b.statistic.bitPattern
            && a.smoothed.bitPattern == b.smoothed.bitPattern && a.high == b.high
            && a.actuator.bitPattern == b.actuator.bitPattern && a.error.bitPattern == b.error.bitPattern
            && a.decision == b.decision && a.estimator == b.estimator && a.pushes == b.pushes
    }
}
