import Glibc
import Synchronization

/// The fused LM head: log-probs, exact entropy, the policy loss and every gradient straight
/// from hidden states, with the [N, V] logits never materialised.
///
/// Shapes (see `FusedInputs`): X [N, D], W [V, D], bias [V], targets [N], mask [N]. With
/// T the policy temperature and z_r = (x_r · Wᵀ + bias) / T:
///
///     log p_r = z_r[t_r] − lse(z_r),   H_r = lse(z_r) − Σ_j softmax(z_r)_j · z_r[j]
///
/// and, for upstream gradients g_logp and g_H, the logits gradient
///
///     G[r, j] = dL/d(x_r·w_j + b_j) = (g_logp (1[j = t_r] − p_j) − g_H p_j (log p_j + H_r)) / T
///
/// gives dX = G · W, dW = Gᵀ · X and dbias = column sums of G.
///
/// How the work is cut:
/// - The valid rows (mask = 1) are taken in order, one row block at a time (chunk_n rows in
///   `lossAndGrad`, `blockShape` rows in `forward` and `backward`). A block whose rows are
///   consecutive in X is used in place; otherwise its rows are gathered into scratch, so
///   masked rows (which may hold NaN) never enter a product.
/// - `forward` and `backward` walk each row block over the vocabulary: one `cblas_sgemm`
///   makes a logits block of at most chunk_n × chunk_v entries (as tall as `blockShape`
///   allows), the row statistics are updated online (`SoftmaxRowAccumulator`), and in the
///   backward pass the block is turned into G in place (`SoftmaxRowGradient`) and fed to the
///   two gradient products. Peak extra memory: the block (chunk_n × chunk_v floats at most),
///   gathered X and dX rows when the mask has holes (R × D each), and O(N + V).
/// - `lossAndGrad` makes the whole chunk_n × V logits block of a row block with one
///   product; one pass per row then finishes its statistics, runs the loss engine's token
///   kernel on its token and turns the row into G; then the two gradient products run:
///   every logit is produced exactly once. Peak extra memory: chunk_n × V floats, chunk_n × D
///   for each of gathered X and dX rows when the mask has holes, and O(N + V).
///
/// Threads: the row statistics, the G pass and the bias column sums split rows (or
/// columns) over `threads` pthreads with a fixed order of summation per row (per column),
/// so results are bit-identical for every `threads`. The three products run on OpenBLAS's
/// own threads (`Gemm`).
///
/// Numerical properties: products in float32 (BLAS); row statistics as
/// `SoftmaxRowAccumulator` (float32 block sums, float64 across blocks); per-token results
/// rounded once to float32; bias gradients summed in float32 within a row block and in
/// float64 across blocks. Two chunk settings differ only by float32 rounding (of the
/// products and of the block sums).
public struct FusedHead: Sendable {
    public let config: FusedConfig
    let chunkN: Int
    let chunkV: Int
    let temperature: Double
    let threads: Int

    /// Rows (or columns) per thread are chosen so that every thread gets at least this many
    /// elements of a block.
    static let minElementsPerThread = 1 << 15

    /// Reads a `fused` section; every key is checked against the schema (a zero chunk names
    /// `fused.chunk_n` or `fused.chunk_v`).
    public init(config: FusedConfig) throws(AepoFailure) {
        var whole = Config()
        whole.fused = config
        for f in ConfigSchema.fields where f.path.hasPrefix("fused.") { try f.check(f.get(whole)) }
        self.config = config
        chunkN = Int(config.chunkN)
        chunkV = Int(config.chunkV)
        temperature = config.temperature
        threads = Int(config.threads)
    }

    // MARK: forward

    /// log p, H (float32) and lse (float64, as the backward pass reads it back) per row; each
    /// output is [N] and optional, and 0 where mask = 0.
    ///
    /// Validates everything before writing any output. The only error found later is a
    /// logits row that overflows float32 although X, W and bias are finite.
    public func forward(_ inp: FusedInputs, logp: UnsafeMutableBufferPointer<Float>? = nil,
                        entropy: UnsafeMutableBufferPointer<Float>? = nil,
                        lse: UnsafeMutableBufferPointer<Double>? = nil) throws(AepoFailure) {
        let rows = try inp.validate(threads: threads)
        try needOut("logp", logp, inp.rows)
        try needOut("entropy", entropy, inp.rows)
        if let lse { try need("lse", lse.count, inp.rows, "N") }
        try checkOutputs(inp, [("logp", raw(logp)), ("entropy", raw(entropy)), ("lse", raw(lse))])
        rows.forEachMasked { r in
            logp?[r] = 0
            entropy?[r] = 0
            lse?[r] = 0
        }
        let nValid = rows.valid.count
        guard nValid > 0 else { return }
        let (cn, cv) = blockShape(valid: nValid, dim: inp.dim, vocab: inp.vocab)
        let work = try Workspace(rows: rows, inputs: inp, blockRows: cn, blockCols: cv, gather: true,
                                 dxRows: false, colKnob: "fused.chunk_v")
        defer { work.free() }
        let stats = try FusedScratch<SoftmaxRowAccumulator>.allocate(cn, what: "row statistics", knob: "fused.chunk_n")
        defer { stats.free() }
        let targetLogit = try FusedScratch<Float>.allocate(cn, what: "target logits", knob: "fused.chunk_n")
        defer { targetLogit.free() }

        let T = temperature
        let tg = inp.targets
        walkBlocks(rows, work, blockRows: cn) { s, valid, x in
            let m = s.count
            for i in 0..<m {
                (stats.base + i).initialize(to: SoftmaxRowAccumulator(temperature: T, logpAtT1: false))
            }
            walkChunks(inp, x: x, m: m, chunk: cv, into: work.z) { v0, width, z in
                forEachRow(m, threads: threads, minPerThread: max(1, Self.minElementsPerThread / width)) { i in
                    do {
                        let zr = z + i * width
                        stats.base[i].add(zr, count: width)
                        let t = Int(tg[valid[s.lowerBound + i]]) - v0
                        if t >= 0 && t < width { targetLogit.base[i] = zr[t] }
                    }
                }
            }
            for i in 0..<m {
                let r = valid[s.lowerBound + i]
                let a = stats.base[i]
                if a.nonFinite || a.allNegativeInfinity {
                    work.failure = overflowFailure(r)
                    return false
                }
                logp?[r] = Float(a.logp(targetLogit: targetLogit.base[i]))
                entropy?[r] = Float(a.entropy)
                lse?[r] = a.lse
            }
            return true
        }
        if let f = work.failure { throw f }
    }

    // MARK: backward

    /// dX [N, D] (written; 0 where mask = 0), and dW [V, D] and dbias [V] added into, for
    /// L = Σ_r g_logp[r] log p_r + g_H[r] H_r. Each output is optional.
    ///
    /// `lse` [N] is required; `entropy` [N] is required with `gradEntropy`. `gradLogp` and
    /// `gradEntropy` [N] may each be nil (no such term). All of them are read only under
    /// mask = 1 and must be the forward results at this handle's temperature.
    ///
    /// Each row's gradient is written chunk by chunk with `SoftmaxRowGradient`. The entry at
    /// the row's running max is held out of the products (set to 0 in the block) and added
    /// afterwards as a rank-one update with its final value, so the kernel's recomputation of
    /// the top entry of a near-deterministic row (minus the sum of the others) reaches dX and
    /// dW without cancellation; the one-hot term g_logp / T enters the same way.
    public func backward(_ inp: FusedInputs, lse: UnsafeBufferPointer<Double>, entropy: UnsafeBufferPointer<Float>?,
                         gradLogp: UnsafeBufferPointer<Float>?, gradEntropy: UnsafeBufferPointer<Float>?,
                         dX: UnsafeMutableBufferPointer<Float>?, dW: UnsafeMutableBufferPointer<Float>?,
                         dbias: UnsafeMutableBufferPointer<Float>?) throws(AepoFailure) {
        let rows = try inp.validate(threads: threads)
        let n = inp.rows, d = inp.dim, V = inp.vocab
        try need("lse", lse.count, n, "N")
        if let entropy { try needIn("entropy", entropy, n) }
        if let gradLogp { try needIn("grad_logp", gradLogp, n) }
        if let gradEntropy { try needIn("grad_entropy", gradEntropy, n) }
        if gradEntropy != nil && entropy == nil {
            throw .nullPointer("entropy")
        }
        try needOut("dX", dX, n * d)
        try needOut("dW", dW, V * d)
        try needOut("dbias", dbias, V)
        try checkOutputs(inp, [("dX", raw(dX)), ("dW", raw(dW)), ("dbias", raw(dbias))])
        for r in rows.valid {
            try finiteAt("lse", lse, r)
            if let gradLogp { try finiteAt("grad_logp", gradLogp, r) }
            if let gradEntropy, let entropy {
                try finiteAt("grad_entropy", gradEntropy, r)
                try finiteAt("entropy", entropy, r)
            }
        }

        if let dx = dX?.baseAddress, d > 0 {
            rows.forEachMasked { r in (dx + r * d).update(repeating: 0, count: d) }
        }
        let nValid = rows.valid.count
        guard nValid > 0, dX != nil || dW != nil || dbias != nil else { return }
        let (cn, cv) = blockShape(valid: nValid, dim: d, vocab: V)
        let work = try Workspace(rows: rows, inputs: inp, blockRows: cn, blockCols: cv, gather: d > 0,
                                 dxRows: dX != nil && d > 0, colKnob: "fused.chunk_v")
        defer { work.free() }
        let biasSums = try BiasSums(vocab: dbias != nil ? V : 0, blockCols: cv)
        defer { biasSums.free() }
        let grads = try FusedScratch<SoftmaxRowGradient>.allocate(cn, what: "row gradients", knob: "fused.chunk_n")
        defer { grads.free() }
        // Per block row: a top entry that a later chunk displaced, to be added back.
        let returned = try FusedScratch<(column: Int, value: Float)>.allocate(cn, what: "row updates", knob: "fused.chunk_n")
        defer { returned.free() }

        let T = temperature
        let tg = inp.targets
        let updates = RankOneUpdates(inp, dW: dW?.baseAddress, biasSums: biasSums)
        walkBlocks(rows, work, blockRows: cn) { s, valid, x in
            let m = s.count
            for i in 0..<m {
                let r = valid[s.lowerBound + i]
                let gh = gradEntropy?[r] ?? 0
                (grads.base + i).initialize(to: SoftmaxRowGradient(
                    temperature: T, lse: lse[r], entropy: gh != 0 ? entropy?[r] ?? 0 : 0,
                    gradLogp: gradLogp?[r] ?? 0, gradEntropy: gh))
            }
            let dx = work.rowsOfDX(s, valid, dX?.baseAddress)
            walkChunks(inp, x: x, m: m, chunk: cv, into: work.z) { v0, width, z in
                forEachRow(m, threads: threads, minPerThread: max(1, Self.minElementsPerThread / width)) { i in
                    do {
                        let zr = z + i * width
                        let before = grads.base[i].topColumn
                        let held = grads.base[i].topValue
                        grads.base[i].write(zr, zr, count: width, start: v0)
                        let top = grads.base[i].topColumn
                        returned.base[i] = (-1, 0)
                        if top != before {
                            // A new running max in this chunk: hold it out of the products;
                            // the previous one (an earlier chunk, already held out) returns.
                            zr[top - v0] = 0
                            if before >= 0 { returned.base[i] = (before, held) }
                        }
                    }
                }
                gradientProducts(inp, g: z, m: m, v0: v0, width: width, x: x, dx: dx, firstChunk: v0 == 0,
                                 dW: dW?.baseAddress)
                if dbias != nil { biasSums.add(z, rows: m, cols: width, at: v0, threads: threads) }
                for i in 0..<m where returned.base[i].column >= 0 {
                    updates.apply(row: x + i * d, dxRow: dx.map { $0 + i * d }, column: returned.base[i].column,
                                  value: Double(returned.base[i].value))
                }
            }
            // The held-out top entries with their final values, and the one-hot terms.
            for i in 0..<m {
                let r = valid[s.lowerBound + i]
                let g = grads.base[i]
                let fix = g.fixups(target: g.gradLogp != 0 ? Int(tg[r]) : -1)
                var top = g.topColumn >= 0 ? Double(g.topValue) : 0
                for f in [fix.first, fix.second] where f.column >= 0 {
                    if f.column == g.topColumn {
                        top += f.delta
                    } else {
                        updates.apply(row: x + i * d, dxRow: dx.map { $0 + i * d }, column: f.column, value: f.delta)
                    }
                }
                if g.topColumn >= 0 {
                    updates.apply(row: x + i * d, dxRow: dx.map { $0 + i * d }, column: g.topColumn, value: top)
                }
            }
            work.scatterDX(s, valid, dX?.baseAddress)
            return true
        }
        if let db = dbias { biasSums.addInto(db) }
    }

    // MARK: loss and gradients

    /// The policy loss of `batch` with the log-probs and entropies of the fused head, and
    /// every gradient, in one pass over chunk_n × V row blocks.
    ///
    /// `batch` gives B, L (B * L = N), the mask (which is also the mask of the head), the old
    /// log-probs, advantages and the other loss inputs; its `logp` and `entropy` must be
    /// empty (the head computes them). The entropy of every token is handed to the engine,
    /// so the `entropy` metric is reported whatever `loss.entropy_coeff` is.
    ///
    /// Outputs: dX [N, D] written (0 where mask = 0); dW [V, D] and dbias [V] added into;
    /// logp and entropy [N] written (0 where mask = 0). Each is optional. Everything is
    /// validated before any output is written.
    public func lossAndGrad(_ inp: FusedInputs, loss: Loss, batch: LossBatch,
                            dX: UnsafeMutableBufferPointer<Float>?, dW: UnsafeMutableBufferPointer<Float>?,
                            dbias: UnsafeMutableBufferPointer<Float>?,
                            logp: UnsafeMutableBufferPointer<Float>? = nil,
                            entropy: UnsafeMutableBufferPointer<Float>? = nil) throws(AepoFailure) -> LossResult {
        try lossAndGrad(inp, loss: loss, batch: batch, dX: dX, dW: dW, dbias: dbias, logp: logp,
                        entropy: entropy, forceTwoPass: false)
    }

    /// `forceTwoPass` runs the forward / loss / backward composition that modes whose token
    /// losses are coupled need; tests use it to check the one-pass path against it.
    func lossAndGrad(_ inp0: FusedInputs, loss: Loss, batch batch0: LossBatch,
                     dX: UnsafeMutableBufferPointer<Float>?, dW: UnsafeMutableBufferPointer<Float>?,
                     dbias: UnsafeMutableBufferPointer<Float>?, logp: UnsafeMutableBufferPointer<Float>?,
                     entropy: UnsafeMutableBufferPointer<Float>?, forceTwoPass: Bool) throws(AepoFailure) -> LossResult {
        let n = try batch0.tokenCount()
        guard batch0.logp.count == 0 else {
            throw .invalid("logp", "must not be given to the fused loss: the head computes the log-probs")
        }
        guard batch0.entropy == nil else {
            throw .invalid("entropy", "must not be given to the fused loss: the head computes the entropy")
        }
        guard inp0.rows == n else {
            throw .shape("N", "is \(inp0.rows), but the loss batch has B * L = \(batch0.rows) * \(batch0.length) = \(n) tokens")
        }
        var inp = inp0
        inp.mask = batch0.mask
        try need("mask", batch0.mask.count, n, "B * L")
        let d = inp.dim, V = inp.vocab
        guard V <= Gemm.maxDimension else {
            throw .shape("V", "is \(V); the fused loss makes chunk_n × V logits blocks and BLAS takes 32-bit sizes, so V must be <= \(Gemm.maxDimension)")
        }
        let rows = try inp.validate(threads: threads)
        try needOut("dX", dX, n * d)
        try needOut("dW", dW, V * d)
        try needOut("dbias", dbias, V)
        try needOut("logp", logp, n)
        try needOut("entropy", entropy, n)
        try checkOutputs(inp, [("dX", raw(dX)), ("dW", raw(dW)), ("dbias", raw(dbias)), ("logp", raw(logp)),
                               ("entropy", raw(entropy))])

        // Per-token buffers: log p and H (the caller's outputs when given), dL/dlogp, dL/dH.
        let tok = try FusedScratch<Float>.allocate(4 * n, what: "per-token buffers", knob: "N")
        defer { tok.free() }
        tok.base.initialize(repeating: 0, count: 4 * n)
        let lp = logp?.baseAddress ?? tok.base
        let ent = entropy?.baseAddress ?? (tok.base + n)
        let gl = tok.base + 2 * n, gh = tok.base + 3 * n
        if logp != nil { lp.update(repeating: 0, count: n) }
        if entropy != nil { ent.update(repeating: 0, count: n) }
        var batch = batch0
        batch.logp = UnsafeBufferPointer(start: lp, count: n)
        batch.entropy = UnsafeBufferPointer(start: ent, count: n)
        let plan = try loss.plan(batch)
        // The log-probs and entropies the head makes are finite; the caller's inputs are
        // checked now, before any output is written (the zeros in lp and ent pass).
        try loss.findNonFinite(batch, plan)

        if forceTwoPass || !loss.mode.isTokenSeparable {
            let lseBuf = try FusedScratch<Double>.allocate(n, what: "lse", knob: "N")
            defer { lseBuf.free() }
            let lseOut = UnsafeMutableBufferPointer(start: lseBuf.base, count: n)
            try forward(inp, logp: UnsafeMutableBufferPointer(start: lp, count: n),
                        entropy: UnsafeMutableBufferPointer(start: ent, count: n), lse: lseOut)
            let result = try loss.compute(batch, grad: UnsafeMutableBufferPointer(start: gl, count: n),
                                            gradEntropy: UnsafeMutableBufferPointer(start: gh, count: n))
            try backward(inp, lse: UnsafeBufferPointer(lseOut), entropy: UnsafeBufferPointer(start: ent, count: n),
                         gradLogp: UnsafeBufferPointer(start: gl, count: n),
                         gradEntropy: UnsafeBufferPointer(start: gh, count: n), dX: dX, dW: dW, dbias: dbias)
            return result
        }

        if let dx = dX?.baseAddress, d > 0 {
            rows.forEachMasked { r in (dx + r * d).update(repeating: 0, count: d) }
        }
        let nValid = rows.valid.count
        var total = TokenPartials()
        guard nValid > 0 else {
            if n > 0 {
                total = loss.accumulate(batch, plan, TokenBlock(range: 0..<n, logp: lp, entropy: ent, grad: gl, gradEntropy: gh))
            }
            return loss.finish(plan, total)
        }
        let cn = min(chunkN, nValid)
        let work = try Workspace(rows: rows, inputs: inp, blockRows: cn, blockCols: V, gather: d > 0,
                                 dxRows: dX != nil && d > 0, colKnob: "fused.chunk_n")
        defer { work.free() }
        let biasSums = try BiasSums(vocab: dbias != nil ? V : 0, blockCols: V)
        defer { biasSums.free() }
        let lseRow = try FusedScratch<Double>.allocate(cn, what: "row lse", knob: "fused.chunk_n")
        defer { lseRow.free() }

        let T = temperature
        let tg = inp.targets
        let minRows = max(1, Self.minElementsPerThread / max(V, 1))
        let partials = try FusedScratch<TokenPartials>.allocate(cn, what: "loss partial sums", knob: "fused.chunk_n")
        defer { partials.free() }
        walkBlocks(rows, work, blockRows: cn) { s, valid, x in
            let m = s.count
            let z = work.z
            logitsBlock(inp, x: x, m: m, v0: 0, width: V, into: z)
            // One pass per row while it is in cache: log p, H and lse, the loss engine's
            // token kernel on that token, then G in place of the logits (whole rows, so
            // the point updates go in place too). NaN in lseRow marks a row whose logits
            // overflowed. Masked tokens keep their zero gradients.
            forEachRow(m, threads: threads, minPerThread: minRows) { i in
                do {
                    let r = valid[s.lowerBound + i]
                    let zr = z + i * V
                    var a = SoftmaxRowAccumulator(temperature: T, logpAtT1: false)
                    a.add(zr, count: V)
                    if a.nonFinite || a.allNegativeInfinity {
                        lseRow.base[i] = .nan
                        (partials.base + i).initialize(to: TokenPartials())
                        return
                    }
                    lp[r] = Float(a.logp(targetLogit: zr[Int(tg[r])]))
                    ent[r] = Float(a.entropy)
                    lseRow.base[i] = a.lse
                    (partials.base + i).initialize(to: loss.accumulate(
                        batch, plan, TokenBlock(range: r..<(r + 1), logp: lp + r, entropy: ent + r, grad: gl + r,
                                                gradEntropy: gh + r)))
                    var g = SoftmaxRowGradient(temperature: T, lse: a.lse, entropy: ent[r],
                                               gradLogp: gl[r], gradEntropy: gh[r])
                    g.write(zr, zr, count: V, start: 0)
                    let fix = g.fixups(target: gl[r] != 0 ? Int(tg[r]) : -1)
                    for f in [fix.first, fix.second] where f.column >= 0 {
                        zr[f.column] = Float(Double(zr[f.column]) + f.delta)
                    }
                }
            }
            for i in 0..<m {
                if lseRow.base[i].isNaN {
                    work.failure = overflowFailure(valid[s.lowerBound + i])
                    return false
                }
                total.add(partials.base[i])
            }
            gradientProducts(inp, g: z, m: m, v0: 0, width: V, x: x, dx: work.rowsOfDX(s, valid, dX?.baseAddress),
                             firstChunk: true, dW: dW?.baseAddress)
            if dbias != nil { biasSums.add(z, rows: m, cols: V, at: 0, threads: threads) }
            work.scatterDX(s, valid, dX?.baseAddress)
            return true
        }
        if let f = work.failure { throw f }
        if let db = dbias { biasSums.addInto(db) }
        if total.nonFinite {
            try loss.findNonFinite(batch, plan)
            try loss.checkGradients(UnsafeBufferPointer(start: gl, count: n), UnsafeBufferPointer(start: gh, count: n),
                                      n: n, argument: "value")
        }
        let result = loss.finish(plan, total)
        try loss.checkResult(result)
        return result
    }
}
