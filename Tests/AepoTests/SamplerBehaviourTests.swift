@testable import AepoCore
import Glibc
import Testing

@Suite struct SamplerBehaviourTests {
    /// Logits N(0, 2^2) rounded to multiples of 1/16 (so ties are common), with a few -inf.
    static func tiedRows(rows: Int, vocab: Int, seed: UInt64) -> [Float] {
        var x = testNormals(rows * vocab, seed: seed, scale: 2).map { ($0 * 16).rounded() / 16 }
        for r in 0..<rows { x[r * vocab + (r * 7919) % vocab] = -.infinity }
        return x
    }

    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var minP = 0.0
        var topK = 0
        var topP = 1.0
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "plain"),
        Case(name: "min-p 0.5", minP: 0.5),
        Case(name: "top-k 50", topK: 50),
        Case(name: "top-k 500", topK: 500),
        Case(name: "top-k V-11", topK: 2990),
        Case(name: "top-p 0.9", topP: 0.9),
        Case(name: "top-p 1e-6", topP: 1e-6),
        Case(name: "min-p 0.02, top-k 500, top-p 0.95", minP: 0.02, topK: 500, topP: 0.95),
        Case(name: "min-p 0.02, top-k 100, top-p 0.8", minP: 0.02, topK: 100, topP: 0.8),
    ]

    /// Row by row against the float64 reference on V = 3001 (not a multiple of the SIMD or
    /// block width), with many ties; T = 0.1 pushes most tokens past the histogram's last
    /// bin, so the cut sometimes falls in that shared bin.
    @Test(arguments: cases, [0.1, 0.8, 1.3])
    func everyRowMatchesTheReferenceTruncation(_ c: Case, _ t: Double) throws {
        for isa in samplerISAs { try check(c, t, isa) }
    }

    func check(_ c: Case, _ t: Double, _ isa: KernelISA) throws {
        let rows = 120, v = 3001
        let x = Self.tiedRows(rows: rows, vocab: v, seed: 41)
        let d = try runSampler(makeSamplerConfig(temperature: t, topK: Int64(c.topK), topP: c.topP, minP: c.minP,
                                                 seed: 5, threads: 2), x, rows: rows, vocab: v, step: 1, isa: isa)
        var checked = 0, closeCalls = 0
        var maxLogpErr = 0.0, maxLogpT1Err = 0.0
        for r in 0..<rows {
            let row = Array(x[r * v..<(r + 1) * v])
            let law = ReferenceLaw(row, temperature: t, minP: c.minP, topK: c.topK, topP: c.topP)
            let tok = Int(d.tokens[r])
            // A top-p decision within float rounding of its threshold may go either way:
            // such a row is only checked for drawing a kept or an undecidable token.
            let inKept = tok >= 0 && tok < v && (law.kept[tok] || law.ambiguous.contains(tok))
            #expect(inKept, "\(isa) row \(r): token \(tok) is outside the kept set")
            guard inKept else { continue }
            maxLogpT1Err = max(maxLogpT1Err, abs(Double(d.logpT1[r]) - law.logpT1[tok]))
            if !law.ambiguous.isEmpty { closeCalls += 1; continue }
            checked += 1
            #expect(Int(d.kept[r]) == law.keptCount, "row \(r): kept \(d.kept[r]), reference \(law.keptCount)")
            maxLogpErr = max(maxLogpErr, abs(Double(d.logp[r]) - log(law.probs[tok])))
        }
        #expect(closeCalls <= 6, "\(closeCalls) of \(rows) rows had a top-p decision within 1e-6 of its threshold")
        #expect(maxLogpErr < 1e-4, "\(isa): max |logp - reference| = \(maxLogpErr) over \(checked) rows")
        #expect(maxLogpT1Err < 1e-4, "max |logp_t1 - reference| = \(maxLogpT1Err)")
    }

    static let modes: [Case] = [
        Case(name: "plain"), Case(name: "top-p 0.9", topP: 0.9),
        Case(name: "min-p 0.1, top-k 40", minP: 0.1, topK: 40), Case(name: "greedy"),
    ]

    /// The same seed gives bit-identical outputs with 1, 2 and 3 threads, with the batch
    /// split into two calls (in either order), and a different step gives other tokens.
    @Test(arguments: modes)
    func resultsAreIndependentOfThreadsAndBatchSplit(_ c: Case) throws {
        for isa in samplerISAs { try checkSplit(c, isa) }
    }

    func checkSplit(_ c: Case, _ isa: KernelISA) throws {
        let rows = 64, v = 5000
        let x = testNormals(rows * v, seed: 3, scale: 2)
        func cfg(_ threads: Int64) -> SamplerConfig {
            makeSamplerConfig(temperature: 1.2, topK: Int64(c.topK), topP: c.topP, minP: c.minP,
                              greedy: c.name == "greedy", seed: 11, threads: threads)
        }
        let one = try runSampler(cfg(1), x, rows: rows, vocab: v, step: 7, position: 2, isa: isa)
        for threads: Int64 in [2, 3] {
            let many = try runSampler(cfg(threads), x, rows: rows, vocab: v, step: 7, position: 2, isa: isa)
            #expect(one.tokens == many.tokens, "tokens differ with \(threads) threads")
            #expect(one.logp == many.logp && one.logpT1 == many.logpT1 && one.kept == many.kept)
        }
        let cut = 27
        let tail = try runSampler(cfg(2), Array(x[(cut * v)...]), rows: rows - cut, vocab: v, step: 7, position: 2,
                                  rowOffset: Int64(cut), isa: isa)
        let head = try runSampler(cfg(1), Array(x[..<(cut * v)]), rows: cut, vocab: v, step: 7, position: 2, isa: isa)
        #expect(head.tokens + tail.tokens == one.tokens, "a split batch draws other tokens")
        #expect(head.logp + tail.logp == one.logp && head.logpT1 + tail.logpT1 == one.logpT1)
        #expect(head.kept + tail.kept == one.kept)
        if c.name != "greedy" {
            let other = try runSampler(cfg(1), x, rows: rows, vocab: v, step: 8, position: 2, isa: isa)
            let same = zip(other.tokens, one.tokens).filter { $0 == $1 }.count
            #expect(same < rows / 2, "step 8 repeats \(same) of \(rows) tokens of step 7")
        }
    }

    @Test func temperatureOverrideActsLikeTheConfig() throws {
        let rows = 200, v = 777
        let x = testNormals(rows * v, seed: 9, scale: 2)
        let viaConfig = try runSampler(makeSamplerConfig(temperature: 1.3, topP: 0.9, seed: 4), x, rows: rows, vocab: v)
        let viaCall = try runSampler(makeSamplerConfig(temperature: 0.7, topP: 0.9, seed: 4), x, rows: rows, vocab: v,
                                     temperature: 1.3)
        #expect(viaConfig.tokens == viaCall.tokens && viaConfig.logp == viaCall.logp && viaConfig.kept == viaCall.kept)
    }

    @Test func greedyTakesTheArgmaxWithTiesToTheLowestId() throws {
        let v = 9
        let x: [Float] = [
            0, 3, 1, 3, 2, -.infinity, 3, 0, 1,             // three-way tie at 3: id 1
            -.infinity, -.infinity, 5, -.infinity, -.infinity, -.infinity, -.infinity, -.infinity, 5,
            -1, -1, -1, -1, -1, -1, -1, -1, -1,             // all equal: id 0
            0, 0, 0, 0, 0, 0, 0, 0, 7,                      // max last
        ]
        let d = try runSampler(makeSamplerConfig(temperature: 0.3, topP: 0.5, greedy: true), x, rows: 4, vocab: v)
        #expect(d.tokens == [1, 11 - 9, 0, 8])
        #expect(d.logp == [0, 0, 0, 0])
        #expect(d.kept == [1, 1, 1, 1])
        for r in 0..<4 {
            let law = ReferenceLaw(Array(x[r * v..<(r + 1) * v]), temperature: 1)
            let err = abs(Double(d.logpT1[r]) - law.logpT1[Int(d.tokens[r])])
            #expect(err < 1e-6, "row \(r): logp_t1 off by \(err)")
        }
    }

    @Test func degenerateRows() throws {
        // V = 1, and a single finite logit among -inf: the only possible token.
        let one = try runSampler(makeSamplerConfig(temperature: 0.5, topK: 3, topP: 0.2), [4.5], rows: 1, vocab: 1)
        #expect(one.tokens == [0] && one.logp == [0] && one.logpT1 == [0] && one.kept == [1])
        var x = [Float](repeating: -.infinity, count: 100)
        x[63] = -80
        for cfg in [makeSamplerConfig(), makeSamplerConfig(topP: 0.5), makeSamplerConfig(minP: 0.9)] {
            let d = try runSampler(cfg, x, rows: 1, vocab: 100)
            #expect(d.tokens == [63] && d.logp == [0] && d.logpT1 == [0] && d.kept == [1])
        }
        // N = 0 writes nothing and succeeds.
        let empty = try runSampler(makeSamplerConfig(), [], rows: 0, vocab: 5)
        #expect(empty.tokens.isEmpty)
    }

    /// Skipping logp_t1 (and the other optional outputs) changes nothing else.
    @Test func optionalOutputsDoNotChangeTheDraw() throws {
        let rows = 50, v = 1000
        let x = testNormals(rows * v, seed: 21, scale: 2)
        for cfg in [makeSamplerConfig(temperature: 1.2, seed: 2), makeSamplerConfig(temperature: 1.2, topP: 0.9, seed: 2)] {
            let full = try runSampler(cfg, x, rows: rows, vocab: v)
            let sampler = try Sampler(cfg)
            var tokens = [Int32](repeating: -1, count: rows)
            try x.withUnsafeBufferPointer { xp throws(AepoFailure) in
                try tokens.withUnsafeMutableBufferPointer { tp throws(AepoFailure) in
                    try sampler.sample(logits: xp.baseAddress!, rows: rows, vocab: v, rowStride: v, step: 0, position: 0,
                                       rowOffset: 0, temperature: nil, tokens: tp.baseAddress!, logp: nil, logpT1: nil,
                                       kept: nil)
                }
            }
            #expect(tokens == full.tokens)
        }
    }

    /// A row stride larger than V reads only the first V entries of each row.
    @Test func rowStrideSkipsPadding() throws {
        let rows = 20, v = 300, stride = 320
        let dense = testNormals(rows * v, seed: 13, scale: 2)
        var padded = [Float](repeating: 1000, count: rows * stride)
        for r in 0..<rows { for j in 0..<v { padded[r * stride + j] = dense[r * v + j] } }
        let cfg = makeSamplerConfig(topK: 30, seed: 6)
        let a = try runSampler(cfg, dense, rows: rows, vocab: v)
        let sampler = try Sampler(cfg)
        var tokens = [Int32](repeating: -1, count: rows)
        try padded.withUnsafeBufferPointer { xp throws(AepoFailure) in
            try tokens.withUnsafeMutableBufferPointer { tp throws(AepoFailure) in
                try sampler.sample(logits: xp.baseAddress!, rows: rows, vocab: v, rowStride: stride, step: 0,
                                   position: 0, rowOffset: 0, temperature: nil, tokens: tp.baseAddress!, logp: nil,
                                   logpT1: nil, kept: nil)
            }
        }
        #expect(tokens == a.tokens)
    }

    /// Plain sampling on rows whose max comes last (ascending), first (descending) or after
    /// a gap that underflows every earlier weight, with both implementations of the sums.
    @Test(arguments: [0.7, 1.0, 1.9])
    func plainSamplingOnOrderedRows(_ t: Double) throws {
        let v = 1000
        let noise = testNormals(v, seed: 17, scale: 0.5)
        let ascending = (0..<v).map { Float($0) * 0.01 + noise[$0] }
        let descending = Array(ascending.reversed())
        var jump = (0..<v).map { Float(-300) + noise[$0] }
        for j in 900..<v { jump[j] = noise[j] }
        let n = 20_000
        for row in [ascending, descending, jump] {
            var x = [Float]()
            x.reserveCapacity(n * v)
            for _ in 0..<n { x += row }
            let law = ReferenceLaw(row, temperature: t)
            for isa in samplerISAs {
                let d = try runSampler(makeSamplerConfig(temperature: t, seed: 8, threads: 2), x, rows: n, vocab: v,
                                       isa: isa)
                var counts = Array(repeating: 0, count: v)
                var maxErr = 0.0, maxErr1 = 0.0
                for r in 0..<n {
                    let tok = Int(d.tokens[r])
                    counts[tok] += 1
                    maxErr = max(maxErr, abs(Double(d.logp[r]) - log(law.probs[tok])))
                    maxErr1 = max(maxErr1, abs(Double(d.logpT1[r]) - law.logpT1[tok]))
                }
                #expect(maxErr < 1e-5 && maxErr1 < 1e-5, "\(isa): logp error \(maxErr), logp_t1 error \(maxErr1)")
                #expect(d.kept.allSatisfy { $0 == Int32(v) })
                let (stat, df) = chiSquare(counts: counts, probs: law.probs, draws: n)
                let p = chiSquarePValue(stat, df: df)
                #expect(p > 0.001, "\(isa): chi-square \(stat) with \(df) df: p = \(p)")
            }
        }
    }

    /// Orders that stress the top-k candidate filter (ascending: every logit enters and the
    /// buffer is cut again and again; descending; all equal: the tie rule alone decides)
    /// and the histogram (all equal logits share one bin).
    @Test(arguments: [5, 50, 600])
    func topKOnOrderedAndConstantRows(_ k: Int) throws {
        let v = 2500, rows = 200
        let ascending = (0..<v).map { Float($0) * 0.003 }
        let rowsOf: [[Float]] = [ascending, Array(ascending.reversed()), [Float](repeating: 0.25, count: v)]
        for row in rowsOf {
            var x = [Float]()
            for _ in 0..<rows { x += row }
            for topP in [1.0, 0.7] {
                let d = try runSampler(makeSamplerConfig(temperature: 0.9, topK: Int64(k), topP: topP, seed: 12),
                                       x, rows: rows, vocab: v)
                let law = ReferenceLaw(row, temperature: 0.9, topK: k, topP: topP)
                #expect(d.kept.allSatisfy { Int($0) == law.keptCount }, "k \(k), top-p \(topP): kept \(d.kept[0]) vs \(law.keptCount)")
                let outside = d.tokens.filter { !law.kept[Int($0)] }.count
                #expect(outside == 0, "k \(k), top-p \(topP): \(outside) tokens outside the kept set")
                let err = zip(d.tokens, d.logp).map { abs(Double($1) - log(law.probs[Int($0)])) }.max()!
                #expect(err < 1e-5, "k \(k), top-p \(topP): logp error \(err)")
            }
        }
    }
}
