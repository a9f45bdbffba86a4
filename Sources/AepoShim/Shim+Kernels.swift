import AepoCore
import CAepoAPI

// Logits kernels: aepo_logits_stats and aepo_logits_backward. Pointers and shapes are checked
// here; values (temperature, mask, targets, non-finite logits) are checked by the core.

@c @implementation
public func aepo_logits_stats(_ logits: UnsafePointer<Float>?, _ B: Int64, _ L: Int64, _ V: Int64,
                              _ strideB: Int64, _ strideL: Int64,
                              _ targets: UnsafePointer<Int32>?, _ mask: UnsafePointer<UInt8>?,
                              _ temperature: Double, _ threads: Int64,
                              _ logp: UnsafeMutablePointer<Float>?, _ entropy: UnsafeMutablePointer<Float>?,
                              _ lse: UnsafeMutablePointer<Double>?, _ logpT1: UnsafeMutablePointer<Float>?,
                              _ entropySum: UnsafeMutablePointer<Double>?, _ nllSum: UnsafeMutablePointer<Double>?,
                              _ count: UnsafeMutablePointer<Int64>?,
                              _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let layout = try LogitsLayout(batch: Int(B), rows: Int(L), vocab: Int(V),
                                      batchStride: Int(strideB), rowStride: Int(strideL))
        var sums = LogitsSums()
        if layout.count > 0 {
            guard let logits else { throw .nullPointer("logits") }
            let outputs = LogitsStatsOutputs(logp: logp, entropy: entropy, lse: lse, logpT1: logpT1)
            sums = try LogitsKernels.stats(logits, layout: layout, targets: targets, mask: mask,
                                           temperature: temperature, threads: Int(threads),
                                           outputs: outputs, wantNLL: nllSum != nil)
        } else {
            try LogitsKernels.checkTemperature(temperature)
            try LogitsKernels.checkThreads(Int(threads))
        }
        entropySum?.pointee = sums.entropySum
        nllSum?.pointee = sums.nllSum
        count?.pointee = Int64(sums.count)
    }
}

@c @implementation
public func aepo_logits_backward(_ logits: UnsafePointer<Float>?, _ B: Int64, _ L: Int64, _ V: Int64,
                                 _ strideB: Int64, _ strideL: Int64,
                                 _ targets: UnsafePointer<Int32>?, _ mask: UnsafePointer<UInt8>?,
                                 _ temperature: Double, _ lse: UnsafePointer<Double>?, _ entropy: UnsafePointer<Float>?,
                                 _ gradLogp: UnsafePointer<Float>?, _ gradEntropy: UnsafePointer<Float>?,
                                 _ out: UnsafeMutablePointer<Float>?, _ outStrideB: Int64, _ outStrideL: Int64,
                                 _ threads: Int64, _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let layout = try LogitsLayout(batch: Int(B), rows: Int(L), vocab: Int(V),
                                      batchStride: Int(strideB), rowStride: Int(strideL))
        let outLayout = try LogitsLayout(batch: Int(B), rows: Int(L), vocab: Int(V),
                                         batchStride: Int(outStrideB), rowStride: Int(outStrideL), name: "out")
        guard layout.count > 0 else {
            try LogitsKernels.checkTemperature(temperature)
            try LogitsKernels.checkThreads(Int(threads))
            return
        }
        guard let logits else { throw .nullPointer("logits") }
        guard let out else { throw .nullPointer("out") }
        guard let lse else { throw .nullPointer("lse") }
        try LogitsKernels.backward(logits, layout: layout, targets: targets, mask: mask, temperature: temperature,
                                   lse: lse, entropy: entropy, gradLogp: gradLogp, gradEntropy: gradEntropy,
                                   out: out, outLayout: outLayout, threads: Int(threads))
    }
}
