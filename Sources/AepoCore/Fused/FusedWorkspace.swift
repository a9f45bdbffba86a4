/// The scratch of one fused-head call: the logits block, and row buffers for blocks whose
/// valid rows are not consecutive in X.
///
/// Sizes: z is blockRows × blockCols floats. xs and dxs (blockRows × D each) exist only when
/// some block has a masked row inside it; a block of consecutive valid rows reads X and
/// writes dX in place.
final class Workspace {
    let z: UnsafeMutablePointer<Float>
    private let zScratch: FusedScratch<Float>
    private let xs: FusedScratch<Float>?
    private let dxs: FusedScratch<Float>?
    private let x: UnsafePointer<Float>?
    private let d: Int
    /// The first failure of a block loop, reported after the loop.
    var failure: AepoFailure?

    /// - gather: whether X rows are read (false when D = 0);
    /// - dxRows: whether dX rows are written.
    init(rows: FusedRows, inputs: FusedInputs, blockRows: Int, blockCols: Int, gather: Bool, dxRows: Bool,
         colKnob: String) throws(AepoFailure) {
        let (zc, o) = blockRows.multipliedReportingOverflow(by: blockCols)
        guard !o else {
            throw AepoFailure(.outOfMemory, colKnob, "the logits block of \(blockRows) × \(blockCols) floats is too large; lower \(colKnob)")
        }
        zScratch = try FusedScratch<Float>.allocate(zc, what: "logits block of \(blockRows) × \(blockCols) floats",
                                                    knob: colKnob)
        z = zScratch.base
        d = inputs.dim
        x = inputs.x.baseAddress
        var holes = false
        forEachBlock(rows.valid.count, blockRows) { s in
            if !rows.isContiguous(s) { holes = true }
            return !holes
        }
        let rowFloats = blockRows * d  // <= N * D, which fits
        var gathered: FusedScratch<Float>?
        do {
            gathered = holes && gather ? try FusedScratch<Float>.allocate(rowFloats, what: "gathered rows of X", knob: "fused.chunk_n") : nil
            dxs = holes && dxRows ? try FusedScratch<Float>.allocate(rowFloats, what: "rows of dX", knob: "fused.chunk_n") : nil
        } catch {
            zScratch.free()
            gathered?.free()
            throw error
        }
        xs = gathered
    }

    func free() {
        zScratch.free()
        xs?.free()
        dxs?.free()
    }

    /// The rows of X of block `s` as an m × D matrix with leading dimension D: X itself for
    /// consecutive rows, else a gathered copy. (Any valid pointer when D = 0: never read.)
    func rowsOfX(_ s: Range<Int>, _ valid: UnsafeBufferPointer<Int>) -> UnsafePointer<Float> {
        guard d > 0, let x else { return UnsafePointer(z) }
        let r0 = valid[s.lowerBound]
        if valid[s.upperBound - 1] - r0 == s.count - 1 { return x + r0 * d }
        guard let xs else { return x + r0 * d }
        for (i, j) in s.enumerated() { (xs.base + i * d).update(from: x + valid[j] * d, count: d) }
        return UnsafePointer(xs.base)
    }

    /// Where the block's dX rows are formed: dX itself for consecutive rows, else scratch
    /// that `scatterDX` copies out. Nil without dX or when D = 0.
    func rowsOfDX(_ s: Range<Int>, _ valid: UnsafeBufferPointer<Int>, _ dX: UnsafeMutablePointer<Float>?)
        -> UnsafeMutablePointer<Float>? {
        guard d > 0, let dX else { return nil }
        let r0 = valid[s.lowerBound]
        if valid[s.upperBound - 1] - r0 == s.count - 1 { return dX + r0 * d }
        return dxs?.base
    }

    func scatterDX(_ s: Range<Int>, _ valid: UnsafeBufferPointer<Int>, _ dX: UnsafeMutablePointer<Float>?) {
        guard d > 0, let dX, let dxs else { return }
        let r0 = valid[s.lowerBound]
        if valid[s.upperBound - 1] - r0 == s.count - 1 { return }
        for (i, j) in s.enumerated() { (dX + valid[j] * d).update(from: dxs.base + i * d, count: d) }
    }
}

/// Column sums of the logits gradient, i.e. the bias gradient: float32 over the rows of a
/// block in row order, then float64 across blocks. Columns are split over threads; every
/// column is summed in the same order whatever the split, so the result does not depend on
/// the thread count.
final class BiasSums {
    private let acc: FusedScratch<Double>?
    private let tmp: FusedScratch<Float>?
    private let vocab: Int

    /// `vocab` = 0 means no bias gradient is wanted (nothing is allocated).
    init(vocab: Int, blockCols: Int) throws(AepoFailure) {
        self.vocab = vocab
        guard vocab > 0 else { acc = nil; tmp = nil; return }
        let a = try FusedScratch<Double>.allocate(vocab, what: "bias-gradient sums", knob: "V")
        a.base.initialize(repeating: 0, count: vocab)
        do {
            tmp = try FusedScratch<Float>.allocate(min(blockCols, vocab), what: "bias-gradient block sums", knob: "fused.chunk_v")
        } catch {
            a.free()
            throw error
        }
        acc = a
    }

    func free() {
        acc?.free()
        tmp?.free()
    }

    /// acc[v0 + j] += Σ_i g[i, j] for the m × cols block g (leading dimension cols).
    func add(_ g: UnsafePointer<Float>, rows m: Int, cols: Int, at v0: Int, threads: Int) {
        guard let acc, let tmp, m > 0 else { return }
        let t = tmp.base, a = acc.base + v0
        parallelRanges(count: cols, threads: threads, minPerThread: 4096) { range in
            let c0 = range.lowerBound, n = range.count
            (t + c0).update(from: g + c0, count: n)
            for i in 1..<max(m, 1) {
                addRow(t + c0, g + i * cols + c0, n)
            }
            for j in range { a[j] += Double(t[j]) }
        }
    }

    /// acc[j] += value (a single entry of the logits gradient).
    @inline(__always)
    func addPoint(_ j: Int, _ value: Double) {
        acc?.base[j] += value
    }

    /// dbias[j] = dbias[j] + acc[j], rounded once.
    func addInto(_ dbias: UnsafeMutableBufferPointer<Float>) {
        guard let acc else { return }
        for j in 0..<min(vocab, dbias.count) { dbias[j] = Float(Double(dbias[j]) + acc.base[j]) }
    }

    @inline(__always)
    private func addRow(_ t: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ n: Int) {
        let tr = UnsafeMutableRawPointer(t), gr = UnsafeRawPointer(g)
        var j = 0
        while j &+ 8 <= n {
            let s = tr.loadUnaligned(fromByteOffset: j &* 4, as: SIMD8<Float>.self)
                + gr.loadUnaligned(fromByteOffset: j &* 4, as: SIMD8<Float>.self)
            tr.storeBytes(of: s, toByteOffset: j &* 4, as: SIMD8<Float>.self)
            j &+= 8
        }
        while j < n { t[j] += g[j]; j &+= 1 }
    }
}
