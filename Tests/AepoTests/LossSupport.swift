@testable import AepoCore
import Glibc

// Shared fixtures of the loss tests: a case type that owns its buffers,
// and a float64 transcription of the loss written the way verl writes it (per-token
// matrices, then agg_loss), independent of the engine's per-row weights.

/// One call's inputs as Swift arrays.
struct LossCase {
    var B: Int
    var L: Int
    var logp: [Float]
    var oldLogp: [Float]
    var advantages: [Float]
    var perToken = false
    var mask: [UInt8]
    var ref: [Float]?
    var isw: [Float]?
    var entropy: [Float]?
    var regRows: [UInt8]?
    var regAlpha: Double?
    var globalTokens: Int?
    var globalSeqs: Int?
    var globalRegTokens: Int?
    var dp = 1
    var step: Int64 = 0

    /// Rows [lo, hi) as a case of their own (global counts and dp copied).
    func rows(_ lo: Int, _ hi: Int) -> LossCase {
        var c = self
        c.B = hi - lo
        let t = (lo * L)..<(hi * L)
        c.logp = Array(logp[t])
        c.oldLogp = Array(oldLogp[t])
        c.advantages = perToken ? Array(advantages[t]) : Array(advantages[lo..<hi])
        c.mask = Array(mask[t])
        c.ref = ref.map { Array($0[t]) }
        c.isw = isw.map { Array($0[t]) }
        c.entropy = entropy.map { Array($0[t]) }
        c.regRows = regRows.map { Array($0[lo..<hi]) }
        return c
    }
}

struct LossRun {
    var result: LossResult
    var grad: [Float]
    var gradEntropy: [Float]
}

func buffer<T>(_ a: [T]) -> UnsafeBufferPointer<T> {
    let p = UnsafeMutableBufferPointer<T>.allocate(capacity: max(a.count, 1))
    _ = p.initialize(from: a)
    return UnsafeBufferPointer(start: p.baseAddress, count: a.count)
}

func release<T>(_ b: UnsafeBufferPointer<T>?) {
    b.map { UnsafeMutableBufferPointer(mutating: $0).deallocate() }
}

func runLoss(_ engine: Loss, _ c: LossCase, wantGrad: Bool = true) throws(AepoFailure) -> LossRun {
    let lp = buffer(c.logp), olp = buffer(c.oldLogp), adv = buffer(c.advantages), mask = buffer(c.mask)
    let ref = c.ref.map(buffer), isw = c.isw.map(buffer), ent = c.entropy.map(buffer), reg = c.regRows.map(buffer)
    defer {
        release(lp); release(olp); release(adv); release(mask)
        release(ref); release(isw); release(ent); release(reg)
    }
    let batch = LossBatch(rows: c.B, length: c.L, logp: lp, oldLogp: olp, advantages: adv,
                          advantagesPerToken: c.perToken, mask: mask, refLogp: ref, isWeights: isw,
                          entropy: ent, regRows: reg, regAlpha: c.regAlpha, globalTokens: c.globalTokens,
                          globalSeqs: c.globalSeqs, globalRegTokens: c.globalRegTokens, dpSize: c.dp, step: c.step)
    var grad = [Float](repeating: .nan, count: c.B * c.L)
    var gradEnt = [Float](repeating: .nan, count: c.B * c.L)
    var out: Result<LossResult, AepoFailure> = .failure(AepoFailure(.internal, "", ""))
    grad.withUnsafeMutableBufferPointer { g in
        gradEnt.withUnsafeMutableBufferPointer { ge in
            do throws(AepoFailure) {
                out = .success(try engine.compute(batch, grad: wantGrad ? g : nil, gradEntropy: wantGrad ? ge : nil))
            } catch { out = .failure(error) }
        }
    }
    return LossRun(result: try out.get(), grad: grad, gradEntropy: gradEnt)
}

func engine(_ edit: (inout Config) -> Void = { _ in }) -> Loss {
    var c = Config()
    edit(&c)
    return try! Loss(config: c)
}

// MARK: - float64 reference

/// The loss of `c` in float64, transcribed from verl's formulas. `lp` and `ent` override the
/// case's log-probs and entropies (for finite differences). `klTypeOverride` replaces the
/// KL estimator (k2 for the straight-through gradient check).
struct RefLoss {
    var loss = 0.0
    var pg = 0.0
    var kl = 0.0
    var entropy = 0.0
    var reg = 0.0
    var clipfrac = 0.0
    var clipfracLower = 0.0
    var ppoKl = 0.0
}

func referenceKL(_ type: String, lp: Double, ref: Double) -> Double {
    var t = Substring(type)
    if t.hasSuffix("+") { t = t.dropLast() }
    switch t {
    case "kl", "k1": return lp - ref
    case "abs": return abs(lp - ref)
    case "mse", "k2": return 0.5 * (lp - ref) * (lp - ref)
    default:
        let x = min(max(ref - lp, -20), 20)
        return min(max(Glibc.exp(x) - x - 1, -10), 10)
    }
}

/// Every policy-loss mode: `selected` is the covariance selection of clip_cov and kl_cov (a
/// detached quantity, taken as given), and stop-gradient terms (gspo's sequence log-ratio,
/// cispo's clipped ratio) are evaluated at `detached` (default: the case's own log-probs),
/// so that finite differences of this function see only the live occurrences of logp, as
/// autograd does.
func referenceLoss(_ cfg: Config, _ c: LossCase, lp lpIn: [Double]? = nil, ent entIn: [Double]? = nil,
                   klTypeOverride: String? = nil, selected: Set<Int> = [], detached: [Double]? = nil) -> RefLoss {
    let l = cfg.loss
    let n = c.B * c.L
    let lp = lpIn ?? c.logp.map(Double.init)
    let base = detached ?? c.logp.map(Double.init)  // the detached log-probs
    let mode = l.policyLoss
    // gspo: each row's mean log-ratio at the detached log-probs.
    var seqLogRatio = [Double](repeating: 0, count: c.B)
    for b in 0..<c.B {
        var s = 0.0, cnt = 0
        for t in 0..<c.L where c.mask[b * c.L + t] == 1 {
            s += base[b * c.L + t] - Double(c.oldLogp[b * c.L + t])
            cnt += 1
        }
        seqLogRatio[b] = s / Double(max(cnt, 1))
    }
    let ent = entIn ?? c.entropy?.map(Double.init)
    let weighted = cfg.regularizer.combine == "weighted"
    var pgMat = [Double](repeating: 0, count: n)
    var klMat = [Double](repeating: 0, count: n)
    var mainM = [Double](repeating: 0, count: n)
    var regM = [Double](repeating: 0, count: n)
    var clip = 0.0, lower = 0.0, negD = 0.0, valid = 0.0
    for i in 0..<n {
        let b = i / c.L
        let isReg = (c.regRows?[b] ?? 0) == 1
        let m = Double(c.mask[i])
        if isReg && weighted { regM[i] = m } else { mainM[i] = m }
        guard c.mask[i] == 1 else { continue }
        let A = isReg ? 1.0 : Double(c.perToken ? c.advantages[i] : c.advantages[b])
        let lo = 1 - l.clipRatioLow, hi = 1 + l.clipRatioHigh
        let clamp = { (x: Double, a: Double, z: Double) in min(max(x, a), z) }
        let raw = lp[i] - Double(c.oldLogp[i])
        var tok: Double
        switch mode {
        case "gspo":
            // exp(clamp(x - sg(x) + sg(m_b), max 10))
            let s = Glibc.exp(min(lp[i] - base[i] + seqLogRatio[b], 10))
            let l1 = -A * s, l2 = -A * clamp(s, lo, hi)
            tok = max(l1, l2)
            if l2 > l1 { clip += 1 }
            negD += -raw
        case "cispo":
            let dBase = clamp(base[i] - Double(c.oldLogp[i]), -20, 20)
            let rBase = Glibc.exp(dBase)
            tok = -A * clamp(rBase, lo, hi) * lp[i]
            if rBase < lo || rBase > hi { clip += 1 }
            negD += -clamp(raw, -20, 20)
        case "gpg", "reinforce":
            tok = -A * lp[i]
            negD += -raw
        case "clip_cov":
            let r = Glibc.exp(raw)
            let l1 = -A * r, l2 = -A * clamp(r, lo, hi)
            tok = selected.contains(i) ? 0 : max(l1, l2)
            if selected.contains(i) { clip += 1 }
            negD += -raw
        case "kl_cov":
            tok = -A * Glibc.exp(raw) + (selected.contains(i) ? l.ppoKlCoef * abs(raw) : 0)
            negD += abs(raw)
        default:
            let d = clamp(raw, -20, 20)
            let r = Glibc.exp(d)
            let l1 = -A * r
            let l2 = -A * clamp(r, lo, hi)
            let c1 = max(l1, l2)
            let l3 = -A * l.clipRatioC
            let c2 = min(l3, c1)
            tok = A < 0 ? c2 : c1
            if l2 > l1 { clip += 1 }
            if c1 > l3 && A < 0 { lower += 1 }
            negD += -d
        }
        pgMat[i] = tok * Double(c.isw?[i] ?? 1)
        if let ref = c.ref { klMat[i] = referenceKL(klTypeOverride ?? l.klLossType, lp: lp[i], ref: Double(ref[i])) }
        valid += 1
    }
    let dp = Double(c.dp)
    // verl's masked_sum: values outside the mask are replaced by 0 before the product.
    func agg(_ raw: [Double], _ M: [Double]) -> Double {
        let mat = (0..<n).map { M[$0] != 0 ? raw[$0] : 0 }
        switch l.lossAggMode {
        case "token-mean":
            var s = 0.0, cnt = 0.0
            for i in 0..<n { s += mat[i] * M[i]; cnt += M[i] }
            return s / Double(c.globalTokens ?? Int(cnt)) * dp
        case "token-sum":
            var s = 0.0
            for i in 0..<n { s += mat[i] * M[i] }
            return s * dp
        default:
            var total = 0.0, seqs = 0.0
            for b in 0..<c.B {
                var s = 0.0, cnt = 0.0
                for t in 0..<c.L { s += mat[b * c.L + t] * M[b * c.L + t]; cnt += M[b * c.L + t] }
                if l.lossAggMode == "seq-mean-token-mean" { s /= cnt + 1e-8 }
                if cnt > 0 { total += s; seqs += 1 }
            }
            var v = total / Double(c.globalSeqs ?? Int(seqs)) * dp
            if l.lossAggMode == "seq-mean-token-sum-norm" { v /= l.lossScaleFactor }
            return v
        }
    }
    var out = RefLoss()
    out.pg = agg(pgMat, mainM)
    if c.ref != nil { out.kl = agg(klMat, mainM) }
    if let ent { out.entropy = agg(ent, mainM) }
    var regSum = 0.0, regCnt = 0.0
    for i in 0..<n { regSum += pgMat[i] * regM[i]; regCnt += regM[i] }
    if regCnt > 0 {
        out.reg = (c.regAlpha ?? cfg.regularizer.alpha) * regSum / Double(c.globalRegTokens ?? Int(regCnt)) * dp
    }
    out.loss = out.pg - l.entropyCoeff * out.entropy + l.klLossCoef * out.kl + out.reg
    out.clipfrac = clip / (valid + 1e-8)
    out.clipfracLower = lower / (valid + 1e-8)
    out.ppoKl = negD / (valid + 1e-8)
    return out
}

/// Central differences (h = 1e-6) of the reference loss with respect to every valid logp
/// and, when the case has entropies, every valid entropy.
func finiteDifferences(_ cfg: Config, _ c: LossCase, h: Double = 1e-6,
                       selected: Set<Int> = []) -> (dlogp: [Double], dent: [Double]) {
    let n = c.B * c.L
    let base = c.logp.map(Double.init)
    let klType = cfg.loss.klLossType.hasSuffix("+") ? "k2" : nil
    var g = [Double](repeating: 0, count: n)
    for i in 0..<n where c.mask[i] == 1 {
        var p = base, m = base
        p[i] += h
        m[i] -= h
        g[i] = (referenceLoss(cfg, c, lp: p, klTypeOverride: klType, selected: selected).loss
            - referenceLoss(cfg, c, lp: m, klTypeOverride: klType, selected: selected).loss) / (2 * h)
    }
    var ge = [Double](repeating: 0, count: n)
    if let e = c.entropy?.map(Double.init) {
        for i in 0..<n where c.mask[i] == 1 {
            var p = e, m = e
            p[i] += h
            m[i] -= h
            ge[i] = (referenceLoss(cfg, c, ent: p, selected: selected).loss
                - referenceLoss(cfg, c, ent: m, selected: selected).loss) / (2 * h)
        }
    }
    return (g, ge)
}

/// max |a - b| and max |b|.
func maxDiff(_ a: [Float], _ b: [Double]) -> (diff: Double, scale: Double) {
    var d = 0.0, s = 0.0
    for i in 0..<b.count {
        d = max(d, abs(Double(a[i]) - b[i]))
        s = max(s, abs(b[i]))
    }
    return (d, s)
}

func relErr(_ a: Double, _ b: Double) -> Double {
    b == 0 ? abs(a) : abs(a - b) / abs(b)
}

/// The vanilla loss example of docs/API.md ("Reference values").
func anchorCase() -> LossCase {
    LossCase(B: 2, L: 4,
             logp: [-1, -0.5, -2, -0.1, -0.3, -1.2, -0.7, -9.0],
             oldLogp: [-1.2, -0.4, -1.0, -0.1, -0.3, -2.7, -0.2, -0.5],
             advantages: [1, -1],
             mask: [1, 1, 1, 0, 1, 1, 1, 1])
}
