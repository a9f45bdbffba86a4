import Glibc
import Synchronization

// The pieces of the fused head's passes: the one walk over row blocks and vocabulary
// chunks, the logits and gradient products of a block (BLAS), and the checks shared by
// forward, backward and loss_and_grad.

extension FusedHead {
    /// The walk every pass shares: the valid rows `cn` at a time, each block with its range
    /// in `valid` and its rows of X (gathered when they are not consecutive). `body` returns
    /// false to stop after a failure it recorded in the workspace.
    func walkBlocks(_ rows: FusedRows, _ work: Workspace, blockRows cn: Int,
                    _ body: (_ s: Range<Int>, _ valid: UnsafeBufferPointer<Int>, _ x: UnsafePointer<Float>) -> Bool) {
        rows.valid.withUnsafeBufferPointer { valid in
            forEachBlock(valid.count, cn) { s in body(s, valid, work.rowsOfX(s, valid)) }
        }
    }

    /// Within a block of m rows, the vocabulary `cv` columns at a time: each chunk's logits
    /// are made into `z` ([m, width]) and handed to `body` with the chunk's first column.
    func walkChunks(_ inp: FusedInputs, x: UnsafePointer<Float>, m: Int, chunk cv: Int,
                    into z: UnsafeMutablePointer<Float>,
                    _ body: (_ v0: Int, _ width: Int, _ z: UnsafeMutablePointer<Float>) -> Void) {
        var v0 = 0
        while v0 < inp.vocab {
            let width = min(cv, inp.vocab - v0)
            logitsBlock(inp, x: x, m: m, v0: v0, width: width, into: z)
            body(v0, width, z)
            v0 += width
        }
    }

    /// Rows and columns of the logits blocks of `forward` and `backward`: at most
    /// chunk_n × chunk_v logits, as tall as the valid rows and the hidden size allow.
    ///
    /// A product with few rows re-packs its W chunk for little work: on OpenBLAS the four
    /// products of forward + backward in 128 × 8192 blocks cost about 1.59 times the three
    /// full-size products (CPU time), and in 1024 × 1024 blocks 1.34 times (the ideal is
    /// 4/3). So the block takes R = max(chunk_n, chunk_n · chunk_v / max(D, 256)) rows,
    /// capped by the valid rows, and chunk_n · chunk_v / R columns, capped by V. R · D stays
    /// within the area too (unless R = chunk_n), which bounds the row scratch; the columns
    /// stay >= 256 (or V) when R grew. chunk_n = chunk_v = 1 still gives 1 × 1 blocks.
    func blockShape(valid: Int, dim: Int, vocab: Int) -> (rows: Int, cols: Int) {
        let (area, o) = chunkN.multipliedReportingOverflow(by: chunkV)
        let a = o ? Int.max : area
        let rows = min(valid, max(chunkN, a / max(dim, 256)))
        let cols = rows == chunkN ? chunkV : a / max(rows, 1)
        return (max(rows, 1), max(1, min(cols, vocab)))
    }

    /// z[m, width] = x[m, D] · W[v0 ..< v0 + width]ᵀ + bias[v0 ..< v0 + width] (raw logits;
    /// the temperature is applied by the row kernels).
    @inline(__always)
    func logitsBlock(_ inp: FusedInputs, x: UnsafePointer<Float>, m: Int, v0: Int, width: Int,
                     into z: UnsafeMutablePointer<Float>) {
        let d = inp.dim
        var beta: Float = 0
        if let b = inp.bias?.baseAddress {
            for i in 0..<m { (z + i * width).update(from: b + v0, count: width) }
            beta = 1
        } else if d == 0 {
            z.update(repeating: 0, count: m * width)
        }
        if d > 0, let w = inp.w.baseAddress {
            Gemm.abT(m: m, n: width, k: d, a: x, lda: d, b: w + v0 * d, ldb: d, beta: beta, c: z, ldc: width)
        }
    }

    /// dx[m, D] (+)= G · W[v0 ..< v0 + width] and dW[v0 ..< v0 + width] += Gᵀ · x.
    @inline(__always)
    func gradientProducts(_ inp: FusedInputs, g: UnsafeMutablePointer<Float>, m: Int, v0: Int, width: Int,
                          x: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, firstChunk: Bool,
                          dW: UnsafeMutablePointer<Float>?) {
        let d = inp.dim
        guard d > 0, let w = inp.w.baseAddress else { return }
        if let dx {
            Gemm.ab(m: m, n: d, k: width, a: g, lda: width, b: w + v0 * d, ldb: d, beta: firstChunk ? 0 : 1,
                    c: dx, ldc: d)
        }
        if let dW {
            Gemm.aTb(m: width, n: d, k: m, a: g, lda: width, b: x, ldb: d, beta: 1, c: dW + v0 * d, ldc: d)
        }
    }

    /// Checks the outputs a successful call wrote. With finite inputs they are finite, unless
    /// a value overflows float32 on the way (huge upstream gradients or weights, a tiny
    /// temperature), an lse or entropy that is not the forward result of these rows inflates
    /// the probabilities, or dW / dbias held a non-finite value before the call added to
    /// them. Any of these is AEPO_ERR_NON_FINITE naming the output and the flat index, never
    /// a silent Inf or NaN. A scan of each output: small next to the products that made it.
    public func checkFinite(outputs: [(String, UnsafeBufferPointer<Float>?)],
                            lse: UnsafeBufferPointer<Double>? = nil) throws(AepoFailure) {
        for (name, buf) in outputs {
            guard let buf, let base = buf.baseAddress,
                  let bad = FiniteScan.firstNonFinite(base, count: buf.count, threads: threads) else { continue }
            throw AepoFailure(.nonFinite, name,
                              "\(name)[\(bad)] is \(buf[bad]) although the inputs are finite: a value overflows float32 "
                              + "(rescale X, W, the upstream gradients or the loss weights), lse and entropy are not the "
                              + "forward results of these rows, or dW / dbias held a non-finite value before the call",
                              index: bad)
        }
        if let lse, let i = lse.firstIndex(where: { !$0.isFinite }) {
            throw AepoFailure(.nonFinite, "lse", "lse[\(i)] is \(lse[i]): the log-sum-exp overflows", index: i)
        }
    }

    func overflowFailure(_ r: Int) -> AepoFailure {
        AepoFailure(.nonFinite, "X",
                    "the logits of row \(r), X[\(r)] · Wᵀ + bias, overflow float32 although X, W and bias are finite; rescale the inputs",
                    index: r)
    }

    /// Output buffers must not overlap an input or each other.
    func checkOutputs(_ inp: FusedInputs, _ outs: [(String, UnsafeRawBufferPointer?)]) throws(AepoFailure) {
        let ins: [(String, UnsafeRawBufferPointer?)] = [
            ("X", UnsafeRawBufferPointer(inp.x)), ("W", UnsafeRawBufferPointer(inp.w)), ("bias", raw(inp.bias)),
            ("targets", UnsafeRawBufferPointer(inp.targets)), ("mask", raw(inp.mask)),
        ]
        for (i, (name, o)) in outs.enumerated() {
            guard let o else { continue }
            for (inName, b) in ins {
                if let b, overlaps(o, b) { throw .invalid(name, "overlaps the input \(inName); outputs must not alias inputs") }
            }
            for (other, p) in outs[(i + 1)...] {
                if let p, overlaps(o, p) { throw .invalid(name, "overlaps \(other); outputs must be distinct buffers") }
            }
        }
    }
}

/// Adds the rank-one update of a single logits-gradient entry G[r, j] = value to the
/// products: dX_r += value · W_j, dW_j += value · X_r, dbias_j += value.
struct RankOneUpdates {
    let w: UnsafePointer<Float>?
    let d: Int
    let dW: UnsafeMutablePointer<Float>?
    let biasSums: BiasSums

    init(_ inp: FusedInputs, dW: UnsafeMutablePointer<Float>?, biasSums: BiasSums) {
        w = inp.w.baseAddress
        d = inp.dim
        self.dW = dW
        self.biasSums = biasSums
    }
    @inline(__always)
    func apply(row x: UnsafePointer<Float>, dxRow: UnsafeMutablePointer<Float>?, column j: Int, value: Double) {
        biasSums.addPoint(j, value)
        let v = Float(value)
        guard v != 0, d > 0, let w else { return }
        if let dxRow { axpy(dxRow, v, w + j * d, d) }
        if let dW { axpy(dW + j * d, v, x, d) }
    }
}
/// y[0..<n] += a · x[0..<n].
@inline(__always)
func axpy(_ y: UnsafeMutablePointer<Float>, _ a: Float, _ x: UnsafePointer<Float>, _ n: Int) {
    let yr = UnsafeMutableRawPointer(y), xr = UnsafeRawPointer(x)
    let av = SIMD8<Float>(repeating: a)
    var k = 0
    while k &+ 8 <= n {
        let v = yr.loadUnaligned(fromByteOffset: k &* 4, as: SIMD8<Float>.self)
            + av * xr.loadUnaligned(fromByteOffset: k &* 4, as: SIMD8<Float>.self)
        yr.storeBytes(of: v, toByteOffset: k &* 4, as: SIMD8<Float>.self)
        k &+= 8
    }
    while k < n { y[k] += a * x[k]; k &+= 1 }
}

/// The bytes of an optional buffer, for overlap checks.
@inline(__always)
func raw<T>(_ b: UnsafeMutableBufferPointer<T>?) -> UnsafeRawBufferPointer? {
    b.map { UnsafeRawBufferPointer(UnsafeMutableRawBufferPointer($0)) }
}

@inline(__always)
func raw<T>(_ b: UnsafeBufferPointer<T>?) -> UnsafeRawBufferPointer? {
    b.map { UnsafeRawBufferPointer($0) }
}
/// Runs `body(i)` for every i in 0..<count on `threads` pthreads that take small runs of rows
/// from a shared counter, so a thread the OS parks for a while does not hold the others up.
/// Each row's work must not depend on which thread runs it; then the result does not depend
/// on the schedule or the thread count. `minPerThread` rows per thread at least.
func forEachRow(_ count: Int, threads: Int, minPerThread: Int, _ body: (Int) -> Void) {
    let workers = max(1, min(threads, count / max(minPerThread, 1)))
    guard workers > 1 else {
        for i in 0..<count { body(i) }
        return
    }
    // About eight runs per worker, so the last runs balance the load.
    let grain = max(1, count / (8 * workers))
    let next = Atomic<Int>(0)
    parallelRanges(count: workers, threads: workers) { mine in
        for _ in mine {
            while true {
                let lo = next.wrappingAdd(grain, ordering: .relaxed).oldValue
                if lo >= count { break }
                for i in lo..<min(lo + grain, count) { body(i) }
            }
        }
    }
}
