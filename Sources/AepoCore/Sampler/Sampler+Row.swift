import Glibc

// One row of the sampler.
//
// Plain sampling (no truncation) makes one pass over the logits: each 64-wide block first
// raises the running max if it holds a larger logit (rescaling what was summed so far),
// then adds its tempered weights and, for logp_t1, its T = 1 weights. The draw walks the
// block sums and recomputes the 64 weights of one block.
//
// With min-p, top-k or top-p, which need the final max before anything is kept or binned,
// there are two passes:
//   pass A: the row max (and a NaN check);
//   pass B: the tempered weights, their sum by 64-wide blocks, and the T = 1 sum for
//           logp_t1; with top-k or top-p it also bins every weight by its tempered gap to
//           the max, so the truncation threshold is found by walking a histogram and
//           selecting inside one bin instead of sorting the row.
// The draw then walks block sums (or bin masses) and touches one block (or one bin).

/// Per-row result. `status` is a RowStatus code; the rest is valid when it is ok.
struct RowOutput {
    var status: UInt8 = RowStatus.ok
    var token = 0
    var logp = 0.0
    var logpT1 = 0.0
    var kept = 0
}

/// Everything about a call that is the same for every row.
struct RowPlan: Sendable {
    let greedy: Bool
    let temperature: Double
    let invT: Float
    let invTd: Double
    let isUnitTemperature: Bool
    /// ln(min_p) when min-p is on.
    let logMinP: Double?
    let topK: Int
    let topP: Double
    let wantLogpT1: Bool
    let wantKept: Bool
    /// top-k small enough for the candidate filter (Sampler+TopK.swift).
    let usesSmallTopK: Bool

    init(config: SamplerConfig, temperature: Double, vocab: Int, wantLogpT1: Bool, wantKept: Bool) {
        greedy = config.greedy
        self.temperature = temperature
        invTd = 1 / temperature
        invT = Float(invTd)
        isUnitTemperature = temperature == 1
        logMinP = config.minP > 0 ? log(config.minP) : nil
        // top-k at or above V can never cut.
        topK = config.topK > 0 && config.topK < Int64(vocab) ? Int(config.topK) : 0
        topP = config.topP
        self.wantLogpT1 = wantLogpT1
        self.wantKept = wantKept
        usesSmallTopK = topK > 0 && topK <= min(smallTopKLimit, vocab / 4)
    }

    var needsHistogram: Bool { !greedy && (topK > 0 || topP < 1) }

    func sampleRow(_ x: UnsafePointer<Float>, u: Double, work: SamplerWorkspace) -> RowOutput {
        let n = work.vocab
        if !greedy && logMinP == nil && !needsHistogram { return plainRow(x, n, u: u, work: work) }
        let (m, hasNaN) = rowMax(x, n)
        guard !hasNaN, m.isFinite else { return RowOutput(status: RowStatus.badValue) }
        if greedy { return greedyRow(x, n, m) }
        let tauF = logMinP.map { minPThreshold(m, $0) } ?? -Float.greatestFiniteMagnitude
        if usesSmallTopK {
            return smallTopKRow(x, n, m, tauF: tauF, u: u, work: work)
        }
        if needsHistogram {
            return truncatedRow(x, n, m, tauF: tauF, u: u, work: work)
        }
        return thresholdRow(x, n, m, tauF: tauF, u: u, work: work)
    }

    /// min-p as a logit threshold: keep x >= tau, tau = m + T ln(min_p), returned as the
    /// smallest float >= tau so that a float comparison decides exactly; never below the
    /// most negative finite float, so -inf is always dropped.
    func minPThreshold(_ m: Float, _ logMinP: Double) -> Float {
        let tau = Double(m) + temperature * logMinP
        var t = Float(tau)
        if Double(t) < tau { t = t.nextUp }
        return max(t, -Float.greatestFiniteMagnitude)
    }

    // MARK: - pass A

    @inline(__always)
    func rowMax(_ x: UnsafePointer<Float>, _ n: Int) -> (Float, Bool) {
        var m0 = SIMD8<Float>(repeating: -.infinity), m1 = m0
        var bad = SIMD8<Float>(repeating: 0)
        let one = SIMD8<Float>(repeating: 1)
        var i = 0
        while i + 16 <= n {
            let a = load8(x + i), b = load8(x + i + 8)
            m0.replace(with: a, where: a .> m0)
            m1.replace(with: b, where: b .> m1)
            bad.replace(with: one, where: a .!= a)
            bad.replace(with: one, where: b .!= b)
            i &+= 16
        }
        m0.replace(with: m1, where: m1 .> m0)
        var m = horizontalMax(m0)
        var nan = horizontalMax(bad) > 0
        while i < n {
            let v = x[i]
            if v > m { m = v }
            if v.isNaN { nan = true }
            i &+= 1
        }
        return (m, nan)
    }

    // MARK: - greedy

    func greedyRow(_ x: UnsafePointer<Float>, _ n: Int, _ m: Float) -> RowOutput {
        var token = 0
        while x[token] != m { token &+= 1 }
        var out = RowOutput(token: token, logp: 0, kept: 1)
        if wantLogpT1 {
            let s1 = sumExp(x, n, m)
            out.logpT1 = (Double(x[token]) - Double(m)) - log(s1)
        }
        return out
    }

    /// sum over the row of exp(x - m), in Double.
    func sumExp(_ x: UnsafePointer<Float>, _ n: Int, _ m: Float) -> Double {
        let mv = SIMD8<Float>(repeating: m)
        var total = 0.0
        var i = 0
        while i < n {
            let len = min(blockWidth, n - i)
            var s = SIMD8<Float>()
            var j = 0
            while j < len {
                s += FastMath.expNonPositive(load8(x + i + j, len - j) - mv)
                j &+= 8
            }
            total += Double(s.sum())
            i &+= blockWidth
        }
        return total
    }

    // MARK: - plain sampling, one pass

    func plainRow(_ x: UnsafePointer<Float>, _ n: Int, u: Double, work: SamplerWorkspace) -> RowOutput {
        let it = SIMD8<Float>(repeating: invT)
        let sums = work.blockSums, refs = work.blockRefs
        let needSeparateT1 = wantLogpT1 && !isUnitTemperature
        var m = -Float.infinity
        var mv = SIMD8<Float>(repeating: m)
        var total1 = 0.0
        var b = 0
        var i = 0
        while i < n {
            let len = min(blockWidth, n - i)
            let p = x + i
            if len == blockWidth {
                var v0 = load8(p), v1 = load8(p + 8), v2 = load8(p + 16), v3 = load8(p + 24)
                let v4 = load8(p + 32), v5 = load8(p + 40), v6 = load8(p + 48), v7 = load8(p + 56)
                v0.replace(with: v4, where: v4 .> v0)
                v1.replace(with: v5, where: v5 .> v1)
                v2.replace(with: v6, where: v6 .> v2)
                v3.replace(with: v7, where: v7 .> v3)
                v0.replace(with: v2, where: v2 .> v0)
                v1.replace(with: v3, where: v3 .> v1)
                v0.replace(with: v1, where: v1 .> v0)
                let bm = horizontalMax(v0)
                if bm > m {
                    total1 *= exp(Double(m) - Double(bm))
                    m = bm
                    mv = SIMD8<Float>(repeating: m)
                }
            } else {
                var j = 0
                while j < len {
                    if p[j] > m { total1 *= exp(Double(m) - Double(p[j])); m = p[j] }
                    j &+= 1
                }
                mv = SIMD8<Float>(repeating: m)
            }
            // Two loops over the block (it is in L1): one exp chain each keeps every value
            // in registers.
            var s = SIMD8<Float>(), s1 = SIMD8<Float>()
            if len == blockWidth {
                var k = 0
                while k < blockWidth {
                    s += FastMath.expNonPositive((load8(p + k) - mv) * it)
                    k &+= 8
                }
                if needSeparateT1 {
                    k = 0
                    while k < blockWidth {
                        s1 += FastMath.expNonPositive(load8(p + k) - mv)
                        k &+= 8
                    }
                }
            } else {
                var j = 0
                while j < len {
                    let d = load8(p + j, len - j) - mv
                    s += FastMath.expNonPositive(d * it)
                    if needSeparateT1 { s1 += FastMath.expNonPositive(d) }
                    j &+= 8
                }
            }
            sums[b] = Double(s.sum())
            refs[b] = m
            total1 += needSeparateT1 ? Double(s1.sum()) : sums[b]
            b &+= 1
            i &+= blockWidth
        }
        // NaN anywhere makes a sum NaN; +inf makes m infinite; all -inf leaves m = -inf.
        guard m.isFinite, total1.isFinite else { return RowOutput(status: RowStatus.badValue) }

        // Block sums against the final max: a block formed against an earlier max r is
        // scaled by exp((r - m) / T). The total and the walk use the same products in the
        // same order, so the walk always ends inside the total.
        var total = 0.0
        var ref = Float.nan, scale = 1.0
        for k in 0..<b {
            if refs[k] != ref { ref = refs[k]; scale = exp((Double(ref) - Double(m)) * invTd) }
            sums[k] *= scale
            total += sums[k]
        }
        let target = u * total
        var cum = 0.0
        var token = -1
        for k in 0..<b {
            let bs = sums[k]
            if cum + bs > target {
                token = drawInBlock(x, n, start: k * blockWidth, m: m, tauF: -.greatestFiniteMagnitude,
                                    cum: cum, target: target)
                break
            }
            cum += bs
        }
        if token < 0 { token = firstMax(x, m) }
        var out = RowOutput(token: token)
        let gap = Double(x[token]) - Double(m)
        out.logp = gap * invTd - log(total)
        if wantLogpT1 { out.logpT1 = gap - log(total1) }
        if wantKept { out.kept = countFinite(x, n) }
        return out
    }

    /// The number of logits that are not -inf (the kept count without truncation).
    func countFinite(_ x: UnsafePointer<Float>, _ n: Int) -> Int {
        var c = SIMD8<Int32>()
        let ninf = SIMD8<Float>(repeating: -.infinity)
        var i = 0
        while i + 8 <= n {
            c &-= unsafeBitCast(load8(x + i) .> ninf, to: SIMD8<Int32>.self)
            i &+= 8
        }
        var total = Int(c.wrappedSum())
        while i < n {
            if x[i] > -.infinity { total &+= 1 }
            i &+= 1
        }
        return total
    }

    // MARK: - min-p without top-k or top-p

    /// min-p: pass B forms the masked weights' block sums, the draw walks them and
    /// recomputes the 64 weights of one block.
    func thresholdRow(_ x: UnsafePointer<Float>, _ n: Int, _ m: Float, tauF: Float,
                      u: Double, work: SamplerWorkspace) -> RowOutput {
        let mv = SIMD8<Float>(repeating: m)
        let tv = SIMD8<Float>(repeating: tauF)
        let it = SIMD8<Float>(repeating: invT)
        let blocks = work.blockSums
        let needSeparateT1 = wantLogpT1 && !isUnitTemperature
        var total = 0.0, total1 = 0.0
        var count = SIMD8<Int32>()
        var b = 0
        var i = 0
        while i < n {
            let len = min(blockWidth, n - i)
            var s = SIMD8<Float>(), sAll = SIMD8<Float>(), s1 = SIMD8<Float>()
            var j = 0
            while j < len {
                let xv = load8(x + i + j, len - j)
                var w = FastMath.expNonPositive((xv - mv) * it)
                sAll += w
                let keep = xv .>= tv
                count &-= unsafeBitCast(keep, to: SIMD8<Int32>.self)
                w.replace(with: 0, where: .!keep)
                s += w
                if needSeparateT1 { s1 += FastMath.expNonPositive(xv - mv) }
                j &+= 8
            }
            let bs = Double(s.sum())
            blocks[b] = bs
            total += bs
            total1 += needSeparateT1 ? Double(s1.sum()) : Double(sAll.sum())
            b &+= 1
            i &+= blockWidth
        }
        // Draw: find the block, then the token inside it.
        let target = u * total
        var cum = 0.0
        var token = -1
        for k in 0..<b {
            let bs = blocks[k]
            if cum + bs > target {
                token = drawInBlock(x, n, start: k * blockWidth, m: m, tauF: tauF, cum: cum, target: target)
                break
            }
            cum += bs
        }
        if token < 0 { token = firstMax(x, m) }  // rounding put the target past the total
        var out = RowOutput(token: token)
        let gap = Double(x[token]) - Double(m)
        out.logp = gap * invTd - log(total)
        if wantLogpT1 { out.logpT1 = gap - log(total1) }
        out.kept = Int(count.wrappedSum())
        return out
    }

    /// The token of one 64-wide block where the running mass first exceeds `target`.
    func drawInBlock(_ x: UnsafePointer<Float>, _ n: Int, start: Int, m: Float, tauF: Float,
                     cum: Double, target: Double) -> Int {
        let len = min(blockWidth, n - start)
        var c = cum
        var last = -1
        var j = 0
        let mv = SIMD8<Float>(repeating: m)
        let it = SIMD8<Float>(repeating: invT)
        while j < len {
            let xv = load8(x + start + j, len - j)
            var w = FastMath.expNonPositive((xv - mv) * it)
            w.replace(with: 0, where: xv .< SIMD8<Float>(repeating: tauF))
            for lane in 0..<min(8, len - j) where w[lane] > 0 {
                c += Double(w[lane])
                last = start + j + lane
                if c > target { return last }
            }
            j &+= 8
        }
        return last
    }

    func firstMax(_ x: UnsafePointer<Float>, _ m: Float) -> Int {
        var i = 0
        while x[i] != m { i &+= 1 }
        return i
    }
}

let blockWidth = 64

/// The largest lane (NaN lanes are ignored unless all are NaN), by halving shuffles.
@inline(__always)
func horizontalMax(_ v: SIMD8<Float>) -> Float {
    var a = v.lowHalf
    a.replace(with: v.highHalf, where: v.highHalf .> a)
    var b = a.lowHalf
    b.replace(with: a.highHalf, where: a.highHalf .> b)
    return b[1] > b[0] ? b[1] : b[0]
}

/// Loads 8 floats; past `available` the lanes are -inf (weight 0).
@inline(__always)
func load8(_ p: UnsafePointer<Float>, _ available: Int = 8) -> SIMD8<Float> {
    if available >= 8 { return UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
    var v = SIMD8<Float>(repeating: -.infinity)
    for j in 0..<available { v[j] = p[j] }
    return v
}
