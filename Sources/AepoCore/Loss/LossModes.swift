/// The named choices of the loss, advantage and regulariser sections, parsed once from the
/// config so the kernels switch on small enums instead of strings. Each enum's `spellings`
/// is the one list of its names: the schema's accepted values are derived from it.

/// `loss.policy_loss`.
public enum PolicyLossMode: ConfigChoice, Equatable {
    /// PPO clip with clip-higher and dual clip (verl `vanilla`).
    case vanilla
    /// Sequence-level ratio (verl `gspo`); aggregates with seq-mean-token-mean only.
    case gspo
    /// Stop-gradient clipped ratio times log-prob, clipped on both sides (verl `cispo`).
    case cispo
    /// -A logp (verl `gpg`; `reinforce` is an alias).
    case gpg
    /// PPO clip without dual clip, with a random few high-covariance tokens detached (verl `clip_cov`).
    case clipCov
    /// Unclipped -A r, plus ppo_kl_coef |logp - old_logp| on the top-k covariance tokens (verl `kl_cov`).
    case klCov

    public static let spellings: [(name: String, value: Self)] = [
        ("vanilla", .vanilla), ("gspo", .gspo), ("cispo", .cispo), ("gpg", .gpg), ("reinforce", .gpg),
        ("clip_cov", .clipCov), ("kl_cov", .klCov),
    ]

    /// Whether a token's loss depends only on its own log-prob once the aggregation weights
    /// are known. The other modes first need a statistic of the whole call (gspo: each
    /// sequence's mean log-ratio; clip_cov and kl_cov: the covariance selection).
    public var isTokenSeparable: Bool {
        switch self {
        case .vanilla, .cispo, .gpg: return true
        case .gspo, .clipCov, .klCov: return false
        }
    }

    /// Whether the mode picks tokens by covariance before the token pass.
    var selectsTokens: Bool { self == .clipCov || self == .klCov }
}

/// `loss.loss_agg_mode`: how per-token values become one number (verl's `agg_loss`).
public enum AggregationMode: ConfigChoice, Equatable {
    case tokenMean
    case tokenSum
    case seqMeanTokenSum
    case seqMeanTokenMean
    /// Current verl: sum over sequences of the token sums, divided by (G * K).
    case seqMeanTokenSumNorm

    public static let spellings: [(name: String, value: Self)] = [
        ("token-mean", .tokenMean), ("token-sum", .tokenSum), ("seq-mean-token-sum", .seqMeanTokenSum),
        ("seq-mean-token-mean", .seqMeanTokenMean), ("seq-mean-token-sum-norm", .seqMeanTokenSumNorm),
    ]

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
public struct KLType: ConfigChoice, Equatable {
    public enum Base: Sendable, Equatable { case k1, abs, k2, k3 }
    public var base: Base
    public var straightThrough: Bool

    public init(base: Base, straightThrough: Bool) {
        self.base = base
        // k2's own gradient is already k2's gradient.
        self.straightThrough = straightThrough && base != .k2
    }

    /// Each estimator's names, then the same names with `+`.
    public static let spellings: [(name: String, value: Self)] = {
        let bases: [(String, Base)] = [("kl", .k1), ("k1", .k1), ("abs", .abs), ("mse", .k2), ("k2", .k2),
                                       ("low_var_kl", .k3), ("k3", .k3)]
        return [false, true].flatMap { st in
            bases.map { (name: $0.0 + (st ? "+" : ""), value: KLType(base: $0.1, straightThrough: st)) }
        }
    }()
}

/// `advantage.estimator`.
public enum AdvantageEstimator: ConfigChoice, Equatable {
    case grpo
    /// Leave-one-out baseline, n/(n-1) (r - mean).
    case rloo
    /// Group mean subtracted, then whitened over the valid tokens of the batch (needs lengths).
    case reinforcePlusPlusBaseline
    /// Only each group's best response gets r_max - r_second (groups of two or more).
    case grpoPassk

    public static let spellings: [(name: String, value: Self)] = [
        ("grpo", .grpo), ("rloo", .rloo), ("reinforce_plus_plus_baseline", .reinforcePlusPlusBaseline),
        ("grpo_passk", .grpoPassk),
    ]
}

/// `regularizer.combine`.
public enum RegularizerCombine: ConfigChoice, Equatable {
    /// Regulariser rows replace main rows; they are ordinary rows with advantage 1.
    case replace
    /// Regulariser rows are appended; their policy loss with advantage 1, token-mean over
    /// regulariser tokens, times alpha, is added to the main loss.
    case weighted

    public static let spellings: [(name: String, value: Self)] = [("replace", .replace), ("weighted", .weighted)]
}

/// `advantage.rloo_singleton`: the RLOO advantage of a group of one.
public enum RlooSingleton: ConfigChoice, Equatable {
    /// 0, as verl's vectorised RLOO gives.
    case zero
    /// The response's own score.
    case score

    public static let spellings: [(name: String, value: Self)] = [("zero", .zero), ("score", .score)]
}

/// The pinned metric indices (docs/API.md, "Metrics"). New metrics are only ever appended.
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
    // Plain token means over this call's valid tokens by row role, with their counts: main
    // rows (reg_rows = 0) and regulariser rows (reg_rows = 1, under either combine). Not
    // aggregated by loss_agg_mode, so mean * count and count add over micro-batches and ranks.
    case nllMain
    case entropyMain
    case nTokensMain
    case nllReg
    case entropyReg
    case nTokensReg

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
        case .nllMain: return "nll_main"
        case .entropyMain: return "entropy_main"
        case .nTokensMain: return "n_tokens_main"
        case .nllReg: return "nll_reg"
        case .entropyReg: return "entropy_reg"
        case .nTokensReg: return "n_tokens_reg"
        }
    }
}
