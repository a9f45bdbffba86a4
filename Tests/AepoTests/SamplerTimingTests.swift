@testable import AepoCore
import Glibc
import Testing

/// Cost per logit of each sampling mode, one thread, as the thread's CPU time (so other load
/// on a shared machine does not count), best of 5, with every output requested. Opt-in, as it
/// is a measurement and not a check:
///   AEPO_SAMPLER_TIMING=1 swift test -c release --filter SamplerTimingTests
@Suite struct SamplerTimingTests {
    static func cpuSeconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    @Test func nanosecondsPerLogit() throws {
        guard getenv("AEPO_SAMPLER_TIMING") != nil else { return }
        let n = 256, v = 32000
        let x = testNormals(n * v, seed: 1, scale: 2)
        var tokens = [Int32](repeating: 0, count: n), kept = tokens
        var logp = [Float](repeating: 0, count: n), logpT1 = logp
        let modes: [(String, SamplerConfig)] = [
            ("plain T=1.2", makeSamplerConfig(temperature: 1.2)),
            ("plain T=1", makeSamplerConfig(temperature: 1)),
            ("min-p 0.05", makeSamplerConfig(temperature: 1.2, minP: 0.05)),
            ("top-k 50", makeSamplerConfig(temperature: 1.2, topK: 50)),
            ("top-k 1000", makeSamplerConfig(temperature: 1.2, topK: 1000)),
            ("top-p 0.9", makeSamplerConfig(temperature: 1.2, topP: 0.9)),
            ("greedy", makeSamplerConfig(temperature: 1.2, greedy: true)),
        ]
        for isa in samplerISAs {
            for (name, cfg) in modes {
                let sampler = try Sampler(cfg)
                sampler.isa = isa
                var best = Double.infinity
                for step in 0..<5 {
                    let t0 = Self.cpuSeconds()
                    try x.withUnsafeBufferPointer { xp throws(AepoFailure) in
                        try sampler.sample(logits: xp.baseAddress!, rows: n, vocab: v, rowStride: v, step: Int64(step),
                                           position: 0, rowOffset: 0, temperature: nil, tokens: &tokens, logp: &logp,
                                           logpT1: &logpT1, kept: &kept)
                    }
                    best = min(best, Self.cpuSeconds() - t0)
                }
                print("timing \(isa) \(name): \(best * 1e9 / Double(n * v)) ns/logit (N=\(n) V=\(v), 1 thread, CPU time)")
            }
        }
    }
}
