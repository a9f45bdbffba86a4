import Glibc

/// The statistics of a whole call that gspo, clip_cov and kl_cov need before their token
/// pass (step 2 of `Loss`).
///
/// **gspo** (verl `compute_policy_loss_gspo`): per row b, m_b = sum_t M (logp - old_logp) /
/// max(n_b, 1), and s_b = e^min(m_b, 10).
///
/// **Covariance groups.** clip_cov and kl_cov compute their statistics over the valid
/// tokens of the call, as verl does over its micro-batch. Under `regularizer.combine =
/// "weighted"` the regulariser rows form a separate loss term, so they form a separate
/// group with statistics of its own (as if that term were its own call, with A = 1); under
/// "replace" every row is in one group. With A the token's advantage (1 on regulariser
/// rows) and N the group's valid tokens:
///
/// **clip_cov** (verl `compute_policy_loss_clip_cov`): with verl's masked means
/// (+1e-8 in the denominator), cov = (A - mean A) (logp - mean logp). The candidates are the
/// valid tokens that PPO's clip did not take (L2 > L1 false, `clipCovBranches`) with
/// clip_cov_lb < cov < clip_cov_ub. k = max(floor(clip_cov_ratio N), 1) of them, or all of
/// them when there are fewer, are picked uniformly at random and detached (loss and
/// gradient 0). verl draws the pick with an unseeded `torch.randperm`; libaepo draws it with
/// Floyd's algorithm from a counter-based stream keyed by (`loss.seed`, `step`, group), so
/// a given seed and step pick the same tokens on every run, with any thread count
/// (`CovarianceDraws`).
///
/// **kl_cov** (verl `compute_policy_loss_kl_cov`): with plain means, cov = (A - mean A)
/// (logp - mean logp) over the valid tokens, and the k = max(1, floor(N kl_cov_ratio))
/// tokens of largest cov are selected; equal covariances go to the lower flat index (verl's
/// `torch.topk` leaves ties unspecified).
///
/// Numerical properties: sums per row in four float64 lanes over the row's valid span,
/// rows combined in row order; covariances in float64. Each row's work is independent of
/// how rows are split over threads, and the top-k order (covariance, then index) is total,
/// so the selection is the same for every thread count.
///
/// The pieces live beside this file: `CovarianceTest.swift` (a group's test, the clip sides
/// and the row views), `TopCovariance.swift` (kl_cov's top-k heap) and
/// `CovarianceDraws.swift` (clip_cov's random stream).
extension Loss {
    typealias V = LossMath.V
    typealias M = LossMath.M

    /// Threads for a pass over the whole batch (as `compute`).
    func statisticsWorkers(_ batch: LossBatch) -> Int {
        min(Int(config.loss.threads), max(1, batch.rows * batch.length / 16384))
    }

    // MARK: gspo

    func sequenceRatios(_ batch: LossBatch, _ plan: inout AggregationPlan) throws(AepoFailure) {
        let B = batch.rows
        var logRatio = [Double](repeating: 0, count: B)
        let p = plan
        logRatio.withUnsafeMutableBufferPointer { out in
            parallelRanges(count: B, threads: statisticsWorkers(batch)) { rows in
                for b in rows {
                    guard let row = StatRow(batch, p, b) else { continue }
                    var acc = V()
                    row.vectors { i, n, valid in acc += LossMath.keep(row.x(i, n) - row.o(i, n), valid) }
                    out[b] = acc.sum() / Double(max(p.rowTokens[b], 1))
                }
            }
        }
        if logRatio.contains(where: { !$0.isFinite }) { try findNonFinite(batch, plan) }
        plan.sequenceRatio = logRatio.map { Glibc.exp(min($0, 10)) }
        plan.sequenceRatioFlows = logRatio.map { $0 <= 10 }
    }

    // MARK: covariance selections

    func covarianceSelection(_ batch: LossBatch, _ plan: inout AggregationPlan) throws(AepoFailure) {
        let B = batch.rows
        let p = plan
        let workers = statisticsWorkers(batch)
        // Pass 1: per row, the sums of A and logp over valid tokens (and of old_logp, so that
        // a non-finite input is reported before anything is written).
        var sums = [SIMD4<Double>](repeating: SIMD4<Double>(), count: B)
        sums.withUnsafeMutableBufferPointer { out in
            parallelRanges(count: B, threads: workers) { rows in
                for b in rows {
                    guard let row = StatRow(batch, p, b) else { continue }
                    var sa = V(), sx = V(), so = V()
                    row.vectors { i, n, valid in
                        sx += LossMath.keep(row.x(i, n), valid)
                        so += LossMath.keep(row.o(i, n), valid)
                        if row.adv != nil { sa += LossMath.keep(row.a(i, n), valid) }
                    }
                    // n_b A_b: exact in float64 for rows below 2^29 tokens (a 24-bit significand times
                    // the count), so it equals the per-token sum of the same values.
                    let a = row.adv != nil ? sa.sum() : Double(p.rowTokens[b]) * row.aRow
                    out[b] = SIMD4(a, sx.sum(), so.sum(), 0)
                }
            }
        }
        var sumA = [0.0, 0.0], sumX = [0.0, 0.0]
        var bad = false
        for b in 0..<B {
            let g = plan.inRegTerm[b] ? 1 : 0
            sumA[g] += sums[b][0]
            sumX[g] += sums[b][1]
            if !(sums[b][0] + sums[b][1] + sums[b][2]).isFinite { bad = true }
        }
        if bad { try findNonFinite(batch, plan) }
        let count = [Double(plan.mainTokens), Double(plan.regTokens)]
        let eps = mode == .clipCov ? 1e-8 : 0
        let l = config.loss
        var tests: [CovarianceTest] = []
        for g in 0..<2 {
            let ma = count[g] > 0 ? sumA[g] / (count[g] + eps) : 0
            let mx = count[g] > 0 ? sumX[g] / (count[g] + eps) : 0
            tests.append(CovarianceTest(meanA: V(repeating: ma), meanX: V(repeating: mx),
                                        lo: V(repeating: 1 - l.clipRatioLow), hi: V(repeating: 1 + l.clipRatioHigh),
                                        lb: V(repeating: l.clipCovLb), ub: V(repeating: l.clipCovUb)))
        }
        if mode == .clipCov {
            plan.selected = clipCovPick(batch, p, tests, workers: workers)
        } else {
            plan.selected = klCovTop(batch, p, tests, workers: workers)
        }
    }

    /// Tokens per group to select: max(floor(ratio N), 1) of the group's N valid tokens.
    func selectionSize(_ ratio: Double, tokens: Int) -> Int {
        tokens > 0 ? max(Int(ratio * Double(tokens)), 1) : 0
    }

    func clipCovPick(_ batch: LossBatch, _ plan: AggregationPlan, _ tests: [CovarianceTest], workers: Int) -> [Int] {
        // Candidates are counted per block of 64 tokens from the start of each row's valid
        // span; a drawn rank is then found by rescanning one block.
        let B = batch.rows
        let perRow = (batch.length + 63) / 64
        var counts = [Int32](repeating: 0, count: B * perRow)
        counts.withUnsafeMutableBufferPointer { out in
            parallelRanges(count: B, threads: workers) { rows in
                for b in rows {
                    guard let row = StatRow(batch, plan, b) else { continue }
                    let test = tests[row.group]
                    var block = 0
                    var i = row.start
                    while i < row.end {
                        let end = min(i + 64, row.end)
                        var (count, uncertain): (SIMD4<Int64>, SIMD4<Int64>)
                        if row.adv != nil {
                            (count, uncertain) = test.countWithoutExp(BothSides.self, row, from: i, to: end)
                        } else if row.aRow > 0 {
                            (count, uncertain) = test.countWithoutExp(UpperSide.self, row, from: i, to: end)
                        } else if row.aRow < 0 {
                            (count, uncertain) = test.countWithoutExp(LowerSide.self, row, from: i, to: end)
                        } else {
                            (count, uncertain) = test.countWithoutExp(NoSide.self, row, from: i, to: end)
                        }
                        if uncertain != SIMD4<Int64>() {
                            count = SIMD4<Int64>()
                            row.vectors(from: i, to: end) { j, n, valid in
                                LossMath.count(&count, test.candidates(row.x(j, n), row.o(j, n), row.a(j, n), valid))
                            }
                        }
                        out[b * perRow + block] = Int32(truncatingIfNeeded: count.wrappedSum())
                        block += 1
                        i += 64
                    }
                }
            }
        }
        var selected: [Int] = []
        for g in 0..<2 {
            let rows = (0..<B).filter { (plan.inRegTerm[$0] ? 1 : 0) == g && plan.rowTokens[$0] > 0 }
            var total = 0
            for b in rows { for j in 0..<perRow { total += Int(counts[b * perRow + j]) } }
            let tokens = g == 0 ? plan.mainTokens : plan.regTokens
            let k = min(selectionSize(config.loss.clipCovRatio, tokens: tokens), total)
            guard k > 0 else { continue }
            let draws = CovarianceDraws(seed: UInt64(bitPattern: config.loss.seed), step: batch.step, group: UInt64(g))
            // Ranks count the group's candidates in flat index order: walk the blocks to the
            // one holding each rank, then its tokens.
            let ranks = draws.pick(k, of: total)
            var next = 0
            var offset = 0
            for b in rows where next < ranks.count {
                guard let row = StatRow(batch, plan, b) else { continue }
                let test = tests[g]
                for j in 0..<perRow where next < ranks.count {
                    let n = Int(counts[b * perRow + j])
                    defer { offset += n }
                    guard n > 0, ranks[next] < offset + n else { continue }
                    var rank = offset
                    let lo = row.start + 64 * j
                    row.vectors(from: lo, to: min(lo + 64, row.end)) { i, w, valid in
                        let m = test.candidates(row.x(i, w), row.o(i, w), row.a(i, w), valid)
                        for lane in 0..<w where m[lane] {
                            if next < ranks.count && ranks[next] == rank {
                                selected.append(i + lane)
                                next += 1
                            }
                            rank += 1
                        }
                    }
                }
            }
        }
        selected.sort()
        return selected
    }

    func klCovTop(_ batch: LossBatch, _ plan: AggregationPlan, _ tests: [CovarianceTest], workers: Int) -> [Int] {
        let B = batch.rows
        let ratio = config.loss.klCovRatio
        let k = [selectionSize(ratio, tokens: plan.mainTokens), selectionSize(ratio, tokens: plan.regTokens)]
        guard k[0] + k[1] > 0 else { return [] }
        // Each part of the rows keeps its own top k per group; the parts are then merged. The
        // order (covariance, then lower index) is total, so the result does not depend on
        // the split.
        let parts = workers == 1 ? 1 : 4 * workers
        let tops = UnsafeMutableBufferPointer<[TopCovariance]>.allocate(capacity: parts)
        defer { tops.deinitialize().deallocate() }
        tops.initialize(repeating: [])
        parallelRanges(count: parts, threads: workers) { mine in
            for part in mine {
                var h0 = TopCovariance(capacity: k[0]), h1 = TopCovariance(capacity: k[1])
                for b in partRange(count: B, parts: parts, part: part) {
                    guard let row = StatRow(batch, plan, b) else { continue }
                    let test = tests[row.group]
                    if row.group == 0 { h0.scan(row, test) } else { h1.scan(row, test) }
                }
                tops[part] = [h0, h1]
            }
        }
        var selected: [Int] = []
        for g in 0..<2 where k[g] > 0 {
            var merged = TopCovariance(capacity: k[g])
            for part in 0..<parts where tops[part].count == 2 {
                let h = tops[part][g]
                for j in 0..<h.cov.count { merged.offer(h.cov[j], h.index[j]) }
            }
            selected += merged.index
        }
        selected.sort()
        return selected
    }
}
