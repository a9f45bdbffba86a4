import AepoConfig
import AepoCore
import CAepoAPI

/// The object behind an `aepo_fused_head *`: the whole config it was made from and the head.
final class FusedHeadHandle: ExportedHandle {
    let config: Config
    let head: FusedHead
    init(_ config: Config, _ head: FusedHead) {
        self.config = config
        self.head = head
    }
}

@c @implementation
public func aepo_fused_head_create(_ json: UnsafePointer<CChar>?, _ len: Int,
                              _ out: UnsafeMutablePointer<OpaquePointer?>?,
                              _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        try createHandle(json, len, out) { config throws(AepoFailure) in FusedHeadHandle(config, try FusedHead(config: config.fused)) }
    }
}

@c @implementation
public func aepo_fused_head_free(_ h: OpaquePointer?) {
    FusedHeadHandle.release(h)
}

@c @implementation
public func aepo_fused_head_config_json(_ h: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
                                   _ len: UnsafeMutablePointer<Int>?,
                                   _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        try writeHandleConfig(FusedHeadHandle.self, h, "head", buf, cap, len)
    }
}

/// The three sizes of a fused call, checked for sign and for the products the buffers need.
struct FusedSizes {
    let n: Int
    let d: Int
    let v: Int
    let nd: Int
    let vd: Int

    init(_ n64: Int64, _ d64: Int64, _ v64: Int64) throws(AepoFailure) {
        n = try dimension(n64, "N")
        d = try dimension(d64, "D")
        v = try dimension(v64, "V")
        let (a, o1) = n.multipliedReportingOverflow(by: d)
        guard !o1 else { throw .shape("X", "N * D overflows (N = \(n), D = \(d))") }
        let (b, o2) = v.multipliedReportingOverflow(by: d)
        guard !o2 else { throw .shape("W", "V * D overflows (V = \(v), D = \(d))") }
        nd = a
        vd = b
    }
}

extension aepo_fused_head_inputs: VersionedInput {
    static var typeName: String { "aepo_fused_head_inputs" }
    /// X, W, bias, targets, mask, N, D, V.
    static var firstVersionSize: Int { 72 }
    static var defaults: aepo_fused_head_inputs { aepo_fused_head_inputs() }
}

@c @implementation
public func aepo_fused_head_inputs_init(_ input: UnsafeMutablePointer<aepo_fused_head_inputs>?, _ structSize: Int,
                                        _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        try aepo_fused_head_inputs.initialize(input, structSize, argument: "in")
    }
}

/// The one decoder of `aepo_fused_head_inputs`: the sizes checked, X, W and targets
/// required unless they hold no element, bias and mask optional. `mask` overrides the
/// struct's (loss_and_grad takes the loss inputs' mask).
func fusedInputs(_ v: aepo_fused_head_inputs, mask: UnsafePointer<UInt8>?) throws(AepoFailure) -> (FusedSizes, FusedInputs) {
    let s = try FusedSizes(v.N, v.D, v.V)
    let tg: UnsafeBufferPointer<Int32>
    if let targets = v.targets { tg = UnsafeBufferPointer(start: targets, count: s.n) } else {
        if s.n > 0 { throw .nullPointer("targets") }
        tg = UnsafeBufferPointer(start: nil, count: 0)
    }
    let inputs = FusedInputs(x: try floats(v.X, s.nd, "X"), w: try floats(v.W, s.vd, "W"),
                             bias: optionalFloats(v.bias, s.v), targets: tg,
                             mask: mask.map { UnsafeBufferPointer(start: $0, count: s.n) },
                             rows: s.n, dim: s.d, vocab: s.v)
    return (s, inputs)
}

/// An output buffer as the finiteness check reads it back.
@inline(__always)
func written(_ p: UnsafeMutablePointer<Float>?, _ count: Int) -> UnsafeBufferPointer<Float>? {
    p.map { UnsafeBufferPointer(start: $0, count: count) }
}

@inline(__always)
func outFloats(_ p: UnsafeMutablePointer<Float>?, _ count: Int) -> UnsafeMutableBufferPointer<Float>? {
    p.map { UnsafeMutableBufferPointer(start: $0, count: count) }
}

@c @implementation
public func aepo_fused_head_forward(_ h: OpaquePointer?, _ input: UnsafePointer<aepo_fused_head_inputs>?,
                                    _ logp: UnsafeMutablePointer<Float>?, _ entropy: UnsafeMutablePointer<Float>?,
                                    _ lse: UnsafeMutablePointer<Double>?,
                                    _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let handle = try FusedHeadHandle.borrow(h, "head")
        let v = try aepo_fused_head_inputs.read(input, argument: "in")
        let (s, inp) = try fusedInputs(v, mask: v.mask)
        try handle.head.forward(inp, logp: outFloats(logp, s.n), entropy: outFloats(entropy, s.n),
                                lse: lse.map { UnsafeMutableBufferPointer(start: $0, count: s.n) })
        try handle.head.checkFinite(outputs: [("logp", written(logp, s.n)), ("entropy", written(entropy, s.n))],
                                    lse: lse.map { UnsafeBufferPointer(start: $0, count: s.n) })
    }
}

@c @implementation
public func aepo_fused_head_backward(_ h: OpaquePointer?, _ input: UnsafePointer<aepo_fused_head_inputs>?,
                                     _ lse: UnsafePointer<Double>?, _ entropy: UnsafePointer<Float>?,
                                _ gradLogp: UnsafePointer<Float>?, _ gradEntropy: UnsafePointer<Float>?,
                                _ dX: UnsafeMutablePointer<Float>?, _ dW: UnsafeMutablePointer<Float>?,
                                _ dbias: UnsafeMutablePointer<Float>?,
                                _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let handle = try FusedHeadHandle.borrow(h, "head")
        let v = try aepo_fused_head_inputs.read(input, argument: "in")
        let (s, inp) = try fusedInputs(v, mask: v.mask)
        let lseBuf: UnsafeBufferPointer<Double>
        if let lse { lseBuf = UnsafeBufferPointer(start: lse, count: s.n) } else {
            if s.n > 0 { throw .nullPointer("lse") }
            lseBuf = UnsafeBufferPointer(start: nil, count: 0)
        }
        try handle.head.backward(inp, lse: lseBuf, entropy: optionalFloats(entropy, s.n),
                                 gradLogp: optionalFloats(gradLogp, s.n),
                                 gradEntropy: optionalFloats(gradEntropy, s.n),
                                 dX: outFloats(dX, s.nd), dW: outFloats(dW, s.vd), dbias: outFloats(dbias, s.v))
        try handle.head.checkFinite(outputs: [("dX", written(dX, s.nd)), ("dW", written(dW, s.vd)),
                                              ("dbias", written(dbias, s.v))])
    }
}

@c @implementation
public func aepo_fused_head_loss_and_grad(_ h: OpaquePointer?, _ lossH: OpaquePointer?,
                                          _ input: UnsafePointer<aepo_fused_head_inputs>?,
                                          _ lossInput: UnsafePointer<aepo_loss_inputs>?,
                                          _ value: UnsafeMutablePointer<Double>?, _ dX: UnsafeMutablePointer<Float>?,
                                          _ dW: UnsafeMutablePointer<Float>?, _ dbias: UnsafeMutablePointer<Float>?,
                                          _ metrics: UnsafeMutablePointer<Double>?, _ metricsCap: Int,
                                          _ logp: UnsafeMutablePointer<Float>?, _ entropy: UnsafeMutablePointer<Float>?,
                                          _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let handle = try FusedHeadHandle.borrow(h, "head")
        let lossHandle = try LossHandle.borrow(lossH, "loss")
        let head = try aepo_fused_head_inputs.read(input, argument: "in")
        let v = try aepo_loss_inputs.read(lossInput, argument: "loss_in")
        guard v.logp == nil else {
            throw .invalid("loss_in.logp", "must be NULL: the fused head computes the log-probs")
        }
        guard v.entropy == nil else {
            throw .invalid("loss_in.entropy", "must be NULL: the fused head computes the entropy")
        }
        guard head.mask == nil || head.mask == v.mask else {
            throw .invalid("mask", "in->mask must be NULL or loss_in->mask: the loss inputs' mask is the head's mask")
        }
        let batch = try lossBatch(v, headComputesLogits: true)
        let n = try batch.tokenCount()
        guard head.N == Int64(n) else {
            throw .shape("N", "in->N is \(head.N), but the loss inputs have B * L = \(batch.rows) * \(batch.length) = \(n) tokens")
        }
        let (s, inp) = try fusedInputs(head, mask: v.mask)
        let result = try handle.head.lossAndGrad(inp, loss: lossHandle.loss, batch: batch,
                                                 dX: outFloats(dX, s.nd), dW: outFloats(dW, s.vd),
                                                 dbias: outFloats(dbias, s.v), logp: outFloats(logp, s.n),
                                                 entropy: outFloats(entropy, s.n))
        try handle.head.checkFinite(outputs: [("dX", written(dX, s.nd)), ("dW", written(dW, s.vd)),
                                              ("dbias", written(dbias, s.v)), ("logp", written(logp, s.n)),
                                              ("entropy", written(entropy, s.n))])
        value?.pointee = result.loss
        if let metrics {
            for i in 0..<min(max(metricsCap, 0), result.metrics.count) { metrics[i] = result.metrics[i] }
        }
    }
}
