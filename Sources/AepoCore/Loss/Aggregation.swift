/// Step 1 of the loss engine: from the mask, the regulariser rows and the global counts,
/// the weight with which every row's token values enter the loss.
///
/// All five aggregation modes are linear in the per-token values with one weight per row:
///
///     loss = sum_b W_b * sum_t M[b,t] * value[b,t]
///
/// | mode                    | W_b (main rows)                  |
/// |-------------------------|----------------------------------|
/// | token-mean              | dp / N                           |
/// | token-sum               | dp                               |
/// | seq-mean-token-sum      | dp / G                           |
/// | seq-mean-token-mean     | dp / (G * (n_b + 1e-8))          |
/// | seq-mean-token-sum-norm | dp / (G * K)                     |
///
/// N is `global_tokens` (or this call's valid main tokens), G is `global_seqs` (or this
/// call's non-empty main rows), n_b the valid tokens of row b, K `loss_scale_factor`, and
/// dp `dp_size`. This is verl's `agg_loss` with the global batch info, so the losses and
/// gradients of micro-batches (times 1/dp after the data-parallel mean) add up to the loss
/// and gradient of one call on the whole batch. The policy, KL and entropy terms share
/// these weights. Regulariser rows under `weighted` get W = alpha * dp / N_reg on the policy
/// term (token-mean over regulariser tokens) and 0 on the KL and entropy terms; under
/// `replace` they are ordinary rows.
///
/// Because the weights are known before any token is touched, a caller that produces
/// log-probs block by block (the fused LM head) can run the token kernel on each block.
public struct AggregationPlan: Sendable {
    public var rows: Int
    public var length: Int
    /// Weight of row b in the policy term (main term, or the weighted regulariser term).
    public var policyWeight: [Double]
    /// Weight of row b in the KL and entropy terms.
    public var auxWeight: [Double]
    /// Valid tokens of row b.
    public var rowTokens: [Int]
    /// Offsets in row b of its first valid token and one past its last (0..<0 when empty);
    /// the token kernel skips the vectors outside this span.
    public var rowSpan: [Range<Int>]
    /// Whether row b is a regulariser row.
    public var isRegRow: [Bool]
    /// Whether row b's policy term goes to the separate `weighted` regulariser sum.
    public var inRegTerm: [Bool]
    public var mainTokens = 0
    public var mainSeqs = 0
    public var regTokens = 0
    public var regRowCount = 0
    public var allTokens = 0
    public var allSeqs = 0
    public var regAlpha: Double

    // Statistics of the whole call for the modes that need them (`Loss.prepare`).
    /// gspo: per row, s_b = e^min(m_b, 10) with m_b the row's mean log-ratio.
    public var sequenceRatio: [Double] = []
    /// gspo: per row, whether m_b <= 10 (the clamp passes the gradient).
    public var sequenceRatioFlows: [Bool] = []
    /// clip_cov and kl_cov: the selected flat token indices, ascending.
    public var selected: [Int] = []
    /// Whether `prepare` has run.
    public var prepared = false

    /// Validates the mask (0/1) and `reg_rows` (0/1), counts tokens and rows, resolves the
    /// global counts and forms the weights.
    public static func make(_ batch: LossBatch, mode: AggregationMode, combine: RegularizerCombine,
                            lossScaleFactor: Double, defaultAlpha: Double) throws(AepoFailure) -> AggregationPlan {
        let B = batch.rows, L = batch.length
        // Rows of length 0 hold no token, so there is nothing to keep per row: B may then be
        // any size without a buffer of B elements behind it (per-token advantages, no
        // reg_rows), and the plan must not allocate for it.
        let perRow = L > 0 ? B : 0
        var plan = AggregationPlan(rows: B, length: L,
                                   policyWeight: [Double](repeating: 0, count: perRow),
                                   auxWeight: [Double](repeating: 0, count: perRow),
                                   rowTokens: [Int](repeating: 0, count: perRow),
                                   rowSpan: [Range<Int>](repeating: 0..<0, count: perRow),
                                   isRegRow: [Bool](repeating: false, count: perRow),
                                   inRegTerm: [Bool](repeating: false, count: perRow),
                                   regAlpha: batch.regAlpha ?? defaultAlpha)
        if let reg = batch.regRows {
            for b in 0..<B {
                let v = reg[b]
                guard v <= 1 else {
                    throw .invalid("reg_rows", "reg_rows[\(b)] is \(v); values must be 0 or 1", index: b)
                }
                if perRow > 0 { plan.isRegRow[b] = v == 1 } else if v == 1 { plan.regRowCount += 1 }
            }
        }
        if let base = batch.mask.baseAddress {
            for b in 0..<perRow {
                (plan.rowTokens[b], plan.rowSpan[b]) = try countRow(base + b * L, L, rowStart: b * L)
            }
        }
        let weighted = combine == .weighted
        for b in 0..<perRow {
            let n = plan.rowTokens[b]
            plan.allTokens += n
            if n > 0 { plan.allSeqs += 1 }
            if plan.isRegRow[b] {
                plan.regRowCount += 1
                plan.regTokens += n
                plan.inRegTerm[b] = weighted
                if weighted { continue }
            }
            plan.mainTokens += n
            if n > 0 { plan.mainSeqs += 1 }
        }

        let dp = Double(batch.dpSize)
        // The count a mode divides by: the global one when given, else this call's own.
        func resolve(_ given: Int?, _ local: Int, _ name: String, _ what: String) throws(AepoFailure) -> Int {
            if let g = given {
                guard g >= local else {
                    throw .invalid(name, "is \(g), but this call alone has \(local) \(what); the global count must include every micro-batch and rank")
                }
                return g
            }
            guard batch.dpSize == 1 else {
                throw .invalid(name, "is required when dp_size > 1 (dp_size = \(batch.dpSize)); pass the \(what) of the whole mini-batch across ranks")
            }
            guard local > 0 else {
                throw .invalid(name, "the batch has no \(what) (mask is all 0 on the main rows) and \(name) was not given; pass the global count, or skip the call")
            }
            return local
        }

        var w = 0.0
        var perRowMean = false
        switch mode {
        case .tokenSum:
            w = dp
        case .tokenMean:
            let n = try resolve(batch.globalTokens, plan.mainTokens, "global_tokens", "valid tokens")
            w = n > 0 ? dp / Double(n) : 0
        case .seqMeanTokenSum, .seqMeanTokenMean, .seqMeanTokenSumNorm:
            let g = try resolve(batch.globalSeqs, plan.mainSeqs, "global_seqs", "non-empty sequences")
            w = g > 0 ? dp / Double(g) : 0
            if mode == .seqMeanTokenSumNorm { w /= lossScaleFactor }
            perRowMean = mode == .seqMeanTokenMean
        }
        var wReg = 0.0
        if weighted && plan.regRowCount > 0 {
            if let g = batch.globalRegTokens {
                guard g >= plan.regTokens else {
                    throw .invalid("global_reg_tokens", "is \(g), but this call alone has \(plan.regTokens) regulariser tokens; the global count must include every micro-batch and rank")
                }
                wReg = g > 0 ? plan.regAlpha * dp / Double(g) : 0
            } else {
                guard batch.dpSize == 1 || plan.regTokens == 0 else {
                    throw .invalid("global_reg_tokens", "is required when dp_size > 1 and the batch has regulariser rows (dp_size = \(batch.dpSize))")
                }
                wReg = plan.regTokens > 0 ? plan.regAlpha * dp / Double(plan.regTokens) : 0
            }
        }
        for b in 0..<perRow {
            if plan.inRegTerm[b] {
                plan.policyWeight[b] = wReg
                plan.auxWeight[b] = 0
            } else {
                let wb = perRowMean ? w / (Double(plan.rowTokens[b]) + 1e-8) : w
                plan.policyWeight[b] = wb
                plan.auxWeight[b] = wb
            }
        }
        return plan
    }

    /// Valid tokens of one row and the span from its first to its last valid token; throws
    /// for a mask byte other than 0 or 1.
    static func countRow(_ p: UnsafePointer<UInt8>, _ n: Int, rowStart: Int) throws(AepoFailure) -> (Int, Range<Int>) {
        var count = 0
        var first = -1, last = -1
        var i = 0
        var bad = false
        while i + 8 <= n {
            let w = UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self)
            if w & 0xFEFE_FEFE_FEFE_FEFE != 0 { bad = true; break }
            if w != 0 {
                count &+= Int(truncatingIfNeeded: (w &* 0x0101_0101_0101_0101) >> 56)
                if first < 0 { first = i + w.littleEndian.trailingZeroBitCount / 8 }
                last = i + 7 - w.littleEndian.leadingZeroBitCount / 8
            }
            i += 8
        }
        while !bad && i < n {
            let v = p[i]
            if v > 1 { bad = true; break }
            if v == 1 {
                count &+= 1
                if first < 0 { first = i }
                last = i
            }
            i += 1
        }
        if bad {
            for j in 0..<n where p[j] > 1 {
                throw .invalid("mask", "mask[\(rowStart + j)] is \(p[j]); mask values must be 0 or 1", index: rowStart + j)
            }
        }
        return (count, first < 0 ? 0..<0 : first..<(last + 1))
    }
}
