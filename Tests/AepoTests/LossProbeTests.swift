@testable import AepoCore
import Glibc
import Testing

/// Timing probe for development: runs only with AEPO_LOSS_PROBE=1 and prints milliseconds.
/// AEPO_LOSS_PROBE_MODES lists the policy_loss modes to time (comma-separated; default
/// vanilla). (The benchmark of record is `make bench`.)
@Suite struct LossProbeTests {
    @Test(.enabled(if: getenv("AEPO_LOSS_PROBE") != nil)) func vanillaAt512x2048() throws {
        let B = 512, L = 2048, n = B * L
        var rng = SplitMix64(1)
        var lp = [Float](repeating: 0, count: n), olp = lp, adv = [Float](repeating: 0, count: B)
        var mask = [UInt8](repeating: 0, count: n)
        for b in 0..<B {
            adv[b] = Float(rng.uniform(-2, 2))
            let len = 256 + rng.int(L - 256)
            for t in 0..<L { mask[b * L + t] = t < len ? 1 : 0 }
        }
        for i in 0..<n { olp[i] = Float(rng.uniform(-3, 0)); lp[i] = olp[i] + Float(rng.uniform(-0.3, 0.3)) }
        let blp = buffer(lp), bolp = buffer(olp), badv = buffer(adv), bmask = buffer(mask)
        defer { release(blp); release(bolp); release(badv); release(bmask) }
        let grad = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        defer { grad.deallocate() }
        grad.initialize(repeating: 0)
        let batch = LossBatch(rows: B, length: L, logp: blp, oldLogp: bolp, advantages: badv,
                              advantagesPerToken: false, mask: bmask)
        let bref = buffer(lp.map { $0 + 0.1 }), bent = buffer(olp.map { -$0 })
        defer { release(bref); release(bent) }
        let gradEnt = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        defer { gradEnt.deallocate() }
        gradEnt.initialize(repeating: 0)
        var full = batch
        full.refLogp = bref
        full.entropy = bent
        let modes = (getenv("AEPO_LOSS_PROBE_MODES").map { String(cString: $0) } ?? "vanilla")
            .split(separator: ",").map(String.init)
        for mode in modes {
          for threads: Int64 in [1, 2] {
            for kl in [false, true] {
                let e = engine {
                    $0.loss.threads = threads
                    $0.loss.policyLoss = mode
                    if mode == "gspo" { $0.loss.lossAggMode = "seq-mean-token-mean" }
                    if kl { $0.loss.klLossCoef = 0.01; $0.loss.entropyCoeff = 0.001 }
                }
                var best = 1e9
                for _ in 0..<15 {
                    var t0 = timespec(), t1 = timespec()
                    clock_gettime(CLOCK_MONOTONIC, &t0)
                    _ = try e.compute(kl ? full : batch, grad: grad, gradEntropy: kl ? gradEnt : nil)
                    clock_gettime(CLOCK_MONOTONIC, &t1)
                    best = min(best, Double(t1.tv_sec - t0.tv_sec) * 1e3 + Double(t1.tv_nsec - t0.tv_nsec) / 1e6)
                }
                print("probe \(mode) threads=\(threads) \(kl ? "+k3+entropy" : "") compute best ms: \(best)")
            }
          }
        }
    }
}
