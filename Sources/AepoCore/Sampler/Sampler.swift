import Glibc

/// The seeded temperature sampler: temperature, min-p, top-k, top-p and greedy over rows of
/// logits, with a counter-based random stream so that a row's token depends only on
/// (seed, step, position, row_offset + row) and the row's logits.
///
/// Shapes: `logits` is N x V with row stride `rowStride` (elements); every output is N.
///
/// Law. With m the row max and T the temperature, token i has weight
/// w_i = exp((x_i - m) / T). The truncations act in this order, each on what the previous
/// one left, and every one of them keeps a prefix of the ranking "larger logit first,
/// lower id first among equal logits":
///   - min-p keeps i when w_i >= min_p, i.e. x_i >= m + T ln(min_p) (0 switches it off);
///   - top-k keeps the first k (0 switches it off);
///   - top-p keeps i when the mass ranked strictly above i is < p times the mass of what
///     is left (1 switches it off).
/// The token is drawn with probability w_i / Z over the kept set K, Z = sum over K of w.
/// Logits of -inf are allowed and have probability 0 (they are never kept); NaN and +inf
/// are errors, as is a row with no finite logit.
///
/// Outputs per row: the token; log(w_tok / Z), the log-prob under the truncated tempered
/// law actually used; log_softmax(x)[tok], the log-prob under the untruncated T = 1
/// policy; and |K|, so that a trainer can replay the truncation. Greedy returns the argmax
/// (ties to the lowest id), with sampling log-prob 0 and kept count 1.
///
/// Numerical properties: weights are computed in Float by a SIMD exp and accumulated in
/// Double; the reported log-probs are formed in Double from the logits and the
/// accumulated mass, so they are accurate to a few Float ulps. On one machine the result is
/// bit-identical for every thread count and batch split; machines with and without AVX2 +
/// FMA agree to float ulps (see docs/SAMPLER.md).
///
/// A sampler keeps its scratch (about 20 bytes per vocabulary entry and thread with top-k
/// or top-p, 1/8 byte otherwise) between calls, so one instance belongs to one thread at a
/// time.
public final class Sampler {
    public let config: SamplerConfig
    private var workspaces: [SamplerWorkspace] = []
    /// The kernel path the passes run on: the best this CPU has, or another for `make bench`,
    /// which times each path against the others.
    @_spi(Bench) public var isa: KernelISA = .best

    /// Temperatures below this make 1/T overflow Float; such values are rejected with the
    /// same advice as T <= 0.
    public static let minimumTemperature = ConfigSchema.minimumTemperature

    public init(_ config: SamplerConfig) throws(AepoFailure) {
        try Self.checkTemperature(config.temperature, argument: "sampler.temperature", isConfig: true)
        guard config.topK >= 0 else { throw .config("sampler.top_k", "\(config.topK) is out of range; expected an integer >= 0") }
        guard config.topP > 0, config.topP <= 1 else {
            throw .config("sampler.top_p", "\(config.topP) is out of range; expected a real in (0, 1]")
        }
        guard config.minP >= 0, config.minP < 1 else {
            throw .config("sampler.min_p", "\(config.minP) is out of range; expected a real in [0, 1)")
        }
        guard config.seed >= 0 else { throw .config("sampler.seed", "\(config.seed) is out of range; expected an integer >= 0") }
        guard config.threads >= 1, config.threads <= ConfigSchema.maxThreads else {
            throw .config("sampler.threads", "\(config.threads) is out of range; expected an integer in [1, \(ConfigSchema.maxThreads)]")
        }
        self.config = config
    }

    static let greedyHint = "a temperature must be > 0; for greedy decoding set sampler.greedy = true"

    static func checkTemperature(_ t: Double, argument: String, isConfig: Bool) throws(AepoFailure) {
        let detail: String?
        if t.isNaN || t.isInfinite {
            detail = "\(t) is not a finite temperature; \(greedyHint)"
        } else if t <= 0 {
            detail = "\(t) is out of range; \(greedyHint)"
        } else if t < minimumTemperature {
            detail = "\(t) is too small (1/T overflows float; the smallest accepted is 1e-30); \(greedyHint)"
        } else {
            detail = nil
        }
        guard let detail else { return }
        throw isConfig ? .config(argument, detail) : .invalid(argument, detail)
    }

    /// Draws one token per row. See the type's documentation for the law and outputs.
    ///
    /// - Parameters:
    ///   - temperature: overrides `config.temperature` for this call (how the controller's
    ///     T arrives each step); nil uses the config.
    ///   - logp, logpT1, kept: optional outputs; a nil output is neither computed nor
    ///     written (skipping `logpT1` saves one exp per logit when T != 1).
    public func sample(logits: UnsafePointer<Float>, rows: Int, vocab: Int, rowStride: Int,
                       step: Int64, position: Int64, rowOffset: Int64, temperature: Double?,
                       tokens: UnsafeMutablePointer<Int32>, logp: UnsafeMutablePointer<Float>?,
                       logpT1: UnsafeMutablePointer<Float>?, kept: UnsafeMutablePointer<Int32>?) throws(AepoFailure) {
        guard rows >= 0 else { throw .shape("N", "must be >= 0, got \(rows)") }
        guard vocab >= 0 else { throw .shape("V", "must be >= 0, got \(vocab)") }
        guard rowStride >= 0 else { throw .shape("row_stride", "must be >= 0, got \(rowStride)") }
        guard step >= 0 else { throw .invalid("step", "must be >= 0, got \(step)") }
        guard position >= 0 else { throw .invalid("position", "must be >= 0, got \(position)") }
        guard rowOffset >= 0 else { throw .invalid("row_offset", "must be >= 0, got \(rowOffset)") }
        if let temperature { try Self.checkTemperature(temperature, argument: "temperature", isConfig: false) }
        if rows == 0 { return }
        guard vocab >= 1 else { throw .shape("V", "must be >= 1 to draw a token, got 0") }
        guard vocab <= Int(Int32.max) else {
            throw .shape("V", "\(vocab) exceeds the int32 token id range (at most \(Int32.max))")
        }
        guard rowStride >= vocab else {
            throw .shape("row_stride", "must be >= V = \(vocab), got \(rowStride)")
        }
        let (span, o1) = (rows - 1).multipliedReportingOverflow(by: rowStride)
        let (_, o2) = span.addingReportingOverflow(vocab)
        guard !o1, !o2 else { throw .shape("logits", "(N - 1) * row_stride + V overflows for N = \(rows), row_stride = \(rowStride)") }
        guard rowOffset <= Int64.max - Int64(rows) else {
            throw .invalid("row_offset", "row_offset + N overflows int64 (row_offset = \(rowOffset), N = \(rows))")
        }

        let plan = RowPlan(config: config, temperature: temperature ?? config.temperature, vocab: vocab,
                           wantLogpT1: logpT1 != nil, wantKept: kept != nil, isa: isa)
        let stream = SamplerStream(seed: UInt64(config.seed), step: UInt64(step), position: UInt64(position))
        guard let failed = calloc(rows, 1)?.bindMemory(to: UInt8.self, capacity: rows) else {
            throw AepoFailure(.outOfMemory, "N", "could not allocate \(rows) bytes of row status")
        }
        defer { free(failed) }

        // About 64K logits per thread at least: below that a thread costs more than it saves.
        let minRows = max(1, 65_536 / vocab)
        let parts = max(1, min(Int(config.threads), rows / minRows))
        let spaces = try workspaces(parts: parts, vocab: vocab, histogram: plan.needsHistogram)
        // Rows are handed out in small chunks from a shared counter, so a thread whose core
        // is busy with other work takes fewer rows. A row's result depends only on the row
        // and its coordinates, so which thread draws it changes nothing. Part p always runs
        // on scratch p.
        guard let queue = RowQueue(count: rows, chunk: max(1, min(64, rows / (parts * 8)))) else {
            throw AepoFailure(.outOfMemory, "N", "could not allocate the sampler's work queue")
        }
        parallelRanges(count: parts, threads: parts) { partsRange in
            for p in partsRange {
                let work = spaces[p]
                while let chunk = queue.take() {
                    for r in chunk {
                        let x = logits + r * rowStride
                        let u = stream.uniform(row: UInt64(rowOffset) &+ UInt64(r))
                        let out = plan.sampleRow(x, u: u, work: work)
                        if out.status != RowStatus.ok {
                            failed[r] = out.status
                            break
                        }
                        tokens[r] = Int32(truncatingIfNeeded: out.token)
                        logp?[r] = Float(out.logp)
                        logpT1?[r] = Float(out.logpT1)
                        kept?[r] = Int32(truncatingIfNeeded: out.kept)
                    }
                }
            }
        }
        // Report the failing row with the lowest index, whatever the thread split.
        for r in 0..<rows where failed[r] != RowStatus.ok {
            throw RowStatus.failure(failed[r], row: r, x: logits + r * rowStride, vocab: vocab)
        }
    }

    /// Scratch for `parts` threads, reused from earlier calls when it fits.
    private func workspaces(parts: Int, vocab: Int, histogram: Bool) throws(AepoFailure) -> [SamplerWorkspace] {
        if workspaces.count >= parts,
           workspaces.allSatisfy({ $0.vocab == vocab && (!histogram || $0.weights != nil) }) {
            return workspaces
        }
        workspaces = []
        var fresh: [SamplerWorkspace] = []
        fresh.reserveCapacity(parts)
        for _ in 0..<parts {
            guard let w = SamplerWorkspace(vocab: vocab, histogram: histogram) else {
                throw AepoFailure(.outOfMemory, "logits", "could not allocate the sampler's scratch for V = \(vocab)")
            }
            fresh.append(w)
        }
        workspaces = fresh
        return fresh
    }
}

/// Contiguous chunks of rows handed out under a mutex.
final class RowQueue: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var next = 0
    private let count: Int
    private let chunk: Int

    init?(count: Int, chunk: Int) {
        guard let m = malloc(MemoryLayout<pthread_mutex_t>.stride)?
            .bindMemory(to: pthread_mutex_t.self, capacity: 1) else { return nil }
        guard pthread_mutex_init(m, nil) == 0 else { free(m); return nil }
        mutex = m
        self.count = count
        self.chunk = chunk
    }

    deinit {
        pthread_mutex_destroy(mutex)
        free(mutex)
    }

    /// The next chunk, or nil when every row has been handed out.
    func take() -> Range<Int>? {
        pthread_mutex_lock(mutex)
        let lo = next
        next = min(count, lo + chunk)
        let hi = next
        pthread_mutex_unlock(mutex)
        return lo < hi ? lo..<hi : nil
    }
}

enum RowStatus {
    static let ok: UInt8 = 0
    static let badValue: UInt8 = 1
    static let outOfMemory: UInt8 = 2

    /// The detailed error for a failed row (only computed on the error path).
    static func failure(_ status: UInt8, row: Int, x: UnsafePointer<Float>, vocab: Int) -> AepoFailure {
        if status == outOfMemory {
            return AepoFailure(.outOfMemory, "logits", "could not allocate the sampler's scratch for V = \(vocab)", index: row)
        }
        for j in 0..<vocab where x[j].isNaN || x[j] == .infinity {
            return AepoFailure(.nonFinite, "logits",
                               "logits[\(row), \(j)] is \(x[j]); sampler logits must be finite or -inf", index: row)
        }
        return AepoFailure(.invalidArgument, "logits",
                           "logits row \(row) is all -inf; at least one token needs a finite logit", index: row)
    }
}
