// Each kernel path this CPU has, timed against the others on the same inputs: the logits
// kernels (stats, backward) and the sampler's modes. `make bench` runs it after the table
// against numpy and PyTorch; on its own: swift run -c release aepo-isa-bench.
//
// Per-element costs are the thread's CPU time, best of 5, so that other load on a shared
// machine does not count; the bench-shape row is wall clock with 2 threads, medians of 7,
// beside a plain copy of the logits (the memory floor).
@_spi(Bench) import AepoCore
import Glibc

func seconds(_ clock: clockid_t) -> Double {
    var t = timespec()
    clock_gettime(clock, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}

/// N(0, scale²) inputs from a fixed 64-bit LCG and Box–Muller: realistic logits, the same on
/// every run.
func normals(_ count: Int, seed: UInt64, scale: Double) -> [Float] {
    var s = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    func uniform() -> Double {
        s = s &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return (Double(s >> 11) + 0.5) / 9_007_199_254_740_992
    }
    var out = [Float](repeating: 0, count: count)
    var i = 0
    while i < count {
        let r = (-2 * log(uniform())).squareRoot(), a = 2 * Double.pi * uniform()
        out[i] = Float(scale * r * cos(a))
        if i + 1 < count { out[i + 1] = Float(scale * r * sin(a)) }
        i += 2
    }
    return out
}

/// x with `digits` decimals, without Foundation.
func fmt(_ x: Double, _ digits: Int) -> String {
    var p = 1.0
    for _ in 0..<digits { p *= 10 }
    let r = (x * p).rounded() / p
    var text = "\(r)"
    if let dot = text.firstIndex(of: ".") {
        let have = text.distance(from: dot, to: text.endIndex) - 1
        if have < digits { text += String(repeating: "0", count: digits - have) }
    }
    return text
}

let isas: [KernelISA] = KernelISA.available
let median = { (a: [Double]) in a.sorted()[a.count / 2] }

/// One logits problem (N rows of V logits ~ N(0, 2²), T = 1.2) and its buffers; `run` times
/// stats then backward on one path with `clock`.
final class LogitsProblem {
    let n: Int, v: Int, t = 1.2
    let x: [Float], targets: [Int32], gl: [Float]
    var lp: [Float], h: [Float], lse: [Double], out: [Float]
    let layout: LogitsLayout

    init(n: Int, v: Int, seed: UInt64) throws {
        self.n = n
        self.v = v
        x = normals(n * v, seed: seed, scale: 2)
        targets = (0..<n).map { Int32(($0 * 7919) % v) }
        gl = normals(n, seed: seed + 1, scale: 1)
        lp = [Float](repeating: 0, count: n)
        h = lp
        lse = [Double](repeating: 0, count: n)
        out = [Float](repeating: 0, count: n * v)
        layout = try LogitsLayout(rows: n, vocab: v)
    }

    /// Seconds of (stats, backward).
    func run(_ isa: KernelISA, threads: Int, clock: clockid_t) throws -> (stats: Double, backward: Double) {
        let t0 = seconds(clock)
        try lp.withUnsafeMutableBufferPointer { a in
            try h.withUnsafeMutableBufferPointer { b in
                try lse.withUnsafeMutableBufferPointer { c in
                    _ = try LogitsKernels.stats(x, layout: layout, targets: targets, mask: nil, temperature: t,
                                                threads: threads, outputs: LogitsStatsOutputs(logp: a.baseAddress,
                                                entropy: b.baseAddress, lse: c.baseAddress), isa: isa)
                }
            }
        }
        let t1 = seconds(clock)
        try LogitsKernels.backward(x, layout: layout, targets: targets, mask: nil, temperature: t, lse: lse,
                                   entropy: h, gradLogp: gl, gradEntropy: gl, out: &out, outLayout: layout,
                                   threads: threads, isa: isa)
        return (t1 - t0, seconds(clock) - t1)
    }
}

func logitsPerElement() throws {
    let p = try LogitsProblem(n: 512, v: 32000, seed: 1)
    for isa in isas {
        var best = (stats: Double.infinity, backward: Double.infinity)
        for _ in 0..<5 {
            let r = try p.run(isa, threads: 1, clock: CLOCK_THREAD_CPUTIME_ID)
            best = (min(best.stats, r.stats), min(best.backward, r.backward))
        }
        let per = 1e9 / Double(p.n * p.v)
        print("logits \(isa): stats \(fmt(best.stats * per, 3)) ns/element, backward "
              + "\(fmt(best.backward * per, 3)) ns/element (N=\(p.n) V=\(p.v), 1 thread, CPU time)")
    }
}

func logitsBenchShape() throws {
    let p = try LogitsProblem(n: 4096, v: 32000, seed: 3)
    var copies: [Double] = []
    for _ in 0..<7 {
        let t0 = seconds(CLOCK_MONOTONIC)
        p.out.withUnsafeMutableBufferPointer { o in
            p.x.withUnsafeBufferPointer { o.baseAddress!.update(from: $0.baseAddress!, count: p.n * p.v) }
        }
        copies.append(seconds(CLOCK_MONOTONIC) - t0)
    }
    for isa in isas {
        var times: [Double] = []
        for _ in 0..<7 {
            let r = try p.run(isa, threads: 2, clock: CLOCK_MONOTONIC)
            times.append(r.stats + r.backward)
        }
        let fb = median(times), copy = median(copies)
        print("logits bench shape \(isa): forward + backward \(fmt(fb * 1e3, 1)) ms, "
              + "copy of the logits \(fmt(copy * 1e3, 1)) ms, ratio \(fmt(fb / copy, 2)) "
              + "(N=\(p.n) V=\(p.v), 2 threads, medians of 7)")
    }
}

func samplerPerLogit() throws {
    let n = 256, v = 32000
    let x = normals(n * v, seed: 5, scale: 2)
    var tokens = [Int32](repeating: 0, count: n), kept = tokens
    var logp = [Float](repeating: 0, count: n), logpT1 = logp
    func config(_ t: Double, topK: Int64 = 0, topP: Double = 1, minP: Double = 0, greedy: Bool = false) -> SamplerConfig {
        var c = SamplerConfig()
        c.temperature = t
        c.topK = topK
        c.topP = topP
        c.minP = minP
        c.greedy = greedy
        c.threads = 1
        return c
    }
    let modes: [(String, SamplerConfig)] = [
        ("plain T=1.2", config(1.2)), ("plain T=1", config(1)), ("min-p 0.05", config(1.2, minP: 0.05)),
        ("top-k 50", config(1.2, topK: 50)), ("top-k 1000", config(1.2, topK: 1000)),
        ("top-p 0.9", config(1.2, topP: 0.9)), ("greedy", config(1.2, greedy: true)),
    ]
    for isa in isas {
        for (name, cfg) in modes {
            let sampler = try Sampler(cfg)
            sampler.isa = isa
            var best = Double.infinity
            for step in 0..<5 {
                let t0 = seconds(CLOCK_THREAD_CPUTIME_ID)
                try x.withUnsafeBufferPointer { xp throws(AepoFailure) in
                    try sampler.sample(logits: xp.baseAddress!, rows: n, vocab: v, rowStride: v, step: Int64(step),
                                       position: 0, rowOffset: 0, temperature: nil, tokens: &tokens, logp: &logp,
                                       logpT1: &logpT1, kept: &kept)
                }
                best = min(best, seconds(CLOCK_THREAD_CPUTIME_ID) - t0)
            }
            print("sampler \(isa) \(name): \(fmt(best * 1e9 / Double(n * v), 3)) ns/logit "
                  + "(N=\(n) V=\(v), 1 thread, CPU time)")
        }
    }
}

print("kernel paths on this CPU: \(isas.map { "\($0)" }.joined(separator: ", ")) (chosen at run time: \(KernelISA.best))")
do {
    try logitsPerElement()
    try logitsBenchShape()
    try samplerPerLogit()
} catch {
    print("aepo-isa-bench: \(error)")
    exit(1)
}
