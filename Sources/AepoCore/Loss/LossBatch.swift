/// One call's inputs to the policy loss: borrowed views of the caller's buffers plus the
/// counts that make micro-batches add up.
///
/// Shapes: `logp`, `oldLogp`, `mask` and the optional `refLogp`, `isWeights`, `entropy`
/// are [B, L] row-major; `advantages` is [B] (one value per sequence) or [B, L]
/// (`advantagesPerToken`); `regRows` is [B]. Positions with mask = 0 are never read for
/// validation and may hold anything, NaN included.
public struct LossBatch {
    public var rows: Int
    public var length: Int
    public var logp: UnsafeBufferPointer<Float>
    public var oldLogp: UnsafeBufferPointer<Float>
    public var advantages: UnsafeBufferPointer<Float>
    public var advantagesPerToken: Bool
    public var mask: UnsafeBufferPointer<UInt8>
    public var refLogp: UnsafeBufferPointer<Float>?
    public var isWeights: UnsafeBufferPointer<Float>?
    public var entropy: UnsafeBufferPointer<Float>?
    /// 1 marks a regulariser row (its advantage is taken as 1; see `RegularizerCombine`).
    public var regRows: UnsafeBufferPointer<UInt8>?
    /// Weight of the `weighted` regulariser term; nil uses `regularizer.alpha`.
    public var regAlpha: Double?
    /// Valid main-row tokens of the whole mini-batch across micro-batches and ranks.
    public var globalTokens: Int?
    /// Non-empty main rows of the whole mini-batch across micro-batches and ranks.
    public var globalSeqs: Int?
    /// Valid regulariser-row tokens of the whole mini-batch (`weighted` only).
    public var globalRegTokens: Int?
    public var dpSize: Int
    /// Training step; keys the random choices of modes that make any (none in vanilla).
    public var step: Int64

    public init(rows: Int, length: Int, logp: UnsafeBufferPointer<Float>, oldLogp: UnsafeBufferPointer<Float>,
                advantages: UnsafeBufferPointer<Float>, advantagesPerToken: Bool, mask: UnsafeBufferPointer<UInt8>,
                refLogp: UnsafeBufferPointer<Float>? = nil, isWeights: UnsafeBufferPointer<Float>? = nil,
                entropy: UnsafeBufferPointer<Float>? = nil, regRows: UnsafeBufferPointer<UInt8>? = nil,
                regAlpha: Double? = nil, globalTokens: Int? = nil, globalSeqs: Int? = nil,
                globalRegTokens: Int? = nil, dpSize: Int = 1, step: Int64 = 0) {
        self.rows = rows
        self.length = length
        self.logp = logp
        self.oldLogp = oldLogp
        self.advantages = advantages
        self.advantagesPerToken = advantagesPerToken
        self.mask = mask
        self.refLogp = refLogp
        self.isWeights = isWeights
        self.entropy = entropy
        self.regRows = regRows
        self.regAlpha = regAlpha
        self.globalTokens = globalTokens
        self.globalSeqs = globalSeqs
        self.globalRegTokens = globalRegTokens
        self.dpSize = dpSize
        self.step = step
    }

    /// B * L, or a shape error when it overflows.
    public func tokenCount() throws(AepoFailure) -> Int {
        guard rows >= 0 else { throw .shape("B", "must be >= 0, got \(rows)") }
        guard length >= 0 else { throw .shape("L", "must be >= 0, got \(length)") }
        let (n, o) = rows.multipliedReportingOverflow(by: length)
        guard !o else { throw .shape("B", "B * L overflows (B = \(rows), L = \(length))") }
        return n
    }

    /// Checks every buffer length against B and L.
    public func checkShapes() throws(AepoFailure) {
        let n = try tokenCount()
        func need(_ name: String, _ count: Int, _ want: Int, _ what: String) throws(AepoFailure) {
            if count != want { throw .shape(name, "has \(count) elements, expected \(want) (\(what))") }
        }
        try need("logp", logp.count, n, "B * L")
        try need("old_logp", oldLogp.count, n, "B * L")
        try need("mask", mask.count, n, "B * L")
        try need("advantages", advantages.count, advantagesPerToken ? n : rows,
                 advantagesPerToken ? "B * L, per token" : "B, per sequence")
        if let r = refLogp { try need("ref_logp", r.count, n, "B * L") }
        if let r = isWeights { try need("is_weights", r.count, n, "B * L") }
        if let r = entropy { try need("entropy", r.count, n, "B * L") }
        if let r = regRows { try need("reg_rows", r.count, rows, "B") }
        guard dpSize >= 1 else { throw .invalid("dp_size", "must be >= 1, got \(dpSize)") }
        if let a = regAlpha, !(a.isFinite && a >= 0) {
            throw .invalid("reg_alpha", "must be a finite real >= 0, got \(a)")
        }
    }
}
