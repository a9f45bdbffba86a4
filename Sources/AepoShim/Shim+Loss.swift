import AepoConfig
import AepoCore
import CAepoAPI

/// The object behind an `aepo_loss *`. Never written after creation.
final class LossHandle: ExportedHandle {
    let loss: Loss
    var config: Config { loss.config }
    init(_ loss: Loss) { self.loss = loss }
}

enum LossMetricNames {
    nonisolated(unsafe) static let names: [UnsafePointer<CChar>] = LossMetric.allCases.map { StaticText.intern($0.name) }
}

extension aepo_loss_inputs: VersionedInput {
    static var typeName: String { "aepo_loss_inputs" }
    /// Every field up to `step`.
    static var firstVersionSize: Int { 144 }
    static var defaults: aepo_loss_inputs {
        var d = aepo_loss_inputs()
        d.reg_alpha = -1
        d.global_tokens = -1
        d.global_seqs = -1
        d.global_reg_tokens = -1
        d.dp_size = 1
        return d
    }
}

@c @implementation
public func aepo_loss_metric_count() -> Int32 {
    Int32(LossMetric.count)
}

@c @implementation
public func aepo_loss_metric_name(_ i: Int32) -> UnsafePointer<CChar>? {
    i >= 0 && Int(i) < LossMetricNames.names.count ? LossMetricNames.names[Int(i)] : nil
}

@c @implementation
public func aepo_loss_inputs_init(_ input: UnsafeMutablePointer<aepo_loss_inputs>?, _ structSize: Int,
                                  _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        try aepo_loss_inputs.initialize(input, structSize, argument: "in")
    }
}

@c @implementation
public func aepo_loss_create(_ json: UnsafePointer<CChar>?, _ len: Int,
                             _ out: UnsafeMutablePointer<OpaquePointer?>?,
                             _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        try createHandle(json, len, out) { config throws(AepoFailure) in LossHandle(try Loss(config: config)) }
    }
}

@c @implementation
public func aepo_loss_free(_ h: OpaquePointer?) {
    LossHandle.release(h)
}

@c @implementation
public func aepo_loss_config_json(_ h: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
                                  _ len: UnsafeMutablePointer<Int>?,
                                  _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        try writeHandleConfig(LossHandle.self, h, "loss", buf, cap, len)
    }
}

/// A required [count] input: NULL is allowed only for count 0.
func floats(_ p: UnsafePointer<Float>?, _ count: Int, _ name: String) throws(AepoFailure) -> UnsafeBufferPointer<Float> {
    guard let p else {
        if count == 0 { return UnsafeBufferPointer(start: nil, count: 0) }
        throw .nullPointer(name)
    }
    return UnsafeBufferPointer(start: p, count: count)
}

func bytes(_ p: UnsafePointer<UInt8>?, _ count: Int, _ name: String) throws(AepoFailure) -> UnsafeBufferPointer<UInt8> {
    guard let p else {
        if count == 0 { return UnsafeBufferPointer(start: nil, count: 0) }
        throw .nullPointer(name)
    }
    return UnsafeBufferPointer(start: p, count: count)
}

func optionalFloats(_ p: UnsafePointer<Float>?, _ count: Int) -> UnsafeBufferPointer<Float>? {
    p.map { UnsafeBufferPointer(start: $0, count: count) }
}

func dimension(_ v: Int64, _ name: String) throws(AepoFailure) -> Int {
    guard v >= 0 else { throw .shape(name, "must be >= 0, got \(v)") }
    guard let i = Int(exactly: v) else { throw .shape(name, "\(v) is too large") }
    return i
}

@c @implementation
public func aepo_loss_compute(_ h: OpaquePointer?, _ input: UnsafePointer<aepo_loss_inputs>?,
                              _ value: UnsafeMutablePointer<Double>?, _ grad: UnsafeMutablePointer<Float>?,
                              _ gradEntropy: UnsafeMutablePointer<Float>?, _ metrics: UnsafeMutablePointer<Double>?,
                              _ metricsCap: Int, _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let handle = try LossHandle.borrow(h, "loss")
        let v = try aepo_loss_inputs.read(input, argument: "in")
        let batch = try lossBatch(v, headComputesLogits: false)
        let n = batch.rows * batch.length
        let result = try handle.loss.compute(
            batch,
            grad: grad.map { UnsafeMutableBufferPointer(start: $0, count: n) },
            gradEntropy: gradEntropy.map { UnsafeMutableBufferPointer(start: $0, count: n) })
        value?.pointee = result.loss
        if let metrics {
            for i in 0..<min(metricsCap, result.metrics.count) { metrics[i] = result.metrics[i] }
        }
    }
}

/// The one decoder of `aepo_loss_inputs` (aepo_loss_compute and aepo_fused_head_loss_and_grad).
/// With `headComputesLogits` the caller has checked that logp and entropy are NULL (the
/// fused head supplies them), and the batch carries none.
func lossBatch(_ v: aepo_loss_inputs, headComputesLogits: Bool) throws(AepoFailure) -> LossBatch {
    let B = try dimension(v.B, "B")
    let L = try dimension(v.L, "L")
    let (n, o) = B.multipliedReportingOverflow(by: L)
    guard !o else { throw .shape("B", "B * L overflows (B = \(B), L = \(L))") }
    guard v.adv_per_token == 0 || v.adv_per_token == 1 else {
        throw .invalid("adv_per_token", "must be 0 (advantages per sequence, [B]) or 1 (per token, [B, L]), got \(v.adv_per_token)")
    }
    guard v.reserved == 0 else { throw .invalid("reserved", "must be 0, got \(v.reserved)") }
    guard v.dp_size >= 1 else { throw .invalid("dp_size", "must be >= 1, got \(v.dp_size)") }
    guard !v.reg_alpha.isNaN, v.reg_alpha.isFinite || v.reg_alpha < 0 else {
        throw .invalid("reg_alpha", "must be a finite real >= 0, or negative for regularizer.alpha; got \(v.reg_alpha)")
    }
    func count(_ c: Int64, _ name: String) throws(AepoFailure) -> Int? {
        c < 0 ? nil : try dimension(c, name)
    }
    let perToken = v.adv_per_token == 1
    return LossBatch(
        rows: B, length: L,
        logp: headComputesLogits ? UnsafeBufferPointer(start: nil, count: 0) : try floats(v.logp, n, "logp"),
        oldLogp: try floats(v.old_logp, n, "old_logp"),
        advantages: try floats(v.advantages, perToken ? n : B, "advantages"),
        advantagesPerToken: perToken,
        mask: try bytes(v.mask, n, "mask"),
        refLogp: optionalFloats(v.ref_logp, n),
        isWeights: optionalFloats(v.is_weights, n),
        entropy: headComputesLogits ? nil : optionalFloats(v.entropy, n),
        regRows: v.reg_rows.map { UnsafeBufferPointer(start: $0, count: B) },
        regAlpha: v.reg_alpha < 0 ? nil : v.reg_alpha,
        globalTokens: try count(v.global_tokens, "global_tokens"),
        globalSeqs: try count(v.global_seqs, "global_seqs"),
        globalRegTokens: try count(v.global_reg_tokens, "global_reg_tokens"),
        dpSize: try dimension(v.dp_size, "dp_size"),
        step: v.step)
}

@c @implementation
public func aepo_loss_advantages(_ h: OpaquePointer?, _ rewards: UnsafePointer<Float>?,
                                 _ groupIds: UnsafePointer<Int64>?, _ n: Int64,
                                 _ lengths: UnsafePointer<Int64>?, _ out: UnsafeMutablePointer<Float>?,
                                 _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let handle = try LossHandle.borrow(h, "loss")
        let count = try dimension(n, "n")
        let r = try floats(rewards, count, "rewards")
        guard let groupIds else { if count > 0 { throw .nullPointer("group_ids") }; return }
        guard let out else { if count > 0 { throw .nullPointer("out") }; return }
        try Advantages.compute(handle.loss.config.advantage, rewards: r,
                               groupIds: UnsafeBufferPointer(start: groupIds, count: count),
                               lengths: lengths.map { UnsafeBufferPointer(start: $0, count: count) },
                               out: UnsafeMutableBufferPointer(start: out, count: count))
    }
}

@c @implementation
public func aepo_loss_select_regularizer(_ h: OpaquePointer?, _ rewards: UnsafePointer<Float>?,
                                         _ groupIds: UnsafePointer<Int64>?, _ n: Int64, _ kMax: Int64,
                                         _ halve: Int32, _ indices: UnsafeMutablePointer<Int64>?, _ cap: Int,
                                         _ k: UnsafeMutablePointer<Int64>?, _ nPositive: UnsafeMutablePointer<Int64>?,
                                         _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let handle = try LossHandle.borrow(h, "loss")
        let count = try dimension(n, "n")
        guard kMax >= 0 else { throw .invalid("k_max", "must be >= 0, got \(kMax)") }
        guard halve == 0 || halve == 1 else { throw .invalid("halve", "must be 0 or 1, got \(halve)") }
        let r = try floats(rewards, count, "rewards")
        let ids: UnsafeBufferPointer<Int64>
        if let groupIds { ids = UnsafeBufferPointer(start: groupIds, count: count) } else {
            if count > 0 { throw .nullPointer("group_ids") }
            ids = UnsafeBufferPointer(start: nil, count: 0)
        }
        let sel = try Regularizer.select(handle.loss.config, rewards: r, groupIds: ids,
                                         kMax: Int(clamping: kMax), halve: halve == 1)
        k?.pointee = Int64(sel.k)
        nPositive?.pointee = Int64(sel.nPositive)
        guard let indices else {
            if cap == 0 { return }
            throw .nullPointer("indices")
        }
        guard cap >= sel.k else {
            throw AepoFailure(.bufferTooSmall, "indices",
                              "indices: capacity \(cap) is too small; the selection has k = \(sel.k) rows")
        }
        for (j, i) in sel.indices.enumerated() { indices[j] = Int64(i) }
    }
}
