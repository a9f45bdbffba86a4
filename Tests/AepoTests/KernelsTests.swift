@testable import AepoCore
import Glibc
import Testing

// Logits kernels against a float64 transcription of the formulas:
//   z = x / T, lse = log Σ e^z, log p(t) = z_t − lse, H = lse − Σ softmax(z)·z.

/// Float64 reference for one row.
struct RowRef {
    var logp: Double, entropy: Double, lse: Double, logpT1: Double

    /// In the stable form lse = m + log1p(S'), H = log1p(S') − Q / (1 + S'), with d = z − max z,
    /// S' = Σ e^d over all but one max entry and Q = Σ e^d·d, which is exact float64 arithmetic
    /// of the same formula (no cancellation, even for near-deterministic rows).
    init(_ x: [Double], temperature t: Double, target: Int) {
        let z = x.map { $0 / t }
        let (ls, q) = Self.sums(z)
        let m = z.max()!
        lse = m + ls
        entropy = ls - q
        logp = (z[target] - m) - ls
        let (ls1, _) = Self.sums(x)
        logpT1 = (x[target] - x.max()!) - ls1
    }

    /// (log S, Q / S) for a row, from the largest entry.
    static func sums(_ z: [Double]) -> (Double, Double) {
        let top = z.indices.max { z[$0] < z[$1] }!
        let m = z[top]
        var s = 0.0, q = 0.0
        for (j, v) in z.enumerated() where j != top && v > -.infinity {
            let e = Glibc.exp(v - m)
            s += e
            q += e * (v - m)
        }
        return (Glibc.log1p(s), q / (1 + s))
    }

    init(_ x: [Float], temperature t: Double, target: Int) {
        self.init(x.map { Double($0) }, temperature: t, target: target)
    }
}

/// Runs `LogitsKernels.stats` on a contiguous [N, V] array.
struct StatsRun {
    var logp: [Float], entropy: [Float], lse: [Double], logpT1: [Float], sums: LogitsSums

    init(_ x: [Float], rows n: Int, vocab v: Int, targets: [Int32], mask: [UInt8]? = nil,
         temperature: Double, threads: Int = 1, isa: KernelISA = .best) throws(AepoFailure) {
        var lp = [Float](repeating: .nan, count: n), h = lp, l = [Double](repeating: .nan, count: n), l1 = lp
        var s = LogitsSums()
        var failure: AepoFailure?
        let layout = try LogitsLayout(rows: n, vocab: v)
        x.withUnsafeBufferPointer { xb in
            targets.withUnsafeBufferPointer { tb in
                lp.withUnsafeMutableBufferPointer { lpb in
                    h.withUnsafeMutableBufferPointer { hb in
                        l.withUnsafeMutableBufferPointer { lb in
                            l1.withUnsafeMutableBufferPointer { l1b in
                                let outs = LogitsStatsOutputs(logp: lpb.baseAddress, entropy: hb.baseAddress,
                                                              lse: lb.baseAddress, logpT1: l1b.baseAddress)
                                do throws(AepoFailure) {
                                    if let mask {
                                        s = try mask.withUnsafeBufferPointer { (mb) throws(AepoFailure) in
                                            try LogitsKernels.stats(xb.baseAddress!, layout: layout, targets: tb.baseAddress,
                                                                    mask: mb.baseAddress, temperature: temperature,
                                                                    threads: threads, outputs: outs, isa: isa)
                                        }
                                    } else {
                                        s = try LogitsKernels.stats(xb.baseAddress!, layout: layout, targets: tb.baseAddress,
                                                                    mask: nil, temperature: temperature,
                                                                    threads: threads, outputs: outs, isa: isa)
                                    }
                                } catch { failure = error }
                            }
                        }
                    }
                }
            }
        }
        if let failure { throw failure }
        logp = lp; entropy = h; lse = l; logpT1 = l1; sums = s
    }
}

/// abs error scaled by max(1, |ref|).
func scaledError(_ got: Float, _ ref: Double) -> Double {
    scaledError(Double(got), ref)
}

func scaledError(_ got: Double, _ ref: Double) -> Double {
    if got.isInfinite && ref.isInfinite && (got < 0) == (ref < 0) { return 0 }
    return abs(got - ref) / max(1, abs(ref))
}

enum LogitsShape: CaseIterable {
    case gaussian, withNegInf, peaked, ascending, constant
}

func makeRow(_ shape: LogitsShape, vocab v: Int, scale: Double, rng: inout SplitMix64) -> [Float] {
    switch shape {
    case .gaussian:
        return (0..<v).map { _ in Float(scale * rng.normal()) }
    case .withNegInf:
        var x = (0..<v).map { _ in Float(scale * rng.normal()) }
        for j in stride(from: 1, to: v, by: 3) { x[j] = -.infinity }
        return x
    case .peaked:
        var x = (0..<v).map { _ in Float(rng.normal()) }
        x[rng.int(v)] = Float(scale)
        return x
    case .ascending:
        // Max keeps growing across blocks, so every block rescales the running sums.
        return (0..<v).map { Float(scale * (2 * Double($0) / Double(max(v - 1, 1)) - 1)) }
    case .constant:
        return [Float](repeating: Float(scale), count: v)
    }
}

@Suite struct KernelsTests {
    static let temperatures = [0.3, 0.7, 1.0, 1.2, 2.0]
    /// Every implementation of the hot loops this CPU runs: SIMD8, and AVX2 + FMA and AVX-512
    /// where the CPU (and OS) have them.
    static let isas: [KernelISA] = KernelISA.available

    /// Says once, in the test log, which paths the tests over `isas` and `samplerISAs` ran.
    @Test func reportsKernelPathsTested() {
        print("kernel paths tested: \(Self.isas.map { "\($0)" }.joined(separator: ", ")) "
              + "(sampler: \(samplerISAs.map { "\($0)" }.joined(separator: ", ")); chosen at run time: \(KernelISA.best))")
        #expect(Self.isas.first == .simd8 && Self.isas.contains(KernelISA.best))
    }

    /// Within each path, 1, 2 and 3 threads give the same bits, forward and backward (the C API
    /// test of this runs the path chosen at run time only).
    @Test func everyPathIsBitIdenticalAcrossThreads() throws {
        var rng = SplitMix64(seed: 19)
        let n = 7, v = 3001
        let x = (0..<(n * v)).map { _ in Float(3 * rng.normal()) }
        let targets = (0..<n).map { _ in Int32(rng.int(v)) }
        let gl = (0..<n).map { Float(($0 % 5) - 2) * 0.3 }, gh = (0..<n).map { Float(($0 % 3) - 1) * 0.7 }
        for isa in Self.isas {
            let ref = try StatsRun(x, rows: n, vocab: v, targets: targets, temperature: 0.7, threads: 1, isa: isa)
            let refOut = try BackwardRun(x, rows: n, vocab: v, targets: targets, temperature: 0.7, lse: ref.lse,
                                         entropy: ref.entropy, gradLogp: gl, gradEntropy: gh, threads: 1, isa: isa).out
            for t in [2, 3] {
                let s = try StatsRun(x, rows: n, vocab: v, targets: targets, temperature: 0.7, threads: t, isa: isa)
                #expect(s.logp.map(\.bitPattern) == ref.logp.map(\.bitPattern)
                        && s.entropy.map(\.bitPattern) == ref.entropy.map(\.bitPattern)
                        && s.lse.map(\.bitPattern) == ref.lse.map(\.bitPattern)
                        && s.sums.entropySum.bitPattern == ref.sums.entropySum.bitPattern, "\(isa) stats, threads = \(t)")
                let o = try BackwardRun(x, rows: n, vocab: v, targets: targets, temperature: 0.7, lse: s.lse,
                                        entropy: s.entropy, gradLogp: gl, gradEntropy: gh, threads: t, isa: isa).out
                #expect(o.map(\.bitPattern) == refOut.map(\.bitPattern), "\(isa) gradient, threads = \(t)")
            }
        }
    }

    /// logp, entropy (and lse, logp at T = 1) within 1e-5 of float64, scaled by
    /// max(1, |value|), for logit scales up to 50, V from 2 to 256k and the five temperatures.
    @Test(arguments: [2, 3, 7, 8, 9, 31, 32, 33, 100, 1000, 2047, 2049, 5000, 32000])
    func statsMatchFloat64(vocab v: Int) throws {
        var rng = SplitMix64(seed: UInt64(v))
        var worst = (err: 0.0, what: "")
        for scale in [0.1, 1, 5, 20, 50] {
            for shape in LogitsShape.allCases {
                let n = 3
                var x: [Float] = []
                var targets: [Int32] = []
                for _ in 0..<n {
                    x += makeRow(shape, vocab: v, scale: scale, rng: &rng)
                    targets.append(Int32(rng.int(v)))
                }
                for t in Self.temperatures {
                  for isa in Self.isas {
                    let run = try StatsRun(x, rows: n, vocab: v, targets: targets, temperature: t, isa: isa)
                    for r in 0..<n {
                        let ref = RowRef(Array(x[(r * v)..<((r + 1) * v)]), temperature: t, target: Int(targets[r]))
                        let errs = [("logp", scaledError(run.logp[r], ref.logp)),
                                    ("entropy", scaledError(run.entropy[r], ref.entropy)),
                                    ("lse", scaledError(run.lse[r], ref.lse)),
                                    ("logp_t1", scaledError(run.logpT1[r], ref.logpT1))]
                        for (name, e) in errs where !(e <= worst.err) {
                            worst = (e, "\(name) V=\(v) scale=\(scale) \(shape) T=\(t) row \(r) \(isa)")
                        }
                        #expect(run.entropy[r] >= 0)
                    }
                  }
                }
            }
        }
        print("stats V=\(v): max scaled error \(worst.err) (\(worst.what))")
        #expect(worst.err <= 1e-5, "max scaled error \(worst.err) at \(worst.what)")
    }

    /// The top of the range: V = 256k on a few rows.
    @Test func statsMatchFloat64AtLargeVocab() throws {
        let v = 256_000
        var rng = SplitMix64(seed: 256)
        var worst = (err: 0.0, what: "")
        for scale in [1.0, 50] {
            for shape in [LogitsShape.gaussian, .withNegInf, .ascending] {
                let x = makeRow(shape, vocab: v, scale: scale, rng: &rng)
                let target = Int32(rng.int(v))
                for t in Self.temperatures {
                  for isa in Self.isas {
                    let run = try StatsRun(x, rows: 1, vocab: v, targets: [target], temperature: t, isa: isa)
                    let ref = RowRef(x, temperature: t, target: Int(target))
                    for (name, got, want) in [("logp", Double(run.logp[0]), ref.logp), ("entropy", Double(run.entropy[0]), ref.entropy),
                                              ("lse", run.lse[0], ref.lse), ("logp_t1", Double(run.logpT1[0]), ref.logpT1)] {
                        let e = scaledError(got, want)
                        if !(e <= worst.err) { worst = (e, "\(name) scale=\(scale) \(shape) T=\(t) \(isa)") }
                    }
                  }
                }
            }
        }
        print("stats V=256000: max scaled error \(worst.err) (\(worst.what))")
        #expect(worst.err <= 1e-5, "max scaled error \(worst.err) at \(worst.what)")
    }

    /// Uniform logits: H = log V and log p = −log V exactly (up to float rounding).
    @Test func uniformRowHasEntropyLogV() throws {
        for v in [2, 10, 32000] {
            let run = try StatsRun([Float](repeating: 3.5, count: v), rows: 1, vocab: v, targets: [0], temperature: 0.7)
            #expect(abs(Double(run.entropy[0]) - Glibc.log(Double(v))) <= 1e-6 * Glibc.log(Double(v)))
            #expect(abs(Double(run.logp[0]) + Glibc.log(Double(v))) <= 1e-6 * Glibc.log(Double(v)))
        }
    }

    /// The entropy example of docs/API.md ("Reference values"): logits [2, 1, 0, −1].
    @Test func anchorsEntropyTable() throws {
        let x: [Float] = [2, 1, 0, -1]
        let table: [(t: Double, h: Double, logp0: Double)] = [
            (1.0, 0.9475369640, -0.4401896986),
            (0.7, 0.7020279765, -0.2706738307),
            (1.3, 1.0907583528, -0.5752478943),
        ]
        for row in table {
          for isa in Self.isas {
            let run = try StatsRun(x, rows: 1, vocab: 4, targets: [0], temperature: row.t, isa: isa)
            #expect(abs(Double(run.entropy[0]) - row.h) <= 2e-7, "H at T=\(row.t): \(run.entropy[0]) vs \(row.h)")
            #expect(abs(Double(run.logp[0]) - row.logp0) <= 2e-7, "logp at T=\(row.t): \(run.logp[0]) vs \(row.logp0)")
          }
        }
        // dH/dz at T = 1 from the backward pass with g_H = 1.
        for isa in Self.isas {
            let run = try StatsRun(x, rows: 1, vocab: 4, targets: [0], temperature: 1, isa: isa)
            let g = try BackwardRun(x, rows: 1, vocab: 4, targets: [0], temperature: 1, lse: run.lse, entropy: run.entropy,
                                    gradLogp: nil, gradEntropy: [1], isa: isa).out
            let want = [-0.326688139, 0.116700968, 0.130076206, 0.079910965]
            for j in 0..<4 {
                #expect(abs(Double(g[j]) - want[j]) <= 2e-7, "dH/dz[\(j)] = \(g[j]), expected \(want[j]) (\(isa))")
            }
        }
    }

    /// The per-row values sum to the float64 sums, which count only rows with mask = 1.
    @Test func sumsFollowTheMask() throws {
        var rng = SplitMix64(seed: 7)
        let n = 9, v = 50
        var x = (0..<(n * v)).map { _ in Float(3 * rng.normal()) }
        let mask: [UInt8] = [1, 0, 1, 1, 0, 0, 1, 1, 0]
        var targets = (0..<n).map { _ in Int32(rng.int(v)) }
        for r in 0..<n where mask[r] == 0 {
            targets[r] = -100
            for j in 0..<v { x[r * v + j] = .nan }   // never read
        }
        let run = try StatsRun(x, rows: n, vocab: v, targets: targets, mask: mask, temperature: 1.2)
        var h = 0.0, nll = 0.0
        for r in 0..<n {
            if mask[r] == 0 {
                #expect(run.logp[r] == 0 && run.entropy[r] == 0 && run.lse[r] == 0 && run.logpT1[r] == 0)
                continue
            }
            let ref = RowRef(Array(x[(r * v)..<((r + 1) * v)]), temperature: 1.2, target: Int(targets[r]))
            h += ref.entropy
            nll -= ref.logp
        }
        #expect(run.sums.count == 5)
        #expect(abs(run.sums.entropySum - h) <= 1e-6 * h)
        #expect(abs(run.sums.nllSum - nll) <= 1e-6 * nll)
    }

    /// Feeding a row in arbitrary chunks (as the fused head does) matches one call.
    @Test func rowAccumulatorAcceptsChunks() {
        var rng = SplitMix64(seed: 11)
        let v = 10_007
        var x = (0..<v).map { _ in Float(8 * rng.normal()) }
        x[9000] = 60  // the max arrives late
        let t = 0.7
        var whole = SoftmaxRowAccumulator(temperature: t, logpAtT1: true)
        x.withUnsafeBufferPointer { whole.add($0.baseAddress!, count: v) }
        for chunk in [1, 7, 8, 100, 2048, 4096, 8192] {
            var acc = SoftmaxRowAccumulator(temperature: t, logpAtT1: true)
            x.withUnsafeBufferPointer { b in
                var i = 0
                while i < v { let n = min(chunk, v - i); acc.add(b.baseAddress! + i, count: n); i += n }
            }
            #expect(abs(acc.lse - whole.lse) <= 1e-6 * abs(whole.lse), "chunk \(chunk): lse")
            #expect(abs(acc.entropy - whole.entropy) <= 1e-6, "chunk \(chunk): entropy")
            #expect(abs(acc.logp(targetLogit: x[5]) - whole.logp(targetLogit: x[5])) <= 1e-5, "chunk \(chunk): logp")
            #expect(abs(acc.logpAtT1(targetLogit: x[5]) - whole.logpAtT1(targetLogit: x[5])) <= 1e-5)
        }
    }
}

/// The AVX2 + FMA and AVX-512 loops (CAepoKernels) agree with the SIMD8 loops to a few
/// float32 ulps, for every length (tails included) and for special values.
@Suite struct KernelsAVX2Tests {
    static func close(_ a: Float, _ b: Float, rel: Float = 4e-7) -> Bool {
        a == b || abs(a - b) <= rel * max(abs(a), abs(b))
    }

    @Test(arguments: [KernelISA.avx2fma, .avx512])
    func agreesWithSIMD8(_ isa: KernelISA) throws {
        guard KernelISA.available.contains(isa) else {
            print("\(isa) not available on this CPU: not tested here")
            return
        }
        var rng = SplitMix64(seed: 77)
        var mismatches: [String] = []
        var worstBackward: Float = 0
        for n in [1, 5, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 100, 1023, 1024] {
            for scale in [0.5, 8.0, 60.0] {
                var x = (0..<n).map { _ in Float(scale * rng.normal()) }
                if n > 3 { x[1] = -.infinity; x[n - 1] = -1e30 }
                let m = SoftmaxKernels.maxSIMD8(x, n)
                if SoftmaxKernels.max(x, n, isa).bitPattern != m.bitPattern { mismatches.append("max n=\(n)") }
                for invT: Float in [1 / 0.3, 1, 1 / 1.2] {
                    let a = SoftmaxKernels.expSums(x, n, shift: m, invT: invT, isa)
                    let b = SoftmaxKernels.expSumsSIMD8(x, n, shift: m, invT: invT)
                    if !Self.close(a.sum, b.sum) || !Self.close(a.sumD, b.sumD, rel: 1e-6) {
                        mismatches.append("expSums n=\(n) scale=\(scale): \(a) vs \(b)")
                    }
                    if !Self.close(SoftmaxKernels.expSum(x, n, shift: m, isa), SoftmaxKernels.expSumSIMD8(x, n, shift: m)) {
                        mismatches.append("expSum n=\(n)")
                    }
                    var o1 = [Float](repeating: 0, count: n), o2 = o1
                    _ = SoftmaxKernels.backward(x, &o1, n, shift: m, c: 1e-6, invT: invT, a: 0.3, b: -1.1, isa)
                    _ = SoftmaxKernels.backwardSIMD8(x, &o2, n, shift: m, c: 1e-6, invT: invT, a: 0.3, b: -1.1)
                    let scaleOut = o2.map { abs($0) }.max() ?? 0
                    for j in 0..<n {
                        let d = abs(o1[j] - o2[j]) / max(scaleOut, .leastNormalMagnitude)
                        worstBackward = max(worstBackward, d)
                    }
                }
            }
        }
        print("\(isa) vs SIMD8: backward max difference \(worstBackward) of the largest entry")
        #expect(worstBackward <= 1e-6)
        // NaN is ignored by max and propagates through the sums on both paths.
        var y: [Float] = (0..<40).map { Float($0) * 0.1 }
        y[17] = .nan
        #expect(SoftmaxKernels.max(y, 40, isa) == SoftmaxKernels.maxSIMD8(y, 40))
        #expect(SoftmaxKernels.expSums(y, 40, shift: 3.9, invT: 1, isa).sum.isNaN)
        #expect(mismatches.isEmpty, "\(isa) and SIMD8 differ: \(mismatches.prefix(10))")
    }

    /// The loops that count the max entries apart, and firstIndex, agree with SIMD8 for every
    /// length (the tails are masked loads and stores on AVX-512): the same counts and first
    /// index, the sums to a few ulps, and nothing written past the run.
    @Test(arguments: [KernelISA.avx2fma, .avx512])
    func countingLoopsAgreeWithSIMD8(_ isa: KernelISA) throws {
        guard KernelISA.available.contains(isa) else { return }
        var rng = SplitMix64(seed: 78)
        var mismatches: [String] = []
        for n in [1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 100, 1023, 1024] {
            var x = (0..<n).map { _ in Float(4 * rng.normal()) }
            if n > 3 { x[1] = -.infinity }
            let m = SoftmaxKernels.maxSIMD8(x, n)
            // Ties for the max: one in the first vector, one in the tail.
            x[n - 1] = m
            if n > 4 { x[n / 2] = m }
            let first = x.firstIndex(of: m)!
            for invT: Float in [1 / 0.3, 1, 1 / 1.2] {
                let a = SoftmaxKernels.expSumsCountingMax(x, n, shift: m, invT: invT, isa)
                let b = SoftmaxKernels.expSumsCountingMax(x, n, shift: m, invT: invT, .simd8)
                if a.count != b.count || !Self.close(a.sum, b.sum) || !Self.close(a.sumD, b.sumD, rel: 1e-6) {
                    mismatches.append("expSumsCountingMax n=\(n): \(a) vs \(b)")
                }
                let a1 = SoftmaxKernels.expSumCountingMax(x, n, shift: m, isa)
                let b1 = SoftmaxKernels.expSumCountingMax(x, n, shift: m, .simd8)
                if a1.count != b1.count || !Self.close(a1.sum, b1.sum) {
                    mismatches.append("expSumCountingMax n=\(n): \(a1) vs \(b1)")
                }
                // 16 guard entries after the run must stay untouched.
                var o1 = [Float](repeating: 7, count: n + 16), o2 = o1
                let g1 = SoftmaxKernels.backwardExcludingTop(x, &o1, n, top: m, shift: m, c: 1e-6, invT: invT,
                                                             a: 0.3, b: -1.1, isa)
                let g2 = SoftmaxKernels.backwardExcludingTop(x, &o2, n, top: m, shift: m, c: 1e-6, invT: invT,
                                                             a: 0.3, b: -1.1, .simd8)
                let scaleOut = o2.prefix(n).map { abs($0) }.max() ?? 0
                let worst = (0..<n).map { abs(o1[$0] - o2[$0]) }.max() ?? 0
                if g1.count != g2.count || !Self.close(g1.sum, g2.sum, rel: 1e-6) || worst > 1e-6 * scaleOut {
                    mismatches.append("backwardExcludingTop n=\(n): \(g1) vs \(g2), worst entry \(worst)")
                }
                if o1[n...].contains(where: { $0 != 7 }) { mismatches.append("backwardExcludingTop n=\(n) wrote past the run") }
                var p = [Float](repeating: 7, count: n + 16)
                _ = SoftmaxKernels.backward(x, &p, n, shift: m, c: 1e-6, invT: invT, a: 0.3, b: -1.1, isa)
                if p[n...].contains(where: { $0 != 7 }) { mismatches.append("backward n=\(n) wrote past the run") }
            }
            for (v, want) in [(m, first), (Float.nan, -1), (0, x.firstIndex(of: 0) ?? -1), (x[0], 0)] {
                let got = SoftmaxKernels.firstIndex(of: v, in: x, n, isa)
                if got != want || got != SoftmaxKernels.firstIndex(of: v, in: x, n, .simd8) {
                    mismatches.append("firstIndex(\(v)) n=\(n): \(got), expected \(want)")
                }
            }
        }
        #expect(mismatches.isEmpty, "\(isa) and SIMD8 differ: \(mismatches.prefix(10))")
    }
}
