@testable import AepoCore
import Glibc
import Testing

// loss_and_grad against the float64 chain (materialised float64 logits, the float64
// transcription of the loss in LossSupport, its derivative with respect to log p and H by
// central differences, then the float64 logits gradient), against central differences all
// the way from X, W and bias, against the forward / loss / backward composition, and for
// micro-batch sums and thread counts.

struct FusedLossRun {
    var result: LossResult
    var dX: [Float]
    var dW: [Float]
    var db: [Float]
    var logp: [Float]
    var entropy: [Float]
}

/// A fused case and a loss case over the same tokens (B * L = N, one mask).
struct FusedLossCase {
    var head: FusedCase
    var loss: LossCase

    /// B rows of L tokens; `holes` are masked tokens (NaN in X, target -100). Old log-probs
    /// are the float64 log-probs shifted by one of four offsets whose ratios e^δ sit well
    /// away from every kink of the PPO clip (1 ± 0.2, and 3 for the dual clip), so central
    /// differences never straddle one.
    static func random(B: Int, L: Int, D: Int, V: Int, T: Double, seed: UInt64, holes: Set<Int>,
                       withRef: Bool = false, regRows: [UInt8]? = nil) -> FusedLossCase {
        let fc = FusedCase.random(N: B * L, D: D, V: V, seed: seed, bias: true, maskedRows: holes)
        var g = SplitMix64(seed &+ 1)
        let st = Ref64.stats(fc, T: T)
        let offsets = [-0.4, -0.1, 0.05, 0.3]
        let n = B * L
        let mask = (0..<n).map { holes.contains($0) ? UInt8(0) : 1 }
        let old = (0..<n).map { i in Float(st.logp[i] - offsets[g.int(4)]) }
        let adv = (0..<B).map { _ in Float(g.uniform(-1.5, 1.5)) }
        let ref: [Float]? = withRef ? (0..<n).map { i in Float(st.logp[i] + g.uniform(-0.3, 0.3)) } : nil
        var lc = LossCase(B: B, L: L, logp: [Float](repeating: 0, count: n), oldLogp: old, advantages: adv, mask: mask)
        lc.ref = ref
        lc.regRows = regRows
        return FusedLossCase(head: fc, loss: lc)
    }
}

func runFusedLoss(_ head: FusedHead, _ engine: Loss, _ fc: FusedCase, _ lc: LossCase,
                  forceTwoPass: Bool = false, dW0: Float = 0) throws(AepoFailure) -> FusedLossRun {
    var out = FusedLossRun(result: LossResult(loss: .nan, metrics: []), dX: .init(repeating: .nan, count: fc.N * fc.D),
                           dW: .init(repeating: dW0, count: fc.V * fc.D), db: .init(repeating: 0, count: fc.V),
                           logp: .init(repeating: .nan, count: fc.N), entropy: .init(repeating: .nan, count: fc.N))
    let olp = buffer(lc.oldLogp), adv = buffer(lc.advantages), mask = buffer(lc.mask)
    let ref = lc.ref.map(buffer), isw = lc.isw.map(buffer), reg = lc.regRows.map(buffer)
    defer { release(olp); release(adv); release(mask); release(ref); release(isw); release(reg) }
    let batch = LossBatch(rows: lc.B, length: lc.L, logp: UnsafeBufferPointer(start: nil, count: 0), oldLogp: olp,
                          advantages: adv, advantagesPerToken: lc.perToken, mask: mask, refLogp: ref, isWeights: isw,
                          entropy: nil, regRows: reg, regAlpha: lc.regAlpha, globalTokens: lc.globalTokens,
                          globalSeqs: lc.globalSeqs, globalRegTokens: lc.globalRegTokens, dpSize: lc.dp, step: lc.step)
    var fcNoMask = fc
    fcNoMask.mask = nil  // the batch's mask is the head's mask
    try fcNoMask.withInputs { (inp) throws(AepoFailure) in
        try out.dX.withUnsafeMutableBufferPointer { (dx) throws(AepoFailure) in
            try out.dW.withUnsafeMutableBufferPointer { (dw) throws(AepoFailure) in
                try out.db.withUnsafeMutableBufferPointer { (db) throws(AepoFailure) in
                    try out.logp.withUnsafeMutableBufferPointer { (lp) throws(AepoFailure) in
                        try out.entropy.withUnsafeMutableBufferPointer { (en) throws(AepoFailure) in
                            out.result = try head.lossAndGrad(inp, loss: engine, batch: batch, dX: dx, dW: dw,
                                                              dbias: db, logp: lp, entropy: en,
                                                              forceTwoPass: forceTwoPass)
                        }
                    }
                }
            }
        }
    }
    return out
}

/// The float64 chain: loss value, and dX, dW, dbias through dL/dlogp and dL/dH.
/// `selected` is the covariance selection of clip_cov and kl_cov (taken as given); the
/// stop-gradient terms of gspo and cispo are held at the float64 log-probs.
func referenceFusedLoss(_ cfg: Config, _ c: FusedLossCase, T: Double, selected: Set<Int> = [])
    -> (loss: Double, entropyMetric: Double, dX: [Double], dW: [Double], db: [Double]) {
    let st = Ref64.stats(c.head, T: T)
    func ref(_ lp: [Double], _ ent: [Double]) -> RefLoss {
        referenceLoss(cfg, c.loss, lp: lp, ent: ent, selected: selected, detached: st.logp)
    }
    let base = ref(st.logp, st.entropy)
    let h = 1e-6
    let n = c.head.N
    var gl = [Double](repeating: 0, count: n), gh = [Double](repeating: 0, count: n)
    for i in 0..<n where c.loss.mask[i] == 1 {
        var p = st.logp, m = st.logp
        p[i] += h
        m[i] -= h
        gl[i] = (ref(p, st.entropy).loss - ref(m, st.entropy).loss) / (2 * h)
        var pe = st.entropy, me = st.entropy
        pe[i] += h
        me[i] -= h
        gh[i] = (ref(st.logp, pe).loss - ref(st.logp, me).loss) / (2 * h)
    }
    let g = Ref64.grads(c.head, T: T, gl: gl, gh: gh)
    return (base.loss, base.entropy, g.dX, g.dW, g.db)
}

/// The unfused float32 path: the [N, V] logits materialised with one product, the logits
/// kernels for log p, H, lse and the logits gradient, the loss engine in between, and the
/// three products for dX, dW and dbias.
func unfusedLoss(_ cfg: Config, _ c: FusedLossCase) throws -> FusedLossRun {
    let fc = c.head, lc = c.loss
    let N = fc.N, D = fc.D, V = fc.V, T = cfg.fused.temperature
    let eng = try Loss(config: cfg)
    var X = fc.x
    for r in 0..<N where !fc.valid(r) { for k in 0..<D { X[r * D + k] = 0 } }
    var z = [Float](repeating: 0, count: N * V)
    for r in 0..<N { for j in 0..<V { z[r * V + j] = fc.bias?[j] ?? 0 } }
    X.withUnsafeBufferPointer { x in
        fc.w.withUnsafeBufferPointer { w in
            z.withUnsafeMutableBufferPointer { zb in
                Gemm.abT(m: N, n: V, k: D, a: x.baseAddress!, lda: D, b: w.baseAddress!, ldb: D, beta: 1,
                         c: zb.baseAddress!, ldc: V)
            }
        }
    }
    var logp = [Float](repeating: 0, count: N), ent = [Float](repeating: 0, count: N)
    var lse = [Double](repeating: 0, count: N)
    let layout = try LogitsLayout(rows: N, vocab: V)
    let tb = buffer(fc.targets), mb = buffer(lc.mask)
    defer { release(tb); release(mb) }
    try logp.withUnsafeMutableBufferPointer { lp in
        try ent.withUnsafeMutableBufferPointer { en in
            try lse.withUnsafeMutableBufferPointer { ls in
                _ = try LogitsKernels.stats(z, layout: layout, targets: tb.baseAddress, mask: mb.baseAddress,
                                            temperature: T, threads: 1,
                                            outputs: LogitsStatsOutputs(logp: lp.baseAddress, entropy: en.baseAddress,
                                                                        lse: ls.baseAddress))
            }
        }
    }
    var lcFull = lc
    lcFull.logp = logp
    lcFull.entropy = ent
    let loss = try runLoss(eng, lcFull)
    var g = [Float](repeating: 0, count: N * V)
    try z.withUnsafeBufferPointer { zb in
        try g.withUnsafeMutableBufferPointer { gb in
            try LogitsKernels.backward(zb.baseAddress!, layout: layout, targets: tb.baseAddress, mask: mb.baseAddress,
                                       temperature: T, lse: lse, entropy: ent, gradLogp: loss.grad,
                                       gradEntropy: loss.gradEntropy, out: gb.baseAddress!, outLayout: layout, threads: 1)
        }
    }
    var out = FusedLossRun(result: loss.result, dX: .init(repeating: 0, count: N * D),
                           dW: .init(repeating: 0, count: V * D), db: .init(repeating: 0, count: V),
                           logp: logp, entropy: ent)
    g.withUnsafeBufferPointer { gb in
        fc.w.withUnsafeBufferPointer { w in
            X.withUnsafeBufferPointer { x in
                out.dX.withUnsafeMutableBufferPointer { dx in
                    Gemm.ab(m: N, n: D, k: V, a: gb.baseAddress!, lda: V, b: w.baseAddress!, ldb: D, beta: 0,
                            c: dx.baseAddress!, ldc: D)
                }
                out.dW.withUnsafeMutableBufferPointer { dw in
                    Gemm.aTb(m: V, n: D, k: N, a: gb.baseAddress!, lda: V, b: x.baseAddress!, ldb: D, beta: 0,
                             c: dw.baseAddress!, ldc: D)
                }
            }
        }
    }
    for r in 0..<N { for j in 0..<V { out.db[j] += g[r * V + j] } }
    return out
}

@Suite struct FusedLossTests {
    struct Setup {
        var name: String
        var edit: @Sendable (inout Config) -> Void
        var B: Int, L: Int, D: Int, V: Int
        var holes: Set<Int>
        var withRef = false
        var regRows: [UInt8]? = nil
        var cn: Int64, cv: Int64
    }

    static let setups: [Setup] = [
        Setup(name: "token-mean with an entropy bonus", edit: { $0.loss.entropyCoeff = 0.05 },
              B: 3, L: 5, D: 12, V: 41, holes: [4, 9, 10], cn: 4, cv: 16),
        Setup(name: "seq-mean-token-mean, KL and entropy, T = 0.7",
              edit: { $0.loss.lossAggMode = "seq-mean-token-mean"; $0.loss.klLossCoef = 0.2; $0.loss.entropyCoeff = -0.1; $0.fused.temperature = 0.7 },
              B: 4, L: 4, D: 10, V: 33, holes: [0, 7, 15], withRef: true, cn: 5, cv: 8),
        Setup(name: "weighted regulariser rows, seq-mean-token-sum",
              edit: { $0.regularizer.combine = "weighted"; $0.regularizer.alpha = 0.5; $0.loss.lossAggMode = "seq-mean-token-sum" },
              B: 4, L: 3, D: 8, V: 29, holes: [2], regRows: [0, 1, 0, 1], cn: 3, cv: 29),
        Setup(name: "replace regulariser rows, token-sum, no holes", edit: { $0.loss.lossAggMode = "token-sum" },
              B: 2, L: 6, D: 9, V: 64, holes: [], regRows: [1, 0], cn: 128, cv: 8192),
    ]

    @Test(arguments: 0..<setups.count)
    func matchesFloat64Chain(_ k: Int) throws {
        let s = Self.setups[k]
        var cfg = Config()
        s.edit(&cfg)
        cfg.fused.chunkN = s.cn
        cfg.fused.chunkV = s.cv
        let T = cfg.fused.temperature
        let c = FusedLossCase.random(B: s.B, L: s.L, D: s.D, V: s.V, T: T, seed: UInt64(300 + k), holes: s.holes,
                                     withRef: s.withRef, regRows: s.regRows)
        let eng = try Loss(config: cfg)
        let head = try FusedHead(config: cfg.fused)
        let run = try runFusedLoss(head, eng, c.head, c.loss)
        let ref = referenceFusedLoss(cfg, c, T: T)
        let st = Ref64.stats(c.head, T: T)
        #expect(relErr(run.result.loss, ref.loss) <= 1e-5, "\(s.name): loss \(run.result.loss) vs \(ref.loss)")
        #expect(relErr(run.result[.entropy], ref.entropyMetric) <= 1e-5, "\(s.name): entropy metric")
        #expect(relInf(run.logp, st.logp, floor: 1) <= 1e-5 && relInf(run.entropy, st.entropy, floor: 1) <= 1e-5)
        #expect(relInf(run.dX, ref.dX) <= 1e-5, "\(s.name): dX rel err \(relInf(run.dX, ref.dX))")
        #expect(relInf(run.dW, ref.dW) <= 1e-5, "\(s.name): dW rel err \(relInf(run.dW, ref.dW))")
        #expect(relInf(run.db, ref.db) <= 1e-5, "\(s.name): dbias rel err \(relInf(run.db, ref.db))")
        for i in s.holes {
            #expect(run.logp[i] == 0 && run.entropy[i] == 0)
            #expect(run.dX[(i * s.D)..<((i + 1) * s.D)].allSatisfy { $0 == 0 })
        }
        // The unfused float32 path (materialised logits, logits kernels, loss engine).
        let un = try unfusedLoss(cfg, c)
        #expect(relErr(un.result.loss, run.result.loss) <= 1e-5, "\(s.name): unfused loss \(un.result.loss)")
        #expect(relInf(run.logp, un.logp) <= 1e-5 && relInf(run.entropy, un.entropy) <= 1e-5)
        #expect(relInf(run.dX, un.dX) <= 1e-5, "\(s.name): dX vs unfused \(relInf(run.dX, un.dX))")
        #expect(relInf(run.dW, un.dW) <= 1e-5, "\(s.name): dW vs unfused \(relInf(run.dW, un.dW))")
        #expect(relInf(run.db, un.db) <= 1e-5, "\(s.name): dbias vs unfused \(relInf(run.db, un.db))")
        // The forward / loss / backward composition gives the same numbers.
        let two = try runFusedLoss(head, eng, c.head, c.loss, forceTwoPass: true)
        #expect(relErr(two.result.loss, run.result.loss) <= 1e-6)
        #expect(two.result.metrics.count == run.result.metrics.count)
        for (a, b) in zip(two.result.metrics, run.result.metrics) { #expect(relErr(a, b) <= 1e-6) }
        #expect(relInf(two.dX, run.dX) <= 1e-5 && relInf(two.dW, run.dW) <= 1e-5 && relInf(two.db, run.db) <= 1e-5)
    }

    /// The gradient check (docs/API.md) on a small case: central differences (h = 1e-6) of the float64 loss as a
    /// function of X, W and bias, through log p and H.
    @Test func gradientCheckFromHiddenStates() throws {
        var cfg = Config()
        cfg.loss.entropyCoeff = 0.2
        cfg.loss.klLossCoef = 0.1
        cfg.fused.temperature = 1.1
        cfg.fused.chunkN = 2
        let T = cfg.fused.temperature
        let c = FusedLossCase.random(B: 2, L: 3, D: 4, V: 7, T: T, seed: 404, holes: [4], withRef: true)
        let run = try runFusedLoss(try FusedHead(config: cfg.fused), try Loss(config: cfg), c.head, c.loss)
        func lossAt(x: [Double]? = nil, w: [Double]? = nil, b: [Double]? = nil) -> Double {
            let st = Ref64.stats(c.head, T: T, x: x, w: w, b: b)
            return referenceLoss(cfg, c.loss, lp: st.logp, ent: st.entropy).loss
        }
        let h = 1e-6
        func fd(_ base: [Double], skip: (Int) -> Bool = { _ in false }, _ eval: ([Double]) -> Double) -> [Double] {
            (0..<base.count).map { i in
                if skip(i) { return 0 }
                var p = base, m = base
                p[i] += h
                m[i] -= h
                return (eval(p) - eval(m)) / (2 * h)
            }
        }
        let D = c.head.D
        let gx = fd(c.head.x.map(Double.init), skip: { !c.head.valid($0 / D) }) { lossAt(x: $0) }
        let gw = fd(c.head.w.map(Double.init)) { lossAt(w: $0) }
        let gb = fd(c.head.bias!.map(Double.init)) { lossAt(b: $0) }
        #expect(relErr(run.result.loss, lossAt()) <= 1e-6)
        #expect(relInf(run.dX, gx) <= 1e-5, "dX: \(relInf(run.dX, gx))")
        #expect(relInf(run.dW, gw) <= 1e-5, "dW: \(relInf(run.dW, gw))")
        #expect(relInf(run.db, gb) <= 1e-5, "dbias: \(relInf(run.db, gb))")
    }

    /// Every policy-loss mode through loss_and_grad: one pass over the logits for the
    /// token-separable modes (cispo, gpg), forward / loss / backward for the others (gspo's
    /// sequence ratio and the covariance selections need every log-prob first). Checked
    /// against the float64 chain, the unfused float32 path and the composition, for two
    /// thread counts.
    @Test(arguments: ["gspo", "cispo", "gpg", "reinforce", "clip_cov", "kl_cov"])
    func everyModeMatchesFloat64Chain(mode: String) throws {
        var cfg = Config()
        cfg.loss.policyLoss = mode
        cfg.loss.lossAggMode = mode == "gspo" ? "seq-mean-token-mean" : "token-mean"
        cfg.loss.clipRatioHigh = 0.28
        cfg.loss.entropyCoeff = 0.05
        cfg.loss.klLossCoef = 0.2
        cfg.loss.klLossType = "k1"
        cfg.loss.clipCovRatio = 0.2
        cfg.loss.clipCovLb = 0.05
        cfg.loss.klCovRatio = 0.2
        cfg.loss.ppoKlCoef = 0.5
        cfg.fused.chunkN = 4
        cfg.fused.chunkV = 16
        cfg.fused.temperature = 0.9
        let T = cfg.fused.temperature
        var c = FusedLossCase.random(B: 4, L: 5, D: 10, V: 37, T: T, seed: 321, holes: [3, 4, 11, 18], withRef: true)
        c.loss.step = 5
        let eng = try Loss(config: cfg)
        let head = try FusedHead(config: cfg.fused)
        let run = try runFusedLoss(head, eng, c.head, c.loss)
        // The selection the library made on the head's log-probs.
        var withLogp = c.loss
        withLogp.logp = run.logp
        withLogp.entropy = run.entropy
        let sel = Set(try selection(eng, withLogp))
        if mode == "clip_cov" || mode == "kl_cov" { #expect(!sel.isEmpty, "\(mode): nothing selected") }
        let ref = referenceFusedLoss(cfg, c, T: T, selected: sel)
        #expect(relErr(run.result.loss, ref.loss) <= 1e-5, "\(mode): loss \(run.result.loss) vs \(ref.loss)")
        #expect(relInf(run.dX, ref.dX) <= 1e-5, "\(mode): dX rel err \(relInf(run.dX, ref.dX))")
        #expect(relInf(run.dW, ref.dW) <= 1e-5, "\(mode): dW rel err \(relInf(run.dW, ref.dW))")
        #expect(relInf(run.db, ref.db) <= 1e-5, "\(mode): dbias rel err \(relInf(run.db, ref.db))")
        let un = try unfusedLoss(cfg, c)
        #expect(relErr(un.result.loss, run.result.loss) <= 1e-5, "\(mode): unfused loss \(un.result.loss)")
        #expect(relInf(run.dX, un.dX) <= 1e-5 && relInf(run.dW, un.dW) <= 1e-5 && relInf(run.db, un.db) <= 1e-5)
        let two = try runFusedLoss(head, eng, c.head, c.loss, forceTwoPass: true)
        #expect(relErr(two.result.loss, run.result.loss) <= 1e-6)
        #expect(relInf(two.dX, run.dX) <= 1e-5 && relInf(two.dW, run.dW) <= 1e-5 && relInf(two.db, run.db) <= 1e-5)
        cfg.fused.threads = 3
        cfg.loss.threads = 3
        let many = try runFusedLoss(try FusedHead(config: cfg.fused), try Loss(config: cfg), c.head, c.loss)
        #expect(many.result == run.result && many.dX == run.dX && many.dW == run.dW && many.db == run.db, "\(mode): threads")
    }

    /// With global counts, the micro-batches' losses and gradients add up to one call's.
    @Test func microBatchesSumToOneCall() throws {
        var cfg = Config()
        cfg.loss.lossAggMode = "seq-mean-token-mean"
        cfg.loss.entropyCoeff = 0.03
        cfg.fused.chunkN = 3
        cfg.fused.chunkV = 10
        let c = FusedLossCase.random(B: 4, L: 5, D: 6, V: 23, T: 1, seed: 505, holes: [3, 4, 12])
        let head = try FusedHead(config: cfg.fused), eng = try Loss(config: cfg)
        let whole = try runFusedLoss(head, eng, c.head, c.loss)
        var lc = c.loss
        lc.globalTokens = c.loss.mask.reduce(0) { $0 + Int($1) }
        lc.globalSeqs = 4
        var loss = 0.0
        var dW = [Double](repeating: 0, count: c.head.V * c.head.D), db = [Double](repeating: 0, count: c.head.V)
        var dX = [Double]()
        for (lo, hi) in [(0, 1), (1, 4)] {
            var part = c.head
            let t = (lo * 5)..<(hi * 5)
            part.N = t.count
            part.x = Array(c.head.x[(t.lowerBound * 6)..<(t.upperBound * 6)])
            part.targets = Array(c.head.targets[t])
            part.mask = c.head.mask.map { Array($0[t]) }
            let r = try runFusedLoss(head, eng, part, lc.rows(lo, hi))
            loss += r.result.loss
            for i in 0..<dW.count { dW[i] += Double(r.dW[i]) }
            for i in 0..<db.count { db[i] += Double(r.db[i]) }
            dX += r.dX.map(Double.init)
        }
        #expect(relErr(loss, whole.result.loss) <= 1e-6)
        #expect(relInf(whole.dW, dW) <= 1e-5 && relInf(whole.db, db) <= 1e-5 && relInf(whole.dX, dX) <= 1e-5)
    }

    @Test func threadCountsAreBitIdentical() throws {
        var cfg = Config()
        cfg.loss.entropyCoeff = 0.01
        cfg.fused.chunkN = 8
        let c = FusedLossCase.random(B: 6, L: 7, D: 16, V: 3001, T: 1, seed: 606, holes: [5, 6, 20, 41])
        let eng = try Loss(config: cfg)
        let one = try runFusedLoss(try FusedHead(config: cfg.fused), eng, c.head, c.loss)
        for t in [2, 5] as [Int64] {
            cfg.fused.threads = t
            let many = try runFusedLoss(try FusedHead(config: cfg.fused), eng, c.head, c.loss)
            #expect(many.result == one.result, "threads \(t)")
            #expect(many.dX == one.dX && many.dW == one.dW && many.db == one.db, "threads \(t)")
            #expect(many.logp == one.logp && many.entropy == one.entropy, "threads \(t)")
        }
    }

    /// dW and dbias are added into, as a trainer accumulates gradients.
    @Test func lossAndGradAddsIntoDW() throws {
        let c = FusedLossCase.random(B: 2, L: 3, D: 4, V: 9, T: 1, seed: 707, holes: [])
        let head = fusedHead(chunkN: 2), eng = engine()
        let fresh = try runFusedLoss(head, eng, c.head, c.loss)
        let added = try runFusedLoss(head, eng, c.head, c.loss, dW0: 1.5)
        #expect(relInf(added.dW, fresh.dW.map { Double($0) + 1.5 }) <= 1e-6)
        #expect(added.dX == fresh.dX)
    }

    /// A batch with no valid token: the engine's rule (an error without global counts, loss 0
    /// with them), and nothing but zeros written.
    @Test func emptyBatch() throws {
        let c = FusedLossCase.random(B: 2, L: 2, D: 3, V: 5, T: 1, seed: 808, holes: [0, 1, 2, 3])
        var lc = c.loss
        lc.globalTokens = 10
        lc.globalSeqs = 3
        let r = try runFusedLoss(fusedHead(), engine(), c.head, lc)
        #expect(r.result.loss == 0)
        #expect(r.dX.allSatisfy { $0 == 0 } && r.dW.allSatisfy { $0 == 0 } && r.logp.allSatisfy { $0 == 0 })
        #expect(throws: AepoFailure.self) { try runFusedLoss(fusedHead(), engine(), c.head, c.loss) }
    }
}
