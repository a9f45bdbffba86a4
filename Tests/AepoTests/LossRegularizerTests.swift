@testable import AepoCore
import Testing

/// select_regularizer and the `replace` combination against a transcription of the
/// reference trainer's step (select the positives, cap and halve k, splice the batch).
@Suite struct LossRegularizerTests {
    /// The reference: GRPO advantages within the T-groups, keep A > 0.05 in order, set their
    /// advantage to 1, k = min(60, kept) halved (floor) above target, batch = kept[:k] ++ main[k:].
    func referenceBatch(tRewards: [Float], tGroups: [Int64], mainAdv: [Float], kMax: Int, above: Bool)
        -> (rows: [Regularizer.RowSource], adv: [Float])
    {
        var groups: [Int64: [Int]] = [:]
        for (i, g) in tGroups.enumerated() { groups[g, default: []].append(i) }
        var adv = [Double](repeating: 0, count: tRewards.count)
        for (_, members) in groups {
            let r = members.map { Double(tRewards[$0]) }
            if r.count == 1 { adv[members[0]] = r[0] / (1 + 1e-6); continue }
            let mean = r.reduce(0, +) / Double(r.count)
            let std = (r.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(r.count - 1)).squareRoot()
            for (j, i) in members.enumerated() { adv[i] = (r[j] - mean) / (std + 1e-6) }
        }
        let kept = (0..<tRewards.count).filter { Float(adv[$0]) > 0.05 }
        var k = min(kMax, kept.count)
        if above { k /= 2 }
        let rows = kept.prefix(k).map { Regularizer.RowSource.regularizer($0) }
            + (min(k, mainAdv.count)..<mainAdv.count).map { Regularizer.RowSource.main($0) }
        let a = [Float](repeating: 1, count: k) + Array(mainAdv[min(k, mainAdv.count)...])
        return (rows, a)
    }

    func libraryBatch(tRewards: [Float], tGroups: [Int64], mainAdv: [Float], kMax: Int, halve: Bool) throws
        -> (rows: [Regularizer.RowSource], adv: [Float], sel: Regularizer.Selection)
    {
        let r = buffer(tRewards), g = buffer(tGroups)
        defer { release(r); release(g) }
        let sel = try Regularizer.select(Config(), rewards: r, groupIds: g, kMax: kMax, halve: halve)
        let rows = Regularizer.replaceRows(mainCount: mainAdv.count, sel)
        let adv = rows.map { src -> Float in
            if case let .main(i) = src { return mainAdv[i] } else { return 1 }
        }
        return (rows, adv, sel)
    }

    /// Four groups of 5 at temperature T: 2/5, 5/5 (no positives), 0/5, 3/5 correct, plus a
    /// singleton whose advantage 0.9999990 is above the threshold.
    let tRewards: [Float] = [0, 1, 0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 1]
    let tGroups: [Int64] = [4, 4, 4, 4, 4, 9, 9, 9, 9, 9, 2, 2, 2, 2, 2, 7, 7, 7, 7, 7, 11]
    let mainAdv: [Float] = (0..<12).map { Float($0) * 0.25 - 1.5 }

    @Test func reproducesReferenceBatch() throws {
        // 2 + 3 + 1 = 6 positives: rows 1, 3, 15, 16, 18, 20.
        for (kMax, halve) in [(60, false), (60, true), (5, false), (5, true), (3, true), (0, false), (1, true)] {
            let want = referenceBatch(tRewards: tRewards, tGroups: tGroups, mainAdv: mainAdv, kMax: kMax, above: halve)
            let got = try libraryBatch(tRewards: tRewards, tGroups: tGroups, mainAdv: mainAdv, kMax: kMax, halve: halve)
            #expect(got.sel.nPositive == 6)
            #expect(got.rows == want.rows, "k_max \(kMax) halve \(halve)")
            #expect(got.adv == want.adv, "k_max \(kMax) halve \(halve)")
            #expect(got.rows.count == mainAdv.count, "the batch size stays fixed")
        }
        // Odd count halved: k_max 5 of 6 positives gives 5, halved to floor(5/2) = 2.
        let odd = try libraryBatch(tRewards: tRewards, tGroups: tGroups, mainAdv: mainAdv, kMax: 5, halve: true)
        #expect(odd.sel.indices == [1, 3])
        // All six, halved: 3.
        let all = try libraryBatch(tRewards: tRewards, tGroups: tGroups, mainAdv: mainAdv, kMax: 60, halve: true)
        #expect(all.sel.indices == [1, 3, 15])
    }

    @Test func zeroPositivesRunsWithoutRegulariser() throws {
        // Every group all-correct or all-wrong: GRPO gives 0 everywhere, nothing passes 0.05.
        let r: [Float] = [1, 1, 1, 0, 0, 0]
        let g: [Int64] = [1, 1, 1, 2, 2, 2]
        let got = try libraryBatch(tRewards: r, tGroups: g, mainAdv: mainAdv, kMax: 60, halve: false)
        let want = referenceBatch(tRewards: r, tGroups: g, mainAdv: mainAdv, kMax: 60, above: false)
        #expect(got.sel.k == 0 && got.sel.nPositive == 0)
        #expect(got.rows == want.rows && got.adv == mainAdv)
        // The loss call then has no regulariser rows, and the metrics say so.
        var c = anchorCase()
        c.regRows = [0, 0]
        let res = try runLoss(engine(), c)
        #expect(res.result[.regUsed] == 0 && res.result[.nPositive] == 0 && res.result[.regTokenFrac] == 0)
    }

    /// `replace` through the loss: marking the spliced rows in reg_rows gives them A = 1, the
    /// same as writing 1 into their advantages.
    @Test func replaceRowsTakeAdvantageOne() throws {
        var c = LossGradientTests.makeCase(seed: 101, B: 6, clipActive: true, cfg: LossConfig())
        let e = engine { $0.loss.entropyCoeff = 0.01; $0.loss.klLossCoef = 0.1 }
        var marked = c
        marked.regRows = [1, 1, 0, 0, 0, 0]
        c.advantages[0] = 1
        c.advantages[1] = 1
        let a = try runLoss(e, c), b = try runLoss(e, marked)
        #expect(a.result.loss == b.result.loss && a.grad == b.grad)
        #expect(b.result[.regUsed] == 1 && b.result[.nPositive] == 2)
    }

    /// docs/LOSS.md's mapping: with rows of equal length, `weighted` with
    /// alpha = k / (B - k) is `replace` times B / (B - k), loss and gradient alike.
    @Test func weightedMapsToReplace() throws {
        let B = 8, k = 3, L = 16
        var c = LossGradientTests.makeCase(seed: 111, B: B, L: L, clipActive: true, cfg: LossConfig(), withRef: false,
                                           withEntropy: false, withISW: false)
        for i in 0..<(B * L) where c.mask[i] == 0 {  // make the padding real tokens
            c.mask[i] = 1
            c.oldLogp[i] = Float(-1 - Double(i % 7) * 0.1)
            c.logp[i] = c.oldLogp[i] + Float(Double(i % 5) * 0.2 - 0.4)
        }
        c.regRows = [UInt8](repeating: 0, count: B)
        for b in 0..<k { c.regRows![b] = 1 }
        let replace = try runLoss(engine { $0.regularizer.combine = "replace" }, c)
        var w = c
        w.regAlpha = Double(k) / Double(B - k)
        let weighted = try runLoss(engine { $0.regularizer.combine = "weighted" }, w)
        let scale = Double(B) / Double(B - k)
        #expect(relErr(weighted.result.loss, replace.result.loss * scale) <= 1e-12,
                "weighted \(weighted.result.loss) vs replace * B/(B-k) \(replace.result.loss * scale)")
        let (d, s) = maxDiff(weighted.grad, replace.grad.map { Double($0) * scale })
        #expect(d <= 1e-6 * s, "gradient max diff \(d)")
    }

    @Test func thresholdAndNegativeKMax() throws {
        let adv: [Float] = [0.05, 0.0500001, -1, 2]
        let b = buffer(adv)
        defer { release(b) }
        #expect(try Regularizer.select(advantages: b, threshold: 0.05, kMax: 10, halve: false).indices == [1, 3])
        #expect(throws: AepoFailure.self) { try Regularizer.select(advantages: b, threshold: 0.05, kMax: -1, halve: false) }
    }
}
