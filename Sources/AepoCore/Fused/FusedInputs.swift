/// The inputs every fused-head call shares: hidden states, the output projection, an
/// optional bias, the target ids and an optional token mask.
///
/// Shapes: `x` [N, D] row-major, `w` [V, D] row-major (one row per vocabulary entry, as in
/// `torch.nn.Linear(D, V).weight`), `bias` [V], `targets` [N], `mask` [N] holding 0 or 1
/// (nil means every row is valid). The logits of row r are z = (x_r · Wᵀ + bias) / T.
///
/// Rows with mask = 0 are never read: X may hold NaN there and targets any id (-100
/// included). Their outputs are 0.
public struct FusedInputs {
    public var x: UnsafeBufferPointer<Float>
    public var w: UnsafeBufferPointer<Float>
    public var bias: UnsafeBufferPointer<Float>?
    public var targets: UnsafeBufferPointer<Int32>
    public var mask: UnsafeBufferPointer<UInt8>?
    /// N, the number of token rows.
    public var rows: Int
    /// D, the hidden size.
    public var dim: Int
    /// V, the vocabulary size.
    public var vocab: Int

    public init(x: UnsafeBufferPointer<Float>, w: UnsafeBufferPointer<Float>, bias: UnsafeBufferPointer<Float>? = nil,
                targets: UnsafeBufferPointer<Int32>, mask: UnsafeBufferPointer<UInt8>? = nil,
                rows: Int, dim: Int, vocab: Int) {
        self.x = x
        self.w = w
        self.bias = bias
        self.targets = targets
        self.mask = mask
        self.rows = rows
        self.dim = dim
        self.vocab = vocab
    }

    /// Checks shapes and values, and lists the valid rows. Nothing is written.
    ///
    /// Order of the checks: sizes (negative, overflowing, beyond what BLAS can address),
    /// buffer lengths, mask values, targets under mask = 1, then finiteness of X under
    /// mask = 1, of W and of bias. The first failure is reported, lowest index first.
    func validate(threads: Int) throws(AepoFailure) -> FusedRows {
        let n = rows, d = dim, v = vocab
        guard n >= 0 else { throw .shape("N", "must be >= 0, got \(n)") }
        guard d >= 0 else { throw .shape("D", "must be >= 0, got \(d)") }
        guard v >= 0 else { throw .shape("V", "must be >= 0, got \(v)") }
        guard d <= Gemm.maxDimension else {
            throw .shape("D", "is \(d); BLAS takes 32-bit sizes, so D must be <= \(Gemm.maxDimension)")
        }
        let (nd, o1) = n.multipliedReportingOverflow(by: d)
        guard !o1 else { throw .shape("X", "N * D overflows (N = \(n), D = \(d))") }
        let (vd, o2) = v.multipliedReportingOverflow(by: d)
        guard !o2 else { throw .shape("W", "V * D overflows (V = \(v), D = \(d))") }
        let (_, o3) = n.multipliedReportingOverflow(by: v)
        guard !o3 else { throw .shape("V", "N * V overflows (N = \(n), V = \(v))") }

        try need("X", x.count, nd, "N * D = \(n) * \(d)")
        try need("W", w.count, vd, "V * D = \(v) * \(d)")
        if let bias { try need("bias", bias.count, v, "V") }
        try need("targets", targets.count, n, "N")
        if let mask { try need("mask", mask.count, n, "N") }

        var valid = [Int]()
        valid.reserveCapacity(n)
        for r in 0..<n {
            if let mask {
                let m = mask[r]
                guard m <= 1 else { throw .invalid("mask", "mask[\(r)] = \(m); expected 0 or 1", index: r) }
                if m == 0 { continue }
            }
            let t = targets[r]
            guard t >= 0, Int(t) < v else {
                throw .invalid("targets", "targets[\(r)] = \(t) is out of range [0, \(v)) under mask = 1", index: r)
            }
            valid.append(r)
        }

        if d > 0, let xb = x.baseAddress {
            // Valid rows only: masked rows of X may hold anything.
            if let bad = FiniteScan.firstNonFinite(rows: valid, base: xb, rowLength: d, threads: threads) {
                let r = bad / d, k = bad % d
                throw AepoFailure(.nonFinite, "X",
                                  "X[\(r), \(k)] is \(xb[bad]) under mask = 1; hidden states must be finite",
                                  index: bad)
            }
        }
        if let wb = w.baseAddress, let bad = FiniteScan.firstNonFinite(wb, count: vd, threads: threads) {
            throw AepoFailure(.nonFinite, "W", "W[\(bad / max(d, 1)), \(bad % max(d, 1))] is \(wb[bad]); weights must be finite",
                              index: bad)
        }
        if let bias, let bb = bias.baseAddress, let bad = FiniteScan.firstNonFinite(bb, count: v, threads: 1) {
            throw AepoFailure(.nonFinite, "bias", "bias[\(bad)] is \(bb[bad]); the bias must be finite", index: bad)
        }
        return FusedRows(valid: valid, count: n)
    }
}

@inline(__always)
func need(_ name: String, _ count: Int, _ want: Int, _ what: String) throws(AepoFailure) {
    if count != want { throw .shape(name, "has \(count) elements, expected \(want) (\(what))") }
}

/// The rows with mask = 1, in order, and how they are cut into row blocks.
struct FusedRows {
    /// Indices of the valid rows, ascending.
    let valid: [Int]
    /// N, all rows.
    let count: Int

    /// Whether rows first...last of a block are consecutive in X (then X is used in place).
    @inline(__always)
    func isContiguous(_ s: Range<Int>) -> Bool {
        valid[s.upperBound - 1] - valid[s.lowerBound] == s.count - 1
    }

    /// Rows with mask = 0, in order.
    func forEachMasked(_ body: (Int) -> Void) {
        var next = 0
        for r in valid {
            while next < r { body(next); next += 1 }
            next = r + 1
        }
        while next < count { body(next); next += 1 }
    }
}

/// Finiteness scans over float buffers: a vector pass that only detects (x * 0 is NaN exactly
/// when x is NaN or ±inf), then a scalar pass that finds the first offender.
enum FiniteScan {
    /// Whether x[0..<n] are all finite.
    @inline(__always)
    static func allFinite(_ x: UnsafePointer<Float>, _ n: Int) -> Bool {
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        let raw = UnsafeRawPointer(x)
        var i = 0
        while i &+ 32 <= n {
            a0 += raw.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self) * 0
            a1 += raw.loadUnaligned(fromByteOffset: (i &+ 8) &* 4, as: SIMD8<Float>.self) * 0
            a2 += raw.loadUnaligned(fromByteOffset: (i &+ 16) &* 4, as: SIMD8<Float>.self) * 0
            a3 += raw.loadUnaligned(fromByteOffset: (i &+ 24) &* 4, as: SIMD8<Float>.self) * 0
            i &+= 32
        }
        var s: Float = 0
        while i < n { s += x[i] * 0; i &+= 1 }
        let a = (a0 + a1) + (a2 + a3)
        return (a.sum() + s) == 0
    }

    /// Index of the first non-finite element of x[0..<count], or nil.
    static func firstNonFinite(_ x: UnsafePointer<Float>, count: Int, threads: Int) -> Int? {
        let block = 1 << 16
        let blocks = (count + block - 1) / block
        guard blocks > 0 else { return nil }
        let bad = UnsafeMutablePointer<Bool>.allocate(capacity: blocks)
        defer { bad.deallocate() }
        bad.initialize(repeating: false, count: blocks)
        parallelRanges(count: blocks, threads: threads, minPerThread: 16) { range in
            for b in range {
                let lo = b * block
                bad[b] = !allFinite(x + lo, min(block, count - lo))
            }
        }
        for b in 0..<blocks where bad[b] {
            let lo = b * block
            for i in lo..<min(lo + block, count) where !x[i].isFinite { return i }
        }
        return nil
    }

    /// Flat index (row * rowLength + column) of the first non-finite element of the listed
    /// rows, or nil.
    static func firstNonFinite(rows: [Int], base: UnsafePointer<Float>, rowLength: Int, threads: Int) -> Int? {
        guard !rows.isEmpty else { return nil }
        let bad = UnsafeMutablePointer<Bool>.allocate(capacity: rows.count)
        defer { bad.deallocate() }
        bad.initialize(repeating: false, count: rows.count)
        rows.withUnsafeBufferPointer { rp in
            parallelRanges(count: rp.count, threads: threads, minPerThread: max(1, (1 << 16) / max(rowLength, 1))) { range in
                for j in range { bad[j] = !allFinite(base + rp[j] * rowLength, rowLength) }
            }
        }
        for j in 0..<rows.count where bad[j] {
            let lo = rows[j] * rowLength
            for i in lo..<(lo + rowLength) where !base[i].isFinite { return i }
        }
        return nil
    }
}

@inline(__always)
func overlaps(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    guard let a0 = a.baseAddress, let b0 = b.baseAddress, a.count > 0, b.count > 0 else { return false }
    let x0 = UInt(bitPattern: a0), y0 = UInt(bitPattern: b0)
    return x0 < y0 &+ UInt(b.count) && y0 < x0 &+ UInt(a.count)
}

func needOut(_ name: String, _ b: UnsafeMutableBufferPointer<Float>?, _ want: Int) throws(AepoFailure) {
    if let b { try need(name, b.count, want, name == "dX" ? "N * D" : name == "dW" ? "V * D" : name == "dbias" ? "V" : "N") }
}

func needIn(_ name: String, _ b: UnsafeBufferPointer<Float>, _ want: Int) throws(AepoFailure) {
    try need(name, b.count, want, "N")
}

@inline(__always)
func finiteAt<T: BinaryFloatingPoint>(_ name: String, _ b: UnsafeBufferPointer<T>, _ r: Int) throws(AepoFailure) {
    let v = b[r]
    guard v.isFinite else {
        throw AepoFailure(.nonFinite, name, "\(name)[\(r)] is \(v) under mask = 1; it must be finite", index: r)
    }
}

/// Calls `body` with consecutive ranges of at most `size` of 0..<count, in order, until it
/// returns false.
@inline(__always)
func forEachBlock(_ count: Int, _ size: Int, _ body: (Range<Int>) -> Bool) {
    var s = 0
    while s < count {
        let e = min(count, s + size)
        if !body(s..<e) { return }
        s = e
    }
}
