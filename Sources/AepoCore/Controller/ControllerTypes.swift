/// The names and codes the entropy controller shares with the C API. Raw values are the
/// pinned `AEPO_CONTROLLER_*` codes of `include/aepo.h`: they are never renumbered, and
/// new cases are only ever appended.

/// A closed set of cases with one spelling each (the config's, or the C name function's).
public protocol NamedCases: CaseIterable, ConfigChoice {
    var name: String { get }
}

extension NamedCases {
    /// Every case under its one name, in declaration order.
    public static var spellings: [(name: String, value: Self)] { allCases.map { ($0.name, $0) } }

    /// The case spelled `name` (its name or an alias), if any.
    public init?(name: String) {
        guard let c = Self.spellings.first(where: { $0.name == name })?.value else { return nil }
        self = c
    }
}

/// Which control rule runs (`controller.mode`).
public enum ControllerMode: Int32, Sendable, NamedCases {
    /// The reference rule: T_high at or below the target, T_low with halving above it.
    case bangBang = 0
    /// A PI controller that moves the temperature (or alpha) continuously.
    case adaptive = 1

    /// The config spelling ("bang_bang", "adaptive").
    public var name: String {
        switch self {
        case .bangBang: return "bang_bang"
        case .adaptive: return "adaptive"
        }
    }
}

/// Which entropy statistic drives the controller (`controller.statistic`).
public enum ControllerStatistic: Int32, Sendable, NamedCases {
    /// The sampled-token negative log-likelihood, the reference code's statistic.
    case nll = 0
    /// The exact per-token entropy of the full distribution.
    case entropy = 1

    /// The config spelling, which is also how a caller passes the statistic and the
    /// argument errors name ("nll", "entropy").
    public var name: String {
        switch self {
        case .nll: return "nll"
        case .entropy: return "entropy"
        }
    }

    /// "exact" is the spelling of `entropy` before version 0.2; configs and state blobs
    /// that use it still load.
    public static var spellings: [(name: String, value: Self)] {
        [("nll", .nll), ("entropy", .entropy), ("exact", .entropy)]
    }
}

/// What the adaptive controller moves (`controller.adaptive.actuator`).
public enum ControllerActuator: Sendable, NamedCases {
    /// The regulariser temperature, continuously within [t_min, t_max].
    case temperature
    /// The regulariser weight alpha within [0, alpha_max]; the temperature is t_high while
    /// raising entropy and t_low while lowering it.
    case alpha

    public var name: String {
        switch self {
        case .temperature: return "temperature"
        case .alpha: return "alpha"
        }
    }
}

/// Which rows of the update batch the fed statistic covers (`controller.statistic_rows`).
public enum StatisticRows: Sendable, NamedCases {
    /// Main and regulariser rows together: the reference code's statistic, which the
    /// regulariser's own temperature moves within the same step.
    case all
    /// The main (on-policy) rows only: free of the regulariser's same-step response.
    case main

    public var name: String {
        switch self {
        case .all: return "all"
        case .main: return "main"
        }
    }
}

/// How the adaptive controller gets its gains (`controller.adaptive.tuning`).
public enum ControllerTuning: Sendable, NamedCases {
    /// Identifies the loop online and derives the gains from it (the default).
    case auto
    /// The PI controller with `kp`, `ki` and `ema` as configured.
    case fixed

    public var name: String {
        switch self {
        case .auto: return "auto"
        case .fixed: return "fixed"
        }
    }
}

/// Why a decision came out the way it did.
public enum ControllerReason: Int32, Sendable, NamedCases {
    /// No statistic has been observed yet; the decision comes from `initial_entropy`.
    case initial = 0
    /// Bang-bang: the statistic was at or below the target, so T_high and the full k_max.
    case atOrBelowTarget = 1
    /// Bang-bang: the statistic was above the target, so T_low (halved when configured).
    case aboveTarget = 2
    /// Bang-bang: the statistic was inside the hysteresis band; the previous level holds.
    case hysteresisHold = 3
    /// Adaptive: the actuator moved freely.
    case tracking = 4
    /// Adaptive: the actuator sits at its upper bound (t_max, or alpha_max at t_high).
    case saturatedHigh = 5
    /// Adaptive: the actuator sits at its lower bound (t_min, or alpha_max at t_low).
    case saturatedLow = 6
    /// Adaptive: the temperature change was cut to `t_rate`.
    case rateLimited = 7
    /// Adaptive: the actuator sits at a bound and the error has kept its sign there, so the
    /// target cannot be reached with the configured range; nothing winds up meanwhile.
    case unreachable = 8

    public var name: String {
        switch self {
        case .initial: return "initial"
        case .atOrBelowTarget: return "at_or_below_target"
        case .aboveTarget: return "above_target"
        case .hysteresisHold: return "hysteresis_hold"
        case .tracking: return "tracking"
        case .saturatedHigh: return "saturated_high"
        case .saturatedLow: return "saturated_low"
        case .rateLimited: return "rate_limited"
        case .unreachable: return "unreachable"
        }
    }
}

/// What the self-tuning controller has identified and derived, for logging. Every field is
/// NaN (and `delay` -1) for decisions not made by `adaptive` with `tuning = "auto"`, and
/// before its first observation.
public struct ControllerEstimate: Sendable, CustomStringConvertible {
    /// b: the statistic's change per step per unit of T - 1 (or of the alpha actuator's
    /// temperature-equivalent excursion), as used by the law (floored at 1e-3).
    public var gain: Double
    /// c: the statistic's same-step response per unit of T - 1, as used by the law. With a
    /// delay of 0 it may come out as c - b of a loop with a delay of 1, which predicts the
    /// same statistic (the two cannot be told apart), so it can be negative.
    public var sameStep: Double
    /// The identified delay in steps between a decision and its effect on entropy.
    public var delay: Int64
    /// The estimated process (entropy) and measurement noise, standard deviations in nats.
    public var processNoise: Double
    public var measurementNoise: Double
    /// The design: extra steps m beyond the delay, and the proportional gain 1/(b(m+1)+c)
    /// in temperature per nat of predicted error.
    public var horizon: Double
    public var feedback: Double
    /// b / (b + 2 σ_b), in (0, 1]: 1 is a sharp estimate.
    public var confidence: Double

    public init(gain: Double, sameStep: Double, delay: Int64, processNoise: Double, measurementNoise: Double,
                horizon: Double, feedback: Double, confidence: Double) {
        self.gain = gain
        self.sameStep = sameStep
        self.delay = delay
        self.processNoise = processNoise
        self.measurementNoise = measurementNoise
        self.horizon = horizon
        self.feedback = feedback
        self.confidence = confidence
    }

    /// No estimate.
    public static let none = ControllerEstimate(gain: .nan, sameStep: .nan, delay: -1, processNoise: .nan,
                                                measurementNoise: .nan, horizon: .nan, feedback: .nan,
                                                confidence: .nan)

    var reals: [Double] { [gain, sameStep, processNoise, measurementNoise, horizon, feedback, confidence] }

    public var description: String {
        delay < 0 ? "none" : "b=\(gain) c=\(sameStep) delay=\(delay) sw=\(processNoise) sv=\(measurementNoise) "
            + "m=\(horizon) gain=\(feedback) confidence=\(confidence)"
    }
}

extension ControllerEstimate: Equatable {
    public static func == (a: ControllerEstimate, b: ControllerEstimate) -> Bool {
        a.delay == b.delay && bitEqual(a.reals, b.reals)
    }
}

/// What the trainer should do in one training step.
///
/// Equality is bitwise on every real, so two decisions compare equal exactly when they
/// are bit-identical (and a NaN `alpha` equals a NaN `alpha`).
public struct ControllerDecision: Sendable, CustomStringConvertible {
    /// The training step this decision is for.
    public var step: Int64
    /// The temperature to draw the regulariser rollouts at.
    public var temperature: Double
    /// The cap on regulariser samples (select_regularizer's k_max).
    public var kMax: Int64
    /// Keep only the floor-half of the selected positives.
    public var halve: Bool
    /// The regulariser weight for `combine = "weighted"` when the controller drives it
    /// (adaptive mode, alpha actuator); NaN otherwise, meaning "use regularizer.alpha".
    public var alpha: Double
    /// The entropy target of `step` under the schedule.
    public var target: Double
    /// The raw statistic the decision was made from (`initial_entropy` before any).
    public var statistic: Double
    /// The statistic after EMA smoothing (adaptive mode); equal to `statistic` otherwise.
    public var smoothed: Double
    public var mode: ControllerMode
    public var reason: ControllerReason
    /// The self-tuning controller's identified loop and gains (`.none` otherwise).
    public var estimate: ControllerEstimate

    public init(step: Int64, temperature: Double, kMax: Int64, halve: Bool, alpha: Double,
                target: Double, statistic: Double, smoothed: Double, mode: ControllerMode,
                reason: ControllerReason, estimate: ControllerEstimate = .none) {
        self.step = step
        self.temperature = temperature
        self.kMax = kMax
        self.halve = halve
        self.alpha = alpha
        self.target = target
        self.statistic = statistic
        self.smoothed = smoothed
        self.mode = mode
        self.reason = reason
        self.estimate = estimate
    }

    public var description: String {
        "step \(step): T=\(temperature) k_max=\(kMax) halve=\(halve) alpha=\(alpha) target=\(target) "
            + "statistic=\(statistic) smoothed=\(smoothed) \(mode.name)/\(reason.name) estimate: \(estimate)"
    }
}

extension ControllerDecision: Equatable {
    public static func == (a: ControllerDecision, b: ControllerDecision) -> Bool {
        a.step == b.step && a.temperature.bitPattern == b.temperature.bitPattern && a.kMax == b.kMax
            && a.halve == b.halve && a.alpha.bitPattern == b.alpha.bitPattern
            && a.target.bitPattern == b.target.bitPattern && a.statistic.bitPattern == b.statistic.bitPattern
            && a.smoothed.bitPattern == b.smoothed.bitPattern && a.mode == b.mode && a.reason == b.reason
            && a.estimate == b.estimate
    }
}
