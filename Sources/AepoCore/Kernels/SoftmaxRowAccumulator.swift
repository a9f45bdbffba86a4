import CAepoKernels
import Glibc

/// Streaming softmax statistics of one row of tempered logits z = x / T, fed in vocabulary
/// chunks of any size, in any number of calls, then finished.
///
/// This is the row-block API shared by `LogitsKernels` (a whole row in one call) and the fused
/// LM head (chunk_v columns of an X·Wᵀ block at a time). State per row: the running max m of
/// the raw logits, S = Σ e^d and Q = Σ e^d·d with d = (x − m) / T, and, when asked, the T = 1
/// sum S1 = Σ e^(x − m). When m grows, S and Q are rescaled exactly (S' = e^δ S,
/// Q' = e^δ (Q + δ S), δ = (m_old − m_new) / T). Finishing gives
///   lse = m / T + log S,   H = log S − Q / S,   log p(t) = (x_t − m) / T − log S.
/// Both terms of H are >= 0, so H has no cancellation and is never negative.
///
/// Numerical properties: inside `add`, the input is cut into blocks of `block` elements; each
/// block is read twice from L1 (max, then exp), its sums are formed in float32 over 2 × 8
/// lanes (at most 64 terms per lane), and blocks are combined in float64. exp is
/// `FastMath.expNonPositive` (relative error < 1e-7). The entries equal to the max (e^0 = 1
/// exactly) are counted apart from the rest of S, so a near-deterministic row keeps the
/// small remainder S − 1 to float32 relative precision, and with it log p ≈ −(S − 1) of the
/// top token and its small entropy. The result depends only on the values and the chunk
/// boundaries, never on threads.
///
/// Special values: −inf logits contribute nothing; a NaN or +inf logit makes `nonFinite` true
/// (the caller reports it); a row whose logits are all −inf has `maxLogit == −inf`.
public struct SoftmaxRowAccumulator {
    /// Elements per block (4 KiB of floats): small enough to stay in L1 between the passes.
    public static let block = 1024

    public let temperature: Double
    /// Float(1 / T), the multiplier used for d.
    public let invT: Float
    /// Whether the T = 1 sum is tracked (only needed when T != 1 and log p at T = 1 is wanted).
    public let tracksT1: Bool
    /// Which loops run (see `KernelISA`).
    public let isa: KernelISA
    /// Running max of the raw logits seen so far.
    public private(set) var maxLogit: Float = -.infinity
    /// S = maxCount + rest: the entries equal to the running max, and everything else.
    var maxCount: Double = 0
    var rest: Double = 0
    /// Q = Σ e^d·d.
    public private(set) var sumD: Double = 0
    /// S1 = maxCountT1 + restT1 (only when `tracksT1`).
    var maxCountT1: Double = 0
    var restT1: Double = 0
    /// Set when a NaN was seen in a stretch that was otherwise all −inf (elsewhere NaN shows
    /// up in the sums).
    var sawNaN = false

    public init(temperature: Double, logpAtT1: Bool, isa: KernelISA = .best) {
        self.temperature = temperature
        self.invT = Float(1 / temperature)
        self.tracksT1 = logpAtT1 && temperature != 1
        self.isa = isa
    }

    /// Adds `count` contiguous logits to the row.
    @inline(__always)
    public mutating func add(_ x: UnsafePointer<Float>, count: Int) {
        var i = 0
        while i < count {
            let n = min(Self.block, count &- i)
            addBlock(x + i, n)
            i &+= n
        }
    }

    @inline(__always)
    mutating func addBlock(_ x: UnsafePointer<Float>, _ n: Int) {
        let m = SoftmaxKernels.max(x, n, isa)
        if m > maxLogit {
            if maxLogit != -.infinity && m != .infinity {
                let delta = (Double(maxLogit) - Double(m)) / temperature
                let f = Glibc.exp(delta)
                let s = maxCount + rest
                sumD = f * (sumD + delta * s)
                rest = f * s
                maxCount = 0
                if tracksT1 {
                    restT1 = Glibc.exp(Double(maxLogit) - Double(m)) * (maxCountT1 + restT1)
                    maxCountT1 = 0
                }
            }
            maxLogit = m
        }
        if maxLogit == .infinity { return }
        if maxLogit == -.infinity {
            // Everything so far is −inf: nothing to add, but a NaN must not go unseen.
            if SoftmaxKernels.hasNaN(x, n) { sawNaN = true }
            return
        }
        if m == maxLogit {
            // This block holds the running max: count its e^0 = 1 entries apart.
            let s = SoftmaxKernels.expSumsCountingMax(x, n, shift: maxLogit, invT: invT, isa)
            maxCount += Double(s.count)
            rest += Double(s.sum)
            sumD += Double(s.sumD)
            if tracksT1 {
                let s1 = SoftmaxKernels.expSumCountingMax(x, n, shift: maxLogit, isa)
                maxCountT1 += Double(s1.count)
                restT1 += Double(s1.sum)
            }
        } else {
            let s = SoftmaxKernels.expSums(x, n, shift: maxLogit, invT: invT, isa)
            rest += Double(s.sum)
            sumD += Double(s.sumD)
            if tracksT1 { restT1 += Double(SoftmaxKernels.expSum(x, n, shift: maxLogit, isa)) }
        }
    }

    /// True when the row held a NaN or +inf.
    public var nonFinite: Bool {
        sawNaN || maxLogit == .infinity || rest.isNaN || sumD.isNaN || restT1.isNaN
    }

    /// True when every logit of the row was −inf (and none was NaN).
    public var allNegativeInfinity: Bool { maxLogit == -.infinity && !sawNaN }

    /// S = Σ e^((x − m) / T).
    public var sum: Double { maxCount + rest }

    /// log(count + rest) without losing a small rest against the count.
    @inline(__always)
    static func logOf(count: Double, rest: Double) -> Double {
        count > 0 ? Glibc.log(count) + Glibc.log1p(rest / count) : Glibc.log(rest)
    }

    /// log S, valid once the row has a finite max.
    public var logSum: Double { Self.logOf(count: maxCount, rest: rest) }

    /// log-sum-exp of z = x / T.
    public var lse: Double { Double(maxLogit) / temperature + logSum }

    /// Exact entropy of softmax(z).
    public var entropy: Double { logSum - sumD / sum }

    /// log p(t) at T from the raw logit x_t of the target.
    @inline(__always)
    public func logp(targetLogit xt: Float) -> Double {
        (Double(xt) - Double(maxLogit)) / temperature - logSum
    }

    /// log p(t) at T = 1 from the raw logit of the target.
    @inline(__always)
    public func logpAtT1(targetLogit xt: Float) -> Double {
        let ls = tracksT1 ? Self.logOf(count: maxCountT1, rest: restT1) : logSum
        return (Double(xt) - Double(maxLogit)) - ls
    }
}
