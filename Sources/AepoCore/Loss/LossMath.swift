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

    /// 1.5 * 2^52: adding and subtracting it rounds a double to an integer.
    @inline(__always) static var shift: V { V(repeating: 6755399441055744.0) }

    /// e^x for |x| <= 700 (the loss only calls it on arguments clamped to [-20, 20]).
    ///
    /// Numerical properties: Cody-Waite reduction x = n ln2 + r with |r| <= ln2/2, then the
    /// [5/5] Padé approximant (E + r O) / (E - r O), with E and O even polynomials of degree
    /// 4 in r; the relative error is below 1.5e-15 (measured against 40-digit arithmetic),
    /// and e^0 is exactly 1. Ten multiply-adds of a Horner polynomial become seven plus one
    /// division. NaN propagates.
    @inline(__always)
    static func exp(_ x: V) -> V {
        let t = x * 1.4426950408889634 + shift
        let n = t - shift
        let r = x - n * 0.6931471803691238 - n * 1.9082149292705877e-10
        let r2 = r * r
        let e = (r2 * (1.0 / 1008.0) + 1.0 / 9.0) * r2 + 1.0
        let ro = ((r2 * (1.0 / 30240.0) + 1.0 / 72.0) * r2 + 0.5) * r
        let p = (e + ro) / (e - ro)
        let tb = unsafeBitCast(t, to: SIMD4<Int64>.self)
        let sb = unsafeBitCast(shift, to: SIMD4<Int64>.self)
        let scale = (tb &- sb &+ 1023) &<< 52
        return p * unsafeBitCast(scale, to: V.self)
    }

    /// `v` where `m` is set, +0 elsewhere (one AND; NaN and Inf lanes outside `m` vanish).
    @inline(__always)
    static func keep(_ v: V, _ m: M) -> V {
        unsafeBitCast(unsafeBitCast(v, to: SIMD4<Int64>.self) & unsafeBitCast(m, to: SIMD4<Int64>.self), to: V.self)
    }

    /// Clamp by compare-and-select, which lowers to maxpd/minpd. A NaN lane stays NaN.
    @inline(__always)
    static func clamp(_ x: V, _ lo: V, _ hi: V) -> V {
        var y = x
        y.replace(with: lo, where: lo .> y)
        y.replace(with: hi, where: hi .< y)
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

    @inline(__always) static var byteSelect: SIMD4<UInt64> { SIMD4<UInt64>(0xFF, 0xFF00, 0xFF_0000, 0xFF00_0000) }

    /// Lanes whose mask byte is non-zero, from four bytes read as one little-endian word.
    /// Each lane's byte becomes an exact double (2^52 + x - 2^52) and is compared with
    /// 0.5: SSE2 has no 64-bit integer compare, but it has a double compare.
    @inline(__always)
    static func maskLanes(_ word: UInt32) -> M {
        let bits = (SIMD4<UInt64>(repeating: UInt64(word)) & byteSelect) | 0x4330_0000_0000_0000
        return unsafeBitCast(bits, to: V.self) - 4503599627370496.0 .> 0.5
    }

    /// Adds 1 to the lanes of `counter` where `m` is set (a mask lane is all ones, -1).
    @inline(__always)
    static func count(_ counter: inout SIMD4<Int64>, _ m: M) {
        counter &-= unsafeBitCast(m, to: SIMD4<Int64>.self)
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
