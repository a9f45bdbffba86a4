/// Vector helpers for the loss kernels, in float64.
///
/// The per-token arithmetic of the loss runs in float64 (`SIMD4<Double>`) although the
/// inputs and gradients are float32: the loss is a sum of terms of both signs, and float32
/// per-token values would put its relative error near 1e-7 after cancellation, while the
/// float64 path leaves only the rounding of the inputs themselves. Only `+ - * /`,
/// comparisons with `.replace(with:where:)`, and bit casts are used, which lower to packed
/// SSE2 instructions without library calls (checked with objdump).
enum LossMath {
    typealias V = SIMD4<Double>
    typealias M = SIMDMask<SIMD4<Int64>>

    static let shift = V(repeating: 6755399441055744.0)  // 1.5 * 2^52: rounds to an integer

    /// e^x for |x| <= 700 (the loss only calls it on arguments clamped to [-20, 20]).
    ///
    /// Numerical properties: Cody-Waite reduction x = n ln2 + r with |r| <= ln2/2 and a
    /// degree-13 Taylor polynomial, whose truncation error is below 2e-16 relative; the
    /// result is within a few ulp of the correctly rounded e^x. NaN propagates.
    @inline(__always)
    static func exp(_ x: V) -> V {
        let t = x * 1.4426950408889634 + shift
        let n = t - shift
        let r = x - n * 0.6931471803691238 - n * 1.9082149292705877e-10
        var p = V(repeating: 1.0 / 6227020800.0)
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        let tb = unsafeBitCast(t, to: SIMD4<Int64>.self)
        let sb = unsafeBitCast(shift, to: SIMD4<Int64>.self)
        let e = (tb &- sb &+ 1023) &<< 52
        return p * unsafeBitCast(e, to: V.self)
    }

    /// Scalar e^x with exactly the lane arithmetic of `exp(_: V)`.
    @inline(__always)
    static func exp(_ x: Double) -> Double { exp(V(repeating: x))[0] }

    @inline(__always)
    static func clamp(_ x: V, _ lo: V, _ hi: V) -> V {
        var y = x
        y.replace(with: lo, where: x .< lo)
        y.replace(with: hi, where: x .> hi)
        return y
    }

    /// Four floats widened to float64 (one cvtps2pd pair).
    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> V {
        let f = UnsafeRawPointer(p).loadUnaligned(as: SIMD4<Float>.self)
        return V(Double(f[0]), Double(f[1]), Double(f[2]), Double(f[3]))
    }

    /// The first `n` (< 4) floats widened; the other lanes are 0.
    @inline(__always)
    static func loadPartial(_ p: UnsafePointer<Float>, _ n: Int) -> V {
        var v = V()
        for j in 0..<n { v[j] = Double(p[j]) }
        return v
    }

    @inline(__always)
    static func store(_ v: V, _ p: UnsafeMutablePointer<Float>) {
        let f = SIMD4<Float>(Float(v[0]), Float(v[1]), Float(v[2]), Float(v[3]))
        UnsafeMutableRawPointer(p).storeBytes(of: f, as: SIMD4<Float>.self)
    }

    @inline(__always)
    static func storePartial(_ v: V, _ p: UnsafeMutablePointer<Float>, _ n: Int) {
        for j in 0..<n { p[j] = Float(v[j]) }
    }

    static let byteSelect = SIMD4<UInt64>(0xFF, 0xFF00, 0xFF_0000, 0xFF00_0000)

    /// Lanes whose mask byte is non-zero, from four bytes read as one little-endian word.
    @inline(__always)
    static func maskLanes(_ word: UInt32) -> M {
        (SIMD4<UInt64>(repeating: UInt64(word)) & byteSelect) .!= 0
    }

    /// The first `n` mask bytes as a word (the other bytes 0).
    @inline(__always)
    static func maskWord(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt32 {
        if n >= 4 { return UnsafeRawPointer(p).loadUnaligned(as: UInt32.self) }
        var w: UInt32 = 0
        for j in 0..<n { w |= UInt32(p[j]) << (8 * UInt32(j)) }
        return w
    }
}
