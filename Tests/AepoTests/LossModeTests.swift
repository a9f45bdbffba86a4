@testable import AepoCore
import Glibc
import Testing

/// gspo, cispo, gpg/reinforce, clip_cov and kl_cov: gradients against central differences
/// of the float64 reference (docs/API.md, 1e-5), every supported aggregation, per-sequence and
/// per-token advantages, the covariance selections (same tokens for every run and thread
/// count, uniform pick, top-k with ties to the lower index), and errors.
@Suite struct LossModeTests {
    static let modes = ["gspo", "cispo", "gpg", "reinforce", "clip_cov", "kl_cov"]

    static func config(_ mode: String, agg: String, kl: String = "k3", klCoef: Double = 0.3, entCoef: Double = 0.05,
                       combine: String = "replace", threads: Int64 = 1) -> Config {
        var cfg = LossGradientTests.config(agg, kl: kl, klCoef: klCoef, entCoef: entCoef, combine: combine)
        cfg.loss.policyLoss = mode
        cfg.loss.threads = threads
        // Enough candidates and picks to matter on small cases.
        cfg.loss.clipCovRatio = 0.1
        cfg.loss.clipCovLb = 0.2
        cfg.loss.klCovRatio = 0.1
        cfg.loss.ppoKlCoef = 0.4
        return cfg
    }

    static func aggregations(_ mode: String) -> [String] {
        mode == "gspo" ? ["seq-mean-token-mean"] : AggregationModeNames.all
    }

    /// The library's gradient against central differences of the reference with the
    /// library's selection held fixed (it is a detached quantity; the fixtures and the
    /// transcription tests check the selection itself).
    static func checkGradient(_ cfg: Config, _ c: LossCase, _ label: String) throws {
        let e = try Loss(config: cfg)
        let r = try runLoss(e, c)
        let sel = Set(try selection(e, c))
        if cfg.loss.policyLoss == "clip_cov" || cfg.loss.policyLoss == "kl_cov" {
            #expect(!sel.isEmpty, "\(label): nothing selected")
        }
        let ref = referenceLoss(cfg, c, selected: sel)
        #expect(relErr(r.result.loss, ref.loss) <= 1e-12, "\(label): loss \(r.result.loss) vs reference \(ref.loss)")
        #expect(relErr(r.result[.pgClipfrac], ref.clipfrac) <= 1e-12, "\(label): pg_clipfrac")
        #expect(relErr(r.result[.ppoKl], ref.ppoKl) <= 1e-12, "\(label): ppo_kl \(r.result[.ppoKl]) vs \(ref.ppoKl)")
        let fd = finiteDifferences(cfg, c, selected: sel)
        let (d, s) = maxDiff(r.grad, fd.dlogp)
        #expect(s > 0, "\(label): reference gradient is zero")
        #expect(d <= LossGradientTests.tol * s, "\(label): max |grad - fd| = \(d), ||fd||_inf = \(s), ratio \(d / s)")
        if c.entropy != nil && cfg.loss.entropyCoeff != 0 {
            let (de, se) = maxDiff(r.gradEntropy, fd.dent)
            #expect(de <= LossGradientTests.tol * se, "\(label): max |grad_entropy - fd| = \(de)")
        }
        for i in 0..<c.mask.count where c.mask[i] == 0 {
            #expect(r.grad[i] == 0, "\(label): masked token \(i) has a gradient")
        }
    }

    @Test(arguments: LossModeTests.modes)
    func gradientsMatchFiniteDifferences(mode: String) throws {
        var seed: UInt64 = 900
        for agg in Self.aggregations(mode) {
            for perToken in [false, true] {
                for active in [true, false] {
                    seed += 1
                    let cfg = Self.config(mode, agg: agg)
                    let c = LossGradientTests.makeCase(seed: seed, B: 6, L: 13, clipActive: active, cfg: cfg.loss,
                                                       perToken: perToken)
                    try Self.checkGradient(cfg, c, "\(mode) \(agg) perToken \(perToken) clip \(active)")
                }
            }
        }
    }

    @Test(arguments: LossModeTests.modes)
    func regulariserRowsGlobalCountsAndKLTypes(mode: String) throws {
        for combine in ["replace", "weighted"] {
            for kl in ["k1", "abs", "k2", "k3+"] {
                let agg = Self.aggregations(mode).last!
                let cfg = Self.config(mode, agg: agg, kl: kl, combine: combine)
                var c = LossGradientTests.makeCase(seed: 77, B: 7, L: 11, clipActive: true, cfg: cfg.loss,
                                                   regRows: [0, 1, 0, 0, 0, 1, 0])
                c.regAlpha = 0.3
                c.globalTokens = 400
                c.globalSeqs = 31
                c.globalRegTokens = 60
                c.dp = 2
                try Self.checkGradient(cfg, c, "\(mode) \(combine) kl \(kl)")
            }
        }
    }

    /// gspo's clamp at 10: a row whose mean log-ratio is above it has ratio e^10 and no
    /// gradient; the others are unaffected.
    @Test func gspoClampStopsTheRowGradient() throws {
        let cfg = Self.config("gspo", agg: "seq-mean-token-mean", klCoef: 0, entCoef: 0)
        var c = LossGradientTests.makeCase(seed: 5, B: 3, L: 6, clipActive: false, cfg: cfg.loss, withRef: false,
                                           withEntropy: false, withISW: false)
        for t in 0..<6 where c.mask[t] == 1 { c.logp[t] = c.oldLogp[t] + 11 }
        c.advantages[0] = -0.7  // A < 0, so the huge ratio is not clipped away
        let e = try Loss(config: cfg)
        let r = try runLoss(e, c)
        for t in 0..<6 { #expect(r.grad[t] == 0) }
        #expect(r.grad[12..<18].contains { $0 != 0 })
        try Self.checkGradient(cfg, c, "gspo clamp")
        // The loss of row 0: -A e^10 per token (unclipped), a sequence mean, over G rows.
        let ref = referenceLoss(cfg, c)
        #expect(relErr(r.result.loss, ref.loss) <= 1e-12)
    }

    /// Per-sequence advantages and the same values per token give the same bits.
    @Test(arguments: LossModeTests.modes)
    func perSequenceAndPerTokenAdvantagesAgree(mode: String) throws {
        for agg in Self.aggregations(mode) {
            let cfg = Self.config(mode, agg: agg, combine: "weighted")
            let c = LossGradientTests.makeCase(seed: 31, B: 7, L: 29, clipActive: true, cfg: cfg.loss,
                                               regRows: [0, 0, 0, 1, 0, 0, 0])
            var t = c
            t.perToken = true
            t.advantages = (0..<(c.B * c.L)).map { c.advantages[$0 / c.L] }
            let e = try Loss(config: cfg)
            let a = try runLoss(e, c), b = try runLoss(e, t)
            #expect(a.result == b.result, "\(mode) \(agg)")
            #expect(a.grad.map(\.bitPattern) == b.grad.map(\.bitPattern), "\(mode) \(agg)")
        }
    }

    /// A larger batch, so that 2 and more threads really split it.
    static func bigCase(seed: UInt64, B: Int = 48, L: Int = 1500) -> LossCase {
        var g = SplitMix64(seed)
        let n = B * L
        var lp = [Float](repeating: 0, count: n), olp = lp
        var mask = [UInt8](repeating: 0, count: n)
        let adv = (0..<B).map { _ in Float(g.uniform(-2, 2)) }
        for b in 0..<B {
            let len = L / 8 + g.int(L - L / 8)
            for t in 0..<len { mask[b * L + t] = 1 }
        }
        for i in 0..<n {
            olp[i] = Float(g.uniform(-4, 0))
            lp[i] = olp[i] + Float(g.uniform(-0.4, 0.4))
        }
        return LossCase(B: B, L: L, logp: lp, oldLogp: olp, advantages: adv, mask: mask)
    }

    /// Clip-Cov's pick and KL-Cov's top-k: the same tokens, losses and gradient bits on every
    /// run and for every thread count, given the seed and the step.
    @Test func selectionsAreTheSameForEveryRunAndThreadCount() throws {
        var c = Self.bigCase(seed: 3)
        c.step = 12
        for mode in ["clip_cov", "kl_cov", "gspo"] {
            var first: (LossRun, [Int])?
            for threads: Int64 in [1, 2, 3, 4, 8] {
                for _ in 0..<2 {
                    var cfg = Self.config(mode, agg: Self.aggregations(mode)[0], klCoef: 0, entCoef: 0, threads: threads)
                    cfg.loss.clipCovRatio = 0.002
                    cfg.loss.klCovRatio = 0.002
                    cfg.loss.seed = 99
                    let e = try Loss(config: cfg)
                    let r = try runLoss(e, c)
                    let sel = try selection(e, c)
                    if let (r0, s0) = first.map({ ($0.0, $0.1) }) {
                        #expect(sel == s0, "\(mode) threads \(threads): selection differs")
                        #expect(r.result == r0.result, "\(mode) threads \(threads): loss or metrics differ")
                        #expect(r.grad.map(\.bitPattern) == r0.grad.map(\.bitPattern), "\(mode) threads \(threads)")
                    } else {
                        first = (r, sel)
                        if mode != "gspo" { #expect(sel.count >= 50, "\(mode): \(sel.count) selected") }
                    }
                }
            }
        }
    }

    @Test func clipCovPickDependsOnSeedAndStep() throws {
        var c = Self.bigCase(seed: 4, B: 16, L: 400)
        var cfg = Self.config("clip_cov", agg: "token-mean", klCoef: 0, entCoef: 0)
        cfg.loss.clipCovRatio = 0.005
        func pick(seed: Int64, step: Int64) throws -> [Int] {
            cfg.loss.seed = seed
            c.step = step
            return try selection(try Loss(config: cfg), c)
        }
        let base = try pick(seed: 1, step: 1)
        #expect(base.count == Int(0.005 * Double(c.mask.reduce(0) { $0 + Int($1) })))
        #expect(try pick(seed: 1, step: 1) == base)
        #expect(try pick(seed: 1, step: 2) != base)
        #expect(try pick(seed: 2, step: 1) != base)
    }

    /// Floyd's pick is uniform: over many steps each of n candidates is picked with
    /// probability k/n (within 5 standard deviations), and every pick has k distinct values.
    @Test func clipCovPickIsUniform() {
        let n = 10, k = 3, steps = 4000
        var hits = [Int](repeating: 0, count: n)
        var pairs = [Int](repeating: 0, count: n * n)
        for s in 0..<steps {
            let p = CovarianceDraws(seed: 5, step: Int64(s), group: 0).pick(k, of: n)
            #expect(p.count == k && Set(p).count == k && p == p.sorted() && p.allSatisfy { $0 >= 0 && $0 < n })
            for v in p { hits[v] += 1 }
            pairs[p[0] * n + p[1]] += 1
        }
        let mean = Double(steps * k) / Double(n)
        let sd = (Double(steps) * Double(k) / Double(n) * (1 - Double(k) / Double(n))).squareRoot()
        for v in 0..<n { #expect(abs(Double(hits[v]) - mean) <= 5 * sd, "candidate \(v): \(hits[v]) picks, expected \(mean)") }
        #expect(CovarianceDraws(seed: 5, step: 0, group: 0).pick(4, of: 4) == [0, 1, 2, 3])
        #expect(CovarianceDraws(seed: 5, step: 0, group: 0).pick(0, of: 4) == [])
        #expect(CovarianceDraws(seed: 5, step: 0, group: 1).pick(3, of: 1000) != CovarianceDraws(seed: 5, step: 0, group: 0).pick(3, of: 1000))
    }

    /// KL-Cov's top-k equals a direct transcription (sort every valid token by covariance,
    /// descending, ties by index), on data with many exact ties.
    @Test func klCovTopKEqualsSortTranscription() throws {
        for seed: UInt64 in [1, 2, 3] {
            var c = Self.bigCase(seed: seed, B: 40, L: 900)
            // Coarse values: many tokens share (A, logp), so covariances tie exactly.
            c.logp = c.logp.map { ($0 * 4).rounded() / 4 }
            c.advantages = c.advantages.map { ($0 * 2).rounded() / 2 }
            for threads: Int64 in [1, 3] {
                var cfg = Self.config("kl_cov", agg: "token-mean", klCoef: 0, entCoef: 0, threads: threads)
                cfg.loss.klCovRatio = 0.01
                let got = try selection(try Loss(config: cfg), c)
                var valid: [Int] = []
                for i in 0..<c.mask.count where c.mask[i] == 1 { valid.append(i) }
                let N = Double(valid.count)
                let mA = valid.reduce(0.0) { $0 + Double(c.advantages[$1 / c.L]) } / N
                let mX = valid.reduce(0.0) { $0 + Double(c.logp[$1]) } / N
                let cov = valid.map { (Double(c.advantages[$0 / c.L]) - mA) * (Double(c.logp[$0]) - mX) }
                let order = valid.indices.sorted { cov[$0] > cov[$1] || (cov[$0] == cov[$1] && valid[$0] < valid[$1]) }
                let k = max(1, Int(N * 0.01))
                let want = order.prefix(k).map { valid[$0] }.sorted()
                #expect(got == want, "seed \(seed) threads \(threads)")
                // Ties really occur at the cut.
                if seed == 1 && threads == 1 { #expect(cov[order[k - 1]] == cov[order[k]], "no tie at the cut") }
            }
        }
    }

    /// gspo, cispo and gpg are per token or per row, so micro-batches with global counts add
    /// up to the one-call result (clip_cov and kl_cov use per-call statistics, as verl).
    @Test func microBatchesSumForRowLocalModes() throws {
        for mode in ["gspo", "cispo", "gpg"] {
            for agg in Self.aggregations(mode) {
                let cfg = Self.config(mode, agg: agg)
                let c = LossGradientTests.makeCase(seed: 61, B: 8, L: 9, clipActive: true, cfg: cfg.loss)
                let e = try Loss(config: cfg)
                let one = try runLoss(e, c)
                var total = 0.0
                var grad: [Float] = []
                for lo in stride(from: 0, to: 8, by: 3) {
                    var part = c.rows(lo, min(lo + 3, 8))
                    part.globalTokens = c.mask.reduce(0) { $0 + Int($1) }
                    part.globalSeqs = (0..<8).filter { b in (0..<9).contains { c.mask[b * 9 + $0] == 1 } }.count
                    let r = try runLoss(e, part)
                    total += r.result.loss
                    grad += r.grad
                }
                #expect(relErr(total, one.result.loss) <= 1e-12, "\(mode) \(agg)")
                let (d, s) = maxDiff(grad, one.grad.map(Double.init))
                #expect(d <= 1e-7 * s, "\(mode) \(agg)")
            }
        }
    }

    /// The statistics step reports a non-finite input before any output is written.
    @Test func nonFiniteInputsFoundBeforeWriting() throws {
        func untouched(_ e: Loss, _ c: LossCase) -> Bool {
            let lp = buffer(c.logp), olp = buffer(c.oldLogp), adv = buffer(c.advantages), mask = buffer(c.mask)
            defer { release(lp); release(olp); release(adv); release(mask) }
            var grad = [Float](repeating: 42, count: c.B * c.L)
            let batch = LossBatch(rows: c.B, length: c.L, logp: lp, oldLogp: olp, advantages: adv,
                                  advantagesPerToken: false, mask: mask)
            let threw = grad.withUnsafeMutableBufferPointer { g in
                do throws(AepoFailure) { _ = try e.compute(batch, grad: g, gradEntropy: nil); return false } catch { return true }
            }
            return threw && grad.allSatisfy { $0 == 42 }
        }
        for mode in ["gspo", "clip_cov", "kl_cov"] {
            for (name, edit) in [("logp", { (c: inout LossCase) in c.logp[5] = .infinity }),
                                 ("old_logp", { (c: inout LossCase) in c.oldLogp[5] = .nan }),
                                 ("advantages", { (c: inout LossCase) in c.advantages[0] = .nan })] as [(String, (inout LossCase) -> Void)] {
                if mode == "gspo" && name == "advantages" { continue }
                let cfg = Self.config(mode, agg: Self.aggregations(mode)[0], klCoef: 0, entCoef: 0)
                var c = LossGradientTests.makeCase(seed: 8, B: 3, L: 7, clipActive: false, cfg: cfg.loss,
                                                   withRef: false, withEntropy: false, withISW: false)
                for t in 0..<7 { c.mask[t] = 1; c.logp[t] = -1; c.oldLogp[t] = -1.1 }
                edit(&c)
                do {
                    _ = try runLoss(try Loss(config: cfg), c)
                    Issue.record("\(mode) \(name): accepted")
                } catch {
                    #expect(error.kind == .nonFinite && error.argument == name, "\(mode) \(name): \(error)")
                }
                #expect(untouched(try Loss(config: cfg), c), "\(mode) \(name): grad written before the error")
            }
        }
    }

    /// Clip-Cov's candidate count decides PPO's clip in log space away from the clip bounds;
    /// where it says it is certain it must equal the token pass's exact test (L2 > L1 with
    /// r = e^δ), including ratios that land on the bounds to the last bit, and such ratios
    /// must be flagged uncertain.
    @Test func clipCovCandidateTestEqualsTheExactClipTest() {
        typealias V = LossMath.V
        var g = SplitMix64(17)
        var exactPathUsed = 0
        for trial in 0..<20000 {
            var x = V(), o = V(), a = V()
            for lane in 0..<4 {
                let xf = Float(g.uniform(-4, 0)), of = Float(g.uniform(-4, 0))
                x[lane] = Double(xf)
                o[lane] = Double(of)
                a[lane] = [-1.5, -0.3, 0, 0.7, 2][g.int(5)]
            }
            if trial % 3 == 0 { a = V(repeating: a[0]) }
            // Bounds either random or set so that lane 0's ratio is (almost exactly) one of them.
            var lo = g.uniform(0, 0.9), hi = g.uniform(1, 3)
            if trial % 2 == 1 {
                let r0 = LossMath.exp(x - o)[0] * (1 + Double(g.int(5) - 2) * 1e-16)
                if r0 > 1 { hi = r0 } else { lo = r0 }
            }
            let test = CovarianceTest(meanA: V(), meanX: V(), lo: V(repeating: lo), hi: V(repeating: hi),
                                      lb: V(repeating: -1e300), ub: V(repeating: 1e300))
            let valid = LossMath.M(repeating: true)
            let fast = test.candidatesWithoutExp(BothSides.self, x, o, a, valid)
            if a[0] == a[1] && a[1] == a[2] && a[2] == a[3] {
                let row = a[0] > 0 ? test.candidatesWithoutExp(UpperSide.self, x, o, a, valid)
                    : a[0] < 0 ? test.candidatesWithoutExp(LowerSide.self, x, o, a, valid)
                    : test.candidatesWithoutExp(NoSide.self, x, o, a, valid)
                #expect(row.candidates == fast.candidates && row.uncertain == fast.uncertain)
            }
            let exact = .!clipCovBranches(delta: x - o, negA: -a, lo: V(repeating: lo), hi: V(repeating: hi)).clipped
            #expect(test.candidates(x, o, a, valid) == exact)
            // Certain lanes agree with the exact test; the others are recounted exactly.
            let certainFast = fast.candidates .& .!fast.uncertain, certainExact = exact .& .!fast.uncertain
            #expect(certainFast == certainExact,
                    "trial \(trial): x \(x), o \(o), A \(a), lo \(lo), hi \(hi)")
            if fast.uncertain[0] { exactPathUsed += 1 }
        }
        #expect(exactPathUsed > 1000, "the exact path ran \(exactPathUsed) times")
    }

    @Test func gspoRejectsOtherAggregations() {
        for agg in AggregationModeNames.all where agg != "seq-mean-token-mean" {
            var cfg = Config()
            cfg.loss.policyLoss = "gspo"
            cfg.loss.lossAggMode = agg
            cfg.loss.lossScaleFactor = 4
            do {
                _ = try Loss(config: cfg)
                Issue.record("gspo with \(agg) accepted")
            } catch {
                #expect(error.kind == .config && error.argument == "loss.loss_agg_mode" && error.message.contains(agg))
            }
        }
    }

    @Test func reinforceIsGpg() throws {
        let cfg = Self.config("gpg", agg: "token-mean")
        var alias = cfg
        alias.loss.policyLoss = "reinforce"
        let c = LossGradientTests.makeCase(seed: 2, clipActive: true, cfg: cfg.loss)
        let a = try runLoss(try Loss(config: cfg), c), b = try runLoss(try Loss(config: alias), c)
        #expect(a.result == b.result && a.grad.map(\.bitPattern) == b.grad.map(\.bitPattern))
    }

    /// Ratios far outside float32's range (log-ratio 200) stay finite in float64 for the
    /// unclamped modes, and an empty batch with global counts gives 0. The gradient of such a
    /// token (-A e^200 / N) does not fit a float: asked for, it is AEPO_ERR_NON_FINITE naming
    /// grad and the token (docs/RELIABILITY.md), never a silent Inf.
    @Test func extremeRatiosAndEmptyBatches() throws {
        for mode in ["clip_cov", "kl_cov"] {
            let cfg = Self.config(mode, agg: "token-mean", klCoef: 0, entCoef: 0)
            var c = LossGradientTests.makeCase(seed: 9, B: 2, L: 5, clipActive: false, cfg: cfg.loss, withRef: false,
                                               withEntropy: false, withISW: false)
            for i in 0..<10 { c.mask[i] = 1; c.oldLogp[i] = -1; c.logp[i] = -0.5 }
            c.oldLogp[3] = -201
            c.logp[3] = -1
            let r = try runLoss(try Loss(config: cfg), c, wantGrad: false)
            #expect(r.result.loss.isFinite, "\(mode): \(r.result.loss)")
            do {
                // It may succeed only when the mode takes token 3 out of the gradient (a
                // detached or penalised pick), and then every gradient is finite.
                let g = try runLoss(try Loss(config: cfg), c)
                #expect(g.grad.allSatisfy { $0.isFinite }, "\(mode): \(g.grad)")
            } catch {
                #expect(error.kind == .nonFinite && error.argument == "grad" && error.index == 3, "\(mode): \(error)")
            }
            var empty = c
            empty.mask = [UInt8](repeating: 0, count: 10)
            empty.globalTokens = 10
            let z = try runLoss(try Loss(config: cfg), empty)
            #expect(z.result.loss == 0 && z.grad.allSatisfy { $0 == 0 })
        }
    }
}
