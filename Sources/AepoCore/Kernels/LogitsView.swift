/// A strided view of logits shaped [B, L, V]: element (b, l, v) sits at
/// `base[b * batchStride + l * rowStride + v]`. Rows are numbered r = b * L + l, which is also
/// the index into every per-row array (targets, mask, logp, ...).
///
/// The vocabulary axis is always contiguous. A shifted view `logits[:, :-1]` of a
/// [B, L + 1, V] tensor is `LogitsLayout(batch: B, rows: L, vocab: V, batchStride: (L + 1) * V,
/// rowStride: V)` and needs no copy.
public struct LogitsLayout: Equatable, Sendable {
    public let batch: Int
    public let rows: Int
    public let vocab: Int
    public let batchStride: Int
    public let rowStride: Int
    /// B * L.
    public let count: Int
    /// One past the last element any row touches (0 when there are no rows).
    public let extent: Int

    /// Validates the shape and strides for the argument named `name`.
    ///
    /// Rules: every size and stride is >= 0; V >= 1 when there are rows; the B * L rows do not
    /// overlap (for the axes that have more than one entry, the smaller stride is >= V and
    /// the larger one is >= the smaller times its count); and B * L and the extent fit in an
    /// Int. A stride is ignored for an axis of size 1.
    public init(batch: Int, rows: Int, vocab: Int, batchStride: Int, rowStride: Int,
                name: String = "logits") throws(AepoFailure) {
        guard batch >= 0 else { throw .shape("B", "must be >= 0, got \(batch)") }
        guard rows >= 0 else { throw .shape("L", "must be >= 0, got \(rows)") }
        guard vocab >= 0 else { throw .shape("V", "must be >= 0, got \(vocab)") }
        // The C names: stride_b / stride_l for logits, out_stride_b / out_stride_l for out.
        let prefix = name == "logits" ? "" : "\(name)_"
        guard batchStride >= 0 else {
            throw .shape("\(prefix)stride_b", "must be >= 0, got \(batchStride) (negative strides are not supported)")
        }
        guard rowStride >= 0 else {
            throw .shape("\(prefix)stride_l", "must be >= 0, got \(rowStride) (negative strides are not supported)")
        }
        let (n, o1) = batch.multipliedReportingOverflow(by: rows)
        guard !o1 else { throw .shape("B", "B * L overflows (B = \(batch), L = \(rows))") }
        self.batch = batch
        self.rows = rows
        self.vocab = vocab
        self.batchStride = batch > 1 ? batchStride : 0
        self.rowStride = rows > 1 ? rowStride : 0
        self.count = n
        guard n > 0 else { self.extent = 0; return }
        guard vocab >= 1 else { throw .shape("V", "must be >= 1, got 0") }

        // Non-overlap of the rows, over the axes that have more than one entry.
        var axes: [(stride: Int, count: Int, arg: String)] = []
        if batch > 1 { axes.append((batchStride, batch, "\(prefix)stride_b")) }
        if rows > 1 { axes.append((rowStride, rows, "\(prefix)stride_l")) }
        axes.sort { $0.stride < $1.stride }
        if let inner = axes.first, inner.stride < vocab {
            throw .shape(inner.arg, "is \(inner.stride), smaller than V = \(vocab): rows of \(name) would overlap")
        }
        if axes.count == 2 {
            let (span, o) = axes[0].stride.multipliedReportingOverflow(by: axes[0].count)
            if o || axes[1].stride < span {
                throw .shape(axes[1].arg,
                             "is \(axes[1].stride), smaller than \(axes[0].count) * \(axes[0].stride) = the span of the other axis: rows of \(name) would overlap")
            }
        }
        // extent = (B - 1) * sb + (L - 1) * sl + V.
        let (eb, ob) = (batch - 1).multipliedReportingOverflow(by: self.batchStride)
        let (el, ol) = (rows - 1).multipliedReportingOverflow(by: self.rowStride)
        let (e1, oa) = eb.addingReportingOverflow(el)
        let (e2, oc) = e1.addingReportingOverflow(vocab)
        guard !(ob || ol || oa || oc) else {
            throw .shape(name, "the extent of the view overflows (B = \(batch), L = \(rows), V = \(vocab), strides \(batchStride), \(rowStride))")
        }
        self.extent = e2
    }

    /// A contiguous [N, V] matrix.
    public init(rows: Int, vocab: Int, name: String = "logits") throws(AepoFailure) {
        try self.init(batch: 1, rows: rows, vocab: vocab, batchStride: 0, rowStride: vocab, name: name)
    }

    /// Element offset of row r (0 <= r < count).
    @inline(__always)
    public func offset(ofRow r: Int) -> Int {
        if batch == 1 { return r &* rowStride }
        let b = r / rows
        return b &* batchStride &+ (r &- b &* rows) &* rowStride
    }
}
