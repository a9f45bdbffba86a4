import AepoCore
import CAepoAPI

// Logits kernels: aepo_logits_stats and aepo_logits_backward. Pointers and shapes are checked
// here; values (temperature, mask, targets, non-finite logits) are checked by the core.

extension aepo_logits_inputs: VersionedInput {
    static var typeName: String { "aepo_logits_inputs" }
    /// logits, B, L, V, the strides, targets, mask, temperature, threads.
    static var firstVersionSize: Int { 88 }
    static var defaults: aepo_logits_inputs {
        var d = aepo_logits_inputs()
        d.stride_b = -1
        d.stride_l = -1
        d.temperature = 1
        d.threads = 1
        return d
    }
}

@c @implementation
public func aepo_logits_inputs_init(_ input: UnsafeMutablePointer<aepo_logits_inputs>?, _ structSize: Int,
                                    _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        try aepo_logits_inputs.initialize(input, structSize, argument: "in")
    }
}

/// The layout of a [B, L, V] view whose negative strides mean contiguous.
func logitsLayout(_ B: Int64, _ L: Int64, _ V: Int64, _ strideB: Int64, _ strideL: Int64,
                  name: String = "logits") throws(AepoFailure) -> LogitsLayout {
    let b = try dimension(B, "B"), l = try dimension(L, "L"), v = try dimension(V, "V")
    func contiguous(_ n: Int, _ m: Int, _ axis: String) throws(AepoFailure) -> Int {
        let (p, o) = n.multipliedReportingOverflow(by: m)
        guard !o else { throw .shape(name, "the contiguous \(axis) stride overflows (\(n) * \(m))") }
        return p
    }
    // A stride of an axis with one entry is never used, so its default is not computed.
    let sl = strideL < 0 ? v : Int(strideL)
    let sb = strideB >= 0 ? Int(strideB) : b > 1 ? try contiguous(l, v, "batch") : 0
    return try LogitsLayout(batch: b, rows: l, vocab: v, batchStride: sb, rowStride: sl, name: name)
}

@c @implementation
public func aepo_logits_stats(_ input: UnsafePointer<aepo_logits_inputs>?,
                              _ logp: UnsafeMutablePointer<Float>?, _ entropy: UnsafeMutablePointer<Float>?,
                              _ lse: UnsafeMutablePointer<Double>?, _ logpT1: UnsafeMutablePointer<Float>?,
                              _ entropySum: UnsafeMutablePointer<Double>?, _ nllSum: UnsafeMutablePointer<Double>?,
                              _ count: UnsafeMutablePointer<Int64>?,
                              _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let v = try aepo_logits_inputs.read(input, argument: "in")
        let layout = try logitsLayout(v.B, v.L, v.V, v.stride_b, v.stride_l)
        var sums = LogitsSums()
        if layout.count > 0 {
            guard let logits = v.logits else { throw .nullPointer("logits") }
            let outputs = LogitsStatsOutputs(logp: logp, entropy: entropy, lse: lse, logpT1: logpT1)
            sums = try LogitsKernels.stats(logits, layout: layout, targets: v.targets, mask: v.mask,
                                           temperature: v.temperature, threads: Int(v.threads),
                                           outputs: outputs, wantNLL: nllSum != nil)
        } else {
            try LogitsKernels.checkTemperature(v.temperature)
            try LogitsKernels.checkThreads(Int(v.threads))
        }
        entropySum?.pointee = sums.entropySum
        nllSum?.pointee = sums.nllSum
        count?.pointee = Int64(sums.count)
    }
}

@c @implementation
public func aepo_logits_backward(_ input: UnsafePointer<aepo_logits_inputs>?,
                                 _ lse: UnsafePointer<Double>?, _ entropy: UnsafePointer<Float>?,
                                 _ gradLogp: UnsafePointer<Float>?, _ gradEntropy: UnsafePointer<Float>?,
                                 _ out: UnsafeMutablePointer<Float>?, _ outStrideB: Int64, _ outStrideL: Int64,
                                 _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let v = try aepo_logits_inputs.read(input, argument: "in")
        let layout = try logitsLayout(v.B, v.L, v.V, v.stride_b, v.stride_l)
        let outLayout = try logitsLayout(v.B, v.L, v.V, outStrideB, outStrideL, name: "out")
        guard layout.count > 0 else {
            try LogitsKernels.checkTemperature(v.temperature)
            try LogitsKernels.checkThreads(Int(v.threads))
            return
        }
        guard let logits = v.logits else { throw .nullPointer("logits") }
        guard let out else { throw .nullPointer("out") }
        guard let lse else { throw .nullPointer("lse") }
        try LogitsKernels.backward(logits, layout: layout, targets: v.targets, mask: v.mask, temperature: v.temperature,
                                   lse: lse, entropy: entropy, gradLogp: gradLogp, gradEntropy: gradEntropy,
                                   out: out, outLayout: outLayout, threads: Int(v.threads))
    }
}
