@testable import AepoCore
import Glibc
import Testing

/// Runs `LogitsKernels.backward` on a contiguous [N, V] array.
struct BackwardRun {
    var out: [Float]

    init(_ x: [Float], rows n: Int, vocab v: Int, targets: [Int32], mask: [UInt8]? = nil, temperature: Double,
         lse: [Double], entropy: [Float], gradLogp: [Float]?, gradEntropy: [Float]?, threads: Int = 1,
         inPlace: Bool = false, isa: KernelISA = .best) throws(AepoFailure) {
        var o = inPlace ? x : [Float](repeating: .nan, count: n * v)
        var failure: AepoFailure?
        let layout = try LogitsLayout(rows: n, vocab: v)
        let xs = x
        o.withUnsafeMutableBufferPointer { ob in
            xs.withUnsafeBufferPointer { xb in
                let src = inPlace ? UnsafePointer(ob.baseAddress!) : xb.baseAddress!
                do throws(AepoFailure) {
                    try withOptional(mask) { (m) throws(AepoFailure) in
                        try withOptional(gradLogp) { (gl) throws(AepoFailure) in
                            try withOptional(gradEntropy) { (gh) throws(AepoFailure) in
                                try LogitsKernels.backward(src, layout: layout, targets: targets, mask: m,
                                                           temperature: temperature, lse: lse, entropy: entropy,
                                                           gradLogp: gl, gradEntropy: gh,
                                                           out: ob.baseAddress!, outLayout: layout, threads: threads,
                                                           isa: isa)
                            }
                        }
                    }
                } catch { failure = error }
            }
        }
        if let failure { throw failure }
        out = o
    }
}

/// Calls `body` with the array's base address, or nil.
func withOptional<T, R>(_ a: [T]?, _ body: (UnsafePointer<T>?) throws(AepoFailure) -> R) throws(AepoFailure) -> R {
    guard let a else { return try body(nil) }
    var result: Result<R, AepoFailure>!
    a.withUnsafeBufferPointer { b in
        do throws(AepoFailure) { result = .success(try body(b.baseAddress)) } catch { result = .failure(error) }
    }
    return try result.get()
}

/// L(x) = Σ_r g_logp[r] · log p_r(t_r) + g_H[r] · H_r in float64.
func lossRef(_ x: [Double], rows n: Int, vocab v: Int, targets: [Int32], temperature t: Double,
             gradLogp: [Float]?, gradEntropy: [Float]?) -> Double {
    var l = 0.0
    for r in 0..<n {
        let ref = RowRef(Array(x[(r * v)..<((r + 1) * v)]), temperature: t, target: Int(targets[r]))
        l += Double(gradLogp?[r] ?? 0) * ref.logp + Double(gradEntropy?[r] ?? 0) * ref.entropy
    }
    return l
}

/// Central differences (h = 1e-6) of `lossRef`.
func gradRef(_ x: [Float], rows n: Int, vocab v: Int, targets: [Int32], temperature t: Double,
             gradLogp: [Float]?, gradEntropy: [Float]?) -> [Double] {
    let h = 1e-6
    var xd = x.map { Double($0) }
    var g = [Double](repeating: 0, count: x.count)
    for i in 0..<x.count where xd[i] > -.infinity {
        let x0 = xd[i]
        xd[i] = x0 + h
        let fp = lossRef(xd, rows: n, vocab: v, targets: targets, temperature: t, gradLogp: gradLogp, gradEntropy: gradEntropy)
        xd[i] = x0 - h
        let fm = lossRef(xd, rows: n, vocab: v, targets: targets, temperature: t, gradLogp: gradLogp, gradEntropy: gradEntropy)
        xd[i] = x0
        g[i] = (fp - fm) / (2 * h)
    }
    return g
}

/// ‖g_lib − g_ref‖∞ / ‖g_ref‖∞.
func gradError(_ got: [Float], _ ref: [Double]) -> Double {
    var d = 0.0, m = 0.0
    for i in 0..<ref.count {
        d = max(d, abs(Double(got[i]) - ref[i]))
        m = max(m, abs(ref[i]))
    }
    return d / m
}

@Suite struct KernelsGradTests {
    /// The gradient check of docs/API.md at tol 1e-5, for both terms separately and together.
    @Test(arguments: [2, 5, 37, 300])
    func backwardPassesGradientCheck(vocab v: Int) throws {
        var rng = SplitMix64(seed: 100 + UInt64(v))
        let n = 3
        var worst = (err: 0.0, what: "")
        for scale in [0.5, 3.0, 10.0] {
            for shape in [LogitsShape.gaussian, .withNegInf, .peaked] where !(shape == .withNegInf && v == 2) {
                var x: [Float] = []
                var targets: [Int32] = []
                for _ in 0..<n {
                    x += makeRow(shape, vocab: v, scale: scale, rng: &rng)
                    var t = rng.int(v)
                    while x[x.count - v + t] == -.infinity { t = rng.int(v) }
                    targets.append(Int32(t))
                }
                let gl = (0..<n).map { _ in Float(rng.normal()) }
                let gh = (0..<n).map { _ in Float(rng.normal()) }
                for t in KernelsTests.temperatures {
                    for (name, a, b) in [("logp", gl, nil), ("entropy", nil, gh), ("both", gl, gh)] as [(String, [Float]?, [Float]?)] {
                        let ref = gradRef(x, rows: n, vocab: v, targets: targets, temperature: t, gradLogp: a, gradEntropy: b)
                        for isa in KernelsTests.isas {
                            let fwd = try StatsRun(x, rows: n, vocab: v, targets: targets, temperature: t, isa: isa)
                            let got = try BackwardRun(x, rows: n, vocab: v, targets: targets, temperature: t, lse: fwd.lse,
                                                      entropy: fwd.entropy, gradLogp: a, gradEntropy: b, isa: isa).out
                            let e = gradError(got, ref)
                            if !(e <= worst.err) { worst = (e, "\(name) scale=\(scale) \(shape) T=\(t) \(isa)") }
                        }
                    }
                }
            }
        }
        print("backward V=\(v): max ‖g − g_ref‖∞/‖g_ref‖∞ = \(worst.err) (\(worst.what))")
        #expect(worst.err <= 1e-5, "gradient error \(worst.err) at \(worst.what)")
    }

    /// Logits of scale 50 (|lse| up to ~400 at T = 0.3, where the float32 rounding of lse is
    /// largest) with two tokens placed a few nats below the top one, so that the gradient is
    /// not all underflow (with only the top token left, H and every entry are ~e^-100).
    @Test func backwardAtScale50() throws {
        var rng = SplitMix64(seed: 50)
        let v = 64
        var worst = (err: 0.0, what: "")
        for t in KernelsTests.temperatures {
            for gaps in [[0.3, 1.0], [3.0, 6.0], [12.0, 20.0]] {
                var x = makeRow(.gaussian, vocab: v, scale: 50, rng: &rng)
                let best = x.indices.max { x[$0] < x[$1] }!
                let second = (best + 7) % v, third = (best + 14) % v
                x[second] = x[best] - Float(gaps[0] * t)
                x[third] = x[best] - Float(gaps[1] * t)
                for target in [best, second, rng.int(v)] {
                  for isa in KernelsTests.isas {
                    let fwd = try StatsRun(x, rows: 1, vocab: v, targets: [Int32(target)], temperature: t, isa: isa)
                    for (gl, gh) in [(Float(0.7), Float(-1.3)), (1, 0), (0, 1)] {
                        let got = try BackwardRun(x, rows: 1, vocab: v, targets: [Int32(target)], temperature: t, lse: fwd.lse,
                                                  entropy: fwd.entropy, gradLogp: [gl], gradEntropy: [gh], isa: isa).out
                        let ref = gradRef(x, rows: 1, vocab: v, targets: [Int32(target)], temperature: t,
                                          gradLogp: [gl], gradEntropy: [gh])
                        let e = gradError(got, ref)
                        if e > 1e-5 {
                            let order = x.indices.sorted { x[$0] > x[$1] }
                            print("T=\(t) gaps \(gaps) target \(target) g=(\(gl), \(gh)) H=\(fwd.entropy[0]) lse=\(fwd.lse[0]) err \(e)")
                            for j in order.prefix(4) { print("  j=\(j) x=\(x[j]) got=\(got[j]) ref=\(ref[j])") }
                        }
                        if !(e <= worst.err) { worst = (e, "T=\(t) gaps \(gaps) target \(target) g=(\(gl), \(gh)) lse \(fwd.lse[0]) \(isa)") }
                    }
                  }
                }
            }
        }
        print("backward scale 50: max ‖g − g_ref‖∞/‖g_ref‖∞ = \(worst.err) (\(worst.what))")
        #expect(worst.err <= 1e-5, "gradient error \(worst.err) at \(worst.what)")
    }

    /// In place gives the same bits as out of place; skipped rows are 0 and not read.
    @Test func inPlaceAndSkippedRows() throws {
        var rng = SplitMix64(seed: 3)
        let n = 6, v = 1001
        var x = (0..<(n * v)).map { _ in Float(4 * rng.normal()) }
        var targets = (0..<n).map { _ in Int32(rng.int(v)) }
        let mask: [UInt8] = [1, 0, 1, 1, 1, 1]
        let fwd = try StatsRun(x, rows: n, vocab: v, targets: targets, mask: mask, temperature: 0.7)
        var gl = (0..<n).map { _ in Float(rng.normal()) }
        let gh = (0..<n).map { _ in Float(rng.normal()) }
        gl[3] = 0
        var ghz = gh
        ghz[3] = 0  // row 3: both gradients 0
        for j in 0..<v { x[1 * v + j] = .nan; x[3 * v + j] = .nan }
        targets[1] = -100
        targets[3] = 1_000_000
        let a = try BackwardRun(x, rows: n, vocab: v, targets: targets, mask: mask, temperature: 0.7, lse: fwd.lse,
                                entropy: fwd.entropy, gradLogp: gl, gradEntropy: ghz)
        let b = try BackwardRun(x, rows: n, vocab: v, targets: targets, mask: mask, temperature: 0.7, lse: fwd.lse,
                                entropy: fwd.entropy, gradLogp: gl, gradEntropy: ghz, inPlace: true)
        #expect(a.out.map(\.bitPattern) == b.out.map(\.bitPattern))
        for j in 0..<v {
            #expect(a.out[v + j] == 0 && a.out[3 * v + j] == 0)
        }
        // Each active row of a softmax gradient sums to ~0 (Σ_j (onehot − p) = 0, Σ_j p (log p + H) = 0).
        for r in [0, 2, 4, 5] {
            var s = 0.0, m = 0.0
            for j in 0..<v { s += Double(a.out[r * v + j]); m = max(m, abs(Double(a.out[r * v + j]))) }
            #expect(abs(s) <= 1e-5 * m, "row \(r) sums to \(s)")
        }
    }
}
