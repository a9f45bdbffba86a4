/// Vectorised exp and log for `SIMD8<Float>`, written only with the operations that stay in
/// vector registers on baseline x86-64: `+ - * /`, lane comparisons with
/// `.replace(with:where:)`, and bit casts between `Float` and `Int32` lanes. Nothing here
/// calls a per-lane libm function, so a loop over these helpers compiles to straight SSE code
/// (and to AVX when the module is built for a CPU that has it).
///
/// There is no fused multiply-add: `addingProduct` lowers to a per-lane `fmaf` call when the
/// target has no FMA unit, which is the case for the shipped build.
///
/// The scalar versions run the same operations in the same order, so a value computed in a
/// tail loop is bit-identical to the same value computed in a vector lane.
///
/// Numerical properties (measured by `FastMathTests` against float64 libm over a dense sweep):
/// - `exp`: max relative error 8.0e-8 (under one ulp) on [-87.3, 88.7]; results below
///   FLT_MIN underflow gradually, exp(-inf) = 0, exp(x > 88.73) = +inf, exp(NaN) = NaN,
///   exp(0) = 1 exactly.
/// - `expNonPositive`: the same values for x in [-87.33, 0]; below that it returns 0 (no
///   subnormal results, which are slow on some CPUs). For inputs known to be <= 0 or -inf,
///   as in a softmax after subtracting the row max.
/// - `log`: max error 7.7e-8, absolute where |log x| < 1 and relative elsewhere on the
///   normal range; log(0) = -inf, log(+inf) = +inf, log(x < 0) = NaN,
///   log(NaN) = NaN. Subnormal inputs are treated as 0.
enum FastMath {
    // Range reduction x = n ln2 + r with |r| <= ln2/2; ln2 is split so that n * ln2Hi is exact.
    @usableFromInline static let log2e: Float = 1.44269504088896341
    @usableFromInline static let ln2Hi: Float = 0.693359375
    @usableFromInline static let ln2Lo: Float = -2.12194440e-4
    /// 1.5 * 2^23: adding and subtracting it rounds a float of magnitude < 2^22 to an integer
    /// (ties to even), and the integer sits in the low mantissa bits of the sum.
    @usableFromInline static let roundMagic: Float = 12582912
    @usableFromInline static let roundMagicBits: Int32 = 0x4B40_0000

    // Minimax coefficients for (exp(r) - 1 - r) / r^2 on [-ln2/2, ln2/2] (Cephes expf).
    @usableFromInline static let e0: Float = 1.9875691500e-4
    @usableFromInline static let e1: Float = 1.3981999507e-3
    @usableFromInline static let e2: Float = 8.3334519073e-3
    @usableFromInline static let e3: Float = 4.1665795894e-2
    @usableFromInline static let e4: Float = 1.6666665459e-1
    @usableFromInline static let e5: Float = 5.0000001201e-1

    /// Below this, exp(x) is subnormal (ln FLT_MIN).
    @usableFromInline static let expNormalMin: Float = -87.33654475
    /// Inputs are clamped to [expClampLo, expClampHi]: exp(-104) rounds to 0 and exp(89)
    /// overflows to +inf, so clamping changes no result and keeps n * ln2Hi exact.
    @usableFromInline static let expClampLo: Float = -104
    @usableFromInline static let expClampHi: Float = 89

    // MARK: exp

    /// e^x for every lane. See the type's numerical properties.
    @inline(__always)
    static func exp(_ x: SIMD8<Float>) -> SIMD8<Float> {
        var xc = x
        xc.replace(with: SIMD8(repeating: expClampHi), where: x .> expClampHi)
        xc.replace(with: SIMD8(repeating: expClampLo), where: x .< expClampLo)
        let t = xc * log2e + roundMagic
        let n = t - roundMagic
        let r = (xc - n * ln2Hi) - n * ln2Lo
        let y = expPoly(r)
        // n is in [-150, 129]; 2^n is applied as 2^(n>>1) * 2^(n - n>>1), both normal, so
        // overflow gives +inf and underflow rounds once, gradually, to a subnormal or 0.
        let ni = unsafeBitCast(t, to: SIMD8<Int32>.self) &- roundMagicBits
        let n1 = ni &>> 1
        let n2 = ni &- n1
        let s1 = unsafeBitCast((n1 &+ 127) &<< 23, to: SIMD8<Float>.self)
        let s2 = unsafeBitCast((n2 &+ 127) &<< 23, to: SIMD8<Float>.self)
        return y * s1 * s2
    }

    /// e^x for lanes that hold values <= 0, -inf or NaN (NaN propagates). Results below
    /// FLT_MIN are flushed to 0. Cheaper than `exp` by one scaling step.
    @inline(__always)
    static func expNonPositive(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let tiny = x .< expNormalMin
        var xc = x
        xc.replace(with: SIMD8(repeating: expNormalMin), where: tiny)
        let t = xc * log2e + roundMagic
        let n = t - roundMagic
        let r = (xc - n * ln2Hi) - n * ln2Lo
        var y = expPoly(r)
        // n is in [-126, 0], so 2^n is one normal float.
        let ni = unsafeBitCast(t, to: SIMD8<Int32>.self) &- roundMagicBits
        y *= unsafeBitCast((ni &+ 127) &<< 23, to: SIMD8<Float>.self)
        y.replace(with: SIMD8(repeating: 0), where: tiny)
        return y
    }

    @inline(__always)
    static func expPoly(_ r: SIMD8<Float>) -> SIMD8<Float> {
        var p = r * e0 + e1
        p = p * r + e2
        p = p * r + e3
        p = p * r + e4
        p = p * r + e5
        return (p * (r * r) + r) + 1
    }

    /// Scalar e^x with the same operations as the vector `exp` (bit-identical per lane).
    @inline(__always)
    static func exp(_ x: Float) -> Float {
        var xc = x
        if x > expClampHi { xc = expClampHi }
        if x < expClampLo { xc = expClampLo }
        let t = xc * log2e + roundMagic
        let n = t - roundMagic
        let r = (xc - n * ln2Hi) - n * ln2Lo
        var p = r * e0 + e1
        p = p * r + e2
        p = p * r + e3
        p = p * r + e4
        p = p * r + e5
        let y = (p * (r * r) + r) + 1
        let ni = Int32(bitPattern: t.bitPattern) &- roundMagicBits
        let n1 = ni &>> 1
        let n2 = ni &- n1
        let s1 = Float(bitPattern: UInt32(bitPattern: (n1 &+ 127) &<< 23))
        let s2 = Float(bitPattern: UInt32(bitPattern: (n2 &+ 127) &<< 23))
        return y * s1 * s2
    }

    /// Scalar version of `expNonPositive` (bit-identical per lane).
    @inline(__always)
    static func expNonPositive(_ x: Float) -> Float {
        if x < expNormalMin { return 0 }
        let t = x * log2e + roundMagic
        let n = t - roundMagic
        let r = (x - n * ln2Hi) - n * ln2Lo
        var p = r * e0 + e1
        p = p * r + e2
        p = p * r + e3
        p = p * r + e4
        p = p * r + e5
        let y = (p * (r * r) + r) + 1
        let ni = Int32(bitPattern: t.bitPattern) &- roundMagicBits
        return y * Float(bitPattern: UInt32(bitPattern: (ni &+ 127) &<< 23))
    }

    // MARK: log

    // log(1 + f) = f - f^2/2 + f^3 * P(f) for f in [sqrt(1/2) - 1, sqrt(2) - 1] (Cephes logf).
    @usableFromInline static let l0: Float = 7.0376836292e-2
    @usableFromInline static let l1: Float = -1.1514610310e-1
    @usableFromInline static let l2: Float = 1.1676998740e-1
    @usableFromInline static let l3: Float = -1.2420140846e-1
    @usableFromInline static let l4: Float = 1.4249322787e-1
    @usableFromInline static let l5: Float = -1.6668057665e-1
    @usableFromInline static let l6: Float = 2.0000714765e-1
    @usableFromInline static let l7: Float = -2.4999993993e-1
    @usableFromInline static let l8: Float = 3.3333331174e-1
    @usableFromInline static let sqrtHalf: Float = 0.707106781186547524

    /// Natural log for every lane. See the type's numerical properties.
    @inline(__always)
    static func log(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let bits = unsafeBitCast(x, to: SIMD8<Int32>.self)
        // x = m * 2^e with m in [0.5, 1).
        var e = (bits &>> 23) &- 126
        var m = unsafeBitCast((bits & 0x007F_FFFF) | 0x3F00_0000, to: SIMD8<Float>.self)
        // Move m into [sqrt(1/2), sqrt(2)) so that f = m - 1 is small.
        let small = m .< sqrtHalf
        e.replace(with: e &- 1, where: small)
        var f = m - 1
        f.replace(with: m + m - 1, where: small)
        m = f
        let ef = intToFloat(e)
        let z = m * m
        var p = m * l0 + l1
        p = p * m + l2
        p = p * m + l3
        p = p * m + l4
        p = p * m + l5
        p = p * m + l6
        p = p * m + l7
        p = p * m + l8
        var y = p * m * z
        y = y + ef * ln2Lo
        y = y - z * 0.5
        var result = (m + y) + ef * ln2Hi
        // Special lanes: x <= 0, subnormal, +inf, NaN.
        result.replace(with: SIMD8(repeating: -.infinity), where: x .< .leastNormalMagnitude)
        result.replace(with: SIMD8(repeating: .nan), where: x .< 0)
        result.replace(with: x, where: x .> .greatestFiniteMagnitude)
        result.replace(with: x, where: x .!= x)
        return result
    }

    /// Exact Int32 -> Float for |i| < 2^22 without a conversion instruction: place i in the
    /// mantissa of 1.5 * 2^23 and subtract.
    @inline(__always)
    static func intToFloat(_ i: SIMD8<Int32>) -> SIMD8<Float> {
        unsafeBitCast(i &+ roundMagicBits, to: SIMD8<Float>.self) - roundMagic
    }

    /// Scalar version of `log` (bit-identical per lane).
    @inline(__always)
    static func log(_ x: Float) -> Float {
        if x != x || x > .greatestFiniteMagnitude { return x }
        if x < 0 { return .nan }
        if x < .leastNormalMagnitude { return -.infinity }
        let bits = Int32(bitPattern: x.bitPattern)
        var e = (bits &>> 23) &- 126
        var m = Float(bitPattern: UInt32(bitPattern: (bits & 0x007F_FFFF) | 0x3F00_0000))
        if m < sqrtHalf {
            e = e &- 1
            m = m + m - 1
        } else {
            m = m - 1
        }
        let ef = Float(bitPattern: UInt32(bitPattern: e &+ roundMagicBits)) - roundMagic
        let z = m * m
        var p = m * l0 + l1
        p = p * m + l2
        p = p * m + l3
        p = p * m + l4
        p = p * m + l5
        p = p * m + l6
        p = p * m + l7
        p = p * m + l8
        var y = p * m * z
        y = y + ef * ln2Lo
        y = y - z * 0.5
        return (m + y) + ef * ln2Hi
    }
}
