@testable import AepoCore
import Glibc
import Testing

@Suite struct KernelsTimingTests {
    static func now() -> Double { var t = timespec(); clock_gettime(getenv("AEPO_TIMING_CPU") != nil ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &t); return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9 }
    @Test func timing() throws {
        guard getenv("AEPO_KERNELS_TIMING") != nil else { return }
        let n = 1024, v = 32000
        var rng = KernelsRNG(seed: 1)
        var x = (0..<(n * v)).map { _ in Float(2 * rng.normal()) }
        let targets = (0..<n).map { _ in Int32(rng.int(v)) }
        var lp = [Float](repeating: 0, count: n), h = lp, l = [Double](repeating: 0, count: n)
        let gl = (0..<n).map { _ in Float(rng.normal()) }, gh = gl
        var out = [Float](repeating: 0, count: n * v)
        let layout = try LogitsLayout(rows: n, vocab: v)
        for threads in [1, 2] {
            var best = (f: 1e9, b: 1e9, c: 1e9)
            for _ in 0..<5 {
                let t0 = Self.now()
                _ = try LogitsKernels.stats(x, layout: layout, targets: targets, mask: nil, temperature: 1.2, threads: threads,
                                        outputs: LogitsStatsOutputs(logp: &lp, entropy: &h, lse: &l))
                let t1 = Self.now()
                try LogitsKernels.backward(x, layout: layout, targets: targets, mask: nil, temperature: 1.2, lse: l, entropy: h,
                                           gradLogp: gl, gradEntropy: gh, out: &out, outLayout: layout, threads: threads)
                let t2 = Self.now()
                x.withUnsafeMutableBufferPointer { xb in out.withUnsafeMutableBufferPointer { ob in
                    parallelRanges(count: n, threads: threads) { r in
                        (ob.baseAddress! + r.lowerBound * v).update(from: xb.baseAddress! + r.lowerBound * v, count: r.count * v)
                    } } }
                let t3 = Self.now()
                best = (min(best.f, t1 - t0), min(best.b, t2 - t1), min(best.c, t3 - t2))
            }
            var ru = rusage(); getrusage(RUSAGE_SELF.rawValue, &ru)
            print("cpu user \(Double(ru.ru_utime.tv_sec) + Double(ru.ru_utime.tv_usec) * 1e-6)")
            print("timing N=\(n) V=\(v) threads=\(threads): stats \(best.f * 1e3) ms, backward \(best.b * 1e3) ms, copy \(best.c * 1e3) ms")
        }
    }
}
