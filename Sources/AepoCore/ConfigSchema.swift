/// The rules of the config document: one row per key, walked by the validator, by the JSON
/// codec (parse and emit) and by the docs generator. Adding a key means adding a field to
/// `Config.swift` and one row here.
public enum ConfigValue: Equatable, Sendable {
    case bool(Bool)
    case int(Int64)
    case real(Double)
    case string(String)
    case points([SchedulePoint])
}

/// Bounds of a real key: finite always, plus an optional lower and upper bound, and an
/// optional floor for positive values too small to use (a temperature whose 1/T overflows
/// float).
public struct RealBound: Sendable {
    public var lo: Double?
    public var loOpen = false
    public var hi: Double?
    public var hiOpen = false
    public var floor: Double?

    public static let any = RealBound()
    public static let positive = RealBound(lo: 0, loOpen: true)
    public static let nonNegative = RealBound(lo: 0)
    public static func closed(_ lo: Double, _ hi: Double) -> RealBound { RealBound(lo: lo, hi: hi) }
    public static func openClosed(_ lo: Double, _ hi: Double) -> RealBound { RealBound(lo: lo, loOpen: true, hi: hi) }
    public static func closedOpen(_ lo: Double, _ hi: Double) -> RealBound { RealBound(lo: lo, hi: hi, hiOpen: true) }
    public static func greaterThan(_ lo: Double) -> RealBound { RealBound(lo: lo, loOpen: true) }
    /// A temperature: > 0, and at least `ConfigSchema.minimumTemperature`.
    public static let temperature = RealBound(lo: 0, loOpen: true, floor: ConfigSchema.minimumTemperature)

    public func contains(_ x: Double) -> Bool {
        guard x.isFinite else { return false }
        if let lo { if loOpen ? !(x > lo) : !(x >= lo) { return false } }
        if let hi { if hiOpen ? !(x < hi) : !(x <= hi) { return false } }
        if let floor, x < floor { return false }
        return true
    }

    public var description: String {
        switch (lo, hi) {
        case (nil, nil): return "a finite real"
        case let (lo?, nil): return "a real \(loOpen ? ">" : ">=") \(boundText(lo))"
        case let (nil, hi?): return "a real \(hiOpen ? "<" : "<=") \(boundText(hi))"
        case let (lo?, hi?):
            return "a real in \(loOpen ? "(" : "[")\(boundText(lo)), \(boundText(hi))\(hiOpen ? ")" : "]")"
        }
    }
}

public struct ConfigField {
    public enum Kind {
        case bool
        case int(min: Int64, max: Int64)
        case real(RealBound)
        case name([String])
        case points
    }

    public let path: String
    public let kind: Kind
    /// Extra advice appended to range errors (for temperatures: where greedy lives).
    public let hint: String?
    /// One line on what the key does (docs/CONFIG.md is generated from it).
    public let doc: String
    public let get: (Config) -> ConfigValue
    public let set: (inout Config, ConfigValue) -> Void

    /// What a value of this key must be, as used in error messages and docs.
    public var expectation: String {
        switch kind {
        case .bool: return "a boolean"
        case let .int(lo, hi): return hi == Int64.max ? "an integer >= \(lo)" : "an integer in [\(lo), \(hi)]"
        case let .real(b): return b.description
        case let .name(names): return "one of " + names.map { "\"\($0)\"" }.joined(separator: ", ")
        case .points: return "an array of {\"step\": integer >= 0, \"target\": real >= 0} objects"
        }
    }

    /// Checks a value of the right type against this key's bounds.
    public func check(_ value: ConfigValue) throws(AepoFailure) {
        var ok = true
        switch (kind, value) {
        case (.bool, .bool): break
        case let (.int(lo, hi), .int(v)): ok = v >= lo && v <= hi
        case let (.real(b), .real(v)): ok = b.contains(v)
        case let (.name(names), .string(s)): ok = names.contains(s)
        case let (.points, .points(pts)):
            for (i, p) in pts.enumerated() {
                if p.step < 0 {
                    throw .config("\(path)[\(i)].step", "expected an integer >= 0, got \(p.step)")
                }
                if !RealBound.nonNegative.contains(p.target) {
                    throw .config("\(path)[\(i)].target", "expected a real >= 0, got \(formatReal(p.target))")
                }
                if i > 0 && p.step <= pts[i - 1].step {
                    throw .config("\(path)[\(i)].step",
                                  "steps must be strictly increasing, but \(p.step) follows \(pts[i - 1].step)")
                }
            }
        default:
            throw .config(path, "expected \(expectation)")
        }
        if !ok {
            let got: String
            switch value {
            case let .string(s): got = "unknown value \"\(s)\""
            case let .int(v): got = "\(v) is out of range"
            case let .real(v):
                if case let .real(b) = kind, let floor = b.floor, v > 0, v < floor {
                    got = "\(formatReal(v)) is too small (1/T overflows float; the smallest accepted is \(formatReal(floor)))"
                } else {
                    got = "\(formatReal(v)) is out of range"
                }
            default: got = "bad value"
            }
            throw .config(path, "\(got); expected \(expectation)" + (hint.map { " (\($0))" } ?? ""))
        }
    }
}

public enum ConfigSchema {
    public static let maxThreads: Int64 = 256
    static let temperatureHint = "a temperature must be > 0; for greedy decoding set sampler.greedy = true"
    /// The smallest temperature any key or call accepts: below it 1/T overflows Float.
    public static let minimumTemperature = 1e-30

    /// Every key of the document except `schema_version`, in no particular order.
    public static var fields: [ConfigField] {
        [
            real("loss.clip_cov_lb", \.loss.clipCovLb, .any,
                 "lower end of the covariance band Clip-Cov draws its clipped tokens from"),
            real("loss.clip_cov_ratio", \.loss.clipCovRatio, .openClosed(0, 1),
                 "share of tokens Clip-Cov detaches from the gradient"),
            real("loss.clip_cov_ub", \.loss.clipCovUb, .any,
                 "upper end of Clip-Cov's covariance band"),
            real("loss.clip_ratio_c", \.loss.clipRatioC, .greaterThan(1),
                 "dual-clip bound: for A < 0 the clipped loss is capped at −c·A"),
            real("loss.clip_ratio_high", \.loss.clipRatioHigh, .nonNegative,
                 "PPO clip range above 1: the ratio is clipped to 1 + clip_ratio_high"),
            real("loss.clip_ratio_low", \.loss.clipRatioLow, .closed(0, 1),
                 "PPO clip range below 1: the ratio is clipped to 1 − clip_ratio_low"),
            real("loss.entropy_coeff", \.loss.entropyCoeff, .any,
                 "weight of the entropy bonus, subtracted from the loss (needs the entropy input when ≠ 0)"),
            real("loss.kl_cov_ratio", \.loss.klCovRatio, .openClosed(0, 1),
                 "share of tokens KL-Cov penalises"),
            real("loss.kl_loss_coef", \.loss.klLossCoef, .nonNegative,
                 "weight of the KL penalty against ref_logp (0: off, ref_logp not needed)"),
            name("loss.kl_loss_type", \.loss.klLossType, KLType.self,
                 "KL estimator of the penalty; a trailing + uses the straight-through gradient"),
            name("loss.loss_agg_mode", \.loss.lossAggMode, AggregationMode.self,
                 "how per-token losses are aggregated over the batch (docs/LOSS.md)"),
            real("loss.loss_scale_factor", \.loss.lossScaleFactor, .nonNegative,
                 "the token budget K of seq-mean-token-sum-norm; 0 means unset"),
            name("loss.policy_loss", \.loss.policyLoss, PolicyLossMode.self,
                 "the per-token policy loss"),
            real("loss.ppo_kl_coef", \.loss.ppoKlCoef, .nonNegative,
                 "weight of KL-Cov's penalty on its selected tokens"),
            int("loss.seed", \.loss.seed, 0, .max,
                "random key of Clip-Cov's token pick (with the call's step)"),
            int("loss.threads", \.loss.threads, 1, maxThreads,
                "threads the loss uses"),

            real("advantage.epsilon", \.advantage.epsilon, .openClosed(0, 1),
                 "added to the group std before dividing"),
            name("advantage.estimator", \.advantage.estimator, AdvantageEstimator.self,
                 "how rewards become advantages"),
            bool("advantage.norm_adv_by_std_in_grpo", \.advantage.normAdvByStdInGrpo,
                 "divide GRPO advantages by the group std (false: Dr. GRPO)"),
            name("advantage.rloo_singleton", \.advantage.rlooSingleton, RlooSingleton.self,
                 "the RLOO advantage of a group of one: zero, or its own score"),

            real("regularizer.alpha", \.regularizer.alpha, .nonNegative,
                 "weight of the regulariser term under combine weighted"),
            name("regularizer.combine", \.regularizer.combine, RegularizerCombine.self,
                 "replace: regulariser rows replace main rows in the batch; weighted: a separate term with weight alpha"),
            real("regularizer.threshold", \.regularizer.threshold, .any,
                 "a regulariser rollout counts as positive when its advantage exceeds this"),

            bool("controller.halve_above_target", \.controller.halveAboveTarget,
                 "bang-bang: halve the regulariser row cap while the statistic is above the target"),
            int("controller.history", \.controller.history, 0, 1 << 20,
                "decisions kept for aepo_controller_history"),
            real("controller.hysteresis", \.controller.hysteresis, .nonNegative,
                 "bang-bang: half-width of the band around the target inside which T holds"),
            real("controller.initial_entropy", \.controller.initialEntropy, .nonNegative,
                 "the statistic assumed before the first observation"),
            int("controller.k_max", \.controller.kMax, 0, .max,
                "cap on regulariser rows per step"),
            name("controller.mode", \.controller.mode, ControllerMode.self,
                 "bang_bang: the reference rule; adaptive: continuous control of T (or alpha)"),
            name("controller.statistic", \.controller.statistic, ControllerStatistic.self,
                 "what the controller is fed: nll (sampled-token NLL) or entropy (exact token entropy)"),
            name("controller.statistic_rows", \.controller.statisticRows, StatisticRows.self,
                 "rows the loss metrics feed the controller: all, or main (no same-step feedback)"),
            real("controller.t_high", \.controller.tHigh, .temperature, hint: temperatureHint,
                 "bang-bang temperature below the target; the alpha actuator's draw temperature"),
            real("controller.t_low", \.controller.tLow, .temperature, hint: temperatureHint,
                 "bang-bang temperature above the target"),
            real("controller.target", \.controller.target, .nonNegative,
                 "entropy target H*, nats per token (the schedule's start)"),
            real("controller.schedule.end_target", \.controller.schedule.endTarget, .nonNegative,
                 "target at the end of a linear or cosine schedule"),
            int("controller.schedule.end_step", \.controller.schedule.endStep, 0, .max,
                "step at which a linear or cosine schedule reaches end_target"),
            name("controller.schedule.kind", \.controller.schedule.kind, TargetSchedule.Kind.self,
                 "how the target moves with the step"),
            ConfigField(path: "controller.schedule.points", kind: .points, hint: nil, doc: "the {step, target} points of a piecewise schedule",
                        get: { .points($0.controller.schedule.points) },
                        set: { c, v in if case let .points(p) = v { c.controller.schedule.points = p } }),
            int("controller.schedule.start_step", \.controller.schedule.startStep, 0, .max,
                "step at which a linear or cosine schedule leaves target"),
            name("controller.adaptive.actuator", \.controller.adaptive.actuator, ControllerActuator.self,
                 "what the adaptive controller moves: the temperature, or alpha at fixed draw temperatures"),
            real("controller.adaptive.alpha_max", \.controller.adaptive.alphaMax, .positive,
                 "largest alpha of the alpha actuator"),
            real("controller.adaptive.ema", \.controller.adaptive.ema, .closedOpen(0, 1),
                 "fixed tuning: smoothing of the statistic (0: none)"),
            real("controller.adaptive.ki", \.controller.adaptive.ki, .nonNegative,
                 "fixed tuning: integral gain"),
            real("controller.adaptive.kp", \.controller.adaptive.kp, .nonNegative,
                 "fixed tuning: proportional gain"),
            real("controller.adaptive.t_max", \.controller.adaptive.tMax, .temperature, hint: temperatureHint,
                 "largest temperature the adaptive controller sets"),
            real("controller.adaptive.t_min", \.controller.adaptive.tMin, .temperature, hint: temperatureHint,
                 "smallest temperature the adaptive controller sets"),
            real("controller.adaptive.t_rate", \.controller.adaptive.tRate, .positive,
                 "largest change of the actuator per step"),
            name("controller.adaptive.tuning", \.controller.adaptive.tuning, ControllerTuning.self,
                 "auto: self-tuning (docs/CONTROLLER.md); fixed: the PI with kp, ki and ema"),

            bool("sampler.greedy", \.sampler.greedy,
                 "argmax decoding (ignores temperature and truncation)"),
            real("sampler.min_p", \.sampler.minP, .closedOpen(0, 1),
                 "min-p truncation: drop tokens below min_p × the top probability (0: off)"),
            int("sampler.seed", \.sampler.seed, 0, .max,
                "random key of the sampler's draws"),
            real("sampler.temperature", \.sampler.temperature, .temperature, hint: temperatureHint,
                 "sampling temperature (a call may override it)"),
            int("sampler.threads", \.sampler.threads, 1, maxThreads,
                "threads the sampler uses"),
            int("sampler.top_k", \.sampler.topK, 0, .max,
                "top-k truncation (0: off)"),
            real("sampler.top_p", \.sampler.topP, .openClosed(0, 1),
                 "nucleus truncation (1: off); truncating biases the NLL statistic"),

            int("fused.chunk_n", \.fused.chunkN, 1, 1 << 24,
                "rows per block of the fused head"),
            int("fused.chunk_v", \.fused.chunkV, 1, 1 << 30,
                "vocabulary columns per block of the fused head"),
            real("fused.temperature", \.fused.temperature, .temperature, hint: temperatureHint,
                 "policy temperature the fused head divides the logits by"),
            int("fused.threads", \.fused.threads, 1, maxThreads,
                "threads of the fused head's own loops"),
        ]
    }

    /// The rules `checkCrossField` enforces, in words, keyed by the path its error names
    /// (docs/CONFIG.md is generated from them; a test breaks each one and checks the path).
    public static let crossFieldRules: [(key: String, rule: String)] = [
        ("loss.loss_scale_factor", "must be > 0 when loss.loss_agg_mode is seq-mean-token-sum-norm"),
        ("loss.loss_agg_mode", "must be seq-mean-token-mean when loss.policy_loss is gspo"),
        ("loss.clip_cov_ub", "must be greater than loss.clip_cov_lb"),
        ("controller.adaptive.t_max", "must be greater than controller.adaptive.t_min"),
        ("controller.t_high", "must be > 1 when controller.mode is adaptive with actuator alpha"),
        ("controller.t_low", "must be < 1 when controller.mode is adaptive with actuator alpha"),
        ("controller.schedule.end_step", "must be >= controller.schedule.start_step for a linear or cosine schedule"),
        ("controller.schedule.points", "needs at least one point when controller.schedule.kind is piecewise"),
    ]

    /// Whole-document rules that involve more than one key. Runs after every key passed
    /// its own check.
    public static func checkCrossField(_ c: Config) throws(AepoFailure) {
        if c.loss.lossAggMode == "seq-mean-token-sum-norm" && !(c.loss.lossScaleFactor > 0) {
            throw .config("loss.loss_scale_factor",
                          "loss_agg_mode \"seq-mean-token-sum-norm\" needs loss_scale_factor > 0 (the token budget K in sum/(G*K)); 0 means unset")
        }
        if c.loss.policyLoss == "gspo" && c.loss.lossAggMode != "seq-mean-token-mean" {
            throw .config("loss.loss_agg_mode",
                          "policy_loss \"gspo\" needs \"seq-mean-token-mean\" (its ratio is a per-sequence mean, and verl aggregates it that way whatever the setting), got \"\(c.loss.lossAggMode)\"; set loss.loss_agg_mode to \"seq-mean-token-mean\"")
        }
        if !(c.loss.clipCovLb < c.loss.clipCovUb) {
            throw .config("loss.clip_cov_ub", "must be greater than loss.clip_cov_lb (\(formatReal(c.loss.clipCovLb))), got \(formatReal(c.loss.clipCovUb))")
        }
        let a = c.controller.adaptive
        if !(a.tMin < a.tMax) {
            throw .config("controller.adaptive.t_max", "must be greater than controller.adaptive.t_min (\(formatReal(a.tMin))), got \(formatReal(a.tMax))")
        }
        if c.controller.mode == "adaptive" && a.actuator == "alpha" {
            try checkAlphaActuator(c.controller)
        }
        let s = c.controller.schedule
        if (s.kind == "linear" || s.kind == "cosine") && s.endStep < s.startStep {
            throw .config("controller.schedule.end_step", "must be >= controller.schedule.start_step (\(s.startStep)) for a \(s.kind) schedule, got \(s.endStep)")
        }
        if s.kind == "piecewise" && s.points.isEmpty {
            throw .config("controller.schedule.points", "a piecewise schedule needs at least one {\"step\", \"target\"} point")
        }
    }

    /// The alpha actuator raises entropy by drawing at t_high and lowers it at t_low, so it
    /// needs t_low < 1 < t_high (a temperature of 1 leaves entropy unchanged).
    public static func checkAlphaActuator(_ c: ControllerConfig) throws(AepoFailure) {
        if !(c.tHigh > 1) {
            throw .config("controller.t_high", "must be > 1 for the adaptive alpha actuator, which raises entropy by drawing at t_high; got \(formatReal(c.tHigh))")
        }
        if !(c.tLow < 1) {
            throw .config("controller.t_low", "must be < 1 for the adaptive alpha actuator, which lowers entropy by drawing at t_low; got \(formatReal(c.tLow))")
        }
    }

    /// Checks every key and the cross-field rules of an assembled config.
    public static func validate(_ c: Config) throws(AepoFailure) {
        for f in fields { try f.check(f.get(c)) }
        try checkCrossField(c)
    }

    static func real(_ path: String, _ kp: WritableKeyPath<Config, Double>, _ bound: RealBound,
                     hint: String? = nil, _ doc: String) -> ConfigField {
        ConfigField(path: path, kind: .real(bound), hint: hint, doc: doc, get: { .real($0[keyPath: kp]) },
                    set: { c, v in if case let .real(x) = v { c[keyPath: kp] = x } })
    }
    static func int(_ path: String, _ kp: WritableKeyPath<Config, Int64>, _ lo: Int64, _ hi: Int64,
                    _ doc: String) -> ConfigField {
        ConfigField(path: path, kind: .int(min: lo, max: hi), hint: nil, doc: doc, get: { .int($0[keyPath: kp]) },
                    set: { c, v in if case let .int(x) = v { c[keyPath: kp] = x } })
    }
    static func bool(_ path: String, _ kp: WritableKeyPath<Config, Bool>, _ doc: String) -> ConfigField {
        ConfigField(path: path, kind: .bool, hint: nil, doc: doc, get: { .bool($0[keyPath: kp]) },
                    set: { c, v in if case let .bool(x) = v { c[keyPath: kp] = x } })
    }
    /// A choice key: it accepts exactly the spellings of `choice`.
    static func name<C: ConfigChoice>(_ path: String, _ kp: WritableKeyPath<Config, String>, _ choice: C.Type,
                                      _ doc: String) -> ConfigField {
        ConfigField(path: path, kind: .name(C.names), hint: nil, doc: doc, get: { .string($0[keyPath: kp]) },
                    set: { c, v in if case let .string(x) = v { c[keyPath: kp] = C.canonical(x) } })
    }
}

/// Shortest decimal text that reads back as the same Double ("0.2", "1e-06", "3.0").
public func formatReal(_ x: Double) -> String { x.description }

/// A bound as people write it in a message: "0", "1", "0.5".
func boundText(_ x: Double) -> String {
    if x.isFinite && x == x.rounded() && abs(x) < 1e15 { return String(Int64(x)) }
    return formatReal(x)
}
