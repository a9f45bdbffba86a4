import Glibc

// One row of the sampler, in two passes over the logits:
//   pass A: the row max;
//   pass B: the tempered weights, summed by blocks; with top-k or top-p also binned by
//           their tempered gap to the max, so the truncation threshold is found by walking
//           a histogram and selecting inside one bin instead of sorting the row.
// The draw then walks block sums (or bin masses) and touches one block (or one bin). The
// T = 1 sum for logp_t1 is a separate run over the row (still in cache).
//
// The exp-heavy loops of plain sampling and of the T = 1 sum are the shared
// `SoftmaxKernels` (SIMD8, or AVX2 + FMA chosen at run time); the truncating paths use
// FastMath's SIMD8 exp directly, as they also bin or filter per lane.

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
    /// Which loops run the exp-heavy sums.
    let isa: KernelISA

    init(config: SamplerConfig, temperature: Double, vocab: Int, wantLogpT1: Bool, wantKept: Bool,
         isa: KernelISA) {
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
        self.isa = isa
    }

    var needsHistogram: Bool { !greedy && (topK > 0 || topP < 1) }

    func sampleRow(_ x: UnsafePointer<Float>, u: Double, work: SamplerWorkspace) -> RowOutput {
        let n = work.vocab
        if !greedy && logMinP == nil && !needsHistogram { return plainRow(x, n, u: u, work: work) }
        if needsHistogram && !usesSmallTopK {
            // The histogram pass sums every weight, which notices NaN, so the max can come
            // from the shared kernel (NaN ignored).
            let m = SoftmaxKernels.max(x, n, isa)
            guard m.isFinite else { return RowOutput(status: RowStatus.badValue) }
            let tauF = logMinP.map { minPThreshold(m, $0) } ?? -Float.greatestFiniteMagnitude
            return truncatedRow(x, n, m, tauF: tauF, u: u, work: work)
        }
        let (m, hasNaN) = rowMax(x, n)
        guard !hasNaN, m.isFinite else { return RowOutput(status: RowStatus.badValue) }
        if greedy { return greedyRow(x, n, m) }
        let tauF = logMinP.map { minPThreshold(m, $0) } ?? -Float.greatestFiniteMagnitude
        if usesSmallTopK {
            return smallTopKRow(x, n, m, tauF: tauF, u: u, work: work)
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
            out.logpT1 = (Double(x[token]) - Double(m)) - log(sumT1(x, n, m))
        }
        return out
    }

    /// The T = 1 sum over the row, sum of exp(x - m), by 1024-wide runs added in Double.
    /// NaN in the row makes it NaN.
    func sumT1(_ x: UnsafePointer<Float>, _ n: Int, _ m: Float) -> Double {
        var total = 0.0
        var i = 0
        while i < n {
            let len = min(1024, n - i)
            total += Double(SoftmaxKernels.expSum(x + i, len, shift: m, isa))
            i &+= 1024
        }
        return total
    }

    // MARK: - plain sampling

    /// No truncation: the max, then tempered block sums from the shared kernels. The draw
    /// walks the block sums and recomputes the weights of one block.
    func plainRow(_ x: UnsafePointer<Float>, _ n: Int, u: Double, work: SamplerWorkspace) -> RowOutput {
        // NaN is ignored by the max but makes the sums NaN; +inf or all -inf leave m infinite.
        let m = SoftmaxKernels.max(x, n, isa)
        guard m.isFinite else { return RowOutput(status: RowStatus.badValue) }
        let sums = work.blockSums
        var total = 0.0
        var b = 0
        var i = 0
        while i < n {
            let len = min(plainBlockWidth, n - i)
            let bs = Double(SoftmaxKernels.expSums(x + i, len, shift: m, invT: invT, isa).sum)
            sums[b] = bs
            total += bs
            b &+= 1
            i &+= plainBlockWidth
        }
        guard total.isFinite else { return RowOutput(status: RowStatus.badValue) }
        var total1 = total
        if wantLogpT1 && !isUnitTemperature { total1 = sumT1(x, n, m) }
        guard total1.isFinite else { return RowOutput(status: RowStatus.badValue) }

        let target = u * total
        var cum = 0.0
        var token = -1
        for k in 0..<b {
            let bs = sums[k]
            if cum + bs > target {
                token = drawInPlainBlock(x, n, start: k * plainBlockWidth, m: m, blockSum: bs,
                                         offset: target - cum, scratch: work.blockWeights)
                break
            }
            cum += bs
        }
        if token < 0 { token = firstMax(x, m) }  // rounding put the target past the total
        var out = RowOutput(token: token)
        let gap = Double(x[token]) - Double(m)
        out.logp = gap * invTd - log(total)
        if wantLogpT1 { out.logpT1 = gap - log(total1) }
        if wantKept { out.kept = countFinite(x, n) }
        return out
    }

    /// The token of a plain block where the running weight first exceeds `offset`, the
    /// target's distance into the block. The weights are recomputed here (FastMath, SIMD8)
    /// and may differ from the kernel's by float ulps, so `offset` is rescaled from the
    /// block sum the walk used to the sum of the recomputed weights: inside the block the
    /// draw is then exactly proportional to the weights it sees.
    func drawInPlainBlock(_ x: UnsafePointer<Float>, _ n: Int, start: Int, m: Float, blockSum: Double,
                          offset: Double, scratch w: UnsafeMutablePointer<Float>) -> Int {
        let len = min(plainBlockWidth, n - start)
        let mv = SIMD8<Float>(repeating: m), it = SIMD8<Float>(repeating: invT)
        var sum = 0.0
        var j = 0
        while j < len {
            let v = FastMath.expNonPositive((load8(x + start + j, len - j) - mv) * it)
            for lane in 0..<min(8, len - j) {
                w[j + lane] = v[lane]
                sum += Double(v[lane])
            }
            j &+= 8
        }
        let target = offset / blockSum * sum
        var c = 0.0
        var last = -1
        for k in 0..<len where w[k] > 0 {
            c += Double(w[k])
            last = start + k
            if c > target { return last }
        }
        return last
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
        var total = 0.0
        var count = SIMD8<Int32>()
        var b = 0
        var i = 0
        while i < n {
            let len = min(blockWidth, n - i)
            var s = SIMD8<Float>()
            var j = 0
            while j < len {
                let xv = load8(x + i + j, len - j)
                var w = FastMath.expNonPositive((xv - mv) * it)
                let keep = xv .>= tv
                count &-= unsafeBitCast(keep, to: SIMD8<Int32>.self)
                w.replace(with: 0, where: .!keep)
                s += w
                j &+= 8
            }
            let bs = Double(s.sum())
            blocks[b] = bs
            total += bs
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
        if wantLogpT1 { out.logpT1 = gap - log(sumT1(x, n, m)) }
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
/// Plain sampling sums 256-wide blocks: long enough for the shared kernels' call to be
/// cheap, short enough for the draw to recompute one block.
let plainBlockWidth = 256

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
