@testable import AepoCore
import Testing

/// Global counts (docs/API.md): micro-batches with the global counts and dp_size reproduce the
/// one-call loss and gradient (after the data-parallel mean, i.e. divided by dp).
@Suite struct LossMicroBatchTests {
    /// Splits rows 0..<B into `dp` ranks of consecutive rows, each into micro-batches of
    /// `micro` rows, and returns sum(loss) / dp and the stitched gradients / dp.
    func splitRun(_ e: Loss, _ whole: LossCase, dp: Int, micro: Int) throws -> (Double, [Float], [Float]) {
        var c = whole
        let regs = whole.regRows ?? [UInt8](repeating: 0, count: whole.B)
        let weighted = e.combine == .weighted
        var tokens = 0, seqs = 0, regTokens = 0
        for b in 0..<whole.B {
            let n = (0..<whole.L).reduce(0) { $0 + Int(whole.mask[b * whole.L + $1]) }
            if weighted && regs[b] == 1 { regTokens += n; continue }
            tokens += n
            if n > 0 { seqs += 1 }
        }
        c.globalTokens = tokens
        c.globalSeqs = seqs
        c.globalRegTokens = regTokens
        c.dp = dp
        var loss = 0.0
        var grad = [Float](), gradEnt = [Float]()
        var lo = 0
        while lo < whole.B {
            let hi = min(whole.B, lo + micro)
            let r = try runLoss(e, c.rows(lo, hi))
            loss += r.result.loss
            grad += r.grad.map { $0 / Float(dp) }
            gradEnt += r.gradEntropy.map { $0 / Float(dp) }
            lo = hi
        }
        return (loss / Double(dp), grad, gradEnt)
    }

    @Test(arguments: AggregationModeNames.all)
    func microBatchesAddUp(mode: String) throws {
        for combine in ["replace", "weighted"] {
            let cfg = LossGradientTests.config(mode, combine: combine)
            let e = try Loss(config: cfg)
            var regRows = [UInt8](repeating: 0, count: 12)
            regRows[2] = 1
            regRows[9] = 1
            let whole = LossGradientTests.makeCase(seed: 71, B: 12, L: 37, clipActive: true, cfg: cfg.loss,
                                                   regRows: regRows)
            let one = try runLoss(e, whole)
            for (dp, micro) in [(1, 3), (2, 3), (2, 2), (3, 1), (4, 3)] {
                let (loss, grad, gradEnt) = try splitRun(e, whole, dp: dp, micro: micro)
                let le = relErr(loss, one.result.loss)
                #expect(le <= 1e-6, "\(mode) \(combine) dp \(dp) micro \(micro): loss \(loss) vs \(one.result.loss), rel \(le)")
                let (d, s) = maxDiff(grad, one.grad.map(Double.init))
                #expect(d <= 1e-6 * s, "\(mode) \(combine) dp \(dp) micro \(micro): grad max diff \(d), scale \(s)")
                let (de, se) = maxDiff(gradEnt, one.gradEntropy.map(Double.init))
                #expect(de <= 1e-6 * se, "\(mode) \(combine) dp \(dp) micro \(micro): grad_entropy max diff \(de)")
            }
        }
    }

    @Test func emptyMicroBatchWithGlobalCountsIsZero() throws {
        for mode in AggregationModeNames.all {
            let e = engine { $0.loss.lossAggMode = mode; $0.loss.lossScaleFactor = 3 }
            var c = LossCase(B: 2, L: 3, logp: [Float](repeating: .nan, count: 6), oldLogp: [Float](repeating: 0, count: 6),
                             advantages: [1, 1], mask: [UInt8](repeating: 0, count: 6))
            c.globalTokens = 10
            c.globalSeqs = 4
            c.dp = 2
            let r = try runLoss(e, c)
            #expect(r.result.loss == 0 && r.grad.allSatisfy { $0 == 0 }, "\(mode): empty micro-batch")
            #expect(r.result[.nTokens] == 0 && r.result[.pgClipfrac] == 0)
            // Zero rows or zero length as well.
            var z = LossCase(B: 0, L: 5, logp: [], oldLogp: [], advantages: [], mask: [])
            z.globalTokens = 10
            z.globalSeqs = 4
            #expect(try runLoss(e, z).result.loss == 0)
        }
    }

    @Test func bitIdenticalForEveryThreadCount() throws {
        for mode in AggregationModeNames.all {
            var cfg = LossGradientTests.config(mode, combine: "weighted")
            var regRows = [UInt8](repeating: 0, count: 23)
            regRows[5] = 1
            let c = LossGradientTests.makeCase(seed: 81, B: 23, L: 4099, clipActive: true, cfg: cfg.loss, regRows: regRows)
            cfg.loss.threads = 1
            let base = try runLoss(try Loss(config: cfg), c)
            for t: Int64 in [2, 3, 8] {
                cfg.loss.threads = t
                let r = try runLoss(try Loss(config: cfg), c)
                #expect(r.result.loss.bitPattern == base.result.loss.bitPattern, "\(mode) threads \(t): loss differs")
                #expect(r.result.metrics.map(\.bitPattern) == base.result.metrics.map(\.bitPattern), "\(mode) threads \(t): metrics differ")
                #expect(r.grad.map(\.bitPattern) == base.grad.map(\.bitPattern), "\(mode) threads \(t): grad differs")
                #expect(r.gradEntropy.map(\.bitPattern) == base.gradEntropy.map(\.bitPattern), "\(mode) threads \(t): grad_entropy differs")
            }
        }
    }

    /// Threads get contiguous row ranges of about equal work, also for a length-sorted batch.
    @Test func workSplitBalancesSortedLengths() throws {
        let B = 64, L = 512
        var mask = [UInt8](repeating: 0, count: B * L)
        for b in 0..<B { for t in 0..<(8 * (b + 1)) { mask[b * L + t] = 1 } }  // lengths 8...512, sorted
        let m = buffer(mask)
        let empty = buffer([Float](repeating: 0, count: B * L)), adv = buffer([Float](repeating: 1, count: B))
        defer { release(m); release(empty); release(adv) }
        let batch = LossBatch(rows: B, length: L, logp: empty, oldLogp: empty, advantages: adv, advantagesPerToken: false,
                              mask: m)
        let plan = try engine().plan(batch)
        for parts in [1, 2, 3, 7] {
            let bounds = Loss.workSplit(plan, parts: parts)
            #expect(bounds.first == 0 && bounds.last == B && bounds.count == parts + 1)
            #expect(zip(bounds, bounds.dropFirst()).allSatisfy { $0 <= $1 })
            let work = zip(bounds, bounds.dropFirst()).map { lo, hi in
                (lo..<hi).reduce(0) { $0 + plan.rowSpan[$1].count + L / 8 + 1 }
            }
            let total = work.reduce(0, +)
            // Each part is within one row's work of the even share.
            for w in work { #expect(abs(w - total / parts) <= L + L / 8 + 1, "parts \(parts): \(work)") }
        }
        // Equal counts would have given the first half of the rows a quarter of the work.
        let half = Loss.workSplit(plan, parts: 2)[1]
        #expect(half > B / 2 + 8, "split at row \(half)")
    }

    /// The token kernel gives the same per-token gradients whatever the block boundaries
    /// (the fused LM head runs it on its own row blocks), and the partial sums add up.
    @Test func tokenKernelOnArbitraryBlocks() throws {
        let cfg = LossGradientTests.config("seq-mean-token-mean", combine: "weighted")
        let e = try Loss(config: cfg)
        let c = LossGradientTests.makeCase(seed: 91, B: 7, L: 29, clipActive: true, cfg: cfg.loss, regRows: [0, 0, 1, 0, 0, 0, 0])
        let whole = try runLoss(e, c)
        let lp = buffer(c.logp), olp = buffer(c.oldLogp), adv = buffer(c.advantages), mask = buffer(c.mask)
        let ref = buffer(c.ref!), isw = buffer(c.isw!), ent = buffer(c.entropy!), reg = buffer(c.regRows!)
        defer { release(lp); release(olp); release(adv); release(mask); release(ref); release(isw); release(ent); release(reg) }
        let batch = LossBatch(rows: c.B, length: c.L, logp: lp, oldLogp: olp, advantages: adv, advantagesPerToken: false,
                              mask: mask, refLogp: ref, isWeights: isw, entropy: ent, regRows: reg)
        let plan = try e.plan(batch)
        let n = c.B * c.L
        var grad = [Float](repeating: .nan, count: n), gradEnt = grad
        var total = TokenPartials()
        var lo = 0
        var rng = SplitMix64(5)
        grad.withUnsafeMutableBufferPointer { g in
            gradEnt.withUnsafeMutableBufferPointer { ge in
                while lo < n {
                    let hi = min(n, lo + 1 + rng.int(45))
                    let block = TokenBlock(range: lo..<hi, logp: lp.baseAddress! + lo, entropy: ent.baseAddress! + lo,
                                           grad: g.baseAddress! + lo, gradEntropy: ge.baseAddress! + lo)
                    total.add(e.accumulate(batch, plan, block))
                    lo = hi
                }
            }
        }
        let r = e.finish(plan, total)
        #expect(grad.map(\.bitPattern) == whole.grad.map(\.bitPattern))
        #expect(gradEnt.map(\.bitPattern) == whole.gradEntropy.map(\.bitPattern))
        #expect(relErr(r.loss, whole.result.loss) <= 1e-14, "blocked loss \(r.loss) vs \(whole.result.loss)")
    }
}
