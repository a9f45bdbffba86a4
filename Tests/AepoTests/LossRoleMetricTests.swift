@testable import AepoCore
import Testing

// The role metrics (nll_main, entropy_main, n_tokens_main, nll_reg, entropy_reg,
// n_tokens_reg) against a float64 reference over the valid tokens of each row role, under
// both combine modes, with and without entropy, for every policy-loss mode and aggregation;
// across micro-batches and arbitrary token blocks; and from the fused LM head.

/// The six role metrics of a case in float64, from its inputs: main rows have reg_rows = 0,
/// regulariser rows reg_rows = 1; only tokens with mask = 1 are read. `logp` and `entropy`
/// override the case's (the fused head's float64 values).
struct RoleReference {
    var nllMain = 0.0, entropyMain = 0.0, nMain = 0.0
    var nllReg = 0.0, entropyReg = 0.0, nReg = 0.0

    init(_ c: LossCase, logp: [Double]? = nil, entropy: [Double]? = nil) {
        let lp = logp ?? c.logp.map(Double.init)
        let ent = entropy ?? c.entropy?.map(Double.init)
        var sums = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  // per role: -logp, H, count
        for i in 0..<(c.B * c.L) where c.mask[i] == 1 {
            let role = (c.regRows?[i / c.L] ?? 0) == 1 ? 1 : 0
            sums[role][0] -= lp[i]
            sums[role][1] += ent?[i] ?? 0
            sums[role][2] += 1
        }
        func mean(_ s: Double, _ n: Double) -> Double { n > 0 ? s / n : 0 }
        nllMain = mean(sums[0][0], sums[0][2])
        entropyMain = mean(sums[0][1], sums[0][2])
        nMain = sums[0][2]
        nllReg = mean(sums[1][0], sums[1][2])
        entropyReg = mean(sums[1][1], sums[1][2])
        nReg = sums[1][2]
    }
}

@Suite struct LossRoleMetricTests {
    static let roleMetrics: [LossMetric] = [.nllMain, .entropyMain, .nTokensMain, .nllReg, .entropyReg, .nTokensReg]

    /// Means within `tol` relative (absolute below 1), counts exact.
    static func check(_ r: LossResult, _ want: RoleReference, tol: Double, _ label: String) {
        #expect(r[.nTokensMain] == want.nMain && r[.nTokensReg] == want.nReg,
                "\(label): counts \(r[.nTokensMain]), \(r[.nTokensReg]) vs \(want.nMain), \(want.nReg)")
        for (m, w) in [(LossMetric.nllMain, want.nllMain), (.entropyMain, want.entropyMain), (.nllReg, want.nllReg),
                       (.entropyReg, want.entropyReg)] {
            let err = abs(r[m] - w) / max(abs(w), 1)
            #expect(err <= tol, "\(label): \(m.name) \(r[m]) vs reference \(w), error \(err)")
        }
    }

    @Test func namesAndIndicesAreAppended() {
        #expect(LossMetric.count == 18)
        #expect(Self.roleMetrics.map(\.rawValue) == Array(12..<18))
        #expect(Self.roleMetrics.map(\.name) == ["nll_main", "entropy_main", "n_tokens_main", "nll_reg", "entropy_reg",
                                                 "n_tokens_reg"])
    }

    /// reg_rows marking some rows under `replace` and `weighted`, per-row and per-token
    /// advantages, with and without entropy, masks with holes, an empty row and NaN padding.
    @Test(arguments: AggregationModeNames.all)
    func matchFloat64Reference(aggregation: String) throws {
        for combine in ["replace", "weighted"] {
            for withEntropy in [true, false] {
                for perToken in [false, true] {
                    let cfg = LossGradientTests.config(aggregation, entCoef: withEntropy ? 0.05 : 0, combine: combine)
                    let e = try Loss(config: cfg)
                    var regRows = [UInt8](repeating: 0, count: 9)
                    regRows[2] = 1
                    regRows[5] = 1
                    regRows[6] = 1
                    let c = LossGradientTests.makeCase(seed: 1201, B: 9, L: 23, clipActive: true, cfg: cfg.loss,
                                                       perToken: perToken, withEntropy: withEntropy, regRows: regRows)
                    let label = "\(aggregation) \(combine) entropy \(withEntropy) perToken \(perToken)"
                    let r = try runLoss(e, c).result
                    let want = RoleReference(c)
                    #expect(want.nMain > 0 && want.nReg > 0 && (withEntropy == (want.entropyMain > 0)), "\(label): case")
                    Self.check(r, want, tol: 1e-12, label)
                    #expect(r[.nTokensMain] + r[.nTokensReg] == r[.nTokens], "\(label): counts add up")
                    if !withEntropy { #expect(r[.entropyMain] == 0 && r[.entropyReg] == 0, "\(label): no entropy") }
                }
            }
        }
    }

    /// The statistics do not depend on the policy-loss mode (the modes with a statistics
    /// pass, and the covariance selections, included).
    @Test(arguments: ["vanilla", "gspo", "cispo", "gpg", "clip_cov", "kl_cov"])
    func everyPolicyMode(mode: String) throws {
        for combine in ["replace", "weighted"] {
            var cfg = LossGradientTests.config(mode == "gspo" ? "seq-mean-token-mean" : "token-mean", combine: combine)
            cfg.loss.policyLoss = mode
            cfg.loss.clipCovRatio = 0.2
            cfg.loss.klCovRatio = 0.2
            let c = LossGradientTests.makeCase(seed: 1301, B: 7, L: 41, clipActive: true, cfg: cfg.loss,
                                               regRows: [0, 1, 0, 0, 1, 0, 0])
            let r = try runLoss(try Loss(config: cfg), c).result
            Self.check(r, RoleReference(c), tol: 1e-12, "\(mode) \(combine)")
        }
    }

    /// No regulariser rows: the main role is every valid token; the reg role is empty (0).
    /// Only regulariser tokens: the main role is empty. Everything masked: all zero.
    @Test func emptyRoles() throws {
        for combine in ["replace", "weighted"] {
            let cfg = LossGradientTests.config("token-mean", combine: combine)
            let e = try Loss(config: cfg)
            var c = LossGradientTests.makeCase(seed: 1401, B: 5, L: 13, clipActive: true, cfg: cfg.loss)
            var r = try runLoss(e, c).result
            #expect(r[.nTokensMain] == r[.nTokens] && r[.nTokensReg] == 0 && r[.nllReg] == 0 && r[.entropyReg] == 0)
            Self.check(r, RoleReference(c), tol: 1e-12, "\(combine): no reg_rows")

            c.regRows = [UInt8](repeating: 1, count: 5)
            c.globalTokens = 1000
            r = try runLoss(e, c).result
            #expect(r[.nTokensReg] == r[.nTokens] && r[.nTokensMain] == 0 && r[.nllMain] == 0 && r[.entropyMain] == 0)
            Self.check(r, RoleReference(c), tol: 1e-12, "\(combine): all rows regulariser rows")

            c.regRows = [0, 1, 0, 1, 0]
            c.mask = [UInt8](repeating: 0, count: 5 * 13)
            c.globalRegTokens = 4
            r = try runLoss(e, c).result
            for m in Self.roleMetrics { #expect(r[m].bitPattern == 0, "\(combine): \(m.name) of an empty call") }
        }
    }

    /// A distributed caller's reduction: over micro-batches, sum(mean * count) / sum(count)
    /// equals one call's mean (1e-12 relative) and the counts add up exactly.
    @Test func microBatchesAddUp() throws {
        for combine in ["replace", "weighted"] {
            let cfg = LossGradientTests.config("seq-mean-token-mean", combine: combine)
            let e = try Loss(config: cfg)
            var regRows = [UInt8](repeating: 0, count: 12)
            regRows[2] = 1
            regRows[9] = 1
            regRows[10] = 1
            var whole = LossGradientTests.makeCase(seed: 1501, B: 12, L: 37, clipActive: true, cfg: cfg.loss,
                                                   regRows: regRows)
            let want = RoleReference(whole)
            // Global counts, so that every micro-batch is valid on its own.
            whole.globalTokens = Int(want.nMain + (combine == "replace" ? want.nReg : 0))
            whole.globalSeqs = 12
            whole.globalRegTokens = Int(want.nReg)
            let one = try runLoss(e, whole).result
            for micro in [1, 3, 5] {
                var sums = [LossMetric: Double]()
                var lo = 0
                while lo < whole.B {
                    let hi = min(whole.B, lo + micro)
                    let r = try runLoss(e, whole.rows(lo, hi)).result
                    for (mean, count) in [(LossMetric.nllMain, LossMetric.nTokensMain), (.entropyMain, .nTokensMain),
                                          (.nllReg, .nTokensReg), (.entropyReg, .nTokensReg)] {
                        sums[mean, default: 0] += r[mean] * r[count]
                    }
                    sums[.nTokensMain, default: 0] += r[.nTokensMain]
                    sums[.nTokensReg, default: 0] += r[.nTokensReg]
                    lo = hi
                }
                let label = "\(combine) micro \(micro)"
                #expect(sums[.nTokensMain] == one[.nTokensMain] && sums[.nTokensReg] == one[.nTokensReg], "\(label): counts")
                for (mean, count) in [(LossMetric.nllMain, LossMetric.nTokensMain), (.entropyMain, .nTokensMain),
                                      (.nllReg, .nTokensReg), (.entropyReg, .nTokensReg)] {
                    let got = sums[mean]! / one[count]
                    #expect(relErr(got, one[mean]) <= 1e-12, "\(label): \(mean.name) \(got) vs one call \(one[mean])")
                }
            }
        }
    }

    /// The token kernel on arbitrary blocks (as the fused head runs it): the partial sums
    /// add up to the role metrics of one pass.
    @Test func partialsOfArbitraryBlocksAddUp() throws {
        let cfg = LossGradientTests.config("token-mean", combine: "replace")
        let e = try Loss(config: cfg)
        let c = LossGradientTests.makeCase(seed: 1601, B: 6, L: 31, clipActive: true, cfg: cfg.loss,
                                           regRows: [1, 0, 0, 1, 0, 0])
        let whole = try runLoss(e, c).result
        let lp = buffer(c.logp), olp = buffer(c.oldLogp), adv = buffer(c.advantages), mask = buffer(c.mask)
        let ref = buffer(c.ref!), isw = buffer(c.isw!), ent = buffer(c.entropy!), reg = buffer(c.regRows!)
        defer { release(lp); release(olp); release(adv); release(mask); release(ref); release(isw); release(ent); release(reg) }
        let batch = LossBatch(rows: c.B, length: c.L, logp: lp, oldLogp: olp, advantages: adv, advantagesPerToken: false,
                              mask: mask, refLogp: ref, isWeights: isw, entropy: ent, regRows: reg)
        let plan = try e.plan(batch)
        let n = c.B * c.L
        var rng = SplitMix64(17)
        var total = TokenPartials()
        var lo = 0
        while lo < n {
            let hi = min(n, lo + 1 + rng.int(40))
            total.add(e.accumulate(batch, plan, TokenBlock(range: lo..<hi, logp: lp.baseAddress! + lo,
                                                           entropy: ent.baseAddress! + lo)))
            lo = hi
        }
        let r = e.finish(plan, total)
        for m in Self.roleMetrics {
            #expect(relErr(r[m], whole[m]) <= 1e-12, "\(m.name): blocks \(r[m]) vs one pass \(whole[m])")
        }
    }

    /// Bit-identical for every thread count (rows are summed in row order).
    @Test func bitIdenticalForEveryThreadCount() throws {
        var cfg = LossGradientTests.config("token-mean", combine: "replace")
        var regRows = [UInt8](repeating: 0, count: 19)
        for b in [1, 4, 11, 12] { regRows[b] = 1 }
        let c = LossGradientTests.makeCase(seed: 1701, B: 19, L: 4099, clipActive: true, cfg: cfg.loss, regRows: regRows)
        cfg.loss.threads = 1
        let base = try runLoss(try Loss(config: cfg), c, wantGrad: false).result
        for t: Int64 in [2, 3, 8] {
            cfg.loss.threads = t
            let r = try runLoss(try Loss(config: cfg), c, wantGrad: false).result
            for m in Self.roleMetrics { #expect(r[m].bitPattern == base[m].bitPattern, "threads \(t): \(m.name)") }
        }
    }

    /// loss_and_grad of the fused head reports the role metrics from its own log-probs and
    /// exact entropies (at fused.temperature, whatever loss.entropy_coeff is). Against the
    /// unfused engine on the same logits (materialised with one product): both round their
    /// per-token log p and H to float32 from float32 products blocked differently, so the
    /// means agree within 1e-5 relative (as the per-token values do); counts exactly. The same
    /// holds against the float64 chain.
    @Test func fusedHeadMatchesUnfusedEngine() throws {
        for (combine, T, mode) in [("replace", 1.0, "vanilla"), ("weighted", 0.7, "vanilla"), ("replace", 1.3, "gspo")] {
            var cfg = Config()
            cfg.regularizer.combine = combine
            cfg.loss.policyLoss = mode
            if mode == "gspo" { cfg.loss.lossAggMode = "seq-mean-token-mean" }
            cfg.fused.temperature = T
            cfg.fused.chunkN = 4
            cfg.fused.chunkV = 16
            let c = FusedLossCase.random(B: 5, L: 4, D: 10, V: 37, T: T, seed: 1801, holes: [3, 6, 7, 13, 19],
                                         regRows: [0, 1, 0, 0, 1])
            let head = try FusedHead(config: cfg.fused), eng = try Loss(config: cfg)
            let run = try runFusedLoss(head, eng, c.head, c.loss)
            let label = "\(combine) T \(T) \(mode)"
            let un = try unfusedLoss(cfg, c)
            #expect(run.result[.nTokensMain] == un.result[.nTokensMain] && run.result[.nTokensReg] == un.result[.nTokensReg])
            for m in Self.roleMetrics {
                #expect(relErr(run.result[m], un.result[m]) <= 1e-5, "\(label): \(m.name) fused \(run.result[m]) vs unfused \(un.result[m])")
            }
            // The same from the head's own outputs, and from the float64 chain.
            var lc = c.loss
            lc.logp = run.logp
            lc.entropy = run.entropy
            Self.check(run.result, RoleReference(lc), tol: 1e-12, "\(label): from the head's outputs")
            let st = Ref64.stats(c.head, T: T)
            Self.check(run.result, RoleReference(c.loss, logp: st.logp, entropy: st.entropy), tol: 1e-5,
                       "\(label): float64 chain")
            #expect(run.result[.entropyMain] > 0 && run.result[.entropyReg] > 0, "\(label): entropy reported")
            // The forward / loss / backward composition.
            let two = try runFusedLoss(head, eng, c.head, c.loss, forceTwoPass: true)
            for m in Self.roleMetrics { #expect(relErr(two.result[m], run.result[m]) <= 1e-5, "\(label): two-pass \(m.name)") }
        }
    }
}
