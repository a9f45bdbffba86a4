@_spi(Bench) @testable import AepoCore
import Glibc

// Shared helpers of the Sampler*Tests files: a Swift-array front end to the core sampler,
// an independent float64 reference of the truncated tempered law, and the chi-square
// p-value.

struct Draws {
    var tokens: [Int32]
    var logp: [Float]
    var logpT1: [Float]
    var kept: [Int32]
}

func makeSamplerConfig(temperature: Double = 1, topK: Int64 = 0, topP: Double = 1, minP: Double = 0,
                       greedy: Bool = false, seed: Int64 = 0, threads: Int64 = 1) -> SamplerConfig {
    var c = SamplerConfig()
    c.temperature = temperature
    c.topK = topK
    c.topP = topP
    c.minP = minP
    c.greedy = greedy
    c.seed = seed
    c.threads = threads
    return c
}

/// Runs the core sampler over `rows` rows of `logits` (row-major, stride V).
///
/// `isa` picks the loops of the shared sums (SIMD8, or AVX2 + FMA or AVX-512 where the CPU has it).
func runSampler(_ config: SamplerConfig, _ logits: [Float], rows: Int, vocab: Int,
                step: Int64 = 0, position: Int64 = 0, rowOffset: Int64 = 0,
                temperature: Double? = nil, isa: KernelISA = .best,
                logpT1 wantT1: Bool = true) throws(AepoFailure) -> Draws {
    let sampler = try Sampler(config)
    sampler.isa = isa
    var d = Draws(tokens: Array(repeating: -1, count: rows), logp: Array(repeating: .nan, count: rows),
                  logpT1: Array(repeating: .nan, count: rows), kept: Array(repeating: -1, count: rows))
    var failure: AepoFailure?
    logits.withUnsafeBufferPointer { x in
        d.tokens.withUnsafeMutableBufferPointer { t in
            d.logp.withUnsafeMutableBufferPointer { lp in
                d.logpT1.withUnsafeMutableBufferPointer { l1 in
                    d.kept.withUnsafeMutableBufferPointer { k in
                        do throws(AepoFailure) {
                            try sampler.sample(logits: x.baseAddress!, rows: rows, vocab: vocab, rowStride: vocab,
                                               step: step, position: position, rowOffset: rowOffset,
                                               temperature: temperature, tokens: t.baseAddress!,
                                               logp: lp.baseAddress!, logpT1: wantT1 ? l1.baseAddress! : nil,
                                               kept: k.baseAddress!)
                        } catch {
                            failure = error
                        }
                    }
                }
            }
        }
    }
    if let failure { throw failure }
    return d
}

/// The truncated tempered law of docs/SAMPLER.md, written directly from its definition in
/// float64 with a full sort: the reference the sampler is tested against.
struct ReferenceLaw {
    var probs: [Double]      // 0 outside the kept set
    var kept: [Bool]
    var keptCount: Int
    var logpT1: [Double]
    /// Distance of the closest top-p decision to its threshold, relative to the larger of
    /// the two masses compared, so a test can check that float rounding cannot flip it.
    var topPMargin = Double.infinity
    /// Tokens whose top-p decision lies within `ambiguityMargin` of its threshold: float
    /// rounding in the library may keep or drop them.
    var ambiguous: [Int] = []
    static let ambiguityMargin = 1e-6

    init(_ x: [Float], temperature t: Double, minP: Double = 0, topK: Int = 0, topP: Double = 1) {
        let v = x.count
        let xd = x.map(Double.init)
        let m = xd.filter { $0.isFinite }.max()!
        let w = xd.map { $0.isFinite ? exp(($0 - m) / t) : 0 }
        var cand = (0..<v).filter { xd[$0].isFinite }
        if minP > 0 {
            let tau = m + t * log(minP)
            cand = cand.filter { xd[$0] >= tau }
        }
        cand.sort { xd[$0] > xd[$1] || (xd[$0] == xd[$1] && $0 < $1) }
        if topK > 0 && topK < cand.count { cand = Array(cand.prefix(topK)) }
        var closest = Double.infinity
        var fuzzy: [Int] = []
        if topP < 1 {
            let z = cand.reduce(0.0) { $0 + w[$1] }
            var above = 0.0
            var keep: [Int] = []
            for i in cand {
                let margin = abs(above - topP * z) / max(above, topP * z)
                closest = min(closest, margin)
                if margin < Self.ambiguityMargin { fuzzy.append(i) }
                if above < topP * z { keep.append(i) } else { break }
                above += w[i]
            }
            cand = keep
        }
        var keptMask = Array(repeating: false, count: v)
        for i in cand { keptMask[i] = true }
        let zk = cand.reduce(0.0) { $0 + w[$1] }
        let s1 = xd.reduce(0.0) { $0 + ($1.isFinite ? exp($1 - m) : 0) }
        kept = keptMask
        keptCount = cand.count
        probs = (0..<v).map { keptMask[$0] ? w[$0] / zk : 0 }
        logpT1 = xd.map { $0 - m - log(s1) }
        topPMargin = closest
        ambiguous = fuzzy
    }
}

/// Survival function of the chi-square distribution: P(X >= x) for `df` degrees of
/// freedom, i.e. the regularised upper incomplete gamma Q(df/2, x/2).
func chiSquarePValue(_ x: Double, df: Int) -> Double {
    regularizedGammaQ(Double(df) / 2, x / 2)
}

/// Q(a, x) = Gamma(a, x) / Gamma(a): a power series for P when x < a + 1, otherwise a
/// Lentz continued fraction for Q. Both converge to full double precision.
func regularizedGammaQ(_ a: Double, _ x: Double) -> Double {
    if x <= 0 { return 1 }
    let logPrefix = a * log(x) - x - lgamma(a)
    if x < a + 1 {
        var term = 1 / a, sum = term, ap = a
        for _ in 0..<10_000 {
            ap += 1
            term *= x / ap
            sum += term
            if abs(term) < abs(sum) * 1e-17 { break }
        }
        return 1 - sum * exp(logPrefix)
    }
    let tiny = 1e-300
    var b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d
    for i in 1..<10_000 {
        let an = -Double(i) * (Double(i) - a)
        b += 2
        d = an * d + b
        if abs(d) < tiny { d = tiny }
        c = b + an / c
        if abs(c) < tiny { c = tiny }
        d = 1 / d
        let delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-17 { break }
    }
    return exp(logPrefix) * h
}

/// Pearson's chi-square of observed counts against expected probabilities over the cells
/// with positive probability. Cells with expected count below 5 are pooled into one cell
/// (merged with the smallest regular cell if the pool itself stays below 5).
func chiSquare(counts: [Int], probs: [Double], draws: Int) -> (stat: Double, df: Int) {
    var cells: [(obs: Double, exp: Double)] = []
    var poolObs = 0.0, poolExp = 0.0
    for i in probs.indices where probs[i] > 0 {
        let e = probs[i] * Double(draws)
        if e < 5 { poolObs += Double(counts[i]); poolExp += e } else { cells.append((Double(counts[i]), e)) }
    }
    if poolExp > 0 {
        if poolExp >= 5 || cells.isEmpty {
            cells.append((poolObs, poolExp))
        } else {
            let k = cells.indices.min { cells[$0].exp < cells[$1].exp }!
            cells[k].obs += poolObs
            cells[k].exp += poolExp
        }
    }
    let stat = cells.reduce(0.0) { $0 + ($1.obs - $1.exp) * ($1.obs - $1.exp) / $1.exp }
    return (stat, cells.count - 1)
}

/// Deterministic test logits: a small counter-based normal generator (Box-Muller on
/// Philox uniforms), so tests need no global RNG.
func testNormals(_ count: Int, seed: UInt64, scale: Double = 1) -> [Float] {
    let g = Philox4x32(key64: seed)
    return (0..<count).map { i in
        let b = g.block(UInt64(i), 0x5EED)
        let u1 = (Double(b.0) + 0.5) * 0x1p-32, u2 = Double(b.1) * 0x1p-32
        return Float(scale * (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
}

/// Every implementation of the shared sums this CPU runs (SIMD8, and AVX2 + FMA and AVX-512
/// where available).
let samplerISAs: [KernelISA] = KernelISA.available
