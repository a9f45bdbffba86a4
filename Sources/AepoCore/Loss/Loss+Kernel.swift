/// The token kernel with its loop invariants hoisted. Each row segment runs one loop,
/// specialised on the policy form of the mode (and, for vanilla, the sign case of the
/// advantage) and on the KL estimator (none for the AEPO path), that computes the policy,
/// KL and entropy terms together.
struct Kernel {
    typealias V = LossMath.V
    typealias M = LossMath.M

    let batch: LossBatch
    let consts: FormConstants
    let mode: PolicyLossMode
    let klType: KLType
    let klCoef: Double
    let entCoef: Double
    let hasRef: Bool
    let hasEntropy: Bool

    init(_ e: Loss, _ batch: LossBatch) {
        self.batch = batch
        let l = e.config.loss
        consts = FormConstants(lo: V(repeating: 1 - l.clipRatioLow), hi: V(repeating: 1 + l.clipRatioHigh),
                               c: V(repeating: l.clipRatioC), rowRatio: V(repeating: 1),
                               rowRatioFlows: M(repeating: true), klCovCoef: V(repeating: l.ppoKlCoef))
        mode = e.mode
        klType = e.klType
        klCoef = l.klLossCoef
        entCoef = l.entropyCoeff
        hasRef = batch.refLogp != nil
        hasEntropy = batch.entropy != nil
    }

    /// Four-lane accumulators of one segment; summed across lanes at its end.
    struct Acc {
        var loss = V()
        var clip = SIMD4<Int64>()
        var low = SIMD4<Int64>()
        var metric = V()
        var bad = V()
        var kl = V()
        var ent = V()
        /// Sum of the valid log-probs (the role metrics).
        var lp = V()
    }

    /// Tokens [from, to) of row `b`; `base` is the flat index the block pointers start at.
    @inline(__always)
    func segment(row b: Int, from: Int, to: Int, base: Int, block: TokenBlock, plan: AggregationPlan,
                 into out: inout TokenPartials) {
        let wPol = plan.policyWeight[b]
        let wAux = plan.auxWeight[b]
        let forceOne = plan.isRegRow[b]
        let perToken = batch.advantagesPerToken && !forceOne
        let advRow = forceOne ? 1 : (batch.advantagesPerToken ? 0 : Double(batch.advantages[b]))
        var acc = Acc()
        let lp = block.logp - base
        let grad = block.grad.map { $0 - base }
        let gradEnt = block.gradEntropy.map { $0 - base }
        // Only the vectors that overlap the row's valid span are computed (a padded row's
        // tail is all mask = 0): the start stays a multiple of 4 from `from`, so every valid
        // token keeps its lane and the sums their order. The rest of the range gets zeros.
        let span = plan.rowSpan[b]
        let rowBase = b * batch.length
        let lo = max(from, min(to, from + (rowBase + span.lowerBound - from) / 4 * 4))
        let hi = max(lo, min(to, rowBase + span.upperBound))
        @inline(__always)
        func zeroOutside(_ g: UnsafeMutablePointer<Float>?) {
            guard let g else { return }
            if lo > from { (g + from).update(repeating: 0, count: lo - from) }
            if to > hi { (g + hi).update(repeating: 0, count: to - hi) }
        }
        zeroOutside(grad)
        zeroOutside(gradEnt)
        let from = lo, to = hi
        guard from < to else { return finishSegment(b, wPol: wPol, wAux: wAux, plan: plan, acc: acc, out: &out) }
        var k = consts
        if mode == .gspo, b < plan.sequenceRatio.count {
            k.rowRatio = V(repeating: plan.sequenceRatio[b])
            k.rowRatioFlows = M(repeating: plan.sequenceRatioFlows[b])
        }
        let io = SegmentIO(lp: lp, grad: grad, gradEnt: gradEnt, ent: hasEntropy ? block.entropy.map { $0 - base } : nil,
                           wPol: wPol, gKL: klCoef * wAux,
                           gH: { let g = hasEntropy ? -entCoef * wAux : 0; return g == 0 ? 0 : g }(),
                           consts: k, selectedFrom: mode.selectsTokens ? lowerBound(plan.selected, from) : 0)
        // dL/dH is one value per row: flag it when it does not fit a float (see policyLoop).
        if gradEnt != nil && !Float(io.gH).isFinite { out.nonFinite = true }
        // The policy term of the configured mode, with the KL and entropy terms in the same
        // pass. Modes that need statistics of the whole call (gspo's sequence ratio, the
        // covariance selections) read them from the plan (`Loss.prepare`).
        switch mode {
        case .vanilla:
            if perToken {
                run(Vanilla<VanillaAnySign>.self, from, to, io, advRow: 0, plan: plan, acc: &acc)
            } else if advRow < 0 {
                run(Vanilla<VanillaNegative>.self, from, to, io, advRow: advRow, plan: plan, acc: &acc)
            } else {
                // A >= 0, and NaN/Inf (flagged below, the values are then discarded).
                run(Vanilla<VanillaNonNegative>.self, from, to, io, advRow: advRow, plan: plan, acc: &acc)
            }
        case .gspo: runEither(Gspo<PerRowAdvantage>.self, Gspo<PerTokenAdvantage>.self, perToken, from, to, io, advRow, plan, &acc)
        case .cispo: runEither(Cispo<PerRowAdvantage>.self, Cispo<PerTokenAdvantage>.self, perToken, from, to, io, advRow, plan, &acc)
        case .gpg: runEither(Gpg<PerRowAdvantage>.self, Gpg<PerTokenAdvantage>.self, perToken, from, to, io, advRow, plan, &acc)
        case .clipCov:
            runEither(ClipCov<PerRowAdvantage>.self, ClipCov<PerTokenAdvantage>.self, perToken, from, to, io, advRow, plan, &acc)
        case .klCov: runEither(KlCov<PerRowAdvantage>.self, KlCov<PerTokenAdvantage>.self, perToken, from, to, io, advRow, plan, &acc)
        }
        if !perToken && !advRow.isFinite && plan.rowTokens[b] > 0 { out.nonFinite = true }
        finishSegment(b, wPol: wPol, wAux: wAux, plan: plan, acc: acc, out: &out)
    }

    /// The first position of `sorted` whose value is >= `x`.
    @inline(__always)
    func lowerBound(_ sorted: [Int], _ x: Int) -> Int {
        var lo = 0, hi = sorted.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if sorted[mid] < x { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Per-segment pointers (rebased so that index t is flat token t), weights and constants.
    struct SegmentIO {
        var lp: UnsafePointer<Float>
        var grad: UnsafeMutablePointer<Float>?
        var gradEnt: UnsafeMutablePointer<Float>?
        var ent: UnsafePointer<Float>?
        var wPol: Double
        var gKL: Double
        var gH: Double
        var consts: FormConstants
        /// Position in `plan.selected` of the first selected token at or after the segment start.
        var selectedFrom: Int
    }

    @inline(__always)
    func runEither<R: PolicyForm, T: PolicyForm>(_: R.Type, _: T.Type, _ perToken: Bool, _ from: Int, _ to: Int,
                                                 _ io: SegmentIO, _ advRow: Double, _ plan: AggregationPlan,
                                                 _ acc: inout Acc) {
        if perToken {
            run(T.self, from, to, io, advRow: 0, plan: plan, acc: &acc)
        } else {
            run(R.self, from, to, io, advRow: advRow, plan: plan, acc: &acc)
        }
    }

    /// The policy loop of form `F` with the KL estimator of the handle.
    @inline(__always)
    func run<F: PolicyForm>(_: F.Type, _ from: Int, _ to: Int, _ io: SegmentIO, advRow: Double,
                            plan: AggregationPlan, acc: inout Acc) {
        if !hasRef {
            policyLoop(F.self, KLNone.self, from: from, to: to, io: io, advRow: advRow, plan: plan, acc: &acc)
        } else {
            switch klType.base {
            case .k1: policyLoop(F.self, KLk1.self, from: from, to: to, io: io, advRow: advRow, plan: plan, acc: &acc)
            case .abs: policyLoop(F.self, KLAbs.self, from: from, to: to, io: io, advRow: advRow, plan: plan, acc: &acc)
            case .k2: policyLoop(F.self, KLk2.self, from: from, to: to, io: io, advRow: advRow, plan: plan, acc: &acc)
            case .k3: policyLoop(F.self, KLk3.self, from: from, to: to, io: io, advRow: advRow, plan: plan, acc: &acc)
            }
        }
    }

    /// Adds a segment's lane sums to the partials.
    @inline(__always)
    func finishSegment(_ b: Int, wPol: Double, wAux: Double, plan: AggregationPlan, acc: Acc,
                       out: inout TokenPartials) {
        let s = acc.loss.sum()
        if plan.inRegTerm[b] { out.reg += wPol * s } else { out.policy += wPol * s }
        if hasRef { out.kl += wAux * acc.kl.sum() }
        let h = hasEntropy ? acc.ent.sum() : 0
        if hasEntropy { out.entropy += wAux * h }
        if plan.isRegRow[b] {
            out.logpReg += acc.lp.sum()
            out.entropyReg += h
        } else {
            out.logpMain += acc.lp.sum()
            out.entropyMain += h
        }
        out.clipped += Double(acc.clip.wrappedSum())
        out.clippedLower += Double(acc.low.wrappedSum())
        out.negLogRatio += acc.metric.sum()
        // The sums of finite float32 values (and their differences) cannot overflow a double,
        // so a non-finite sum means a non-finite input.
        if !acc.bad.sum().isFinite { out.nonFinite = true }
    }

    /// One pass over a segment: the policy term of form `F` (l * is_weight and the clip
    /// metrics), the KL term of estimator `K`, the entropy term and the sums of the role
    /// metrics; writes dL/dlogp and dL/dH.
    @inline(__always)
    func policyLoop<F: PolicyForm, K: KLForm>(_: F.Type, _: K.Type, from: Int, to: Int, io: SegmentIO,
                                              advRow: Double, plan: AggregationPlan, acc: inout Acc) {
        // Non-nil whenever a row has valid tokens (the shapes are checked).
        guard let mask = batch.mask.baseAddress, let olp = batch.oldLogp.baseAddress,
              let adv = batch.advantages.baseAddress else { return }
        let isw = batch.isWeights?.baseAddress
        let ref = K.active ? batch.refLogp?.baseAddress : nil
        let lp = io.lp, ent = io.ent, grad = io.grad, gradEnt = io.gradEnt
        let negRow = V(repeating: -advRow)
        let wPol = io.wPol, gKL = io.gKL
        let gH = V(repeating: io.gH)
        let straight = klType.straightThrough
        let k = io.consts
        // The covariance selection, ascending flat indices, and a cursor into it.
        var cursor = io.selectedFrom
        @inline(__always)
        func selectedLanes(_ i: Int, _ n: Int) -> M {
            var m = M(repeating: false)
            guard F.selects else { return m }
            while cursor < plan.selected.count && plan.selected[cursor] < i + n {
                let lane = plan.selected[cursor] - i
                if lane >= 0 { m[lane] = true }
                cursor += 1
            }
            return m
        }
        // Masked lanes are zeroed on load (logp = old_logp = ref = 0, so every ratio is 1,
        // and every KL value is 0); the loss, the counts, the metric and the gradients are
        // masked again.
        @inline(__always)
        func step(_ xIn: V, _ oIn: V, _ aIn: V?, _ wIn: V?, _ rIn: V?, _ hIn: V?, _ valid: M, _ sel: M,
                  _ acc: inout Acc) -> (g: V, gh: V) {
            let x = LossMath.keep(xIn, valid)
            let o = LossMath.keep(oIn, valid)
            var negA = negRow
            if let aIn {
                let a = LossMath.keep(aIn, valid)
                acc.bad += a
                negA = -a
            }
            let delta = x - o
            let t = F.terms(x: x, o: o, delta: delta, negA: negA, selected: sel, k)
            var loss = t.loss
            var gl = t.slope * wPol
            if let wIn {
                let w = LossMath.keep(wIn, valid)
                acc.bad += w
                loss *= w
                gl *= w
            }
            // A non-finite logp or old_logp makes the sum of delta non-finite.
            acc.bad += delta
            acc.lp += x
            acc.loss += LossMath.keep(loss, valid)
            LossMath.count(&acc.clip, t.clipped .& valid)
            if F.countsLower { LossMath.count(&acc.low, t.lower .& valid) }
            acc.metric += LossMath.keep(t.metric, valid)
            var g = LossMath.keep(gl, valid .& t.flows)
            if K.active, let rIn {
                let rv = LossMath.keep(rIn, valid)
                acc.bad += rv
                let dk = x - rv
                var (v, slope) = K.evaluate(dk)
                if straight { slope = dk }
                acc.kl += v
                g += LossMath.keep(slope * gKL, valid)
            }
            // A gradient of finite inputs can still overflow float32 (|A| near 3e38, or huge
            // loss weights). Scaled by 2^897 any |g| >= 2^127 becomes Inf and flags the
            // segment; compute then looks at the gradients written (a near miss below
            // FLT_MAX costs that look and nothing else).
            acc.bad += g * V(repeating: 0x1p897)
            if let hIn {
                let h = LossMath.keep(hIn, valid)
                acc.bad += h
                acc.ent += h
            }
            return (g, LossMath.keep(gH, valid))
        }
        @inline(__always)
        func put(_ r: (g: V, gh: V), _ i: Int) {
            if let grad { LossMath.store(r.g, grad + i) }
            if let gradEnt { LossMath.store(r.gh, gradEnt + i) }
        }
        var i = from
        // Two vectors per iteration, in one block: their dependency chains (the exp above
        // all) interleave. The accumulators see them in order, as one at a time would.
        while i + 8 <= to {
            let w0 = LossMath.maskWord(mask + i, 4), w1 = LossMath.maskWord(mask + i + 4, 4)
            let x0 = LossMath.load(lp + i), o0 = LossMath.load(olp + i)
            let x1 = LossMath.load(lp + i + 4), o1 = LossMath.load(olp + i + 4)
            let a0 = F.perToken ? LossMath.load(adv + i) : nil
            let a1 = F.perToken ? LossMath.load(adv + i + 4) : nil
            let v0 = isw.map { LossMath.load($0 + i) }, v1 = isw.map { LossMath.load($0 + i + 4) }
            let r0 = ref.map { LossMath.load($0 + i) }, r1 = ref.map { LossMath.load($0 + i + 4) }
            let h0 = ent.map { LossMath.load($0 + i) }, h1 = ent.map { LossMath.load($0 + i + 4) }
            let s0 = selectedLanes(i, 4), s1 = selectedLanes(i + 4, 4)
            let g0: (g: V, gh: V), g1: (g: V, gh: V)
            // Inside a row's span most vectors are fully valid: a copy of the step with a
            // constant mask drops the masking operations.
            if w0 == 0x0101_0101 && w1 == 0x0101_0101 {
                g0 = step(x0, o0, a0, v0, r0, h0, M(repeating: true), s0, &acc)
                g1 = step(x1, o1, a1, v1, r1, h1, M(repeating: true), s1, &acc)
            } else {
                g0 = step(x0, o0, a0, v0, r0, h0, LossMath.maskLanes(w0), s0, &acc)
                g1 = step(x1, o1, a1, v1, r1, h1, LossMath.maskLanes(w1), s1, &acc)
            }
            put(g0, i)
            put(g1, i + 4)
            i += 8
        }
        if i + 4 <= to {
            let g = step(LossMath.load(lp + i), LossMath.load(olp + i), F.perToken ? LossMath.load(adv + i) : nil,
                         isw.map { LossMath.load($0 + i) }, ref.map { LossMath.load($0 + i) },
                         ent.map { LossMath.load($0 + i) }, LossMath.maskLanes(LossMath.maskWord(mask + i, 4)),
                         selectedLanes(i, 4), &acc)
            put(g, i)
            i += 4
        }
        if i < to {
            let n = to - i
            let g = step(LossMath.loadPartial(lp + i, n), LossMath.loadPartial(olp + i, n),
                         F.perToken ? LossMath.loadPartial(adv + i, n) : nil,
                         isw.map { LossMath.loadPartial($0 + i, n) }, ref.map { LossMath.loadPartial($0 + i, n) },
                         ent.map { LossMath.loadPartial($0 + i, n) }, LossMath.maskLanes(LossMath.maskWord(mask + i, n)),
                         selectedLanes(i, n), &acc)
            if let grad { LossMath.storePartial(g.g, grad + i, n) }
            if let gradEnt { LossMath.storePartial(g.gh, gradEnt + i, n) }
        }
    }
}

/// The PPO-clip loss of four tokens for one sign case of the advantage. All three cases
/// compute the same bits as the general formula of `Loss`:
///
///     L1 = -A r, L2 = -A clamp(r, lo, hi), clipped = L2 > L1, C1 = clipped ? L2 : L1,
///     L3 = -A c, dual = A < 0 and C1 > L3, l = dual ? L3 : C1.
///
/// For A >= 0 the lower clamp never wins (L2 <= L1 there), so L2 = -A min(r, hi) gives the
/// same L2 > L1 and C1; for A < 0 the upper clamp never wins, so L2 = -A max(r, lo).
protocol VanillaForm {
    static var perToken: Bool { get }
    static var hasDual: Bool { get }
    static func apply(r: LossMath.V, negA: LossMath.V, l3: LossMath.V, lo: LossMath.V, hi: LossMath.V)
        -> (loss: LossMath.V, l1: LossMath.V, clipped: LossMath.M, dual: LossMath.M)
}

/// One advantage per row, >= 0.
enum VanillaNonNegative: VanillaForm {
    static var perToken: Bool { false }
    static var hasDual: Bool { false }
    @inline(__always)
    static func apply(r: LossMath.V, negA: LossMath.V, l3: LossMath.V, lo: LossMath.V, hi: LossMath.V)
        -> (loss: LossMath.V, l1: LossMath.V, clipped: LossMath.M, dual: LossMath.M)
    {
        var rc = r
        rc.replace(with: hi, where: hi .< r)
        let l1 = negA * r
        let l2 = negA * rc
        let clipped = l2 .> l1
        var c1 = l1
        c1.replace(with: l2, where: clipped)
        return (c1, l1, clipped, LossMath.M(repeating: false))
    }
}

/// One advantage per row, < 0.
enum VanillaNegative: VanillaForm {
    static var perToken: Bool { false }
    static var hasDual: Bool { true }
    @inline(__always)
    static func apply(r: LossMath.V, negA: LossMath.V, l3: LossMath.V, lo: LossMath.V, hi: LossMath.V)
        -> (loss: LossMath.V, l1: LossMath.V, clipped: LossMath.M, dual: LossMath.M)
    {
        var rc = r
        rc.replace(with: lo, where: lo .> r)
        let l1 = negA * r
        let l2 = negA * rc
        let clipped = l2 .> l1
        var c1 = l1
        c1.replace(with: l2, where: clipped)
        let dual = c1 .> l3
        var loss = c1
        loss.replace(with: l3, where: dual)
        return (loss, l1, clipped, dual)
    }
}

/// One advantage per token, any sign: the general formula.
enum VanillaAnySign: VanillaForm {
    static var perToken: Bool { true }
    static var hasDual: Bool { true }
    @inline(__always)
    static func apply(r: LossMath.V, negA: LossMath.V, l3: LossMath.V, lo: LossMath.V, hi: LossMath.V)
        -> (loss: LossMath.V, l1: LossMath.V, clipped: LossMath.M, dual: LossMath.M)
    {
        let l1 = negA * r
        let l2 = negA * LossMath.clamp(r, lo, hi)
        let clipped = l2 .> l1
        var c1 = l1
        c1.replace(with: l2, where: clipped)
        let dual = (negA .> 0) .& (c1 .> l3)
        var loss = c1
        loss.replace(with: l3, where: dual)
        return (loss, l1, clipped, dual)
    }
}
