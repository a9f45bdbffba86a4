@testable import AepoCore
import Glibc
import Testing

/// Chi-square goodness of fit of 10^5 draws against the exact truncated, tempered law
/// (ReferenceLaw, float64 with a full sort), for each truncation and two combinations (one
/// through the histogram, one through the top-k candidate filter), each at three
/// temperatures and with both implementations of the shared sums. Each run also checks
/// that no token outside the kept set is drawn, that every row reports the kept count, and
/// the per-row log-probs.
@Suite struct SamplerLawTests {
    static let vocab = 40
    static let draws = 100_000

    /// 40 logits with a -inf, a three-way tie, a cluster of near-equal values (so that one
    /// histogram bin holds several tokens) and a tie across the top-k = 7 boundary.
    static let logits: [Float] = {
        var x = testNormals(vocab, seed: 7, scale: 1.5)
        x[5] = -.infinity
        x[12] = x[3]
        x[30] = x[3]
        for k in 0..<5 { x[20 + k] = x[9] + Float(k) * 1e-3 }
        let order = (0..<vocab).filter { x[$0].isFinite }
            .sorted { x[$0] > x[$1] || (x[$0] == x[$1] && $0 < $1) }
        x[order[7]] = x[order[6]]
        return x
    }()

    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var minP = 0.0
        var topK = 0
        var topP = 1.0
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "plain"),
        Case(name: "min-p 0.05", minP: 0.05),
        Case(name: "top-k 7", topK: 7),
        Case(name: "top-p 0.75", topP: 0.75),
        Case(name: "min-p 0.01, top-k 20, top-p 0.85", minP: 0.01, topK: 20, topP: 0.85),
        Case(name: "min-p 0.02, top-k 9, top-p 0.9", minP: 0.02, topK: 9, topP: 0.9),
    ]
    static let temperatures = [0.6, 1.0, 1.7]

    @Test func topKBoundaryIsATie() {
        let x = Self.logits
        let order = (0..<Self.vocab).filter { x[$0].isFinite }
            .sorted { x[$0] > x[$1] || (x[$0] == x[$1] && $0 < $1) }
        #expect(x[order[6]] == x[order[7]])
        let law = ReferenceLaw(x, temperature: 1, topK: 7)
        #expect(law.kept[order[6]] && !law.kept[order[7]] && order[6] < order[7])
    }

    @Test(arguments: cases, temperatures)
    func drawsFollowTheTruncatedTemperedLaw(_ c: Case, _ t: Double) throws {
        for isa in samplerISAs { try check(c, t, isa) }
    }

    func check(_ c: Case, _ t: Double, _ isa: KernelISA) throws {
        let v = Self.vocab, n = Self.draws
        let law = ReferenceLaw(Self.logits, temperature: t, minP: c.minP, topK: c.topK, topP: c.topP)
        // A top-p decision closer to its threshold than float rounding would make the
        // reference and the library disagree for reasons unrelated to correctness.
        #expect(law.topPMargin > 1e-4, "test logits put a top-p decision \(law.topPMargin) from its threshold")
        var rows = [Float]()
        rows.reserveCapacity(n * v)
        for _ in 0..<n { rows += Self.logits }
        let seed = Int64(1000 + Self.cases.firstIndex { $0.name == c.name }! * 10 + Self.temperatures.firstIndex(of: t)!)
        let cfg = makeSamplerConfig(temperature: t, topK: Int64(c.topK), topP: c.topP, minP: c.minP,
                                    seed: seed, threads: 2)
        let d = try runSampler(cfg, rows, rows: n, vocab: v, step: 3, isa: isa)

        var counts = Array(repeating: 0, count: v)
        var outside = 0, badKept = 0
        var maxLogpErr = 0.0, maxLogpT1Err = 0.0
        for r in 0..<n {
            let tok = Int(d.tokens[r])
            guard tok >= 0 && tok < v else { outside += 1; continue }
            counts[tok] += 1
            if !law.kept[tok] { outside += 1; continue }
            if Int(d.kept[r]) != law.keptCount { badKept += 1 }
            maxLogpErr = max(maxLogpErr, abs(Double(d.logp[r]) - log(law.probs[tok])))
            maxLogpT1Err = max(maxLogpT1Err, abs(Double(d.logpT1[r]) - law.logpT1[tok]))
        }
        #expect(outside == 0, "\(isa): \(outside) draws outside the kept set")
        #expect(badKept == 0, "\(badKept) rows report a kept count other than \(law.keptCount)")
        #expect(maxLogpErr < 1e-5, "max |logp - reference| = \(maxLogpErr)")
        #expect(maxLogpT1Err < 1e-5, "max |logp_t1 - reference| = \(maxLogpT1Err)")
        let (stat, df) = chiSquare(counts: counts, probs: law.probs, draws: n)
        let p = chiSquarePValue(stat, df: df)
        #expect(df >= 1 || law.keptCount == 1)
        #expect(p > 0.001, "\(isa): chi-square \(stat) with \(df) df: p = \(p); kept \(law.keptCount) tokens")
    }

    /// The test has power: the same 10^5 draws at T = 1 are rejected against the law at
    /// T = 1.05, and top-p 0.75 draws against the law of top-p 0.8.
    @Test func chiSquareRejectsANearbyWrongLaw() throws {
        let v = Self.vocab, n = Self.draws
        var rows = [Float]()
        rows.reserveCapacity(n * v)
        for _ in 0..<n { rows += Self.logits }
        let plain = try runSampler(makeSamplerConfig(temperature: 1, seed: 99, threads: 2), rows, rows: n, vocab: v)
        let topP = try runSampler(makeSamplerConfig(temperature: 1, topP: 0.75, seed: 98, threads: 2), rows, rows: n, vocab: v)
        for (d, law) in [(plain, ReferenceLaw(Self.logits, temperature: 1.05)),
                         (topP, ReferenceLaw(Self.logits, temperature: 1, topP: 0.8))] {
            var counts = Array(repeating: 0, count: v)
            for t in d.tokens { counts[Int(t)] += 1 }
            let (stat, df) = chiSquare(counts: counts, probs: law.probs.map { max($0, 1e-12) }, draws: n)
            let p = chiSquarePValue(stat, df: df)
            #expect(p < 1e-6, "a wrong law was not rejected: chi-square \(stat), df \(df), p = \(p)")
        }
    }
}
