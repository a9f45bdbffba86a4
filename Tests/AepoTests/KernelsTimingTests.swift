@testable import AepoCore
import Glibc
import Testing

/// Measurements, not checks, so they are opt-in:
///   AEPO_KERNELS_TIMING=1 swift test -c release --filter KernelsTimingTests
@Suite struct KernelsTimingTests {
    static var enabled: Bool { getenv("AEPO_KERNELS_TIMING") != nil }

    /// Stable pointers to the per-row outputs for the duration of `body`.
    static func withOutputs<R>(_ lp: inout [Float], _ h: inout [Float], _ lse: inout [Double],
                               _ body: (LogitsStatsOutputs) throws -> R) rethrows -> R {
        try lp.withUnsafeMutableBufferPointer { a in
            try h.withUnsafeMutableBufferPointer { b in
                try lse.withUnsafeMutableBufferPointer { c in
                    try body(LogitsStatsOutputs(logp: a.baseAddress, entropy: b.baseAddress, lse: c.baseAddress))
                }
            }
        }
    }

    static func seconds(_ clock: clockid_t) -> Double {
        var t = timespec()
        clock_gettime(clock, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    /// Per-element cost of each implementation, one thread, as the thread's CPU time (so that
    /// other load on a shared machine does not count).
    @Test func nanosecondsPerElement() throws {
        guard Self.enabled else { return }
        let n = 512, v = 32000, t = 1.2
        var rng = SplitMix64(seed: 1)
        let x = (0..<(n * v)).map { _ in Float(2 * rng.normal()) }
        let targets = (0..<n).map { _ in Int32(rng.int(v)) }
        let gl = (0..<n).map { _ in Float(rng.normal()) }, gh = gl
        var lp = [Float](repeating: 0, count: n), h = lp, lse = [Double](repeating: 0, count: n)
        var out = [Float](repeating: 0, count: n * v)
        let layout = try LogitsLayout(rows: n, vocab: v)
        for isa in KernelsTests.isas {
            var best = (stats: Double.infinity, backward: Double.infinity)
            for _ in 0..<5 {
                let t0 = Self.seconds(CLOCK_THREAD_CPUTIME_ID)
                _ = try Self.withOutputs(&lp, &h, &lse) { outs in
                    try LogitsKernels.stats(x, layout: layout, targets: targets, mask: nil, temperature: t, threads: 1,
                                            outputs: outs, isa: isa)
                }
                let t1 = Self.seconds(CLOCK_THREAD_CPUTIME_ID)
                try LogitsKernels.backward(x, layout: layout, targets: targets, mask: nil, temperature: t, lse: lse,
                                           entropy: h, gradLogp: gl, gradEntropy: gh, out: &out, outLayout: layout,
                                           threads: 1, isa: isa)
                let t2 = Self.seconds(CLOCK_THREAD_CPUTIME_ID)
                best = (min(best.stats, t1 - t0), min(best.backward, t2 - t1))
            }
            let per = 1e9 / Double(n * v)
            print("timing \(isa): stats \(best.stats * per) ns/element, backward \(best.backward * per) ns/element (N=\(n) V=\(v), 1 thread, CPU time)")
        }
    }

    /// The bench shape (N = 4096, V = 32000, T = 1.2, N(0, 2²)) with 2 threads, wall clock,
    /// medians of 7, for each implementation, next to a plain copy of the logits.
    @Test func benchShapeBothPaths() throws {
        guard Self.enabled else { return }
        let n = 4096, v = 32000, t = 1.2
        var rng = SplitMix64(seed: 3)
        var x = [Float](repeating: 0, count: n * v)
        for i in 0..<(n * v) { x[i] = Float(2 * rng.normal()) }
        let targets = (0..<n).map { _ in Int32(rng.int(v)) }
        let gl = (0..<n).map { _ in Float(rng.normal()) }, gh = gl
        var lp = [Float](repeating: 0, count: n), h = lp, lse = [Double](repeating: 0, count: n)
        var out = [Float](repeating: 0, count: n * v)
        let layout = try LogitsLayout(rows: n, vocab: v)
        let med = { (a: [Double]) in a.sorted()[a.count / 2] * 1e3 }
        var copies: [Double] = []
        for _ in 0..<7 {
            let t0 = Self.seconds(CLOCK_MONOTONIC)
            out.withUnsafeMutableBufferPointer { o in x.withUnsafeBufferPointer { o.baseAddress!.update(from: $0.baseAddress!, count: n * v) } }
            copies.append(Self.seconds(CLOCK_MONOTONIC) - t0)
        }
        for isa in KernelsTests.isas {
            var times: [Double] = []
            for _ in 0..<7 {
                let t0 = Self.seconds(CLOCK_MONOTONIC)
                _ = try Self.withOutputs(&lp, &h, &lse) { outs in
                    try LogitsKernels.stats(x, layout: layout, targets: targets, mask: nil, temperature: t, threads: 2,
                                            outputs: outs, isa: isa)
                }
                try LogitsKernels.backward(x, layout: layout, targets: targets, mask: nil, temperature: t, lse: lse,
                                           entropy: h, gradLogp: gl, gradEntropy: gh, out: &out, outLayout: layout,
                                           threads: 2, isa: isa)
                times.append(Self.seconds(CLOCK_MONOTONIC) - t0)
            }
            print("timing bench shape \(isa): forward + backward \(med(times)) ms, copy of the logits \(med(copies)) ms (2 threads, medians of 7)")
        }
    }
}
