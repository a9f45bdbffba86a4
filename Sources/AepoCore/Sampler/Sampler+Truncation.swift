import Glibc

// top-k and top-p without sorting the row.
//
// Pass B bins every logit by its tempered gap to the max, d = (m - x) / T, into
// `binsPerNat` bins per nat (bin 0 holds the max); gaps past the last bin share it, and
// tokens that min-p removed (and -inf) go to a discard bin. Bins are ordered like the
// ranking, so walking the histogram's counts (top-k) or masses (top-p) finds the one bin
// that holds the cut. Only that bin is gathered and cut exactly by quickselect under the
// ranking (larger logit first, lower id first). The draw walks the bin masses and then
// scans one bin in id order, which reproduces that bin's mass bit for bit.

let binsPerNat: Float = 32
let binCount = 1024            // bins 0..<1024 hold candidates
let discardBin = binCount      // min-p losers and -inf
let histogramSize = 2048       // power of two: every masked index is in bounds

/// A token of the bin being cut.
struct Candidate {
    var x: Float
    var id: Int32
    var w: Float
}

/// Candidate a is ranked strictly above b: larger logit, then lower id.
@inline(__always)
func ranksAbove(_ a: Candidate, _ b: Candidate) -> Bool {
    a.x > b.x || (a.x == b.x && a.id < b.id)
}

/// Per-thread scratch, allocated once per call and part. Allocation uses malloc so that a
/// failure is an error status instead of a trap.
final class SamplerWorkspace {
    let vocab: Int
    let blockSums: UnsafeMutablePointer<Double>
    /// The weights of the block a plain draw lands in.
    let blockWeights: UnsafeMutablePointer<Float>
    let weights: UnsafeMutablePointer<Float>?
    let bins: UnsafeMutablePointer<UInt32>?
    let counts: UnsafeMutablePointer<Int>?
    let masses: UnsafeMutablePointer<Double>?
    let candidates: UnsafeMutablePointer<Candidate>?

    init?(vocab: Int, histogram: Bool) {
        self.vocab = vocab
        let blocks = (vocab + blockWidth - 1) / blockWidth
        func alloc<T>(_: T.Type, _ n: Int) -> UnsafeMutablePointer<T>? {
            malloc(max(1, n) * MemoryLayout<T>.stride)?.bindMemory(to: T.self, capacity: max(1, n))
        }
        guard let bs = alloc(Double.self, blocks), let bw = alloc(Float.self, plainBlockWidth) else {
            return nil
        }
        blockSums = bs
        blockWeights = bw
        if histogram {
            weights = alloc(Float.self, vocab)
            bins = alloc(UInt32.self, vocab)
            counts = alloc(Int.self, histogramSize)
            masses = alloc(Double.self, histogramSize)
            candidates = alloc(Candidate.self, vocab)
            guard weights != nil, bins != nil, counts != nil, masses != nil, candidates != nil else {
                freeAll()
                return nil
            }
        } else {
            weights = nil; bins = nil; counts = nil; masses = nil; candidates = nil
        }
    }

    private func freeAll() {
        free(blockSums); free(blockWeights); free(weights); free(bins); free(counts); free(masses); free(candidates)
    }

    deinit { freeAll() }
}

extension RowPlan {
    func truncatedRow(_ x: UnsafePointer<Float>, _ n: Int, _ m: Float, tauF: Float,
                      u: Double, work: SamplerWorkspace) -> RowOutput {
        guard let weights = work.weights, let bins = work.bins, let counts = work.counts,
              let masses = work.masses, let cands = work.candidates
        else { return RowOutput(status: RowStatus.outOfMemory) }

        // Pass B: weights, bins, and the T = 1 sum.
        let mv = SIMD8<Float>(repeating: m)
        let tv = SIMD8<Float>(repeating: tauF)
        let it = SIMD8<Float>(repeating: invT)
        let scale = SIMD8<Float>(repeating: -binsPerNat)
        let lastBin = SIMD8<Float>(repeating: Float(binCount - 1))
        let discard = SIMD8<Float>(repeating: Float(discardBin))
        let magic = SIMD8<Float>(repeating: 8_388_608)  // 2^23: adding it rounds to an integer
        let indexMask = SIMD8<UInt32>(repeating: UInt32(histogramSize - 1))
        var sAll = SIMD8<Float>()  // only to notice NaN
        var i = 0
        while i < n {
            let len = min(blockWidth, n - i)
            var j = 0
            while j < len {
                let xv = load8(x + i + j, len - j)
                let y = (xv - mv) * it
                let w = FastMath.expNonPositive(y)
                var d = y * scale
                d.replace(with: lastBin, where: d .> lastBin)
                d.replace(with: discard, where: xv .< tv)
                let bin = unsafeBitCast(d + magic, to: SIMD8<UInt32>.self) & indexMask
                if len - j >= 8 {
                    UnsafeMutableRawPointer(weights + i + j).storeBytes(of: w, as: SIMD8<Float>.self)
                    UnsafeMutableRawPointer(bins + i + j).storeBytes(of: bin, as: SIMD8<UInt32>.self)
                } else {
                    for lane in 0..<(len - j) {
                        weights[i + j + lane] = w[lane]
                        bins[i + j + lane] = bin[lane]
                    }
                }
                sAll += w
                j &+= 8
            }
            i &+= blockWidth
        }
        guard !sAll.sum().isNaN else { return RowOutput(status: RowStatus.badValue) }

        // Histogram of counts and masses.
        counts.initialize(repeating: 0, count: discardBin + 1)
        masses.initialize(repeating: 0, count: discardBin + 1)
        for k in 0..<n {
            let b = Int(bins[k])
            counts[b] &+= 1
            masses[b] += Double(weights[k])
        }

        // The kept set is: every bin below `cutBin`, plus cands[0..<cutKept] of `cutBin`
        // (cutBin == binCount means no partial bin).
        var cutBin = binCount
        var cutKept = 0
        var cutMass = 0.0
        var countBefore = 0
        if topK > 0 {
            var cum = 0
            var b = 0
            while b < binCount && cum + counts[b] < topK { cum &+= counts[b]; b &+= 1 }
            if b < binCount {  // else min-p left at most k tokens: top-k does not cut
                let size = gather(bin: b, bins: bins, weights: weights, x: x, n: n, into: cands)
                let r = topK - cum
                selectTop(cands, size, r)
                cutBin = b
                cutKept = r
                countBefore = cum
                for q in 0..<r { cutMass += Double(cands[q].w) }
            }
        }
        if topP < 1 {
            var z = 0.0
            for b in 0..<cutBin { z += masses[b] }
            if cutBin < binCount { z += cutMass }
            let q = topP * z
            var cum = 0.0
            var cumCount = 0
            var b = 0
            let last = min(cutBin, binCount - 1)
            var found = false
            while b <= last {
                let mb = b == cutBin ? cutMass : masses[b]
                if cum + mb >= q { found = true; break }
                cum += mb
                cumCount &+= counts[b]
                b &+= 1
            }
            if found {
                let size: Int
                if b == cutBin {
                    size = cutKept
                } else {
                    size = gather(bin: b, bins: bins, weights: weights, x: x, n: n, into: cands)
                }
                let (k, mass) = selectMass(cands, size, q - cum)
                cutBin = b
                cutKept = k
                cutMass = mass
                countBefore = cumCount
            }
        }

        var keptCount = 0
        var z = 0.0
        for b in 0..<min(cutBin, binCount) {
            z += masses[b]
            keptCount &+= counts[b]
        }
        if cutBin < binCount {
            z += cutMass
            keptCount = countBefore + cutKept
        }

        // Draw: walk the bin masses in rank order, then one bin in id order.
        let target = u * z
        var cum = 0.0
        var token = -1
        var b = 0
        while b < min(cutBin, binCount) {
            if cum + masses[b] > target {
                token = drawInBin(b, bins: bins, weights: weights, n: n, cum: cum, target: target)
                break
            }
            cum += masses[b]
            b &+= 1
        }
        if token < 0 && cutBin < binCount {
            for q in 0..<cutKept where cands[q].w > 0 {
                cum += Double(cands[q].w)
                token = Int(cands[q].id)
                if cum > target { break }
            }
        }
        if token < 0 { token = firstMax(x, m) }  // rounding put the target past the total

        var out = RowOutput(token: token, kept: keptCount)
        let gap = Double(x[token]) - Double(m)
        out.logp = gap * invTd - log(z)
        if wantLogpT1 { out.logpT1 = gap - log(sumT1(x, n, m)) }
        return out
    }

    /// Collects the tokens of one bin, in id order.
    func gather(bin: Int, bins: UnsafeMutablePointer<UInt32>, weights: UnsafeMutablePointer<Float>,
                x: UnsafePointer<Float>, n: Int, into cands: UnsafeMutablePointer<Candidate>) -> Int {
        let target = SIMD8<UInt32>(repeating: UInt32(bin))
        var size = 0
        var i = 0
        while i + 8 <= n {
            let bv = UnsafeRawPointer(bins + i).loadUnaligned(as: SIMD8<UInt32>.self)
            if any(bv .== target) {
                for lane in 0..<8 where bv[lane] == UInt32(bin) {
                    cands[size] = Candidate(x: x[i + lane], id: Int32(truncatingIfNeeded: i + lane), w: weights[i + lane])
                    size &+= 1
                }
            }
            i &+= 8
        }
        while i < n {
            if bins[i] == UInt32(bin) {
                cands[size] = Candidate(x: x[i], id: Int32(truncatingIfNeeded: i), w: weights[i])
                size &+= 1
            }
            i &+= 1
        }
        return size
    }

    /// The token of bin `bin` where the running mass, in id order, first exceeds `target`.
    func drawInBin(_ bin: Int, bins: UnsafeMutablePointer<UInt32>, weights: UnsafeMutablePointer<Float>,
                   n: Int, cum: Double, target: Double) -> Int {
        let tv = SIMD8<UInt32>(repeating: UInt32(bin))
        var c = cum
        var last = -1
        var i = 0
        while i + 8 <= n {
            let bv = UnsafeRawPointer(bins + i).loadUnaligned(as: SIMD8<UInt32>.self)
            if any(bv .== tv) {
                for lane in 0..<8 where bv[lane] == UInt32(bin) {
                    let w = weights[i + lane]
                    c += Double(w)
                    if w > 0 {
                        last = i + lane
                        if c > target { return last }
                    }
                }
            }
            i &+= 8
        }
        while i < n {
            if bins[i] == UInt32(bin) {
                let w = weights[i]
                c += Double(w)
                if w > 0 {
                    last = i
                    if c > target { return last }
                }
            }
            i &+= 1
        }
        return last
    }
}

// MARK: - selection under the ranking

/// Rearranges cands[0..<n] so that its first r (1 <= r <= n) are the r highest ranked.
func selectTop(_ c: UnsafeMutablePointer<Candidate>, _ n: Int, _ r: Int) {
    var lo = 0, hi = n
    var rounds = 0
    while hi - lo > 1 {
        rounds &+= 1
        if rounds > 64 {  // adversarial pivots: finish with a sort
            var rest = UnsafeMutableBufferPointer(start: c + lo, count: hi - lo)
            rest.sort(by: ranksAbove)
            return
        }
        let p = partition(c, lo, hi)
        if p == r - 1 || p == r { return }
        if p > r { hi = p } else { lo = p + 1 }
    }
}

/// Rearranges cands[0..<n] so that its first k are the shortest ranked prefix whose mass
/// reaches q (every element of the prefix has less than q ranked strictly above it).
/// Returns k and that prefix's mass. If the whole set falls short of q (rounding), all of
/// it is kept.
func selectMass(_ c: UnsafeMutablePointer<Candidate>, _ n: Int, _ q: Double) -> (Int, Double) {
    var lo = 0, hi = n
    var acc = 0.0  // mass of c[0..<lo], all kept
    var rounds = 0
    while hi > lo {
        rounds &+= 1
        if rounds > 64 {
            var rest = UnsafeMutableBufferPointer(start: c + lo, count: hi - lo)
            rest.sort(by: ranksAbove)
            for k in lo..<hi {
                let next = acc + Double(c[k].w)
                if next >= q { return (k + 1, next) }
                acc = next
            }
            return (hi, acc)
        }
        let p = partition(c, lo, hi)
        var above = 0.0
        for k in lo..<p { above += Double(c[k].w) }
        if acc + above >= q {
            hi = p
        } else if acc + above + Double(c[p].w) >= q {
            return (p + 1, acc + above + Double(c[p].w))
        } else {
            acc += above + Double(c[p].w)
            lo = p + 1
        }
    }
    return (lo, acc)
}

/// Partitions c[lo..<hi] around a median-of-three pivot: afterwards everything ranked above
/// the pivot is before it and everything below after it. Returns the pivot's index.
func partition(_ c: UnsafeMutablePointer<Candidate>, _ lo: Int, _ hi: Int) -> Int {
    let mid = lo + (hi - lo) / 2
    let last = hi - 1
    // Order lo, mid, last so that c[mid] is the median, then park the pivot at the end.
    if ranksAbove(c[mid], c[lo]) { swapAt(c, mid, lo) }
    if ranksAbove(c[last], c[lo]) { swapAt(c, last, lo) }
    if ranksAbove(c[last], c[mid]) { swapAt(c, last, mid) }
    swapAt(c, mid, last)
    let pivot = c[last]
    var store = lo
    for k in lo..<last where ranksAbove(c[k], pivot) {
        swapAt(c, k, store)
        store &+= 1
    }
    swapAt(c, store, last)
    return store
}

@inline(__always)
func swapAt(_ c: UnsafeMutablePointer<Candidate>, _ i: Int, _ j: Int) {
    let t = c[i]; c[i] = c[j]; c[j] = t
}
