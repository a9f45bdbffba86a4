import Glibc

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
