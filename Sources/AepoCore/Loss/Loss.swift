import Synchronization

/// The policy-loss engine: every `loss.policy_loss` mode of verl that libaepo implements
/// (vanilla, gspo, cispo, gpg/reinforce, clip_cov, kl_cov; the token formulas are in
/// `PolicyForms.swift`) with KL and entropy terms, any of the five aggregation modes that
/// the mode supports, micro-batch-exact global counts, and the regulariser rows.
///
/// The engine is four steps, so that a caller producing log-probs block by block (the
/// fused LM head) can reuse the token kernel:
///   1. `plan(_:)`: the per-row aggregation weights from the mask and the global counts
///      (`AggregationPlan`);
///   2. `prepare(_:_:)`: for the modes that are not token-separable, the statistics of the
///      whole call that the token pass needs (gspo: each row's mean log-ratio; clip_cov and
///      kl_cov: the covariance selection), stored in the plan; a no-op otherwise;
///   3. `accumulate(_:_:_:)`: the token kernel over any range of flat token indices, which
///      writes dL/dlogp and dL/dH per token and returns the weighted partial sums;
///   4. `finish(_:_:)`: the loss and the metrics from the partial sums.
/// `compute(_:grad:gradEntropy:)` runs them over a whole batch with `loss.threads`
/// threads, one partial per row, combined in row order, so results are bit-identical for
/// every thread count.
///
/// vanilla per token (verl `compute_policy_loss_vanilla`), with d = clamp(logp - old_logp,
/// -20, 20) and r = e^d:
///
///     L1 = -A r,   L2 = -A clamp(r, 1 - clip_ratio_low, 1 + clip_ratio_high)
///     C1 = max(L1, L2),   L3 = -A clip_ratio_c
///     l  = A < 0 ? min(C1, L3) : C1
///
/// and the loss is agg(l * is_weight) - entropy_coeff * agg(H) + kl_loss_coef * agg(KL)
/// (+ the `weighted` regulariser term). dl/dlogp is -A r where the unclipped branch is
/// taken and |logp - old_logp| <= 20, else 0. Metrics: pg_clipfrac = mean(L2 > L1),
/// pg_clipfrac_lower = mean(A < 0 and C1 > L3), ppo_kl = mean(-d), each over the call's
/// valid tokens with verl's +1e-8 in the denominator. The other modes change l, its
/// gradient and what the three metrics count (`PolicyForm`); the aggregation and the KL and
/// entropy terms are shared. The role metrics (nll_main, entropy_main, n_tokens_main and
/// their _reg counterparts) are plain means of -logp and H over the call's valid tokens of
/// main rows and of regulariser rows, whatever the mode and the aggregation.
///
/// Numerical properties: per-token arithmetic in float64 (`LossMath`), sums in float64;
/// the gradient is rounded once to float32.
public struct Loss: Sendable {
    public let config: Config
    public let mode: PolicyLossMode
    public let aggregation: AggregationMode
    public let klType: KLType
    public let estimator: AdvantageEstimator
    public let combine: RegularizerCombine

    /// Reads the `loss`, `advantage` and `regularizer` sections of a validated config.
    public init(config: Config) throws(AepoFailure) {
        try ConfigSchema.validate(config)
        self.config = config
        mode = try .parse(config.loss.policyLoss, key: "loss.policy_loss")
        aggregation = try .parse(config.loss.lossAggMode, key: "loss.loss_agg_mode")
        klType = try .parse(config.loss.klLossType, key: "loss.kl_loss_type")
        estimator = try .parse(config.advantage.estimator, key: "advantage.estimator")
        combine = try .parse(config.regularizer.combine, key: "regularizer.combine")
    }

    // MARK: step 1

    /// Checks shapes and the inputs the configured terms need, then forms the weights.
    public func plan(_ batch: LossBatch) throws(AepoFailure) -> AggregationPlan {
        try batch.checkShapes()
        let c = config.loss
        if c.klLossCoef != 0 && batch.refLogp == nil {
            throw .invalid("ref_logp", "is missing, but loss.kl_loss_coef is \(formatReal(c.klLossCoef)); pass the reference log-probs or set the coefficient to 0")
        }
        if c.entropyCoeff != 0 && batch.entropy == nil {
            throw .invalid("entropy", "is missing, but loss.entropy_coeff is \(formatReal(c.entropyCoeff)); pass the per-token entropy or set the coefficient to 0")
        }
        return try AggregationPlan.make(batch, mode: aggregation, combine: combine,
                                        lossScaleFactor: c.lossScaleFactor,
                                        defaultAlpha: config.regularizer.alpha)
    }

    // MARK: step 2

    /// The statistics of the whole call that a mode which is not token-separable needs
    /// before its token pass, stored in `plan` (see `Loss+Statistics.swift`). Reads the
    /// log-probs; throws for a non-finite input it reads. A no-op for the other modes.
    public func prepare(_ batch: LossBatch, _ plan: inout AggregationPlan) throws(AepoFailure) {
        switch mode {
        case .vanilla, .cispo, .gpg: break
        case .gspo: try sequenceRatios(batch, &plan)
        case .clipCov, .klCov: try covarianceSelection(batch, &plan)
        }
        plan.prepared = true
    }

    // MARK: step 3

    /// Runs the token kernel over `block.range` (flat indices into [B, L]). `block.logp`,
    /// `block.entropy`, `block.grad` and `block.gradEntropy` point at the block's first
    /// token; the other inputs are read from `batch` at absolute indices. `batch.entropy`
    /// only says whether the entropy term is on. Writes every token of the range (0 where
    /// mask = 0). Sets `nonFinite` instead of throwing when a valid token's input is NaN or
    /// Inf; the caller then reports it with `findNonFinite`. For a mode that is not
    /// token-separable, `plan` must have been through `prepare` with the same batch.
    public func accumulate(_ batch: LossBatch, _ plan: AggregationPlan, _ block: TokenBlock) -> TokenPartials {
        var out = TokenPartials()
        let L = plan.length
        guard L > 0, !block.range.isEmpty else { return out }
        let k = Kernel(self, batch)
        var t = block.range.lowerBound
        let end = block.range.upperBound
        while t < end {
            let b = t / L
            let segEnd = min(end, (b + 1) * L)
            k.segment(row: b, from: t, to: segEnd, base: block.range.lowerBound, block: block, plan: plan, into: &out)
            t = segEnd
        }
        return out
    }

    // MARK: step 4

    /// The loss and the metrics (indexed by `LossMetric`) from the summed partials.
    public func finish(_ plan: AggregationPlan, _ p: TokenPartials) -> LossResult {
        let c = config.loss
        var m = [Double](repeating: 0, count: LossMetric.count)
        let n = Double(plan.allTokens)
        m[LossMetric.pgLoss.rawValue] = p.policy
        m[LossMetric.pgClipfrac.rawValue] = p.clipped / (n + 1e-8)
        m[LossMetric.pgClipfracLower.rawValue] = p.clippedLower / (n + 1e-8)
        m[LossMetric.ppoKl.rawValue] = p.negLogRatio / (n + 1e-8)
        m[LossMetric.klLoss.rawValue] = p.kl
        m[LossMetric.entropy.rawValue] = p.entropy
        m[LossMetric.regUsed.rawValue] = plan.regTokens > 0 ? 1 : 0
        m[LossMetric.nPositive.rawValue] = Double(plan.regRowCount)
        m[LossMetric.regTokenFrac.rawValue] = plan.allTokens > 0 ? Double(plan.regTokens) / n : 0
        m[LossMetric.nTokens.rawValue] = n
        m[LossMetric.nSeqs.rawValue] = Double(plan.allSeqs)
        m[LossMetric.regLoss.rawValue] = p.reg
        let nReg = Double(plan.regTokens), nMain = Double(plan.allTokens - plan.regTokens)
        m[LossMetric.nllMain.rawValue] = nMain > 0 ? -p.logpMain / nMain : 0
        m[LossMetric.entropyMain.rawValue] = nMain > 0 ? p.entropyMain / nMain : 0
        m[LossMetric.nTokensMain.rawValue] = nMain
        m[LossMetric.nllReg.rawValue] = nReg > 0 ? -p.logpReg / nReg : 0
        m[LossMetric.entropyReg.rawValue] = nReg > 0 ? p.entropyReg / nReg : 0
        m[LossMetric.nTokensReg.rawValue] = nReg
        var loss = p.policy
        if c.entropyCoeff != 0 { loss -= c.entropyCoeff * p.entropy }
        if c.klLossCoef != 0 { loss += c.klLossCoef * p.kl }
        loss += p.reg
        return LossResult(loss: loss, metrics: m)
    }

    // MARK: whole batch

    /// Loss, dL/dlogp into `grad` and dL/dH into `gradEntropy` (each [B, L], optional) for a
    /// whole batch. Validates everything before writing any output except on a non-finite
    /// input, which is found during the pass (outputs are then partly written; the modes
    /// with a statistics step find non-finite log-probs, old log-probs and advantages
    /// before writing).
    public func compute(_ batch: LossBatch, grad: UnsafeMutableBufferPointer<Float>?,
                        gradEntropy: UnsafeMutableBufferPointer<Float>?) throws(AepoFailure) -> LossResult {
        var plan = try self.plan(batch)
        let n = try batch.tokenCount()
        if let g = grad, g.count != n { throw .shape("grad", "has \(g.count) elements, expected \(n) (B * L)") }
        if let g = gradEntropy, g.count != n {
            throw .shape("grad_entropy", "has \(g.count) elements, expected \(n) (B * L)")
        }
        if n > 0 && batch.logp.baseAddress != nil { try prepare(batch, &plan) }
        let B = batch.rows, L = batch.length
        guard n > 0, let lp = batch.logp.baseAddress else { return finish(plan, TokenPartials()) }
        let ent = batch.entropy?.baseAddress
        let gp = grad?.baseAddress
        let ge = gradEntropy?.baseAddress
        let partials = UnsafeMutableBufferPointer<TokenPartials>.allocate(capacity: B)
        defer { partials.deallocate() }
        partials.initialize(repeating: TokenPartials())
        let threads = Int(config.loss.threads)
        // Rows are cut into contiguous chunks of about equal work (the computed span plus the
        // zero fill, not the row count), eight per thread, and the threads take chunks from a
        // shared counter: a batch sorted by length, or a thread the OS parks for a while,
        // does not leave the others idle. Each row's partial is formed alone and the partials
        // are added in row order, so the schedule never changes a bit of the result.
        let workers = min(threads, max(1, B * L / 16384))
        let bounds = Self.workSplit(plan, parts: workers == 1 ? 1 : 8 * workers)
        let chunks = bounds.count - 1
        let next = Atomic<Int>(0)
        parallelRanges(count: workers, threads: workers) { mine in
            for _ in mine {
                while true {
                    let c = next.wrappingAdd(1, ordering: .relaxed).oldValue
                    if c >= chunks { break }
                    for b in bounds[c]..<bounds[c + 1] {
                        let lo = b * L
                        let block = TokenBlock(range: lo..<(lo + L), logp: lp + lo, entropy: ent.map { $0 + lo },
                                               grad: gp.map { $0 + lo }, gradEntropy: ge.map { $0 + lo })
                        partials[b] = accumulate(batch, plan, block)
                    }
                }
            }
        }
        var total = TokenPartials()
        for b in 0..<B { total.add(partials[b]) }
        if total.nonFinite {
            try findNonFinite(batch, plan)
            try checkGradients(grad.map { UnsafeBufferPointer($0) }, gradEntropy.map { UnsafeBufferPointer($0) },
                               n: n, argument: "grad")
        }
        let result = finish(plan, total)
        try checkResult(result)
        return result
    }

    /// After a pass whose partials say `nonFinite` and whose inputs are all finite: the
    /// flag also goes up when a gradient comes near or beyond the float32 range (see
    /// `policyLoop`), so look at the gradients written. A non-finite one is an overflow,
    /// reported as AEPO_ERR_NON_FINITE naming `argument` (the output, or "value", the loss,
    /// where the gradient is internal); otherwise the flag was only a near miss and the call goes on.
    public func checkGradients(_ grad: UnsafeBufferPointer<Float>?, _ gradEntropy: UnsafeBufferPointer<Float>?,
                               n: Int, argument: String) throws(AepoFailure) {
        for (buf, what, name) in [(grad, "dLoss/dlogp", argument),
                                  (gradEntropy, "dLoss/dentropy", argument == "grad" ? "grad_entropy" : argument)] {
            guard let buf, buf.count >= n else { continue }
            for i in 0..<n where !buf[i].isFinite {
                throw AepoFailure(.nonFinite, name,
                                  "\(name): \(what) of token \(i) overflows float32 although every input is finite; "
                                  + "scale down the advantages, is_weights or the loss weights (dp_size, loss_scale_factor, "
                                  + "the coefficients)", index: i)
            }
        }
    }

    /// The loss and metrics of finite inputs are finite unless a config coefficient or
    /// weight is so large (or loss_scale_factor so small) that a double overflows.
    public func checkResult(_ r: LossResult) throws(AepoFailure) {
        guard r.loss.isFinite, r.metrics.allSatisfy({ $0.isFinite }) else {
            let what = r.loss.isFinite ? "metric \(r.metrics.firstIndex { !$0.isFinite } ?? -1)" : "the loss"
            let bad = r.loss.isFinite ? r.metrics.firstIndex { !$0.isFinite } ?? -1 : -1
            let name = r.loss.isFinite ? "metrics" : "value"
            throw AepoFailure(.nonFinite, name,
                              "\(name): \(what) overflows although every input is finite; the loss weights (dp_size, "
                              + "loss_scale_factor, the coefficients of the config) are out of scale", index: bad)
        }
    }

    /// Row boundaries of `parts` contiguous parts of about equal work: a row costs its
    /// valid span (the vectors computed) plus an eighth of L (the zero fill and overhead).
    static func workSplit(_ plan: AggregationPlan, parts: Int) -> [Int] {
        let B = plan.rows
        guard parts > 1, B > 1 else { return [0, B] }
        var cost = [Int](repeating: 0, count: B + 1)
        for b in 0..<B { cost[b + 1] = cost[b] + plan.rowSpan[b].count + plan.length / 8 + 1 }
        var bounds = [0]
        var b = 0
        for p in 1..<parts {
            let target = cost[B] / parts * p + cost[B] % parts * p / parts
            while b < B && cost[b + 1] <= target { b += 1 }
            bounds.append(max(bounds[bounds.count - 1], b))
        }
        bounds.append(B)
        return bounds
    }

    /// Throws the error for the first non-finite valid input, in argument order (logp,
    /// old_logp, advantages, ref_logp, is_weights, entropy), lowest index first. A caller
    /// that runs `accumulate` on its own blocks calls this when a partial says `nonFinite`
    /// (with `batch.logp` and `batch.entropy` holding the values the blocks used).
    public func findNonFinite(_ batch: LossBatch, _ plan: AggregationPlan) throws(AepoFailure) {
        let L = batch.length
        let n = batch.rows * L
        func scan(_ name: String, _ buf: UnsafeBufferPointer<Float>?) throws(AepoFailure) {
            guard let buf, buf.count >= n, batch.mask.count >= n else { return }
            for i in 0..<n where batch.mask[i] == 1 && !buf[i].isFinite {
                throw .nonFinite(name, index: i, value: Double(buf[i]))
            }
        }
        try scan("logp", batch.logp)
        try scan("old_logp", batch.oldLogp)
        guard batch.mask.count >= n, plan.isRegRow.count >= batch.rows else { return }
        if batch.advantagesPerToken {
            for i in 0..<n where batch.mask[i] == 1 && !plan.isRegRow[i / L] && !batch.advantages[i].isFinite {
                throw .nonFinite("advantages", index: i, value: Double(batch.advantages[i]))
            }
        } else {
            for b in 0..<batch.rows where plan.rowTokens[b] > 0 && !plan.isRegRow[b] && !batch.advantages[b].isFinite {
                throw AepoFailure(.nonFinite, "advantages",
                                  "advantages[\(b)] is \(batch.advantages[b]) for a sequence with valid tokens; inputs must be finite",
                                  index: b)
            }
        }
        try scan("ref_logp", batch.refLogp)
        try scan("is_weights", batch.isWeights)
        try scan("entropy", batch.entropy)
    }
}

/// The loss and the metrics of one call.
public struct LossResult: Sendable, Equatable {
    public var loss: Double
    /// Indexed by `LossMetric.rawValue`.
    public var metrics: [Double]

    public subscript(_ m: LossMetric) -> Double { metrics[m.rawValue] }
}

/// A range of flat token indices and the per-block buffers of the token kernel, each
/// pointing at the element of `range.lowerBound`.
public struct TokenBlock {
    public var range: Range<Int>
    public var logp: UnsafePointer<Float>
    public var entropy: UnsafePointer<Float>?
    public var grad: UnsafeMutablePointer<Float>?
    public var gradEntropy: UnsafeMutablePointer<Float>?

    public init(range: Range<Int>, logp: UnsafePointer<Float>, entropy: UnsafePointer<Float>? = nil,
                grad: UnsafeMutablePointer<Float>? = nil, gradEntropy: UnsafeMutablePointer<Float>? = nil) {
        self.range = range
        self.logp = logp
        self.entropy = entropy
        self.grad = grad
        self.gradEntropy = gradEntropy
    }
}

/// Weighted sums of a token range. Sum them in a fixed order for reproducible totals.
public struct TokenPartials: Sendable {
    /// sum W * is_weight * l over rows of the main term.
    public var policy = 0.0
    /// sum W * is_weight * l over the rows of the `weighted` regulariser term.
    public var reg = 0.0
    /// sum W * KL (the KL value, before kl_loss_coef).
    public var kl = 0.0
    /// sum W * H.
    public var entropy = 0.0
    /// Counts over every valid token (regulariser rows included).
    public var clipped = 0.0
    public var clippedLower = 0.0
    /// Sum over every valid token of the mode's ppo_kl term (-d, or |d| for kl_cov).
    public var negLogRatio = 0.0
    /// Unweighted sums of logp and H over the valid tokens of main rows (reg_rows = 0) and
    /// of regulariser rows (reg_rows = 1), for the role metrics; H's are 0 without entropy.
    public var logpMain = 0.0
    public var logpReg = 0.0
    public var entropyMain = 0.0
    public var entropyReg = 0.0
    public var nonFinite = false

    public init() {}

    @inline(__always)
    public mutating func add(_ o: TokenPartials) {
        policy += o.policy
        reg += o.reg
        kl += o.kl
        entropy += o.entropy
        clipped += o.clipped
        clippedLower += o.clippedLower
        negLogRatio += o.negLogRatio
        logpMain += o.logpMain
        logpReg += o.logpReg
        entropyMain += o.entropyMain
        entropyReg += o.entropyReg
        nonFinite = nonFinite || o.nonFinite
    }
}
