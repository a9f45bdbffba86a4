import Synchronization

/// The policy-loss engine: PPO-clip (verl's `vanilla`) with KL and entropy terms, any of
/// the five aggregation modes, micro-batch-exact global counts, and the regulariser rows.
///
/// The engine is three steps, so that a caller producing log-probs block by block (the
/// fused LM head) can reuse the middle one:
///   1. `plan(_:)`: the per-row aggregation weights from the mask and the global counts
///      (`AggregationPlan`);
///   2. `accumulate(_:_:_:)`: the token kernel over any range of flat token indices, which
///      writes dL/dlogp and dL/dH per token and returns the weighted partial sums;
///   3. `finish(_:_:)`: the loss and the metrics from the partial sums.
/// `compute(_:grad:gradEntropy:)` runs the three over a whole batch with `loss.threads`
/// threads, one partial per row, combined in row order, so results are bit-identical for
/// every thread count.
///
/// Per token (verl `compute_policy_loss_vanilla`), with d = clamp(logp - old_logp, -20, 20)
/// and r = e^d:
///
///     L1 = -A r,   L2 = -A clamp(r, 1 - clip_ratio_low, 1 + clip_ratio_high)
///     C1 = max(L1, L2),   L3 = -A clip_ratio_c
///     l  = A < 0 ? min(C1, L3) : C1
///
/// and the loss is agg(l * is_weight) - entropy_coeff * agg(H) + kl_loss_coef * agg(KL)
/// (+ the `weighted` regulariser term). dl/dlogp is -A r where the unclipped branch is
/// taken and |logp - old_logp| <= 20, else 0. Metrics: pg_clipfrac = mean(L2 > L1),
/// pg_clipfrac_lower = mean(A < 0 and C1 > L3), ppo_kl = mean(-d), each over the call's
/// valid tokens with verl's +1e-8 in the denominator.
///
/// Numerical properties: per-token arithmetic in float64 (`LossMath`), sums in float64;
/// the gradient is rounded once to float32.
public struct PolicyLossEngine: Sendable {
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
        mode = try PolicyLossMode(name: config.loss.policyLoss)
        aggregation = try AggregationMode(name: config.loss.lossAggMode)
        klType = try KLType(name: config.loss.klLossType)
        estimator = try AdvantageEstimator(name: config.advantage.estimator)
        combine = try RegularizerCombine(name: config.regularizer.combine)
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

    /// Runs the token kernel over `block.range` (flat indices into [B, L]). `block.logp`,
    /// `block.entropy`, `block.grad` and `block.gradEntropy` point at the block's first
    /// token; the other inputs are read from `batch` at absolute indices. `batch.entropy`
    /// only says whether the entropy term is on. Writes every token of the range (0 where
    /// mask = 0). Sets `nonFinite` instead of throwing when a valid token's input is NaN or
    /// Inf; the caller then reports it with `findNonFinite`.
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

    // MARK: step 3

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
        var loss = p.policy
        if c.entropyCoeff != 0 { loss -= c.entropyCoeff * p.entropy }
        if c.klLossCoef != 0 { loss += c.klLossCoef * p.kl }
        loss += p.reg
        return LossResult(loss: loss, metrics: m)
    }

    // MARK: whole batch

    /// Loss, dL/dlogp into `grad` and dL/dH into `gradEntropy` (each [B, L], optional) for a
    /// whole batch. Validates everything before writing any output except on a non-finite
    /// input, which is found during the pass (outputs are then partly written).
    public func compute(_ batch: LossBatch, grad: UnsafeMutableBufferPointer<Float>?,
                        gradEntropy: UnsafeMutableBufferPointer<Float>?) throws(AepoFailure) -> LossResult {
        let plan = try self.plan(batch)
        let n = try batch.tokenCount()
        if let g = grad, g.count != n { throw .shape("grad", "has \(g.count) elements, expected \(n) (B * L)") }
        if let g = gradEntropy, g.count != n {
            throw .shape("grad_entropy", "has \(g.count) elements, expected \(n) (B * L)")
        }
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
    /// reported as AEPO_ERR_NON_FINITE naming `argument` (the output, or "loss" where the
    /// gradient is internal); otherwise the flag was only a near miss and the call goes on.
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
            throw AepoFailure(.nonFinite, "loss",
                              "loss: \(what) overflows although every input is finite; the loss weights (dp_size, "
                              + "loss_scale_factor, the coefficients of the config) are out of scale")
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
    /// sum of -d over every valid token.
    public var negLogRatio = 0.0
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
        nonFinite = nonFinite || o.nonFinite
    }
}

/// The token kernel with its loop invariants hoisted. Each row segment runs one loop,
/// specialised on the sign case of the advantage and on the KL estimator (none for the
/// AEPO path), that computes the policy, KL and entropy terms together.
struct Kernel {
    typealias V = LossMath.V
    typealias M = LossMath.M

    let batch: LossBatch
    let lo: V
    let hi: V
    let c: V
    let mode: PolicyLossMode
    let klType: KLType
    let klCoef: Double
    let entCoef: Double
    let hasRef: Bool
    let hasEntropy: Bool

    init(_ e: PolicyLossEngine, _ batch: LossBatch) {
        self.batch = batch
        let l = e.config.loss
        lo = V(repeating: 1 - l.clipRatioLow)
        hi = V(repeating: 1 + l.clipRatioHigh)
        c = V(repeating: l.clipRatioC)
        mode = e.mode
        klType = e.klType
        klCoef = l.klLossCoef
        entCoef = l.entropyCoeff
        hasRef = batch.refLogp != nil
        hasEntropy = batch.entropy != nil
    }

    /// Four-lane accumulators of one segment; summed across lanes at its end.
    struct Acc {
        var loss = V()
        var clip = SIMD4<Int64>()
        var low = SIMD4<Int64>()
        var negD = V()
        var bad = V()
        var kl = V()
        var ent = V()
    }

    /// Tokens [from, to) of row `b`; `base` is the flat index the block pointers start at.
    @inline(__always)
    func segment(row b: Int, from: Int, to: Int, base: Int, block: TokenBlock, plan: AggregationPlan,
                 into out: inout TokenPartials) {
        let wPol = plan.policyWeight[b]
        let wAux = plan.auxWeight[b]
        let forceOne = plan.isRegRow[b]
        let perToken = batch.advantagesPerToken && !forceOne
        let advRow = forceOne ? 1 : (batch.advantagesPerToken ? 0 : Double(batch.advantages[b]))
        var acc = Acc()
        let lp = block.logp - base
        let grad = block.grad.map { $0 - base }
        let gradEnt = block.gradEntropy.map { $0 - base }
        // Only the vectors that overlap the row's valid span are computed (a padded row's
        // tail is all mask = 0): the start stays a multiple of 4 from `from`, so every valid
        // token keeps its lane and the sums their order. The rest of the range gets zeros.
        let span = plan.rowSpan[b]
        let rowBase = b * batch.length
        let lo = max(from, min(to, from + (rowBase + span.lowerBound - from) / 4 * 4))
        let hi = max(lo, min(to, rowBase + span.upperBound))
        @inline(__always)
        func zeroOutside(_ g: UnsafeMutablePointer<Float>?) {
            guard let g else { return }
            if lo > from { (g + from).update(repeating: 0, count: lo - from) }
            if to > hi { (g + hi).update(repeating: 0, count: to - hi) }
        }
        zeroOutside(grad)
        zeroOutside(gradEnt)
        let from = lo, to = hi
        guard from < to else { return finishSegment(b, wPol: wPol, wAux: wAux, plan: plan, acc: acc, out: &out) }
        let io = SegmentIO(lp: lp, grad: grad, gradEnt: gradEnt, ent: hasEntropy ? block.entropy.map { $0 - base } : nil,
                           wPol: wPol, gKL: klCoef * wAux,
                           gH: { let g = hasEntropy ? -entCoef * wAux : 0; return g == 0 ? 0 : g }())
        // dL/dH is one value per row: flag it when it does not fit a float (see policyLoop).
        if gradEnt != nil && !Float(io.gH).isFinite { out.nonFinite = true }
        // The policy term of the configured mode, with the KL and entropy terms in the same
        // pass. (Modes that need batch statistics first, such as a sequence ratio or a
        // covariance selection, add them to the plan.)
        switch mode {
        case .vanilla:
            if !hasRef {
                vanilla(KLNone.self, b, from, to, io, perToken: perToken, advRow: advRow, plan: plan, acc: &acc, out: &out)
            } else {
                switch klType.base {
                case .k1: vanilla(KLk1.self, b, from, to, io, perToken: perToken, advRow: advRow, plan: plan, acc: &acc, out: &out)
                case .abs: vanilla(KLAbs.self, b, from, to, io, perToken: perToken, advRow: advRow, plan: plan, acc: &acc, out: &out)
                case .k2: vanilla(KLk2.self, b, from, to, io, perToken: perToken, advRow: advRow, plan: plan, acc: &acc, out: &out)
                case .k3: vanilla(KLk3.self, b, from, to, io, perToken: perToken, advRow: advRow, plan: plan, acc: &acc, out: &out)
                }
            }
        }
        finishSegment(b, wPol: wPol, wAux: wAux, plan: plan, acc: acc, out: &out)
    }

    /// Per-segment pointers (rebased so that index t is flat token t) and weights.
    struct SegmentIO {
        var lp: UnsafePointer<Float>
        var grad: UnsafeMutablePointer<Float>?
        var gradEnt: UnsafeMutablePointer<Float>?
        var ent: UnsafePointer<Float>?
        var wPol: Double
        var gKL: Double
        var gH: Double
    }

    /// The vanilla policy loop for the sign case of the row's advantage.
    @inline(__always)
    func vanilla<K: KLForm>(_ k: K.Type, _ b: Int, _ from: Int, _ to: Int, _ io: SegmentIO, perToken: Bool,
                            advRow: Double, plan: AggregationPlan, acc: inout Acc, out: inout TokenPartials) {
        if perToken {
            policyLoop(VanillaAnySign.self, k, from: from, to: to, io: io, advRow: 0, acc: &acc)
        } else {
            if advRow < 0 {
                policyLoop(VanillaNegative.self, k, from: from, to: to, io: io, advRow: advRow, acc: &acc)
            } else {
                policyLoop(VanillaNonNegative.self, k, from: from, to: to, io: io, advRow: advRow, acc: &acc)
            }
            // NaN, +Inf and -Inf (which takes the A < 0 branch) are flagged here; the values
            // are then discarded.
            if !advRow.isFinite && plan.rowTokens[b] > 0 { out.nonFinite = true }
        }
    }

    /// Adds a segment's lane sums to the partials.
    @inline(__always)
    func finishSegment(_ b: Int, wPol: Double, wAux: Double, plan: AggregationPlan, acc: Acc,
                       out: inout TokenPartials) {
        let s = acc.loss.sum()
        if plan.inRegTerm[b] { out.reg += wPol * s } else { out.policy += wPol * s }
        if hasRef { out.kl += wAux * acc.kl.sum() }
        if hasEntropy { out.entropy += wAux * acc.ent.sum() }
        out.clipped += Double(acc.clip.wrappedSum())
        out.clippedLower += Double(acc.low.wrappedSum())
        out.negLogRatio += acc.negD.sum()
        // The sums of finite float32 values (and their differences) cannot overflow a double,
        // so a non-finite sum means a non-finite input.
        if !acc.bad.sum().isFinite { out.nonFinite = true }
    }

    /// One pass over a segment: the PPO-clip term (l * is_weight and the clip metrics), the
    /// KL term of estimator `K` and the entropy term; writes dL/dlogp and dL/dH. `Form` is
    /// the sign case of the advantage (see `VanillaForm`).
    @inline(__always)
    func policyLoop<Form: VanillaForm, K: KLForm>(_: Form.Type, _: K.Type, from: Int, to: Int, io: SegmentIO,
                                                  advRow: Double, acc: inout Acc) {
        let mask = batch.mask.baseAddress!
        let olp = batch.oldLogp.baseAddress!
        let adv = batch.advantages.baseAddress!
        let isw = batch.isWeights?.baseAddress
        let ref = K.active ? batch.refLogp?.baseAddress : nil
        let lp = io.lp, ent = io.ent, grad = io.grad, gradEnt = io.gradEnt
        let negRow = V(repeating: -advRow)
        let l3Row = negRow * c
        let wPol = io.wPol, gKL = io.gKL
        let gH = V(repeating: io.gH)
        let straight = klType.straightThrough
        // Masked lanes are zeroed on load (logp = old_logp = ref = 0, so r = 1, which is
        // neither clipped nor dual-clipped, and every KL value is 0): only the loss and the
        // gradients need the mask again.
        @inline(__always)
        func step(_ xIn: V, _ oIn: V, _ aIn: V?, _ wIn: V?, _ rIn: V?, _ hIn: V?, _ valid: M,
                  _ acc: inout Acc) -> (g: V, gh: V) {
            let x = LossMath.keep(xIn, valid)
            let o = LossMath.keep(oIn, valid)
            var negA = negRow
            var l3 = l3Row
            if let aIn {
                let a = LossMath.keep(aIn, valid)
                acc.bad += a
                negA = -a
                l3 = negA * c
            }
            let delta = x - o
            let d = LossMath.clamp(delta, V(repeating: -20), V(repeating: 20))
            let r = LossMath.exp(d)
            let t = Form.apply(r: r, negA: negA, l3: l3, lo: lo, hi: hi)
            // The gradient flows through the unclipped ratio only, inside the log-ratio clamp
            // (d == delta: the clamp left it alone; false for NaN).
            var flows = valid .& (d .== delta) .& .!t.clipped
            if Form.hasDual { flows = flows .& .!t.dual }
            var loss = t.loss
            var gl = t.l1 * wPol
            if let wIn {
                let w = LossMath.keep(wIn, valid)
                acc.bad += w
                loss *= w
                gl *= w
            }
            // A non-finite logp or old_logp makes the sum of delta non-finite.
            acc.bad += delta
            acc.loss += LossMath.keep(loss, valid)
            LossMath.count(&acc.clip, t.clipped)
            if Form.hasDual { LossMath.count(&acc.low, t.dual) }
            acc.negD -= d
            var g = LossMath.keep(gl, flows)
            if K.active, let rIn {
                let rv = LossMath.keep(rIn, valid)
                acc.bad += rv
                let dk = x - rv
                var (v, slope) = K.evaluate(dk)
                if straight { slope = dk }
                acc.kl += v
                g += LossMath.keep(slope * gKL, valid)
            }
            // A gradient of finite inputs can still overflow float32 (|A| near 3e38, or huge
            // loss weights). Scaled by 2^897 any |g| >= 2^127 becomes Inf and flags the
            // segment; compute then looks at the gradients written (a near miss below
            // FLT_MAX costs that look and nothing else).
            acc.bad += g * V(repeating: 0x1p897)
            if let hIn {
                let h = LossMath.keep(hIn, valid)
                acc.bad += h
                acc.ent += h
            }
            return (g, LossMath.keep(gH, valid))
        }
        @inline(__always)
        func put(_ r: (g: V, gh: V), _ i: Int) {
            if let grad { LossMath.store(r.g, grad + i) }
            if let gradEnt { LossMath.store(r.gh, gradEnt + i) }
        }
        var i = from
        // Two vectors per iteration, in one block: their dependency chains (the exp above
        // all) interleave. The accumulators see them in order, as one at a time would.
        while i + 8 <= to {
            let w0 = LossMath.maskWord(mask + i, 4), w1 = LossMath.maskWord(mask + i + 4, 4)
            let x0 = LossMath.load(lp + i), o0 = LossMath.load(olp + i)
            let x1 = LossMath.load(lp + i + 4), o1 = LossMath.load(olp + i + 4)
            let a0 = Form.perToken ? LossMath.load(adv + i) : nil
            let a1 = Form.perToken ? LossMath.load(adv + i + 4) : nil
            let v0 = isw.map { LossMath.load($0 + i) }, v1 = isw.map { LossMath.load($0 + i + 4) }
            let r0 = ref.map { LossMath.load($0 + i) }, r1 = ref.map { LossMath.load($0 + i + 4) }
            let h0 = ent.map { LossMath.load($0 + i) }, h1 = ent.map { LossMath.load($0 + i + 4) }
            let g0: (g: V, gh: V), g1: (g: V, gh: V)
            // Inside a row's span most vectors are fully valid: a copy of the step with a
            // constant mask drops the masking operations.
            if w0 == 0x0101_0101 && w1 == 0x0101_0101 {
                g0 = step(x0, o0, a0, v0, r0, h0, LossMath.M(repeating: true), &acc)
                g1 = step(x1, o1, a1, v1, r1, h1, LossMath.M(repeating: true), &acc)
            } else {
                g0 = step(x0, o0, a0, v0, r0, h0, LossMath.maskLanes(w0), &acc)
                g1 = step(x1, o1, a1, v1, r1, h1, LossMath.maskLanes(w1), &acc)
            }
            put(g0, i)
            put(g1, i + 4)
            i += 8
        }
        if i + 4 <= to {
            let g = step(LossMath.load(lp + i), LossMath.load(olp + i), Form.perToken ? LossMath.load(adv + i) : nil,
                         isw.map { LossMath.load($0 + i) }, ref.map { LossMath.load($0 + i) },
                         ent.map { LossMath.load($0 + i) }, LossMath.maskLanes(LossMath.maskWord(mask + i, 4)), &acc)
            put(g, i)
            i += 4
        }
        if i < to {
            let n = to - i
            let g = step(LossMath.loadPartial(lp + i, n), LossMath.loadPartial(olp + i, n),
                         Form.perToken ? LossMath.loadPartial(adv + i, n) : nil,
                         isw.map { LossMath.loadPartial($0 + i, n) }, ref.map { LossMath.loadPartial($0 + i, n) },
                         ent.map { LossMath.loadPartial($0 + i, n) }, LossMath.maskLanes(LossMath.maskWord(mask + i, n)),
                         &acc)
            if let grad { LossMath.storePartial(g.g, grad + i, n) }
            if let gradEnt { LossMath.storePartial(g.gh, gradEnt + i, n) }
        }
    }
}

/// The PPO-clip loss of four tokens for one sign case of the advantage. All three cases
/// compute the same bits as the general formula of `PolicyLossEngine`:
///
///     L1 = -A r, L2 = -A clamp(r, lo, hi), clipped = L2 > L1, C1 = clipped ? L2 : L1,
///     L3 = -A c, dual = A < 0 and C1 > L3, l = dual ? L3 : C1.
///
/// For A >= 0 the lower clamp never wins (L2 <= L1 there), so L2 = -A min(r, hi) gives the
/// same L2 > L1 and C1; for A < 0 the upper clamp never wins, so L2 = -A max(r, lo).
protocol VanillaForm {
    static var perToken: Bool { get }
    static var hasDual: Bool { get }
    static func apply(r: LossMath.V, negA: LossMath.V, l3: LossMath.V, lo: LossMath.V, hi: LossMath.V)
        -> (loss: LossMath.V, l1: LossMath.V, clipped: LossMath.M, dual: LossMath.M)
}

/// One advantage per row, >= 0.
enum VanillaNonNegative: VanillaForm {
    static var perToken: Bool { false }
    static var hasDual: Bool { false }
    @inline(__always)
    static func apply(r: LossMath.V, negA: LossMath.V, l3: LossMath.V, lo: LossMath.V, hi: LossMath.V)
        -> (loss: LossMath.V, l1: LossMath.V, clipped: LossMath.M, dual: LossMath.M)
    {
        var rc = r
        rc.replace(with: hi, where: hi .< r)
        let l1 = negA * r
        let l2 = negA * rc
        let clipped = l2 .> l1
        var c1 = l1
        c1.replace(with: l2, where: clipped)
        return (c1, l1, clipped, LossMath.M(repeating: false))
    }
}

/// One advantage per row, < 0.
enum VanillaNegative: VanillaForm {
    static var perToken: Bool { false }
    static var hasDual: Bool { true }
    @inline(__always)
    static func apply(r: LossMath.V, negA: LossMath.V, l3: LossMath.V, lo: LossMath.V, hi: LossMath.V)
        -> (loss: LossMath.V, l1: LossMath.V, clipped: LossMath.M, dual: LossMath.M)
    {
        var rc = r
        rc.replace(with: lo, where: lo .> r)
        let l1 = negA * r
        let l2 = negA * rc
        let clipped = l2 .> l1
        var c1 = l1
        c1.replace(with: l2, where: clipped)
        let dual = c1 .> l3
        var loss = c1
        loss.replace(with: l3, where: dual)
        return (loss, l1, clipped, dual)
    }
}

/// One advantage per token, any sign: the general formula.
enum VanillaAnySign: VanillaForm {
    static var perToken: Bool { true }
    static var hasDual: Bool { true }
    @inline(__always)
    static func apply(r: LossMath.V, negA: LossMath.V, l3: LossMath.V, lo: LossMath.V, hi: LossMath.V)
        -> (loss: LossMath.V, l1: LossMath.V, clipped: LossMath.M, dual: LossMath.M)
    {
        let l1 = negA * r
        let l2 = negA * LossMath.clamp(r, lo, hi)
        let clipped = l2 .> l1
        var c1 = l1
        c1.replace(with: l2, where: clipped)
        let dual = (negA .> 0) .& (c1 .> l3)
        var loss = c1
        loss.replace(with: l3, where: dual)
        return (loss, l1, clipped, dual)
    }
}
