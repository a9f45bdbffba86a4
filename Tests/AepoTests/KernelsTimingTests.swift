@testable import AepoCore
import Glibc
import Testing

/// Per-element cost of each implementation of the logits kernels, one thread, measured as the
/// thread's CPU time (so that other load on a shared machine does not count). Opt-in, as it
/// is a measurement and not a check:
///   AEPO_KERNELS_TIMING=1 swift test -c release --filter KernelsTimingTests
@Suite struct KernelsTimingTests {
    static func cpuSeconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    @Test func nanosecondsPerElement() throws {
        guard getenv("AEPO_KERNELS_TIMING") != nil else { return }
        let n = 512, v = 32000, t = 1.2
        var rng = KernelsRNG(seed: 1)
        let x = (0..<(n * v)).map { _ in Float(2 * rng.normal()) }
        let targets = (0..<n).map { _ in Int32(rng.int(v)) }
        let gl = (0..<n).map { _ in Float(rng.normal()) }, gh = gl
        var lp = [Float](repeating: 0, count: n), h = lp, lse = [Double](repeating: 0, count: n)
        var out = [Float](repeating: 0, count: n * v)
        let layout = try LogitsLayout(rows: n, vocab: v)
        for isa in KernelsTests.isas {
            var best = (stats: Double.infinity, backward: Double.infinity)
            for _ in 0..<5 {
                let t0 = Self.cpuSeconds()
                _ = try LogitsKernels.stats(x, layout: layout, targets: targets, mask: nil, temperature: t, threads: 1,
                                            outputs: LogitsStatsOutputs(logp: &lp, entropy: &h, lse: &lse), isa: isa)
                let t1 = Self.cpuSeconds()
                try LogitsKernels.backward(x, layout: layout, targets: targets, mask: nil, temperature: t, lse: lse,
                                           entropy: h, gradLogp: gl, gradEntropy: gh, out: &out, outLayout: layout,
                                           threads: 1, isa: isa)
                let t2 = Self.cpuSeconds()
                best = (min(best.stats, t1 - t0), min(best.backward, t2 - t1))
            }
            let per = 1e9 / Double(n * v)
            print("timing \(isa): stats \(best.stats * per) ns/element, backward \(best.backward * per) ns/element (N=\(n) V=\(v), 1 thread, CPU time)")
        }
    }
}
