/// The typed configuration of every handle (schema_version 1).
///
/// This file holds the values and their defaults only. The rules (types, bounds, allowed
/// names, cross-field checks) live in `ConfigSchema.swift`, in one table that both the
/// validator and the JSON codec walk, so a key is described exactly once.
public struct Config: Equatable, Sendable {
    public static let schemaVersion = 1

    public var loss = LossConfig()
    public var advantage = AdvantageConfig()
    public var regularizer = RegularizerConfig()
    public var controller = ControllerConfig()
    public var sampler = SamplerConfig()
    public var fused = FusedConfig()

    public init() {}
}

public struct LossConfig: Equatable, Sendable {
    public var policyLoss = "vanilla"
    public var lossAggMode = "token-mean"
    /// 0 means unset; `seq-mean-token-sum-norm` requires a positive value.
    public var lossScaleFactor = 0.0
    public var clipRatioLow = 0.2
    public var clipRatioHigh = 0.2
    public var clipRatioC = 3.0
    public var klLossType = "low_var_kl"
    public var klLossCoef = 0.0
    public var entropyCoeff = 0.0
    public var clipCovRatio = 0.0002
    public var clipCovLb = 1.0
    public var clipCovUb = 5.0
    public var klCovRatio = 0.0002
    public var ppoKlCoef = 0.1
    public var seed: Int64 = 0
    public var threads: Int64 = 1
    public init() {}
}

public struct AdvantageConfig: Equatable, Sendable {
    public var estimator = "grpo"
    public var normAdvByStdInGrpo = true
    public var epsilon = 1e-6
    public var rlooSingleton = "zero"
    public init() {}
}

public struct RegularizerConfig: Equatable, Sendable {
    public var threshold = 0.05
    public var combine = "replace"
    /// 60/640: the reference code's share of one optimizer step.
    public var alpha = 0.09375
    public init() {}
}

public struct SchedulePoint: Equatable, Sendable {
    public var step: Int64
    public var target: Double
    public init(step: Int64, target: Double) {
        self.step = step
        self.target = target
    }
}

public struct ScheduleConfig: Equatable, Sendable {
    public var kind = "constant"
    public var endTarget = 0.5
    public var startStep: Int64 = 0
    public var endStep: Int64 = 0
    public var points: [SchedulePoint] = []
    public init() {}
}

/// The adaptive controller's settings (docs/CONTROLLER.md). Under `tuning = "auto"` the
/// controller identifies the loop online and derives its own gains; `kp`, `ki` and `ema` are
/// read only under `tuning = "fixed"`.
public struct AdaptiveConfig: Equatable, Sendable {
    public var actuator = "temperature"
    /// "auto": self-tuning (identified loop, derived gains); "fixed": the PI with kp, ki, ema.
    public var tuning = "auto"
    public var tMin = 0.5
    public var tMax = 2.0
    public var alphaMax = 0.5
    /// Proportional gain: temperature change per nat of error change.
    public var kp = 5.0
    /// Integral gain: temperature change per step per nat of error.
    public var ki = 1.5
    /// EMA weight of the previous smoothed statistic; 0 turns smoothing off.
    public var ema = 0.0
    /// Largest temperature change per step.
    public var tRate = 0.3
    public init() {}
}

public struct ControllerConfig: Equatable, Sendable {
    public var mode = "bang_bang"
    public var target = 0.5
    public var tHigh = 1.2
    public var tLow = 0.8
    public var kMax: Int64 = 60
    public var halveAboveTarget = true
    public var statistic = "nll"
    /// Which rows the fed statistic covers: "all" (the reference's; the default) or "main"
    /// (main rows only, free of the regulariser's same-step response).
    public var statisticRows = "all"
    public var initialEntropy = 0.0
    public var hysteresis = 0.0
    public var history: Int64 = 32
    public var schedule = ScheduleConfig()
    public var adaptive = AdaptiveConfig()
    public init() {}
}

public struct SamplerConfig: Equatable, Sendable {
    public var temperature = 1.0
    public var topK: Int64 = 0
    public var topP = 1.0
    public var minP = 0.0
    public var greedy = false
    public var seed: Int64 = 0
    public var threads: Int64 = 1
    public init() {}
}

public struct FusedConfig: Equatable, Sendable {
    public var chunkN: Int64 = 128
    public var chunkV: Int64 = 8192
    public var temperature = 1.0
    public var threads: Int64 = 1
    public init() {}
}
