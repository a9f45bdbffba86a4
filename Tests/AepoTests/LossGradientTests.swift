@testable import AepoCore
import Glibc
import Testing

/// The gradient check (docs/API.md): the gradient against central differences (h = 1e-6) of the float64
/// reference; pass means ||g_lib - g_ref||_inf <= 1e-5 * ||g_ref||_inf.
@Suite struct LossGradientTests {
    static let tol = 1e-5
    static let klTypes = KLType.names  // all 14 names, aliases and "+" variants included

    /// A random case. `clipActive` spreads the log-ratio over [-1.5, 1.5] (clip, clip-low
    /// and dual clip all occur, plus a few tokens beyond the +-20 clamp); otherwise it stays
    /// inside the clip band. Tokens within 1e-3 of a kink are redrawn.
    static func makeCase(seed: UInt64, B: Int = 5, L: Int = 11, clipActive: Bool, cfg: LossConfig,
                         perToken: Bool = false, withRef: Bool = true, withEntropy: Bool = true,
                         withISW: Bool = true, regRows: [UInt8]? = nil) -> LossCase {
        var rng = SplitMix64(seed)
        let n = B * L
        var lp = [Float](repeating: 0, count: n), olp = lp, ref = lp, ent = lp, isw = lp
        var mask = [UInt8](repeating: 0, count: n)
        var adv = [Float](repeating: 0, count: perToken ? n : B)
        for b in 0..<B {
            // Row 1 is empty; the others are right-padded, left-padded, or have holes.
            let len = b == 1 ? 0 : 1 + rng.int(L)
            for t in 0..<L {
                switch b % 3 {
                case 0: mask[b * L + t] = t < len ? 1 : 0
                case 1: mask[b * L + t] = t >= L - len ? 1 : 0
                default: mask[b * L + t] = t < len && rng.int(3) != 0 ? 1 : 0
                }
            }
        }
        for i in 0..<adv.count {  // both signs always occur: rows (or tokens) alternate
            adv[i] = Float(rng.uniform(0.05, 2) * (i % 2 == 0 ? 1 : -1))
        }
        let kinks = [log(1 - cfg.clipRatioLow), log(1 + cfg.clipRatioHigh), log(cfg.clipRatioC), 20, -20]
        for i in 0..<n {
            olp[i] = Float(rng.uniform(-4, -0.05))
            var d: Double
            repeat {
                d = clipActive ? rng.uniform(-1.5, 1.5) : rng.uniform(-0.1, 0.1)
                if clipActive && rng.int(17) == 0 { d = rng.uniform(-25, -21) }
            } while kinks.contains { abs(d - $0) < 1e-3 }
            lp[i] = olp[i] + Float(d)
            var k: Double
            repeat {
                k = rng.uniform(-2, 2)
                if rng.int(13) == 0 { k = rng.uniform(2.8, 3.5) }   // k3 value clamp at 10
                if rng.int(19) == 0 { k = rng.uniform(21, 24) }     // k3 log-ratio clamp at 20
            } while abs(k) < 1e-3 || abs(Glibc.exp(k) - k - 1 - 10) < 1e-2 || abs(abs(k) - 20) < 1e-3
            ref[i] = lp[i] + Float(k)
            ent[i] = Float(rng.uniform(0, 3))
            isw[i] = Float(rng.uniform(0.5, 1.5))
            if mask[i] == 0 {  // padding holds garbage; it must never be read
                lp[i] = .nan; olp[i] = .infinity; ref[i] = .nan; ent[i] = -.infinity; isw[i] = .nan
                if perToken { adv[i] = .nan }
            }
        }
        return LossCase(B: B, L: L, logp: lp, oldLogp: olp, advantages: adv, perToken: perToken, mask: mask,
                        ref: withRef ? ref : nil, isw: withISW ? isw : nil, entropy: withEntropy ? ent : nil,
                        regRows: regRows)
    }

    static func checkGradient(_ cfg: Config, _ c: LossCase, _ label: String) throws {
        let e = try Loss(config: cfg)
        let r = try runLoss(e, c)
        let ref = referenceLoss(cfg, c)
        let lossErr = relErr(r.result.loss, ref.loss)
        #expect(lossErr <= 1e-12, "\(label): loss \(r.result.loss) vs reference \(ref.loss), relative \(lossErr)")
        let fd = finiteDifferences(cfg, c)
        let (d, s) = maxDiff(r.grad, fd.dlogp)
        #expect(s > 0, "\(label): reference gradient is zero")
        #expect(d <= tol * s, "\(label): max |grad - fd| = \(d), ||fd||_inf = \(s), ratio \(d / s)")
        for i in 0..<c.mask.count where c.mask[i] == 0 {
            #expect(r.grad[i] == 0 && r.gradEntropy[i] == 0, "\(label): masked token \(i) has a gradient")
        }
        if c.entropy != nil {
            let (de, se) = maxDiff(r.gradEntropy, fd.dent)
            if cfg.loss.entropyCoeff != 0 {
                #expect(de <= tol * se, "\(label): max |grad_entropy - fd| = \(de), ||fd||_inf = \(se)")
            } else {
                #expect(r.gradEntropy.allSatisfy { $0.bitPattern == 0 }, "\(label): grad_entropy should be +0 without the entropy term")
            }
        }
    }

    static func config(_ mode: String, kl: String = "k3", klCoef: Double = 0.3, entCoef: Double = 0.05,
                       combine: String = "replace") -> Config {
        var cfg = Config()
        cfg.loss.lossAggMode = mode
        cfg.loss.lossScaleFactor = 7
        cfg.loss.clipRatioHigh = 0.28
        cfg.loss.klLossType = kl
        cfg.loss.klLossCoef = klCoef
        cfg.loss.entropyCoeff = entCoef
        cfg.regularizer.combine = combine
        return cfg
    }

    @Test(arguments: AggregationModeNames.all)
    func everyAggregationClipActiveAndInactive(mode: String) throws {
        for active in [true, false] {
            for perToken in [false, true] {
                let cfg = Self.config(mode)
                let c = Self.makeCase(seed: active ? 11 : 12, clipActive: active, cfg: cfg.loss, perToken: perToken)
                if active {
                    let r = try runLoss(try Loss(config: cfg), c)
                    #expect(r.result[.pgClipfrac] > 0 && r.result[.pgClipfracLower] > 0, "\(mode): clip never active")
                } else {
                    let r = try runLoss(try Loss(config: cfg), c)
                    #expect(r.result[.pgClipfrac] == 0 && r.result[.pgClipfracLower] == 0, "\(mode): clip active")
                }
                try Self.checkGradient(cfg, c, "\(mode) clip \(active ? "active" : "inactive") perToken \(perToken)")
            }
        }
    }

    @Test(arguments: LossGradientTests.klTypes)
    func everyKLType(kl: String) throws {
        for mode in AggregationModeNames.all {
            // KL alone (no policy gradient of note: A = 0 everywhere would hide it, so keep both).
            let cfg = Self.config(mode, kl: kl, klCoef: 0.7, entCoef: 0)
            let c = Self.makeCase(seed: 21, clipActive: true, cfg: cfg.loss)
            try Self.checkGradient(cfg, c, "\(mode) kl \(kl)")
        }
    }

    @Test func entropyTermAlone() throws {
        for mode in AggregationModeNames.all {
            let cfg = Self.config(mode, klCoef: 0, entCoef: 0.2)
            let c = Self.makeCase(seed: 31, clipActive: true, cfg: cfg.loss, withRef: false)
            try Self.checkGradient(cfg, c, "\(mode) entropy")
            // Entropy given but coefficient 0: metric only, grad_entropy 0.
            let off = Self.config(mode, klCoef: 0, entCoef: 0)
            try Self.checkGradient(off, c, "\(mode) entropy off")
        }
    }

    @Test func weightedRegularizerRows() throws {
        for mode in AggregationModeNames.all {
            for combine in ["weighted", "replace"] {
                let cfg = Self.config(mode, combine: combine)
                var c = Self.makeCase(seed: 41, B: 6, clipActive: true, cfg: cfg.loss,
                                      regRows: [0, 0, 0, 0, 1, 1])
                c.regAlpha = 0.25
                try Self.checkGradient(cfg, c, "\(mode) \(combine) regulariser")
                let r = try runLoss(try Loss(config: cfg), c)
                #expect(r.result[.regUsed] == 1 && r.result[.nPositive] == 2)
                if combine == "weighted" { #expect(r.result[.regLoss] != 0) } else { #expect(r.result[.regLoss] == 0) }
            }
        }
    }

    @Test func globalCountsAndDataParallelScale() throws {
        for mode in AggregationModeNames.all {
            let cfg = Self.config(mode, combine: "weighted")
            var c = Self.makeCase(seed: 51, B: 6, clipActive: true, cfg: cfg.loss, regRows: [0, 1, 0, 0, 0, 1])
            c.globalTokens = 97
            c.globalSeqs = 13
            c.globalRegTokens = 29
            c.dp = 3
            try Self.checkGradient(cfg, c, "\(mode) global counts dp 3")
        }
    }

    /// Short rows (the vector tail and the span logic at every offset) and random masks.
    @Test func shortRowsAndRandomMasks() throws {
        var seed: UInt64 = 500
        for L in 1...9 {
            for B in [1, 2, 5] {
                for mode in ["token-mean", "seq-mean-token-mean"] {
                    seed += 1
                    let cfg = Self.config(mode)
                    var c = Self.makeCase(seed: seed, B: B, L: L, clipActive: true, cfg: cfg.loss)
                    var rng = SplitMix64(seed)
                    for i in 0..<(B * L) where rng.int(4) == 0 { c.mask[i] = 0 }
                    c.mask[rng.int(B * L)] = 1  // at least one valid token
                    // Valid tokens need finite inputs: redraw the ones the new mask exposes.
                    for i in 0..<(B * L) where c.mask[i] == 1 && (!c.logp[i].isFinite || !c.oldLogp[i].isFinite) {
                        c.oldLogp[i] = -1
                        c.logp[i] = -1.3
                        c.ref![i] = -0.8
                        c.entropy![i] = 1
                        c.isw![i] = 1
                    }
                    c.globalTokens = 1000
                    c.globalSeqs = 100
                    try Self.checkGradient(cfg, c, "L \(L) B \(B) \(mode)")
                }
            }
        }
    }

    /// The row-sign-specialised loops (advantage per sequence) compute the same bits as the
    /// general per-token loop, including A = 0 and A = -0.
    @Test func perSequenceAndPerTokenAdvantagesAgreeBitwise() throws {
        for mode in AggregationModeNames.all {
            let cfg = Self.config(mode, combine: "weighted")
            var c = Self.makeCase(seed: 121, B: 7, L: 41, clipActive: true, cfg: cfg.loss, regRows: [0, 0, 0, 0, 0, 1, 0])
            c.advantages[2] = 0
            c.advantages[3] = -0.0
            var t = c
            t.perToken = true
            t.advantages = (0..<(c.B * c.L)).map { c.mask[$0] == 1 ? c.advantages[$0 / c.L] : .nan }
            let e = try Loss(config: cfg)
            let a = try runLoss(e, c), b = try runLoss(e, t)
            #expect(a.result.loss.bitPattern == b.result.loss.bitPattern, "\(mode): loss differs")
            #expect(a.result.metrics.map(\.bitPattern) == b.result.metrics.map(\.bitPattern), "\(mode): metrics differ")
            #expect(a.grad.map(\.bitPattern) == b.grad.map(\.bitPattern), "\(mode): grad differs")
        }
    }

    /// The straight-through variants really differ from their base in the gradient only.
    @Test func straightThroughKeepsValueChangesGradient() throws {
        var c = Self.makeCase(seed: 61, clipActive: true, cfg: LossConfig())
        c.entropy = nil
        for base in ["k1", "abs", "k3"] {
            let a = try runLoss(engine { $0.loss.klLossType = base; $0.loss.klLossCoef = 1 }, c)
            let b = try runLoss(engine { $0.loss.klLossType = base + "+"; $0.loss.klLossCoef = 1 }, c)
            let k2 = try runLoss(engine { $0.loss.klLossType = "k2"; $0.loss.klLossCoef = 1 }, c)
            #expect(a.result.loss == b.result.loss, "\(base)+ changes the value")
            #expect(a.grad != b.grad, "\(base)+ keeps the base gradient")
            let (d, s) = maxDiff(b.grad, k2.grad.map(Double.init))
            #expect(d <= 1e-7 * s, "\(base)+ gradient differs from k2's by \(d)")
        }
    }
}
