import Glibc

// top-k with a small k (at most `smallTopKLimit` = 256, where its cuts stay cheaper than
// the histogram, and at most a quarter of V): a candidate filter
// instead of the histogram.
//
// Pass B streams the row once with a threshold: a logit can only enter the top k if it is
// ranked above the current k-th candidate, so lanes below the threshold are skipped with
// one vector compare. When the buffer fills, quickselect keeps its k best and the threshold
// rises to the k-th. Since ids only grow along the row, a later logit equal to the k-th
// ranks below it, so after the first cut the test is a strict x > x_k (written as
// x >= nextUp(x_k)). Only the k survivors ever get a weight; top-p then acts on them.
// For logits in random order about k ln(V / k) lanes pass the filter, so the pass costs
// little more than reading the row.

let smallTopKLimit = 256

extension RowPlan {
    func smallTopKRow(_ x: UnsafePointer<Float>, _ n: Int, _ m: Float, tauF: Float,
                      u: Double, work: SamplerWorkspace) -> RowOutput {
        guard let cands = work.candidates else { return RowOutput(status: RowStatus.outOfMemory) }
        let k = topK
        // A small buffer keeps the threshold close to the true k-th; each cut costs O(k).
        let capacity = min(n, 2 * k + 64)
        var threshold = tauF
        var tv = SIMD8<Float>(repeating: threshold)
        var size = 0
        var i = 0
        while i < n {
            let len = min(blockWidth, n - i)
            var j = 0
            while j < len {
                let xv = load8(x + i + j, len - j)
                var bits = laneBits(xv .>= tv)
                while bits != 0 {
                    let lane = bits.trailingZeroBitCount
                    bits &= bits &- 1
                    if size == capacity {
                        threshold = cut(cands, &size, k)
                        tv = SIMD8<Float>(repeating: threshold)
                        if !(xv[lane] >= threshold) { continue }
                    }
                    cands[size] = Candidate(x: xv[lane], id: Int32(truncatingIfNeeded: i + j + lane), w: 0)
                    size &+= 1
                }
                j &+= 8
            }
            i &+= blockWidth
        }
        if size > k {
            selectTop(cands, size, k)
            size = k
        }
        // Weights of the survivors, then top-p over them.
        var z = 0.0
        for q in 0..<size {
            let w = FastMath.expNonPositive((cands[q].x - m) * invT)
            cands[q].w = w
            z += Double(w)
        }
        var keptCount = size
        if topP < 1 {
            let (kk, mass) = selectMass(cands, size, topP * z)
            keptCount = kk
            z = mass
        }
        let target = u * z
        var cum = 0.0
        var token = -1
        for q in 0..<keptCount where cands[q].w > 0 {
            cum += Double(cands[q].w)
            token = Int(cands[q].id)
            if cum > target { break }
        }
        if token < 0 { token = firstMax(x, m) }
        var out = RowOutput(token: token, kept: keptCount)
        let gap = Double(x[token]) - Double(m)
        out.logp = gap * invTd - log(z)
        if wantLogpT1 { out.logpT1 = gap - log(sumT1(x, n, m)) }
        return out
    }

    /// Keeps the k best of cands[0..<size] and returns the threshold a later (higher id)
    /// logit must reach to rank above the k-th of them.
    private func cut(_ c: UnsafeMutablePointer<Candidate>, _ size: inout Int, _ k: Int) -> Float {
        selectTop(c, size, k)
        size = k
        var lowest = c[0]
        for q in 1..<k where ranksAbove(lowest, c[q]) { lowest = c[q] }
        return lowest.x.nextUp
    }
}

/// The set lanes of a float comparison as bits 0...7.
@inline(__always)
func laneBits(_ m: SIMDMask<SIMD8<Int32>>) -> Int {
    let v = unsafeBitCast(m, to: SIMD8<Int32>.self) & SIMD8<Int32>(1, 2, 4, 8, 16, 32, 64, 128)
    let h = v.lowHalf | v.highHalf
    let q = h.lowHalf | h.highHalf
    return Int(q[0] | q[1])
}
