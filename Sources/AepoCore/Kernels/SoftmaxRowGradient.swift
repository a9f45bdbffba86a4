import CAepoKernels
import Glibc

/// The gradient of one row of L = g_logp · log p(t) + g_H · H with respect to the raw logits,
/// written in vocabulary chunks of any size (the row-block API for the fused head), then
/// completed by at most two point updates from `fixups(target:)`.
///
/// Numerical properties: each entry is −(1/T)·p_j·(g_logp + g_H·(log p_j + H)) with
/// log p_j = (x_j − shift)·(1/T) + c in float32, where shift is T·lse rounded to float (so
/// x_j − shift is exact near the top) and c carries the rest of the float64 lse. lse is
/// float64 on purpose: a float32 lse would put an error of up to 6e-8·|lse| into every
/// log p_j at once (4e-6 at lse = 100). For most entries that is a relative error. For the top token of a
/// near-deterministic row (p close to 1) it is not: its true gradient g_logp·(1 − p)/T or
/// g_H·p·(log p + H)/T is tiny and a direct evaluation would be swamped. Because the entries
/// of a softmax gradient sum to exactly 0, the top entry is then recomputed as minus the sum
/// of all the others (each accurate to its own relative precision), which keeps it to
/// float32 relative precision as well. The recomputation is used exactly when it is the more
/// accurate choice under an error δ in log p shared by all entries:
/// |c − (g_logp + g_H)| < |c| with c = p_top·(g_logp + g_H·(1 + H + log p_top)).
public struct SoftmaxRowGradient {
    public let temperature: Double
    public let lse: Double
    public let entropy: Float
    public let gradLogp: Float
    public let gradEntropy: Float
    public let isa: KernelISA
    let shift: Float, shiftError: Float, invT: Float, a: Float
    /// Running max of x, its first column, how often it occurs, and the sum of every written
    /// entry except those equal to the running max.
    var top: Float = -.infinity
    var topColumn = -1
    var topCount = 0
    var topValue: Float = 0
    var othersSum: Double = 0

    public init(temperature: Double, lse: Double, entropy: Float, gradLogp: Float, gradEntropy: Float,
                isa: KernelISA = .best) {
        self.isa = isa
        self.temperature = temperature
        self.lse = lse
        self.entropy = gradEntropy != 0 ? entropy : 0
        self.gradLogp = gradLogp
        self.gradEntropy = gradEntropy
        self.invT = Float(1 / temperature)
        self.shift = Float(lse * temperature)
        self.shiftError = Float(Double(shift) / temperature - lse)
        self.a = Float(Double(gradLogp) + Double(gradEntropy) * Double(self.entropy))
    }

    /// Writes out[j] for the columns start ..< start + count, where x[0] is column `start`.
    @inline(__always)
    public mutating func write(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count: Int, start: Int) {
        var i = 0
        while i < count {
            let n = min(SoftmaxRowAccumulator.block, count &- i)
            writeBlock(x + i, out + i, n, start &+ i)
            i &+= n
        }
    }

    @inline(__always)
    mutating func writeBlock(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int, _ column: Int) {
        let m = SoftmaxKernels.max(x, n, isa)
        if m < top || m == -.infinity || m != m {
            othersSum += Double(SoftmaxKernels.backward(x, out, n, shift: shift, c: shiftError, invT: invT, a: a,
                                                         b: gradEntropy, isa))
            return
        }
        var first = -1
        if m > top {
            // A new max: the entries equal to the old one become "others".
            othersSum += Double(topCount) * Double(topValue)
            top = m
            topCount = 0
            first = SoftmaxKernels.firstIndex(of: m, in: x, n, isa)
        }
        let s = SoftmaxKernels.backwardExcludingTop(x, out, n, top: m, shift: shift, c: shiftError, invT: invT, a: a,
                                                    b: gradEntropy, isa)
        othersSum += Double(s.sum)
        topCount &+= s.count
        if first >= 0 {
            topColumn = column &+ first
            topValue = out[first]
        }
    }

    /// The point updates that complete the row, to be added to out[column]: the one-hot term
    /// g_logp / T at `target` (pass -1 when g_logp is 0), and, when it is the more accurate
    /// choice, the recomputed top entry. At most two; `column` is -1 for an unused slot.
    public func fixups(target: Int) -> (first: (column: Int, delta: Double), second: (column: Int, delta: Double)) {
        let oneHot = target >= 0 ? Double(gradLogp) / temperature : 0
        let none = (column: -1, delta: 0.0)
        guard topColumn >= 0, topCount == 1 else {
            return (target >= 0 ? (target, oneHot) : none, none)
        }
        let gl = Double(gradLogp), gh = Double(gradEntropy)
        let u = Double(top) / temperature - lse
        let c = Glibc.exp(u) * (gl + gh * (1 + Double(entropy) + u))
        guard abs(c - (gl + gh)) < abs(c) else {
            return (target >= 0 ? (target, oneHot) : none, none)
        }
        // The full row sums to 0: g_top = −(Σ others + the one-hot term if it is elsewhere).
        let elsewhere = target >= 0 && target != topColumn ? oneHot : 0
        let corrected = -(othersSum + elsewhere)
        let topFix = (column: topColumn, delta: corrected - Double(topValue))
        return (topFix, elsewhere != 0 ? (target, oneHot) : none)
    }
}
