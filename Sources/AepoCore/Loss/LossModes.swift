/// The named choices of the loss, advantage and regulariser sections, parsed once from the
/// config so the kernels switch on small enums instead of strings.
///
/// A name that the schema accepts but this version does not implement is rejected here,
/// at handle creation, with a config error naming the key (never a trap later).

/// `loss.policy_loss`.
public enum PolicyLossMode: Sendable, Equatable {
    case vanilla

    public static let implemented = ["vanilla"]

    public init(name: String) throws(AepoFailure) {
        switch name {
        case "vanilla": self = .vanilla
        default:
            throw .config("loss.policy_loss",
                          "\"\(name)\" is a valid mode name but is not implemented in this version of libaepo; implemented: "
                              + PolicyLossMode.implemented.map { "\"\($0)\"" }.joined(separator: ", "))
        }
    }
}

/// `loss.loss_agg_mode`: how per-token values become one number (verl's `agg_loss`).
public enum AggregationMode: Sendable, Equatable {
    case tokenMean
    case tokenSum
    case seqMeanTokenSum
    case seqMeanTokenMean
    /// Current verl: sum over sequences of the token sums, divided by (G * K).
    case seqMeanTokenSumNorm

    public init(name: String) throws(AepoFailure) {
        switch name {
        case "token-mean": self = .tokenMean
        case "token-sum": self = .tokenSum
        case "seq-mean-token-sum": self = .seqMeanTokenSum
        case "seq-mean-token-mean": self = .seqMeanTokenMean
        case "seq-mean-token-sum-norm": self = .seqMeanTokenSumNorm
        default: throw .config("loss.loss_agg_mode", "unknown value \"\(name)\"")
        }
    }

    /// Whether the mode divides by a sequence count (global_seqs) rather than a token count.
    public var isSequenceMode: Bool {
        switch self {
        case .tokenMean, .tokenSum: return false
        case .seqMeanTokenSum, .seqMeanTokenMean, .seqMeanTokenSumNorm: return true
        }
    }
}

/// `loss.kl_loss_type`. `straightThrough` is the `+` suffix: the value of the base estimator
/// with the gradient of k2.
public struct KLType: Sendable, Equatable {
    public enum Base: Sendable, Equatable { case k1, abs, k2, k3 }
    public var base: Base
    public var straightThrough: Bool

    public init(name: String) throws(AepoFailure) {
        var n = Substring(name)
        straightThrough = n.hasSuffix("+")
        if straightThrough { n = n.dropLast() }
        switch n {
        case "kl", "k1": base = .k1
        case "abs": base = .abs
        case "mse", "k2": base = .k2
        case "low_var_kl", "k3": base = .k3
        default: throw .config("loss.kl_loss_type", "unknown value \"\(name)\"")
        }
        // k2's own gradient is already k2's gradient.
        if base == .k2 { straightThrough = false }
    }
}

/// `advantage.estimator`.
public enum AdvantageEstimator: Sendable, Equatable {
    case grpo

    public static let implemented = ["grpo"]

    public init(name: String) throws(AepoFailure) {
        switch name {
        case "grpo": self = .grpo
        default:
            throw .config("advantage.estimator",
                          "\"\(name)\" is a valid estimator name but is not implemented in this version of libaepo; implemented: "
                              + AdvantageEstimator.implemented.map { "\"\($0)\"" }.joined(separator: ", "))
        }
    }
}

/// `regularizer.combine`.
public enum RegularizerCombine: Sendable, Equatable {
    /// Regulariser rows replace main rows; they are ordinary rows with advantage 1.
    case replace
    /// Regulariser rows are appended; their policy loss with advantage 1, token-mean over
    /// regulariser tokens, times alpha, is added to the main loss.
    case weighted

    public init(name: String) throws(AepoFailure) {
        switch name {
        case "replace": self = .replace
        case "weighted": self = .weighted
        default: throw .config("regularizer.combine", "unknown value \"\(name)\"")
        }
    }
}

/// The pinned metric indices of API.md §2. New metrics are only ever appended.
public enum LossMetric: Int, CaseIterable, Sendable {
    case pgLoss = 0
    case pgClipfrac
    case pgClipfracLower
    case ppoKl
    case klLoss
    case entropy
    case regUsed
    case nPositive
    case regTokenFrac
    case nTokens
    case nSeqs
    case regLoss

    public static let count = LossMetric.allCases.count

    public var name: String {
        switch self {
        case .pgLoss: return "pg_loss"
        case .pgClipfrac: return "pg_clipfrac"
        case .pgClipfracLower: return "pg_clipfrac_lower"
        case .ppoKl: return "ppo_kl"
        case .klLoss: return "kl_loss"
        case .entropy: return "entropy"
        case .regUsed: return "reg_used"
        case .nPositive: return "n_positive"
        case .regTokenFrac: return "reg_token_frac"
        case .nTokens: return "n_tokens"
        case .nSeqs: return "n_seqs"
        case .regLoss: return "reg_loss"
        }
    }
}
