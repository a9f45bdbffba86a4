import Glibc

/// The statistics of a whole call that gspo, clip_cov and kl_cov need before their token
/// pass (step 2 of `PolicyLossEngine`).
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
extension PolicyLossEngine {
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

/// The covariance test of one group: its means, and Clip-Cov's bounds.
struct CovarianceTest {
    typealias V = LossMath.V
    typealias M = LossMath.M
    let meanA: V
    let meanX: V
    let lo: V
    let hi: V
    let lb: V
    let ub: V

    /// (A - mean A)(logp - mean logp).
    @inline(__always)
    func covariance(_ x: V, _ a: V) -> V { (a - meanA) * (x - meanX) }

    /// log(lo) (-inf for lo = 0) and log(hi): PPO's clip in log space.
    let logLo: V
    let logHi: V

    init(meanA: V, meanX: V, lo: V, hi: V, lb: V, ub: V) {
        self.meanA = meanA
        self.meanX = meanX
        self.lo = lo
        self.hi = hi
        self.lb = lb
        self.ub = ub
        logLo = V(repeating: lo[0] > 0 ? Glibc.log(lo[0]) : -.infinity)
        logHi = V(repeating: Glibc.log(hi[0]))
    }

    /// Clip-Cov candidates among four tokens: valid, not taken by PPO's clip (the token
    /// pass's test, `clipCovBranches`: L2 > L1 with r = e^δ), lb < cov < ub.
    @inline(__always)
    func candidates(_ x: V, _ o: V, _ a: V, _ valid: M) -> M {
        let xv = LossMath.keep(x, valid), ov = LossMath.keep(o, valid), av = LossMath.keep(a, valid)
        let cov = covariance(xv, av)
        let inBand = valid .& (cov .> lb) .& (cov .< ub)
        return inBand .& .!clipCovBranches(delta: xv - ov, negA: -av, lo: lo, hi: hi).clipped
    }

    /// The same without the exp, and the lanes where that is not certain, for a clip side
    /// `S` (the sign of a row's advantage; `BothSides` for advantages per token). With A > 0
    /// the clip test is r > hi, with A < 0 r < lo, and it never holds with A = 0; e^δ is
    /// accurate to 1.5e-15 and the products round to 2^-53, so outside a margin of 1e-10
    /// around log(hi) and log(lo) comparing δ decides it exactly. A block with an uncertain
    /// lane in the band is counted again with `candidates`.
    @inline(__always)
    func candidatesWithoutExp<S: ClipSide>(_: S.Type, _ x: V, _ o: V, _ a: V, _ valid: M) -> (candidates: M, uncertain: M) {
        let inBand = valid .& (covariance(x, a) .> lb) .& (covariance(x, a) .< ub)
        let t = S.test(x - o, a, self)
        return (inBand .& .!t.clipped, inBand .& t.near)
    }

    /// Candidates and uncertain lanes of tokens [from, to) of a row.
    @inline(__always)
    func countWithoutExp<S: ClipSide>(_ side: S.Type, _ row: StatRow, from: Int, to: Int)
        -> (SIMD4<Int64>, SIMD4<Int64>)
    {
        var count = SIMD4<Int64>(), uncertain = SIMD4<Int64>()
        row.vectors(from: from, to: to) { j, n, valid in
            let c = candidatesWithoutExp(S.self, row.x(j, n), row.o(j, n), row.a(j, n), valid)
            LossMath.count(&count, c.candidates)
            LossMath.count(&uncertain, c.uncertain)
        }
        return (count, uncertain)
    }

    static let margin = 1e-10
}

/// Which side of PPO's clip can take a token (see `CovarianceTest.candidatesWithoutExp`):
/// `clipped` where δ is beyond the bound's log, `near` within the margin of it.
protocol ClipSide {
    static func test(_ d: LossMath.V, _ a: LossMath.V, _ t: CovarianceTest) -> (clipped: LossMath.M, near: LossMath.M)
}

/// A > 0: only the upper bound.
enum UpperSide: ClipSide {
    @inline(__always)
    static func test(_ d: LossMath.V, _ a: LossMath.V, _ t: CovarianceTest) -> (clipped: LossMath.M, near: LossMath.M) {
        (d .> t.logHi, (d .>= t.logHi - CovarianceTest.margin) .& (d .<= t.logHi + CovarianceTest.margin))
    }
}

/// A < 0: only the lower bound.
enum LowerSide: ClipSide {
    @inline(__always)
    static func test(_ d: LossMath.V, _ a: LossMath.V, _ t: CovarianceTest) -> (clipped: LossMath.M, near: LossMath.M) {
        (d .< t.logLo, (d .>= t.logLo - CovarianceTest.margin) .& (d .<= t.logLo + CovarianceTest.margin))
    }
}

/// A = 0 (or -0): never clipped.
enum NoSide: ClipSide {
    @inline(__always)
    static func test(_ d: LossMath.V, _ a: LossMath.V, _ t: CovarianceTest) -> (clipped: LossMath.M, near: LossMath.M) {
        (LossMath.M(repeating: false), LossMath.M(repeating: false))
    }
}

/// Advantages per token: the side of each lane.
enum BothSides: ClipSide {
    @inline(__always)
    static func test(_ d: LossMath.V, _ a: LossMath.V, _ t: CovarianceTest) -> (clipped: LossMath.M, near: LossMath.M) {
        let up = UpperSide.test(d, a, t), down = LowerSide.test(d, a, t)
        let pos = a .> 0, neg = a .< 0
        return ((pos .& up.clipped) .| (neg .& down.clipped), (pos .& up.near) .| (neg .& down.near))
    }
}

/// Raw views of one row with valid tokens, for the statistics passes: pointers rebased so
/// that index i is flat token i, the row's valid span, its covariance group and, with
/// advantages per sequence, its advantage.
struct StatRow {
    typealias V = LossMath.V
    typealias M = LossMath.M
    let lp: UnsafePointer<Float>
    let olp: UnsafePointer<Float>
    /// Per-token advantages, or nil (then `aRow` holds the row's).
    let adv: UnsafePointer<Float>?
    let aRow: Double
    let mask: UnsafePointer<UInt8>
    let start: Int
    let end: Int
    let group: Int

    /// nil for a row without valid tokens. The buffers hold B * L elements
    /// (`LossBatch.checkShapes`), so the span lies inside every one of them.
    init?(_ batch: LossBatch, _ plan: AggregationPlan, _ b: Int) {
        let span = plan.rowSpan[b]
        guard !span.isEmpty, let lp = batch.logp.baseAddress, let olp = batch.oldLogp.baseAddress,
              let mask = batch.mask.baseAddress, let adv = batch.advantages.baseAddress else { return nil }
        self.lp = lp
        self.olp = olp
        self.mask = mask
        let isReg = plan.isRegRow[b]
        self.adv = batch.advantagesPerToken && !isReg ? adv : nil
        aRow = isReg ? 1 : (batch.advantagesPerToken ? 0 : Double(adv[b]))
        start = b * batch.length + span.lowerBound
        end = b * batch.length + span.upperBound
        group = plan.inRegTerm[b] ? 1 : 0
    }

    @inline(__always)
    func load(_ p: UnsafePointer<Float>, _ i: Int, _ n: Int) -> V {
        n == 4 ? LossMath.load(p + i) : LossMath.loadPartial(p + i, n)
    }
    @inline(__always) func x(_ i: Int, _ n: Int) -> V { load(lp, i, n) }
    @inline(__always) func o(_ i: Int, _ n: Int) -> V { load(olp, i, n) }
    @inline(__always) func a(_ i: Int, _ n: Int) -> V { adv.map { load($0, i, n) } ?? V(repeating: aRow) }

    /// Calls `body(i, n, valid)` for the vectors of the span: i is the flat index of the
    /// first of n (<= 4) tokens, and `valid` their mask lanes.
    @inline(__always)
    func vectors(_ body: (Int, Int, M) -> Void) { vectors(from: start, to: end, body) }

    /// The same over [from, to), a part of the span.
    @inline(__always)
    func vectors(from: Int, to: Int, _ body: (Int, Int, M) -> Void) {
        var i = from
        while i + 4 <= to {
            body(i, 4, LossMath.maskLanes(LossMath.maskWord(mask + i, 4)))
            i += 4
        }
        if i < to { body(i, to - i, LossMath.maskLanes(LossMath.maskWord(mask + i, to - i))) }
    }
}

/// The k largest (covariance, index) pairs seen, as a binary heap whose root is the
/// weakest: a pair beats another with a larger covariance, or an equal one and a lower
/// index.
struct TopCovariance {
    var cov: [Double] = []
    var index: [Int] = []
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        cov.reserveCapacity(min(capacity, 1 << 16))
        index.reserveCapacity(min(capacity, 1 << 16))
    }

    @inline(__always)
    func beats(_ a: Int, _ b: Int) -> Bool {
        cov[a] > cov[b] || (cov[a] == cov[b] && index[a] < index[b])
    }

    @inline(__always)
    mutating func offer(_ c: Double, _ i: Int) {
        if cov.count < capacity {
            cov.append(c)
            index.append(i)
            var j = cov.count - 1
            while j > 0 {
                let parent = (j - 1) / 2
                guard beats(parent, j) else { break }
                swapAt(parent, j)
                j = parent
            }
        } else if capacity > 0 && (c > cov[0] || (c == cov[0] && i < index[0])) {
            cov[0] = c
            index[0] = i
            var j = 0
            while true {
                var weakest = j
                let left = 2 * j + 1, right = left + 1
                if left < cov.count && beats(weakest, left) { weakest = left }
                if right < cov.count && beats(weakest, right) { weakest = right }
                if weakest == j { break }
                swapAt(weakest, j)
                j = weakest
            }
        }
    }

    /// Offers every valid token of a row. Within one scan indices only grow, so a token
    /// whose covariance does not exceed the root's of a full heap cannot enter it.
    mutating func scan(_ row: StatRow, _ test: CovarianceTest) {
        guard capacity > 0 else { return }
        row.vectors { i, n, valid in
            let c = test.covariance(row.x(i, n), row.a(i, n))
            if cov.count == capacity {
                guard any(valid .& (c .> LossMath.V(repeating: cov[0]))) else { return }
            }
            for lane in 0..<n where valid[lane] { offer(c[lane], i + lane) }
        }
    }

    @inline(__always)
    mutating func swapAt(_ a: Int, _ b: Int) {
        cov.swapAt(a, b)
        index.swapAt(a, b)
    }
}

/// The random stream of Clip-Cov's pick: uniform integers keyed by (seed, step, group),
/// from two levels of Philox4x32-10 as the sampler's stream. The stream key is the first 64
/// bits of the block at counter (step, tag + group) under key `seed` (the tag "ClipCov"
/// keeps these streams apart from the sampler's); draw j is the first 64 bits of the block
/// at counter (j, 0) under the stream key, mapped to [0, m) as floor(x m / 2^64) (bias below
/// m / 2^64).
public struct CovarianceDraws: Sendable {
    let generator: Philox4x32
    static let tag: UInt64 = 0x436C_6970_436F_7600  // "ClipCov\0"

    public init(seed: UInt64, step: Int64, group: UInt64) {
        let top = Philox4x32(key64: seed).block(UInt64(bitPattern: step), Self.tag | group)
        generator = Philox4x32(key: (top.0, top.1))
    }

    /// Draw j, uniform in [0, m).
    @inline(__always)
    public func below(_ m: Int, draw j: Int) -> Int {
        let b = generator.block(UInt64(j), 0)
        let x = UInt64(b.1) << 32 | UInt64(b.0)
        return Int(x.multipliedFullWidth(by: UInt64(m)).high)
    }

    /// k distinct values of [0, n), ascending, uniform over the k-subsets (Floyd's
    /// algorithm: for j = n - k ..< n, draw t in [0, j] with draw number j - (n - k); take t,
    /// or j when t is already taken).
    public func pick(_ k: Int, of n: Int) -> [Int] {
        guard k > 0, n > 0 else { return [] }
        guard k < n else { return Array(0..<n) }
        var taken = Set<Int>(minimumCapacity: k)
        for j in (n - k)..<n {
            let t = below(j + 1, draw: j - (n - k))
            if !taken.insert(t).inserted { taken.insert(j) }
        }
        return taken.sorted()
    }
}
