import Glibc

/// Where `LogitsKernels.stats` writes its per-row results. Every pointer may be nil (that
/// result is not written); when set, it points to B * L floats. Masked rows get 0.
public struct LogitsStatsOutputs {
    public var logp: UnsafeMutablePointer<Float>?
    public var entropy: UnsafeMutablePointer<Float>?
    /// log-sum-exp of logits / T, in float64 (the backward pass reads it back).
    public var lse: UnsafeMutablePointer<Double>?
    /// log p(target) at T = 1 (computed only when this is set).
    public var logpT1: UnsafeMutablePointer<Float>?

    public init(logp: UnsafeMutablePointer<Float>? = nil, entropy: UnsafeMutablePointer<Float>? = nil,
                lse: UnsafeMutablePointer<Double>? = nil, logpT1: UnsafeMutablePointer<Float>? = nil) {
        self.logp = logp
        self.entropy = entropy
        self.lse = lse
        self.logpT1 = logpT1
    }
}

/// The float64 reductions of `LogitsKernels.stats` over the rows with mask = 1, summed in row
/// order (bit-identical for every thread count), ready to all-reduce across ranks.
public struct LogitsSums: Equatable, Sendable {
    /// Σ H over the rows with mask = 1.
    public var entropySum: Double = 0
    /// Σ −log p(target) at T over the rows with mask = 1 (0 when no targets were given).
    public var nllSum: Double = 0
    /// The number of rows with mask = 1.
    public var count: Int = 0

    public init(entropySum: Double = 0, nllSum: Double = 0, count: Int = 0) {
        self.entropySum = entropySum
        self.nllSum = nllSum
        self.count = count
    }
}

/// Temperature-consistent log-probs, exact entropy and their gradient, straight from logits.
///
/// With z = logits / T (T the policy temperature):
///   log p(t) = z_t − lse(z),   H = lse(z) − Σ softmax(z)·z,
///   dL/dx = g_logp · (onehot(t) − p) / T − g_H · p · (log p + H) / T.
/// One streaming pass per row computes everything forward; the backward pass reuses lse and H
/// and reads each logit once. Rows are split over `threads` plain pthreads; every result is
/// formed per row and sums are combined in row order, so results are bit-identical for every
/// thread count.
public enum LogitsKernels {
    /// Rows per thread are chosen so that each thread gets at least this many elements.
    static let minElementsPerThread = 1 << 16

    /// Validates a temperature argument (every temperature must be > 0 and finite).
    public static func checkTemperature(_ t: Double, name: String = "temperature") throws(AepoFailure) {
        guard t > 0, t.isFinite else {
            throw .invalid(name, "must be a finite number > 0, got \(t); for greedy decoding set sampler.greedy = true")
        }
    }

    public static func checkThreads(_ threads: Int) throws(AepoFailure) {
        guard threads >= 1, threads <= Int(ConfigSchema.maxThreads) else {
            throw .invalid("threads", "must be in [1, \(ConfigSchema.maxThreads)], got \(threads)")
        }
    }

    /// Checks mask values (0 or 1) and, under mask = 1, targets in [0, V).
    static func checkRows(count: Int, vocab: Int, targets: UnsafePointer<Int32>?,
                          mask: UnsafePointer<UInt8>?) throws(AepoFailure) {
        for r in 0..<count {
            if let mask {
                let m = mask[r]
                guard m <= 1 else { throw .invalid("mask", "mask[\(r)] = \(m); expected 0 or 1", index: r) }
                if m == 0 { continue }
            }
            if let targets {
                let t = targets[r]
                guard t >= 0, Int(t) < vocab else {
                    throw .invalid("targets", "targets[\(r)] = \(t) is out of range [0, \(vocab)) under mask = 1", index: r)
                }
            }
        }
    }

    /// Describes the first NaN or +inf of a row, or its all −inf state, or (a row of finite
    /// logits whose sums still overflowed) that the row is out of float range at `temperature`.
    static func rowFailure(_ x: UnsafePointer<Float>, vocab: Int, row: Int, argument: String = "logits",
                           temperature: Double = 1) -> AepoFailure {
        var anyFinite = false
        for j in 0..<vocab {
            let v = x[j]
            if v.isNaN || v == .infinity {
                return AepoFailure(.nonFinite, argument,
                                   "\(argument) row \(row) has \(v) at column \(j) under mask = 1; logits must be finite or -inf",
                                   index: row)
            }
            if v.isFinite { anyFinite = true }
        }
        if anyFinite {
            return AepoFailure(.nonFinite, argument,
                               "\(argument) row \(row) is finite, but (x - max) / T overflows float32 at temperature \(temperature); "
                               + "rescale the logits", index: row)
        }
        return .invalid(argument, "row \(row) is all -inf under mask = 1", index: row)
    }

    /// A per-row output of finite logits that does not fit a float.
    static func outputOverflow(_ name: String, _ r: Int, _ value: Double, _ temperature: Double) -> AepoFailure {
        AepoFailure(.nonFinite, name,
                    "\(name)[\(r)] is \(value) at temperature \(temperature), beyond float32, although the logits are finite; "
                    + "the logits of the row are too far apart (rescale them)", index: r)
    }

    /// Statistics of every row of `logits` with mask = 1 (all rows when `mask` is nil).
    ///
    /// - `targets` [B·L] is required when `logp`, `logpT1` or the NLL sum is wanted
    ///   (`wantNLL`); it is read only under mask = 1.
    /// - Masked rows are not read; their outputs are 0.
    /// - Errors: the first offending row in row order (the same for every thread count).
    ///   Outputs of rows before it may already be written.
    @discardableResult
    public static func stats(_ logits: UnsafePointer<Float>, layout: LogitsLayout,
                             targets: UnsafePointer<Int32>?, mask: UnsafePointer<UInt8>?,
                             temperature: Double, threads: Int, outputs: LogitsStatsOutputs,
                             wantNLL: Bool = true, isa: KernelISA = .best) throws(AepoFailure) -> LogitsSums {
        try checkTemperature(temperature)
        try checkThreads(threads)
        let n = layout.count, vocab = layout.vocab
        let needTargets = outputs.logp != nil || outputs.logpT1 != nil || wantNLL
        if needTargets && targets == nil && n > 0 {
            throw AepoFailure(.nullPointer, "targets", "targets is NULL; it is needed for logp, logp_t1 and nll_sum")
        }
        let tg = needTargets ? targets : nil
        try checkRows(count: n, vocab: vocab, targets: tg, mask: mask)
        guard n > 0 else { return LogitsSums() }

        // Per-row float64 values, summed in row order after the join.
        let (bytes, overflow) = n.multipliedReportingOverflow(by: 2 * MemoryLayout<Double>.stride)
        guard !overflow, let scratch = malloc(bytes)?.assumingMemoryBound(to: Double.self) else {
            throw AepoFailure(.outOfMemory, "logits", "could not allocate \(2 * n) doubles of scratch")
        }
        defer { free(scratch) }
        let rowH = scratch, rowNLL = scratch + n
        let failures = FirstFailure()
        let wantT1 = outputs.logpT1 != nil

        parallelRanges(count: n, threads: threads, minPerThread: max(1, minElementsPerThread / vocab)) { range in
            for r in range {
                if let mask, mask[r] == 0 {
                    rowH[r] = 0; rowNLL[r] = 0
                    outputs.logp?[r] = 0; outputs.entropy?[r] = 0
                    outputs.lse?[r] = 0; outputs.logpT1?[r] = 0
                    continue
                }
                let x = logits + layout.offset(ofRow: r)
                var acc = SoftmaxRowAccumulator(temperature: temperature, logpAtT1: wantT1, isa: isa)
                acc.add(x, count: vocab)
                if acc.nonFinite || acc.allNegativeInfinity {
                    failures.record(row: r, rowFailure(x, vocab: vocab, row: r, temperature: temperature))
                    return
                }
                let h = acc.entropy
                rowH[r] = h
                outputs.entropy?[r] = Float(h)
                outputs.lse?[r] = acc.lse
                if let tg {
                    let xt = x[Int(tg[r])]
                    let lp = acc.logp(targetLogit: xt)
                    rowNLL[r] = -lp
                    // A target on a -inf logit (a banned token) has log p = -inf exactly. Any
                    // other log-prob is finite in float64, but finite logits far apart (a
                    // target near -FLT_MAX, the max near +FLT_MAX) can put it beyond float32:
                    // an error, never a silent -inf.
                    if let out = outputs.logp {
                        guard !lp.isFinite || Float(lp).isFinite else {
                            failures.record(row: r, outputOverflow("logp", r, lp, temperature))
                            return
                        }
                        out[r] = Float(lp)
                    }
                    if let out = outputs.logpT1 {
                        let lp1 = acc.logpAtT1(targetLogit: xt)
                        guard !lp1.isFinite || Float(lp1).isFinite else {
                            failures.record(row: r, outputOverflow("logp_t1", r, lp1, 1))
                            return
                        }
                        out[r] = Float(lp1)
                    }
                } else {
                    rowNLL[r] = 0
                }
            }
        }
        if let f = failures.failure { throw f }

        var sums = LogitsSums()
        for r in 0..<n where mask == nil || mask![r] != 0 {
            sums.entropySum += rowH[r]
            sums.nllSum += rowNLL[r]
            sums.count += 1
        }
        return sums
    }

    /// dL/dlogits for L = Σ_r g_logp[r] · log p_r(t_r) + g_H[r] · H_r, written to `out`.
    ///
    /// - `lse` and `entropy` [B·L] are the forward results at the same temperature; `entropy`
    ///   is needed only with `gradEntropy`.
    /// - `gradLogp`, `gradEntropy` [B·L] may each be nil (no such term). `targets` is needed
    ///   only with `gradLogp`.
    /// - A row is skipped (its output row is set to 0 and nothing else of it is read) when
    ///   mask = 0, or when its upstream gradients are all 0.
    /// - `out` may be `logits` itself with the same layout (in place); any other overlap is
    ///   an error.
    public static func backward(_ logits: UnsafePointer<Float>, layout: LogitsLayout,
                                targets: UnsafePointer<Int32>?, mask: UnsafePointer<UInt8>?,
                                temperature: Double,
                                lse: UnsafePointer<Double>, entropy: UnsafePointer<Float>?,
                                gradLogp: UnsafePointer<Float>?, gradEntropy: UnsafePointer<Float>?,
                                out: UnsafeMutablePointer<Float>, outLayout: LogitsLayout,
                                threads: Int, isa: KernelISA = .best) throws(AepoFailure) {
        try checkTemperature(temperature)
        try checkThreads(threads)
        guard outLayout.batch == layout.batch, outLayout.rows == layout.rows, outLayout.vocab == layout.vocab else {
            throw .shape("out", "has shape [\(outLayout.batch), \(outLayout.rows), \(outLayout.vocab)], expected [\(layout.batch), \(layout.rows), \(layout.vocab)] like logits")
        }
        let n = layout.count, vocab = layout.vocab
        guard n > 0 else { return }
        // In place means the very same view; anything else must be disjoint.
        let inPlace = UnsafeRawPointer(out) == UnsafeRawPointer(logits) && outLayout == layout
        if !inPlace {
            let a0 = UInt(bitPattern: logits), a1 = a0 &+ UInt(layout.extent) &* 4
            let b0 = UInt(bitPattern: out), b1 = b0 &+ UInt(outLayout.extent) &* 4
            if a0 < b1 && b0 < a1 {
                throw .invalid("out", "overlaps logits without being the same view; pass out = logits with the same strides to write in place")
            }
        }
        if gradLogp != nil && targets == nil {
            throw AepoFailure(.nullPointer, "targets", "targets is NULL; it is needed with grad_logp")
        }
        if gradEntropy != nil && entropy == nil {
            throw AepoFailure(.nullPointer, "entropy", "entropy is NULL; it is needed with grad_entropy")
        }

        // Validate every active row before writing anything.
        let tg = gradLogp != nil ? targets : nil
        for r in 0..<n {
            if let mask {
                let m = mask[r]
                guard m <= 1 else { throw .invalid("mask", "mask[\(r)] = \(m); expected 0 or 1", index: r) }
                if m == 0 { continue }
            }
            let gl = gradLogp?[r] ?? 0, gh = gradEntropy?[r] ?? 0
            guard gl.isFinite else { throw nonFiniteValue("grad_logp", r, gl) }
            guard gh.isFinite else { throw nonFiniteValue("grad_entropy", r, gh) }
            if gl == 0 && gh == 0 { continue }
            guard lse[r].isFinite else { throw nonFiniteValue("lse", r, Float(lse[r])) }
            if gh != 0, let entropy {
                guard entropy[r].isFinite else { throw nonFiniteValue("entropy", r, entropy[r]) }
            }
            if gl != 0, let tg {
                let t = tg[r]
                guard t >= 0, Int(t) < vocab else {
                    throw .invalid("targets", "targets[\(r)] = \(t) is out of range [0, \(vocab)) under mask = 1", index: r)
                }
            }
        }

        let failures = FirstFailure()
        parallelRanges(count: n, threads: threads, minPerThread: max(1, minElementsPerThread / vocab)) { range in
            for r in range {
                let o = out + outLayout.offset(ofRow: r)
                let gl = gradLogp?[r] ?? 0, gh = gradEntropy?[r] ?? 0
                if (mask != nil && mask![r] == 0) || (gl == 0 && gh == 0) {
                    o.update(repeating: 0, count: vocab)
                    continue
                }
                let x = logits + layout.offset(ofRow: r)
                var g = SoftmaxRowGradient(temperature: temperature, lse: lse[r], entropy: entropy?[r] ?? 0,
                                           gradLogp: gl, gradEntropy: gh, isa: isa)
                g.write(x, o, count: vocab, start: 0)
                let fix = g.fixups(target: gl != 0 ? Int(tg![r]) : -1)
                if fix.first.column >= 0 { o[fix.first.column] = Float(Double(o[fix.first.column]) + fix.first.delta) }
                if fix.second.column >= 0 { o[fix.second.column] = Float(Double(o[fix.second.column]) + fix.second.delta) }
                // The row's running sums see every written entry: a non-finite one (an
                // overflow of finite inputs, e.g. a tiny T or an lse that is not the row's)
                // shows there, and the row is then checked entry by entry.
                if !(g.othersSum.isFinite && g.topValue.isFinite && fix.first.delta.isFinite && fix.second.delta.isFinite) {
                    for j in 0..<vocab where !o[j].isFinite {
                        failures.record(row: r, AepoFailure(
                            .nonFinite, "out",
                            "out row \(r) column \(j) is \(o[j]) although the inputs are finite: the gradient overflows float32 "
                            + "(temperature \(temperature), lse \(lse[r])); lse and entropy must come from aepo_logits_stats",
                            index: r))
                        return
                    }
                }
            }
        }
        if let f = failures.failure { throw f }
    }

    static func nonFiniteValue(_ name: String, _ r: Int, _ v: Float) -> AepoFailure {
        AepoFailure(.nonFinite, name, "\(name)[\(r)] is \(v) under mask = 1; it must be finite", index: r)
    }
}

/// The failure of the lowest row among several threads (each stops at its first failure, so
/// the lowest recorded row is the first failing row in row order).
final class FirstFailure: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    private var row = Int.max
    private(set) var failure: AepoFailure?

    init() {
        lock = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
    }

    deinit {
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    func record(row r: Int, _ f: AepoFailure) {
        pthread_mutex_lock(lock)
        if r < row { row = r; failure = f }
        pthread_mutex_unlock(lock)
    }
}
