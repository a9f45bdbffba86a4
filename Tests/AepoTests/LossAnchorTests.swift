@testable import AepoCore
import Testing

/// The reference values of docs/API.md (loss example, GRPO table), to 1e-7 relative.
@Suite struct LossAnchorTests {
    static let tol = 1e-7

    func anchorEngine(_ mode: String, scale: Double = 0) -> Loss {
        engine { c in
            c.loss.clipRatioLow = 0.2
            c.loss.clipRatioHigh = 0.28
            c.loss.clipRatioC = 3
            c.loss.lossAggMode = mode
            c.loss.lossScaleFactor = scale
        }
    }

    func check(_ name: String, _ got: Double, _ want: Double, tol: Double = LossAnchorTests.tol) {
        let e = relErr(got, want)
        #expect(e <= tol, "\(name): got \(got), want \(want), relative difference \(e)")
    }

    @Test func vanillaAllAggregations() throws {
        let c = anchorCase()
        let cases: [(String, Double, Double)] = [
            ("token-mean", 0, 0.4436971975),
            ("seq-mean-token-sum", 0, 1.5529401913),
            ("seq-mean-token-mean", 0, 0.2843133967),
            ("seq-mean-token-sum-norm", 4, 0.3882350478),
        ]
        for (mode, k, want) in cases {
            let r = try runLoss(anchorEngine(mode, scale: k), c)
            check(mode, r.result.loss, want)
            check("\(mode) pg_loss", r.result[.pgLoss], want)
            check("\(mode) pg_clipfrac", r.result[.pgClipfrac], 0.2857142853)
            check("\(mode) pg_clipfrac_lower", r.result[.pgClipfracLower], 0.1428571427)
            check("\(mode) ppo_kl", r.result[.ppoKl], 1.1999999983)
            #expect(r.result[.nTokens] == 7)
            #expect(r.result[.nSeqs] == 2)
        }
        // token-sum: the masked sum. verl's older seq-mean-token-sum-norm, sum/K, is this
        // divided by K (docs/LOSS.md).
        let ts = try runLoss(anchorEngine("token-sum"), c)
        check("token-sum", ts.result.loss, 3.1058803826)
        check("old seq-mean-token-sum-norm (sum/K)", ts.result.loss / 4, 0.7764700957)
        // The same through seq-mean-token-sum-norm with K' = K / G.
        let old = try runLoss(anchorEngine("seq-mean-token-sum-norm", scale: 2), c)
        check("old norm as K' = K/G", old.result.loss, 0.7764700957)
    }

    @Test func vanillaPerTokenLossesAndGradient() throws {
        // Per-token values from the anchor: row 0 masked token excluded; -A r where unclipped.
        let c = anchorCase()
        let r = try runLoss(anchorEngine("token-sum"), c)
        let ratio: [Double] = [1.221402758, 0.904837418, 0.367879441, 1, 1, 4.481689070, 0.606530660, 2.034683690e-4]
        // A = +1: token 0 (r = 1.2214 < 1.28, unclipped) and 1, 2 (r < 1, unclipped) flow.
        // A = -1: token 4 (r = 1) flows, token 5 dual-clipped, 6 and 7 clipped low.
        let want: [Double] = [-ratio[0], -ratio[1], -ratio[2], 0, ratio[4], 0, 0, 0]
        for i in 0..<8 {
            #expect(abs(Double(r.grad[i]) - want[i]) <= 1e-7 * max(1, abs(want[i])),
                    "grad[\(i)] = \(r.grad[i]), want \(want[i])")
        }
    }

    @Test func klTokenMeans() throws {
        var c = anchorCase()
        c.ref = c.oldLogp
        for (type, want) in [("k1", -1.1999999983), ("kl", -1.1999999983), ("k2", 5.4142857066), ("mse", 5.4142857066),
                             ("k3", 1.6591478448), ("low_var_kl", 1.6591478448), ("k3+", 1.6591478448)] {
            let e = engine { cfg in
                cfg.loss.klLossType = type
                cfg.loss.klLossCoef = 0.5
                cfg.loss.clipRatioHigh = 0.28
            }
            let r = try runLoss(e, c)
            check("kl \(type)", r.result[.klLoss], want)
            check("loss with kl \(type)", r.result.loss, 0.4436971975 + 0.5 * r.result[.klLoss], tol: 1e-7)
        }
    }

    @Test func grpoAdvantages() throws {
        let a = try Advantages.compute(AdvantageConfig(), rewards: [1, 0, 0, 1, 0.5], groupIds: [7, 7, 7, 7, 3])
        for (i, want) in [0.866023904, -0.866023904, -0.866023904, 0.866023904, 0.4999995].enumerated() {
            check("grpo[\(i)]", Double(a[i]), want)
        }
        // Dr.GRPO: mean-centred only; the singleton keeps its reward (mean 0).
        var cfg = AdvantageConfig()
        cfg.normAdvByStdInGrpo = false
        let d = try Advantages.compute(cfg, rewards: [1, 0, 0, 1, 0.5], groupIds: [7, 7, 7, 7, 3])
        #expect(d == [0.5, -0.5, -0.5, 0.5, 0.5])
    }

    /// GRPO on a group of G = 5 with k correct answers (docs/API.md, "Reference values").
    @Test func aepoGrpoTable() throws {
        let table: [(Int, Double, Double)] = [(1, 1.789, -0.447), (2, 1.095, -0.730), (3, 0.730, -1.095), (4, 0.447, -1.789)]
        for (k, right, wrong) in table {
            let rewards = (0..<5).map { Float($0 < k ? 1 : 0) }
            let a = try Advantages.compute(AdvantageConfig(), rewards: rewards, groupIds: [Int64](repeating: 0, count: 5))
            // The table is rounded to 3 decimals; the exact values follow from the formula.
            let mean = Double(k) / 5
            let std = ((Double(k) * (1 - mean) * (1 - mean) + Double(5 - k) * mean * mean) / 4).squareRoot()
            check("k=\(k) correct exact", Double(a[0]), (1 - mean) / (std + 1e-6))
            check("k=\(k) wrong exact", Double(a[4]), -mean / (std + 1e-6))
            #expect(abs(Double(a[0]) - right) < 5e-4, "k=\(k) correct: \(a[0]) vs table \(right)")
            #expect(abs(Double(a[4]) - wrong) < 5e-4, "k=\(k) wrong: \(a[4]) vs table \(wrong)")
        }
        // All equal: 0, never NaN.
        for v: Float in [0, 1] {
            let a = try Advantages.compute(AdvantageConfig(), rewards: [Float](repeating: v, count: 5),
                                           groupIds: [Int64](repeating: 0, count: 5))
            #expect(a == [Float](repeating: 0, count: 5))
        }
    }

    @Test func engineMatchesFloat64ReferenceOnAnchor() throws {
        // Same inputs as the library sees (float32), float64 reference: far tighter than 1e-7.
        let c = anchorCase()
        for mode in AggregationModeNames.all {
            let e = anchorEngine(mode, scale: 4)
            let r = try runLoss(e, c)
            let ref = referenceLoss(e.config, c)
            check("\(mode) vs reference", r.result.loss, ref.loss, tol: 1e-13)
            check("\(mode) ppo_kl vs reference", r.result[.ppoKl], ref.ppoKl, tol: 1e-13)
        }
    }
}

enum AggregationModeNames {
    static let all = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
}
