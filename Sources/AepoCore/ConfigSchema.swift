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
    public static let policyLosses = ["vanilla", "gspo", "cispo", "gpg", "reinforce", "clip_cov", "kl_cov"]
    public static let aggModes = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean",
                                  "seq-mean-token-sum-norm"]
    public static let klTypes = ["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3",
                                 "kl+", "k1+", "abs+", "mse+", "k2+", "low_var_kl+", "k3+"]
    public static let estimators = ["grpo", "rloo", "reinforce_plus_plus_baseline", "grpo_passk"]
    public static let maxThreads: Int64 = 256
    static let temperatureHint = "a temperature must be > 0; for greedy decoding set sampler.greedy = true"
    /// The smallest temperature any key or call accepts: below it 1/T overflows Float.
    public static let minimumTemperature = 1e-30

    /// Every key of the document except `schema_version`, in no particular order.
    public static var fields: [ConfigField] {
        [
            real("loss.clip_cov_lb", \.loss.clipCovLb, .any),
            real("loss.clip_cov_ratio", \.loss.clipCovRatio, .openClosed(0, 1)),
            real("loss.clip_cov_ub", \.loss.clipCovUb, .any),
            real("loss.clip_ratio_c", \.loss.clipRatioC, .greaterThan(1)),
            real("loss.clip_ratio_high", \.loss.clipRatioHigh, .nonNegative),
            real("loss.clip_ratio_low", \.loss.clipRatioLow, .closed(0, 1)),
            real("loss.entropy_coeff", \.loss.entropyCoeff, .any),
            real("loss.kl_cov_ratio", \.loss.klCovRatio, .openClosed(0, 1)),
            real("loss.kl_loss_coef", \.loss.klLossCoef, .nonNegative),
            name("loss.kl_loss_type", \.loss.klLossType, klTypes),
            name("loss.loss_agg_mode", \.loss.lossAggMode, aggModes),
            real("loss.loss_scale_factor", \.loss.lossScaleFactor, .nonNegative),
            name("loss.policy_loss", \.loss.policyLoss, policyLosses),
            real("loss.ppo_kl_coef", \.loss.ppoKlCoef, .nonNegative),
            int("loss.seed", \.loss.seed, 0, .max),
            int("loss.threads", \.loss.threads, 1, maxThreads),

            real("advantage.epsilon", \.advantage.epsilon, .openClosed(0, 1)),
            name("advantage.estimator", \.advantage.estimator, estimators),
            bool("advantage.norm_adv_by_std_in_grpo", \.advantage.normAdvByStdInGrpo),
            name("advantage.rloo_singleton", \.advantage.rlooSingleton, ["zero", "score"]),

            real("regularizer.alpha", \.regularizer.alpha, .nonNegative),
            name("regularizer.combine", \.regularizer.combine, ["replace", "weighted"]),
            real("regularizer.threshold", \.regularizer.threshold, .any),

            bool("controller.halve_above_target", \.controller.halveAboveTarget),
            int("controller.history", \.controller.history, 0, 1 << 20),
            real("controller.hysteresis", \.controller.hysteresis, .nonNegative),
            real("controller.initial_entropy", \.controller.initialEntropy, .nonNegative),
            int("controller.k_max", \.controller.kMax, 0, .max),
            name("controller.mode", \.controller.mode, ["bang_bang", "adaptive"]),
            name("controller.statistic", \.controller.statistic, ["nll", "exact"]),
            name("controller.statistic_rows", \.controller.statisticRows, ["all", "main"]),
            real("controller.t_high", \.controller.tHigh, .temperature, hint: temperatureHint),
            real("controller.t_low", \.controller.tLow, .temperature, hint: temperatureHint),
            real("controller.target", \.controller.target, .nonNegative),
            real("controller.schedule.end_target", \.controller.schedule.endTarget, .nonNegative),
            int("controller.schedule.end_step", \.controller.schedule.endStep, 0, .max),
            name("controller.schedule.kind", \.controller.schedule.kind, ["constant", "linear", "cosine", "piecewise"]),
            ConfigField(path: "controller.schedule.points", kind: .points, hint: nil,
                        get: { .points($0.controller.schedule.points) },
                        set: { c, v in if case let .points(p) = v { c.controller.schedule.points = p } }),
            int("controller.schedule.start_step", \.controller.schedule.startStep, 0, .max),
            name("controller.adaptive.actuator", \.controller.adaptive.actuator, ["temperature", "alpha"]),
            real("controller.adaptive.alpha_max", \.controller.adaptive.alphaMax, .positive),
            real("controller.adaptive.ema", \.controller.adaptive.ema, .closedOpen(0, 1)),
            real("controller.adaptive.ki", \.controller.adaptive.ki, .nonNegative),
            real("controller.adaptive.kp", \.controller.adaptive.kp, .nonNegative),
            real("controller.adaptive.t_max", \.controller.adaptive.tMax, .temperature, hint: temperatureHint),
            real("controller.adaptive.t_min", \.controller.adaptive.tMin, .temperature, hint: temperatureHint),
            real("controller.adaptive.t_rate", \.controller.adaptive.tRate, .positive),
            name("controller.adaptive.tuning", \.controller.adaptive.tuning, ["auto", "fixed"]),

            bool("sampler.greedy", \.sampler.greedy),
            real("sampler.min_p", \.sampler.minP, .closedOpen(0, 1)),
            int("sampler.seed", \.sampler.seed, 0, .max),
            real("sampler.temperature", \.sampler.temperature, .temperature, hint: temperatureHint),
            int("sampler.threads", \.sampler.threads, 1, maxThreads),
            int("sampler.top_k", \.sampler.topK, 0, .max),
            real("sampler.top_p", \.sampler.topP, .openClosed(0, 1)),

            int("fused.chunk_n", \.fused.chunkN, 1, 1 << 24),
            int("fused.chunk_v", \.fused.chunkV, 1, 1 << 30),
            real("fused.temperature", \.fused.temperature, .temperature, hint: temperatureHint),
            int("fused.threads", \.fused.threads, 1, maxThreads),
        ]
    }

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
                     hint: String? = nil) -> ConfigField {
        ConfigField(path: path, kind: .real(bound), hint: hint, get: { .real($0[keyPath: kp]) },
                    set: { c, v in if case let .real(x) = v { c[keyPath: kp] = x } })
    }
    static func int(_ path: String, _ kp: WritableKeyPath<Config, Int64>, _ lo: Int64, _ hi: Int64) -> ConfigField {
        ConfigField(path: path, kind: .int(min: lo, max: hi), hint: nil, get: { .int($0[keyPath: kp]) },
                    set: { c, v in if case let .int(x) = v { c[keyPath: kp] = x } })
    }
    static func bool(_ path: String, _ kp: WritableKeyPath<Config, Bool>) -> ConfigField {
        ConfigField(path: path, kind: .bool, hint: nil, get: { .bool($0[keyPath: kp]) },
                    set: { c, v in if case let .bool(x) = v { c[keyPath: kp] = x } })
    }
    static func name(_ path: String, _ kp: WritableKeyPath<Config, String>, _ names: [String]) -> ConfigField {
        ConfigField(path: path, kind: .name(names), hint: nil, get: { .string($0[keyPath: kp]) },
                    set: { c, v in if case let .string(x) = v { c[keyPath: kp] = x } })
    }
}

/// Shortest decimal text that reads back as the same Double ("0.2", "1e-06", "3.0").
public func formatReal(_ x: Double) -> String { x.description }

/// A bound as people write it in a message: "0", "1", "0.5".
func boundText(_ x: Double) -> String {
    if x.isFinite && x == x.rounded() && abs(x) < 1e15 { return String(Int64(x)) }
    return formatReal(x)
}
