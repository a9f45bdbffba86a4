import CAepoAPI

// The logits and fused-head calls take their inputs in versioned structs. The tests that
// drive many argument combinations call them through these positional forms, which fill a
// struct exactly as a C caller does (init, then the fields).

func cLogitsStats(_ logits: UnsafePointer<Float>?, _ B: Int64, _ L: Int64, _ V: Int64, _ sb: Int64, _ sl: Int64,
                  _ targets: UnsafePointer<Int32>?, _ mask: UnsafePointer<UInt8>?, _ temperature: Double,
                  _ threads: Int64, _ logp: UnsafeMutablePointer<Float>?, _ entropy: UnsafeMutablePointer<Float>?,
                  _ lse: UnsafeMutablePointer<Double>?, _ logpT1: UnsafeMutablePointer<Float>?,
                  _ entropySum: UnsafeMutablePointer<Double>?, _ nllSum: UnsafeMutablePointer<Double>?,
                  _ count: UnsafeMutablePointer<Int64>?, _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    var a = logitsInputs(logits, B, L, V, sb, sl, targets, mask, temperature, threads)
    return aepo_logits_stats(&a, logp, entropy, lse, logpT1, entropySum, nllSum, count, err)
}

func cLogitsBackward(_ logits: UnsafePointer<Float>?, _ B: Int64, _ L: Int64, _ V: Int64, _ sb: Int64, _ sl: Int64,
                     _ targets: UnsafePointer<Int32>?, _ mask: UnsafePointer<UInt8>?, _ temperature: Double,
                     _ lse: UnsafePointer<Double>?, _ entropy: UnsafePointer<Float>?,
                     _ gradLogp: UnsafePointer<Float>?, _ gradEntropy: UnsafePointer<Float>?,
                     _ out: UnsafeMutablePointer<Float>?, _ osb: Int64, _ osl: Int64, _ threads: Int64,
                     _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    var a = logitsInputs(logits, B, L, V, sb, sl, targets, mask, temperature, threads)
    return aepo_logits_backward(&a, lse, entropy, gradLogp, gradEntropy, out, osb, osl, err)
}

func logitsInputs(_ logits: UnsafePointer<Float>?, _ B: Int64, _ L: Int64, _ V: Int64, _ sb: Int64, _ sl: Int64,
                  _ targets: UnsafePointer<Int32>?, _ mask: UnsafePointer<UInt8>?, _ temperature: Double,
                  _ threads: Int64) -> aepo_logits_inputs {
    var a = aepo_logits_inputs()
    precondition(aepo_logits_inputs_init(&a, MemoryLayout<aepo_logits_inputs>.size, nil) == AEPO_OK)
    a.logits = logits
    (a.B, a.L, a.V, a.stride_b, a.stride_l) = (B, L, V, sb, sl)
    a.targets = targets
    a.mask = mask
    a.temperature = temperature
    a.threads = threads
    return a
}

func headInputs(_ X: UnsafePointer<Float>?, _ W: UnsafePointer<Float>?, _ bias: UnsafePointer<Float>?,
                _ targets: UnsafePointer<Int32>?, _ mask: UnsafePointer<UInt8>?,
                _ N: Int64, _ D: Int64, _ V: Int64) -> aepo_fused_head_inputs {
    var a = aepo_fused_head_inputs()
    precondition(aepo_fused_head_inputs_init(&a, MemoryLayout<aepo_fused_head_inputs>.size, nil) == AEPO_OK)
    (a.X, a.W, a.bias, a.targets, a.mask) = (X, W, bias, targets, mask)
    (a.N, a.D, a.V) = (N, D, V)
    return a
}

func cFusedForward(_ h: OpaquePointer?, _ X: UnsafePointer<Float>?, _ W: UnsafePointer<Float>?,
                   _ bias: UnsafePointer<Float>?, _ targets: UnsafePointer<Int32>?, _ mask: UnsafePointer<UInt8>?,
                   _ N: Int64, _ D: Int64, _ V: Int64, _ logp: UnsafeMutablePointer<Float>?,
                   _ entropy: UnsafeMutablePointer<Float>?, _ lse: UnsafeMutablePointer<Double>?,
                   _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    var a = headInputs(X, W, bias, targets, mask, N, D, V)
    return aepo_fused_head_forward(h, &a, logp, entropy, lse, err)
}

func cFusedBackward(_ h: OpaquePointer?, _ X: UnsafePointer<Float>?, _ W: UnsafePointer<Float>?,
                    _ bias: UnsafePointer<Float>?, _ targets: UnsafePointer<Int32>?, _ mask: UnsafePointer<UInt8>?,
                    _ N: Int64, _ D: Int64, _ V: Int64, _ lse: UnsafePointer<Double>?, _ entropy: UnsafePointer<Float>?,
                    _ gradLogp: UnsafePointer<Float>?, _ gradEntropy: UnsafePointer<Float>?,
                    _ dX: UnsafeMutablePointer<Float>?, _ dW: UnsafeMutablePointer<Float>?,
                    _ dbias: UnsafeMutablePointer<Float>?, _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    var a = headInputs(X, W, bias, targets, mask, N, D, V)
    return aepo_fused_head_backward(h, &a, lse, entropy, gradLogp, gradEntropy, dX, dW, dbias, err)
}

/// The loss-and-gradient call with the head's N taken from the loss inputs and its mask
/// left NULL (the loss inputs' mask is the head's).
func cFusedLossAndGrad(_ h: OpaquePointer?, _ loss: OpaquePointer?, _ X: UnsafePointer<Float>?,
                       _ W: UnsafePointer<Float>?, _ bias: UnsafePointer<Float>?, _ targets: UnsafePointer<Int32>?,
                       _ D: Int64, _ V: Int64, _ lossIn: UnsafePointer<aepo_loss_inputs>?,
                       _ value: UnsafeMutablePointer<Double>?, _ dX: UnsafeMutablePointer<Float>?,
                       _ dW: UnsafeMutablePointer<Float>?, _ dbias: UnsafeMutablePointer<Float>?,
                       _ metrics: UnsafeMutablePointer<Double>?, _ metricsCap: Int,
                       _ logp: UnsafeMutablePointer<Float>?, _ entropy: UnsafeMutablePointer<Float>?,
                       _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    let n = lossIn.map { $0.pointee.B &* $0.pointee.L } ?? 0
    var a = headInputs(X, W, bias, targets, nil, n, D, V)
    return aepo_fused_head_loss_and_grad(h, loss, &a, lossIn, value, dX, dW, dbias, metrics, metricsCap, logp,
                                         entropy, err)
}
