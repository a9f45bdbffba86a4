import AepoConfig
import AepoCore
import CAepoAPI

/// The object behind an `aepo_fused *`: the whole config it was made from and the head.
final class FusedHandle: ExportedHandle {
    let config: Config
    let head: FusedHead
    init(_ config: Config, _ head: FusedHead) {
        self.config = config
        self.head = head
    }
}

@c @implementation
public func aepo_fused_create(_ json: UnsafePointer<CChar>?, _ len: Int,
                              _ out: UnsafeMutablePointer<OpaquePointer?>?,
                              _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        try createHandle(json, len, out) { config throws(AepoFailure) in FusedHandle(config, try FusedHead(config: config.fused)) }
    }
}

@c @implementation
public func aepo_fused_free(_ h: OpaquePointer?) {
    FusedHandle.release(h)
}

@c @implementation
public func aepo_fused_config_json(_ h: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
                                   _ len: UnsafeMutablePointer<Int>?,
                                   _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        try writeHandleConfig(FusedHandle.self, h, "h", buf, cap, len)
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

/// The shared inputs of a fused call as buffers: X, W and targets are required unless they
/// hold no element; bias and mask may be NULL.
func fusedInputs(_ s: FusedSizes, _ X: UnsafePointer<Float>?, _ W: UnsafePointer<Float>?,
                 _ bias: UnsafePointer<Float>?, _ targets: UnsafePointer<Int32>?,
                 _ mask: UnsafePointer<UInt8>?) throws(AepoFailure) -> FusedInputs {
    let tg: UnsafeBufferPointer<Int32>
    if let targets { tg = UnsafeBufferPointer(start: targets, count: s.n) } else {
        if s.n > 0 { throw .nullPointer("targets") }
        tg = UnsafeBufferPointer(start: nil, count: 0)
    }
    return FusedInputs(x: try floats(X, s.nd, "X"), w: try floats(W, s.vd, "W"),
                       bias: optionalFloats(bias, s.v), targets: tg,
                       mask: mask.map { UnsafeBufferPointer(start: $0, count: s.n) },
                       rows: s.n, dim: s.d, vocab: s.v)
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
public func aepo_fused_forward(_ h: OpaquePointer?, _ X: UnsafePointer<Float>?, _ W: UnsafePointer<Float>?,
                               _ bias: UnsafePointer<Float>?, _ targets: UnsafePointer<Int32>?,
                               _ mask: UnsafePointer<UInt8>?, _ N: Int64, _ D: Int64, _ V: Int64,
                               _ logp: UnsafeMutablePointer<Float>?, _ entropy: UnsafeMutablePointer<Float>?,
                               _ lse: UnsafeMutablePointer<Double>?,
                               _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let handle = try FusedHandle.borrow(h, "h")
        let s = try FusedSizes(N, D, V)
        let inp = try fusedInputs(s, X, W, bias, targets, mask)
        try handle.head.forward(inp, logp: outFloats(logp, s.n), entropy: outFloats(entropy, s.n),
                                lse: lse.map { UnsafeMutableBufferPointer(start: $0, count: s.n) })
        try handle.head.checkFinite(outputs: [("logp", written(logp, s.n)), ("entropy", written(entropy, s.n))],
                                    lse: lse.map { UnsafeBufferPointer(start: $0, count: s.n) })
    }
}

@c @implementation
public func aepo_fused_backward(_ h: OpaquePointer?, _ X: UnsafePointer<Float>?, _ W: UnsafePointer<Float>?,
                                _ bias: UnsafePointer<Float>?, _ targets: UnsafePointer<Int32>?,
                                _ mask: UnsafePointer<UInt8>?, _ N: Int64, _ D: Int64, _ V: Int64,
                                _ lse: UnsafePointer<Double>?, _ entropy: UnsafePointer<Float>?,
                                _ gradLogp: UnsafePointer<Float>?, _ gradEntropy: UnsafePointer<Float>?,
                                _ dX: UnsafeMutablePointer<Float>?, _ dW: UnsafeMutablePointer<Float>?,
                                _ dbias: UnsafeMutablePointer<Float>?,
                                _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let handle = try FusedHandle.borrow(h, "h")
        let s = try FusedSizes(N, D, V)
        let inp = try fusedInputs(s, X, W, bias, targets, mask)
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
public func aepo_fused_loss_and_grad(_ h: OpaquePointer?, _ policyLoss: OpaquePointer?,
                                     _ X: UnsafePointer<Float>?, _ W: UnsafePointer<Float>?,
                                     _ bias: UnsafePointer<Float>?, _ targets: UnsafePointer<Int32>?,
                                     _ D: Int64, _ V: Int64, _ input: UnsafePointer<aepo_loss_inputs>?,
                                     _ loss: UnsafeMutablePointer<Double>?, _ dX: UnsafeMutablePointer<Float>?,
                                     _ dW: UnsafeMutablePointer<Float>?, _ dbias: UnsafeMutablePointer<Float>?,
                                     _ metrics: UnsafeMutablePointer<Double>?, _ metricsCap: Int,
                                     _ logp: UnsafeMutablePointer<Float>?, _ entropy: UnsafeMutablePointer<Float>?,
                                     _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let handle = try FusedHandle.borrow(h, "h")
        let lossHandle = try LossHandle.borrow(policyLoss, "policy_loss")
        guard let input else { throw .nullPointer("in") }
        let v = try readLossInputs(input)
        guard v.logp == nil else {
            throw .invalid("in.logp", "must be NULL: the fused head computes the log-probs")
        }
        guard v.entropy == nil else {
            throw .invalid("in.entropy", "must be NULL: the fused head computes the entropy")
        }
        let batch = try lossBatch(v, headComputesLogits: true)
        let n = try batch.tokenCount()
        let s = try FusedSizes(Int64(n), D, V)
        let inp = try fusedInputs(s, X, W, bias, targets, v.mask)
        let result = try handle.head.lossAndGrad(inp, engine: lossHandle.engine, batch: batch,
                                                 dX: outFloats(dX, s.nd), dW: outFloats(dW, s.vd),
                                                 dbias: outFloats(dbias, s.v), logp: outFloats(logp, s.n),
                                                 entropy: outFloats(entropy, s.n))
        try handle.head.checkFinite(outputs: [("dX", written(dX, s.nd)), ("dW", written(dW, s.vd)),
                                              ("dbias", written(dbias, s.v)), ("logp", written(logp, s.n)),
                                              ("entropy", written(entropy, s.n))])
        loss?.pointee = result.loss
        if let metrics {
            for i in 0..<min(max(metricsCap, 0), result.metrics.count) { metrics[i] = result.metrics[i] }
        }
    }
}
